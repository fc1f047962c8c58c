"""Blue/green promotion, rollback and supervision of the served champion.

Every change of the served model goes through one switch (``_switch``):

1. start a new ``mlflow models serve`` for the exact version on a free port (a port taken in the
   meantime is retried on another one);
2. wait for ``/ping``; send the smoke cases (known texts must get their known labels, in exactly
   the contract's columns);
3. the switch itself: replace the live routing file atomically, then move the aliases;
4. after a drain (the old server keeps answering requests already routed to it), stop the old
   server by its PID.

Any failure before the switch stops the new process and leaves the old server, the aliases and
the routing file as they were. A failure while moving the aliases puts the routing file and the
aliases back. Only one switch runs at a time: an exclusive lock file (``promotion.lock``) covers
the CLI and Airflow alike (the DAGs also share a one-slot pool), and the champion alias is
compared-and-set: if it moved while the new server was starting, the switch is abandoned.
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipelines.params import Params
from pipelines.registry import approval
from pipelines.registry.live import LiveRoute, read_live, restore_live, write_live
from pipelines.registry.server import (
    ServerError,
    ServerHandle,
    load_smoke_cases,
    lost_port_race,
    ping,
    smoke_test,
    start_server,
    stop_server,
    wait_ready,
)
from pipelines.settings import Settings
from pipelines.tracking import CHALLENGER_ALIAS, CHAMPION_ALIAS, PREVIOUS_ALIAS

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

PORT_ATTEMPTS = 3


class PromotionError(RuntimeError):
    """A promotion, rollback or restart failed; the previous champion still serves."""


class PromotionBusy(PromotionError):
    """Another promotion holds the lock."""


@dataclass(frozen=True)
class PromotionOutcome:
    action: str  # none | promoted | refused | rolled_back | healthy | restarted
    version: str | None = None
    previous_version: str | None = None
    url: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def message(self) -> str:
        parts = [self.action]
        if self.version:
            parts.append(f"version {self.version}")
        if self.previous_version:
            parts.append(f"(previous {self.previous_version})")
        if self.url:
            parts.append(f"at {self.url}")
        if self.reason:
            parts.append(f"- {self.reason}")
        return " ".join(parts)


# ------------------------------------------------------------------------------ lock


@contextmanager
def promotion_lock(settings: Settings) -> Iterator[None]:
    """Exclusive for the whole switch; raises ``PromotionBusy`` at once when taken."""
    path = settings.serving_dir / "promotion.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise PromotionBusy(f"another promotion is running (lock {path})") from exc
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ the switch


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}


def _set_aliases(client: MlflowClient, name: str, wanted: dict[str, str | None]) -> None:
    for alias, version in wanted.items():
        if version is None:
            client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, version)


def _restore_aliases(
    client: MlflowClient, name: str, before: dict[str, str], changed: dict[str, str | None]
) -> None:
    for alias in changed:
        try:
            _set_aliases(client, name, {alias: before.get(alias)})
        except Exception as exc:  # best effort: the original error is the one to report
            log.error("could not restore alias %s of %s: %s", alias, name, exc)


def start_ready_server(settings: Settings, params: Params, version: str) -> ServerHandle:
    """A new server for ``version`` that answered ``/ping`` and passed the smoke test.

    On any failure the new process is stopped and ``PromotionError`` names the cause.
    """
    cases = load_smoke_cases(settings.smoke_cases_path, params.labels)
    last_error: ServerError | None = None
    for attempt in range(1, PORT_ATTEMPTS + 1):
        handle = start_server(settings, version)
        try:
            wait_ready(handle, settings.model_server_ready_timeout_s)
        except ServerError as exc:
            stop_server(settings, handle.pid, handle.start_ticks)
            last_error = exc
            if lost_port_race(handle) and attempt < PORT_ATTEMPTS:
                log.warning("port %d was taken: retrying on another port", handle.port)
                continue
            break
        try:
            smoke_test(handle, cases, params.labels, settings.model_server_request_timeout_s)
        except ServerError as exc:
            stop_server(settings, handle.pid, handle.start_ticks)
            last_error = exc
            break
        return handle
    raise PromotionError(f"version {version} was not switched in: {last_error}")


def _switch(
    settings: Settings,
    params: Params,
    client: MlflowClient,
    version: str,
    *,
    aliases: dict[str, str | None],
    reason: str,
) -> tuple[ServerHandle, LiveRoute | None]:
    """Start ``version``, switch the routing file and ``aliases`` to it, then retire the old."""
    name = settings.registered_model_name
    before = _aliases(client, name)
    old_route = read_live(settings.live_file)
    handle = start_ready_server(settings, params, version)
    try:
        if _aliases(client, name).get(CHAMPION_ALIAS) != before.get(CHAMPION_ALIAS):
            raise PromotionError("the champion alias moved while the new server started")
        write_live(settings.live_file, LiveRoute.for_server(handle, reason))
        try:
            _set_aliases(client, name, aliases)
        except Exception:
            restore_live(settings.live_file, old_route)
            _restore_aliases(client, name, before, aliases)
            raise
    except BaseException:
        stop_server(settings, handle.pid, handle.start_ticks)
        raise
    log.info("%s v%s serves at %s (%s)", name, version, handle.url, reason)
    _retire(settings, old_route, keep_pid=handle.pid)
    return handle, old_route


def _retire(settings: Settings, old: LiveRoute | None, *, keep_pid: int) -> None:
    """After the drain, stop the server the routing file named before the switch."""
    if old is None or old.pid == keep_pid:
        return
    time.sleep(settings.model_server_drain_s)
    stop_server(settings, old.pid, old.start_ticks)


# ------------------------------------------------------------------------------ entry points


def promote_approved(settings: Settings, params: Params) -> PromotionOutcome:
    """Promote the approved challenger, if a valid approval waits; refuse stale ones."""
    from pipelines.tracking import client as tracking_client

    name = settings.registered_model_name
    with promotion_lock(settings):
        client = tracking_client(settings)
        waiting = approval.waiting_approvals(client, name)
        if not waiting:
            return PromotionOutcome("none", reason="no approval waits")
        valid, refused = None, []
        for version in waiting:
            check = approval.check_approval(client, name, version)
            if check.valid and valid is None:
                valid = version
            elif not check.valid:
                approval.refuse(client, name, check)
                refused.append(check)
        if valid is None:
            first = refused[0]
            return PromotionOutcome(
                "refused", first.version, reason=f"{first.reason}: {first.detail}"
            )
        number = str(valid.version)
        old_champion = _aliases(client, name).get(CHAMPION_ALIAS)
        handle, _ = _switch(
            settings,
            params,
            client,
            number,
            aliases={
                PREVIOUS_ALIAS: old_champion,
                CHAMPION_ALIAS: number,
                CHALLENGER_ALIAS: None,
            }
            if old_champion
            else {CHAMPION_ALIAS: number, CHALLENGER_ALIAS: None},
            reason="promote",
        )
        client.set_model_version_tag(name, number, approval.PROMOTED_AT, _now())
        return PromotionOutcome(
            "promoted",
            number,
            old_champion,
            handle.url,
            reason=f"approved by {valid.tags.get(approval.APPROVED_BY)}",
        )


def rollback(settings: Settings, params: Params, reason: str) -> PromotionOutcome:
    """Serve ``previous`` again (blue/green); champion and previous swap, and the reason is kept."""
    from pipelines.tracking import client as tracking_client

    if not reason.strip():
        raise ValueError("a rollback needs a reason")
    name = settings.registered_model_name
    with promotion_lock(settings):
        client = tracking_client(settings)
        aliases = _aliases(client, name)
        current, target = aliases.get(CHAMPION_ALIAS), aliases.get(PREVIOUS_ALIAS)
        if target is None or current is None:
            raise PromotionError("nothing to roll back to: no 'previous' (or no 'champion') alias")
        handle, _ = _switch(
            settings,
            params,
            client,
            target,
            aliases={CHAMPION_ALIAS: target, PREVIOUS_ALIAS: current},
            reason=f"rollback: {reason.strip()}",
        )
        client.set_model_version_tag(name, current, "rolled_back_at", _now())
        client.set_model_version_tag(name, current, "rollback_reason", reason.strip())
        client.set_model_version_tag(name, target, "restored_at", _now())
        return PromotionOutcome("rolled_back", target, current, handle.url, reason.strip())


def ensure_serving(settings: Settings, params: Params) -> PromotionOutcome:
    """The supervisor: if the champion's server is down (or never started), start it again."""
    from pipelines.tracking import client as tracking_client

    try:
        with promotion_lock(settings):
            client = tracking_client(settings)
            return _restart_if_down(settings, params, client)
    except PromotionBusy:
        return PromotionOutcome("none", reason="a promotion is running; it owns the server")


def _restart_if_down(settings: Settings, params: Params, client: MlflowClient) -> PromotionOutcome:
    name = settings.registered_model_name
    champion = _aliases(client, name).get(CHAMPION_ALIAS) if _has_model(client, name) else None
    if champion is None:
        return PromotionOutcome("none", reason="no champion yet: nothing to serve")
    live = read_live(settings.live_file)
    if live and live.model_version == champion and _answers(live):
        return PromotionOutcome("healthy", champion, url=live.url)
    why = _why_down(live, champion)
    log.warning("champion v%s is not served (%s): starting it again", champion, why)
    handle, _ = _switch(settings, params, client, champion, aliases={}, reason="restart")
    return PromotionOutcome("restarted", champion, url=handle.url, reason=why)


def _has_model(client: MlflowClient, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def _answers(live: LiveRoute) -> bool:
    return live.running and ping(live.url)


def _why_down(live: LiveRoute | None, champion: str) -> str:
    if live is None:
        return "no live routing file"
    if live.model_version != champion:
        return f"the routing file names v{live.model_version}, the champion is v{champion}"
    if not live.running:
        return f"server pid {live.pid} is gone"
    return f"{live.url} does not answer /ping"
