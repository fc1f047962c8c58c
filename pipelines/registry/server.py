"""Model-server processes: one ``mlflow models serve`` per registered version, blue/green.

A server is started for an exact version (``models:/<name>/<N>``, never an alias: an alias is
resolved once at start and would silently mean another version after a move), bound to
127.0.0.1 on a free port, in a session of its own so that it outlives the Airflow task or CLI
that started it, and stopped by its process group (``mlflow models serve`` runs uvicorn through
``bash -c``: the PID alone would leave the worker behind). Every server started is recorded in
``<var>/serving/servers/<pid>.json`` so that ``serving-stop`` and the supervisor find them all;
a PID is only ever signalled after checking that it still runs ``models serve``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from pipelines.partitions import write_json
from pipelines.settings import Settings

log = logging.getLogger(__name__)

PING_TIMEOUT_S = 2.0
STOP_GRACE_S = 10.0


class ServerError(RuntimeError):
    """A model server could not be started, did not become ready, or answered wrongly."""


class ServerNotReady(ServerError):
    pass


class SmokeTestFailed(ServerError):
    pass


@dataclass(frozen=True)
class ServerHandle:
    """A started model server, as recorded on disk."""

    version: str
    model_uri: str
    host: str
    port: int
    pid: int
    start_ticks: int
    started_at: str
    log_path: str

    @property
    def running(self) -> bool:
        return is_running(self.pid, self.start_ticks)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "url": self.url}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerHandle:
        return cls(
            version=str(data["version"]),
            model_uri=str(data["model_uri"]),
            host=str(data["host"]),
            port=int(data["port"]),
            pid=int(data["pid"]),
            start_ticks=int(data["start_ticks"]),
            started_at=str(data["started_at"]),
            log_path=str(data["log_path"]),
        )


@dataclass(frozen=True)
class SmokeCase:
    text: str
    label: str


# ------------------------------------------------------------------------------ processes


def servers_dir(settings: Settings) -> Path:
    return settings.serving_dir / "servers"


def free_port(host: str) -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def process_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if it is gone or a zombie.

    A PID together with its start time names one process for good: PIDs are reused, start
    times are not. (``/proc/PID/cmdline`` is no substitute: it reads empty while a busy process
    holds its memory map lock.)
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22, starttime


def is_running(pid: int, start_ticks: int) -> bool:
    """True while the very process recorded as (``pid``, ``start_ticks``) runs."""
    return process_start_ticks(pid) == start_ticks


def _server_env(settings: Settings) -> dict[str, str]:
    # numpy and pandas: only when used
    from pipelines.model.modeling import ONNX_SPINNING_ENV, ONNX_THREADS_ENV

    env = dict(os.environ)
    # `mlflow models serve` starts uvicorn through `bash -c`; it must find the venv's binaries.
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    env["MLFLOW_REGISTRY_URI"] = settings.mlflow_tracking_uri
    # MLflow's scoring server predicts each request in a thread of its own; ONNX Runtime's
    # intra-op threads on top of that only oversubscribe the cores (measured: half the
    # throughput at 16 clients with one thread per core than with one in all).
    env[ONNX_THREADS_ENV] = str(settings.model_server_onnx_threads)
    env[ONNX_SPINNING_ENV] = "1" if settings.model_server_onnx_spinning else "0"
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def start_server(settings: Settings, version: str, *, port: int | None = None) -> ServerHandle:
    """Spawn the server for ``version``; returns at once (see ``wait_ready``)."""
    host = settings.model_server_host
    port = port or free_port(host)
    model_uri = f"models:/{settings.registered_model_name}/{version}"
    logs = settings.serving_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"server-v{version}-{port}.log"
    command = [
        sys.executable, "-m", "mlflow", "models", "serve",
        "-m", model_uri, "--env-manager", "local",
        "-h", host, "-p", str(port),
        "-t", str(int(settings.model_server_request_timeout_s)),
    ]  # fmt: skip
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_server_env(settings),
            cwd=settings.project_root,
            start_new_session=True,
        )
    handle = ServerHandle(
        version=str(version),
        model_uri=model_uri,
        host=host,
        port=port,
        pid=process.pid,
        start_ticks=process_start_ticks(process.pid) or 0,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        log_path=str(log_path),
    )
    write_json(handle.to_dict(), servers_dir(settings) / f"{process.pid}.json")
    log.info("started %s on %s (pid %d, log %s)", model_uri, handle.url, process.pid, log_path)
    return handle


def _reap(pid: int) -> None:
    """Collect the exit status of a child of this process (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_server(
    settings: Settings, pid: int, start_ticks: int, *, grace_s: float = STOP_GRACE_S
) -> bool:
    """Stop the server (``pid``, ``start_ticks``) and its process group; False if not running."""
    record = servers_dir(settings) / f"{pid}.json"
    was_running = is_running(pid, start_ticks)
    if was_running:
        try:
            os.killpg(pid, signal.SIGTERM)  # the server leads its own session: pgid == pid
        except ProcessLookupError:
            was_running = False
        deadline = time.monotonic() + grace_s
        while _group_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.1)
        if _group_alive(pid):
            log.warning("server pid %d ignored SIGTERM for %.0f s: killing it", pid, grace_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            time.sleep(0.2)
        _reap(pid)
        log.info("stopped model server pid %d", pid)
    record.unlink(missing_ok=True)
    return was_running


def recorded_servers(settings: Settings) -> list[ServerHandle]:
    handles = []
    for path in sorted(servers_dir(settings).glob("*.json")):
        try:
            handles.append(ServerHandle.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable server record %s: %s", path, exc)
    return handles


def stop_all(settings: Settings, *, keep_pid: int | None = None) -> list[int]:
    """Stop every recorded server (except ``keep_pid``); returns the PIDs that were running."""
    stopped = []
    for handle in recorded_servers(settings):
        if handle.pid != keep_pid and stop_server(settings, handle.pid, handle.start_ticks):
            stopped.append(handle.pid)
    return stopped


def lost_port_race(handle: ServerHandle) -> bool:
    """The server died because its port was taken between choosing and binding it."""
    try:
        text = Path(handle.log_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "address already in use" in text.lower()


def log_tail(handle: ServerHandle, lines: int = 15) -> str:
    try:
        text = Path(handle.log_path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:])


# ------------------------------------------------------------------------------ HTTP


def ping(url: str, timeout: float = PING_TIMEOUT_S) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=timeout) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def wait_ready(handle: ServerHandle, timeout_s: float) -> None:
    """Wait for ``/ping``; raise ``ServerNotReady`` if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ping(handle.url):
            return
        if not handle.running:
            _reap(handle.pid)
            raise ServerNotReady(
                f"the server for {handle.model_uri} exited before it was ready "
                f"(log {handle.log_path}):\n{log_tail(handle)}"
            )
        time.sleep(0.25)
    raise ServerNotReady(
        f"the server for {handle.model_uri} was not ready after {timeout_s:.0f} s "
        f"(log {handle.log_path}):\n{log_tail(handle)}"
    )


def invocations_payload(texts: Sequence[str]) -> dict[str, Any]:
    """The body of a ``POST /invocations`` scoring ``texts`` (MLflow's ``dataframe_split``)."""
    return {"dataframe_split": {"columns": ["text"], "data": [[text] for text in texts]}}


def prediction_records(body: Any) -> list[dict[str, Any]] | None:
    """One dict per text from an ``/invocations`` answer, or None when it holds no records."""
    predictions = body.get("predictions") if isinstance(body, dict) else None
    if isinstance(predictions, dict):  # column-oriented: {"label": [...], ...}
        keys = list(predictions)
        predictions = [
            dict(zip(keys, row, strict=True)) for row in zip(*predictions.values(), strict=True)
        ]
    if not isinstance(predictions, list) or not all(isinstance(p, dict) for p in predictions):
        return None
    return predictions


def invoke(url: str, texts: Sequence[str], timeout: float) -> list[dict[str, Any]]:
    """POST ``texts`` to ``/invocations``; one dict per text."""
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps(invocations_payload(texts), ensure_ascii=False).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = json.loads(response.read().decode("utf-8"))
    predictions = prediction_records(body)
    if predictions is None:
        raise SmokeTestFailed(f"{url}/invocations answered no prediction records: {body!r:.300}")
    return predictions


# ------------------------------------------------------------------------------ smoke test


def load_smoke_cases(path: Path, labels: Sequence[str]) -> list[SmokeCase]:
    """Texts with the label every servable model must give them (``expectations/smoke.yaml``)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"smoke cases not found: {path}") from exc
    cases = raw.get("cases") if isinstance(raw, dict) else None
    if not isinstance(cases, list) or not cases:
        raise ValueError(f"{path} must hold a non-empty list under 'cases'")
    out = []
    for i, case in enumerate(cases):
        if not isinstance(case, dict) or not str(case.get("text", "")).strip():
            raise ValueError(f"{path}: case {i} needs a non-empty 'text'")
        if case.get("label") not in labels:
            raise ValueError(f"{path}: case {i} has label {case.get('label')!r}, not in {labels}")
        out.append(SmokeCase(text=str(case["text"]), label=str(case["label"])))
    return out


def expected_columns(labels: Sequence[str]) -> list[str]:
    """The model I/O contract's output columns."""
    return ["label", "score", *(f"p_{label}" for label in labels)]


def check_predictions(
    predictions: Sequence[Mapping[str, Any]], cases: Sequence[SmokeCase], labels: Sequence[str]
) -> list[str]:
    """Every way the answer breaks the contract or the known labels (empty: all good)."""
    problems: list[str] = []
    if len(predictions) != len(cases):
        return [f"{len(predictions)} predictions for {len(cases)} texts"]
    wanted = expected_columns(labels)
    for case, prediction in zip(cases, predictions, strict=True):
        if sorted(prediction) != sorted(wanted):
            problems.append(f"columns {sorted(prediction)} instead of {sorted(wanted)}")
            continue
        try:
            probabilities = [float(prediction[f"p_{label}"]) for label in labels]
            score = float(prediction["score"])
        except (TypeError, ValueError):
            problems.append(f"non-numeric probabilities for {case.text!r}")
            continue
        if abs(sum(probabilities) - 1.0) > 1e-3 or abs(score - max(probabilities)) > 1e-6:
            problems.append(
                f"probabilities of {case.text!r} do not sum to 1 or disagree with score"
            )
        if prediction["label"] != case.label:
            problems.append(f"{case.text!r}: {prediction['label']!r}, expected {case.label!r}")
    return problems


def smoke_test(
    handle: ServerHandle, cases: Sequence[SmokeCase], labels: Sequence[str], timeout: float
) -> None:
    """Known texts must get their known labels, in exactly the contract's columns."""
    try:
        predictions = invoke(handle.url, [case.text for case in cases], timeout)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise SmokeTestFailed(f"smoke request to {handle.url} failed: {exc}") from exc
    problems = check_predictions(predictions, cases, labels)
    if problems:
        raise SmokeTestFailed(
            f"smoke test of {handle.model_uri} failed: " + "; ".join(problems[:5])
        )
