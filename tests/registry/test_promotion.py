"""Approval-gated blue/green promotion, rollback and supervision with real model servers.

Each test registers small sklearn pyfuncs (tests/helpers_models.py) under its own registered
model name in one module-wide MLflow store, and serves them with real ``mlflow models serve``
processes on 127.0.0.1. Every server a test starts is stopped by PID at its end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from pipelines.params import Params, load_params
from pipelines.registry import server as server_module
from pipelines.registry.approval import approve, check_approval
from pipelines.registry.live import read_live
from pipelines.registry.promotion import (
    PromotionBusy,
    PromotionError,
    ensure_serving,
    promote_approved,
    promotion_lock,
    rollback,
)
from pipelines.registry.server import recorded_servers, stop_all
from pipelines.settings import PROJECT_ROOT, Settings

CONTRACT_COLUMNS = {"label", "score", "p_negative", "p_neutral", "p_positive"}


@dataclass(frozen=True)
class Store:
    root: Path
    params: Params
    good_a: str  # run ids of logged models
    good_b: str
    constant: str


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    from pipelines.settings import get_settings
    from pipelines.tracking import configure_mlflow
    from tests.helpers_models import (
        ConstantModel,
        TfidfModel,
        log_pyfunc,
        make_corpus,
        use_embedded_stores,
    )

    root = tmp_path_factory.mktemp("promotion")
    with pytest.MonkeyPatch.context() as mp:
        use_embedded_stores(mp, root)
        settings = get_settings()
        configure_mlflow(settings)
        corpus_a, corpus_b = make_corpus(40, seed=0), make_corpus(40, seed=1)
        yield Store(
            root=root,
            params=load_params(PROJECT_ROOT / "params.yaml"),
            good_a=log_pyfunc(TfidfModel(corpus_a.text, corpus_a.label), run_name="good-a"),
            good_b=log_pyfunc(TfidfModel(corpus_b.text, corpus_b.label, seed=1), run_name="b"),
            constant=log_pyfunc(ConstantModel(), run_name="constant"),
        )
    get_settings.cache_clear()


@pytest.fixture
def settings(store: Store, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Settings of the module's store with this test's own model name; stops its servers."""
    from pipelines.settings import Settings

    name = "emo-" + request.node.name.replace("_", "-")[:40]
    base = Settings(var_dir=store.root / "var", data_dir=store.root / "data")
    test_settings = base.model_copy(
        update={"registered_model_name": name, "model_server_drain_s": 1.0}
    )
    shutil.rmtree(test_settings.serving_dir, ignore_errors=True)
    yield test_settings
    stop_all(test_settings)
    leftover = [h.pid for h in recorded_servers(test_settings) if is_model_server(h.pid)]
    assert leftover == [], f"model servers left running: {leftover}"


def register(settings: Settings, run_id: str, *, compared_to: str, gate: str = "blessed") -> str:
    """What ``register`` leaves: a version with lineage tags and the challenger alias."""
    from pipelines.tracking import client

    version = mlflow.register_model(
        f"runs:/{run_id}/model",
        settings.registered_model_name,
        tags={"gate": gate, "compared_to": compared_to, "approval": "pending"},
    )
    client(settings).set_registered_model_alias(
        settings.registered_model_name, "challenger", str(version.version)
    )
    return str(version.version)


def aliases(settings: Settings) -> dict[str, str]:
    from pipelines.tracking import client

    model = client(settings).get_registered_model(settings.registered_model_name)
    return {k: str(v) for k, v in model.aliases.items()}


def version_tags(settings: Settings, version: str) -> dict[str, str]:
    from pipelines.tracking import client

    return dict(client(settings).get_model_version(settings.registered_model_name, version).tags)


def classify(url: str, texts: list[str]) -> list[dict[str, object]]:
    payload = {"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return list(json.loads(response.read())["predictions"])


def serve_first(settings: Settings, store: Store) -> str:
    """Register, approve and promote good model A as the first champion; returns its pid."""
    version = register(settings, store.good_a, compared_to="none")
    approve(settings, version, "lead-a")
    outcome = promote_approved(settings, store.params)
    assert (outcome.action, outcome.version) == ("promoted", version)
    return version


def is_model_server(pid: int) -> bool:
    """The process runs (not a zombie) and is an `mlflow models serve` (or its uvicorn)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def serving_processes(version_uri: str) -> list[int]:
    """PIDs of any `models serve` process for ``version_uri`` (stray-process check)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "models serve" in cmdline and f"{version_uri} " in cmdline:
            found.append(int(entry.name))
    return found


# ------------------------------------------------------------------------------ promotion


def test_first_approved_version_is_served_and_aliased(settings: Settings, store: Store) -> None:
    version = register(settings, store.good_a, compared_to="none")

    # Pending: nothing happens, nothing starts.
    assert promote_approved(settings, store.params).action == "none"
    assert read_live(settings.live_file) is None and recorded_servers(settings) == []

    approve(settings, version, "lead-a")
    outcome = promote_approved(settings, store.params)

    assert outcome.action == "promoted" and outcome.version == version
    live = read_live(settings.live_file)
    assert live is not None
    assert (live.model_version, live.url) == (version, outcome.url)
    assert live.model_uri == f"models:/{settings.registered_model_name}/{version}"
    assert live.url.startswith("http://127.0.0.1:")
    assert is_model_server(live.pid)
    # One ONNX Runtime thread per request (the setting's default): the scoring server already
    # runs concurrent requests in threads of their own.
    environ = Path(f"/proc/{live.pid}/environ").read_bytes().split(b"\0")
    assert b"EMOREG_ONNX_THREADS=1" in environ
    assert b"EMOREG_ONNX_SPINNING=0" in environ  # idle threads sleep: the cores are shared
    answer = classify(live.url, ["快递太慢了，非常失望", "请问有现货吗？", "质量很好，非常满意"])
    assert [a["label"] for a in answer] == ["negative", "neutral", "positive"]
    assert all(set(a) == CONTRACT_COLUMNS for a in answer)
    assert aliases(settings) == {"champion": version}  # challenger consumed, no previous yet
    tags = version_tags(settings, version)
    assert tags["approval"] == "approved" and tags["approved_by"] == "lead-a"
    assert "promoted_at" in tags

    # Promoted once: a second run finds nothing to do and leaves the server alone.
    assert promote_approved(settings, store.params).action == "none"
    assert read_live(settings.live_file) == live


def test_promotion_under_load_then_rollback(settings: Settings, store: Store) -> None:
    first = serve_first(settings, store)
    first_pid = read_live(settings.live_file).pid  # type: ignore[union-attr]
    second = register(settings, store.good_b, compared_to=first)
    approve(settings, second, "lead-b")

    failures: list[str] = []
    served = 0
    stop = threading.Event()

    def steady_stream() -> None:
        nonlocal served
        while not stop.is_set():
            route = read_live(settings.live_file)
            assert route is not None
            try:
                if classify(route.url, ["质量太差了"])[0]["label"] != "negative":
                    failures.append("wrong label")
                served += 1
            except OSError as exc:
                failures.append(f"{route.url}: {exc}")

    client = threading.Thread(target=steady_stream)
    client.start()
    try:
        outcome = promote_approved(settings, store.params)
    finally:
        time.sleep(0.5)
        stop.set()
        client.join(timeout=30)

    assert failures == []
    assert served > 10
    assert (outcome.action, outcome.version, outcome.previous_version) == (
        "promoted",
        second,
        first,
    )
    assert aliases(settings) == {"champion": second, "previous": first}
    live = read_live(settings.live_file)
    assert live is not None and live.model_version == second
    assert not is_model_server(first_pid)  # the old server was retired after the drain

    outcome = rollback(settings, store.params, "complaints about wrong labels")

    assert (outcome.action, outcome.version, outcome.previous_version) == (
        "rolled_back",
        first,
        second,
    )
    restored = read_live(settings.live_file)
    assert restored is not None and restored.model_version == first
    assert restored.reason == "rollback: complaints about wrong labels"
    assert classify(restored.url, ["质量太差了"])[0]["label"] == "negative"
    assert not is_model_server(live.pid)
    assert aliases(settings) == {"champion": first, "previous": second}
    assert version_tags(settings, second)["rollback_reason"] == "complaints about wrong labels"


def test_rollback_without_previous_is_refused(settings: Settings, store: Store) -> None:
    serve_first(settings, store)
    before = settings.live_file.read_bytes()
    with pytest.raises(PromotionError, match="nothing to roll back to"):
        rollback(settings, store.params, "just because")
    assert settings.live_file.read_bytes() == before


# ------------------------------------------------------------------------------ approvals


def test_approvals_are_checked_against_their_evidence(settings: Settings, store: Store) -> None:
    from pipelines.tracking import client

    first = serve_first(settings, store)
    route = settings.live_file.read_bytes()
    mlflow_client = client(settings)
    name = settings.registered_model_name

    # Evaluated while there was no champion: the comparison it was approved on is gone.
    stale = register(settings, store.good_b, compared_to="none")
    approve(settings, stale, "lead-b")
    outcome = promote_approved(settings, store.params)
    assert (outcome.action, outcome.version) == ("refused", stale)
    assert version_tags(settings, stale)["approval"] == "refused:stale-champion"

    unsigned = register(settings, store.good_b, compared_to=first)
    mlflow_client.set_model_version_tag(name, unsigned, "approval", "approved")
    assert promote_approved(settings, store.params).action == "refused"
    assert version_tags(settings, unsigned)["approval"] == "refused:unsigned"

    rejected = register(settings, store.good_b, compared_to=first, gate="rejected")
    approve(settings, rejected, "lead-b")
    assert promote_approved(settings, store.params).action == "refused"
    assert version_tags(settings, rejected)["approval"] == "refused:gate-not-passed"

    older = register(settings, store.good_b, compared_to=first)
    register(settings, store.good_b, compared_to=first)  # takes the challenger alias
    approve(settings, older, "lead-b")
    assert promote_approved(settings, store.params).action == "refused"
    assert version_tags(settings, older)["approval"] == "refused:not-challenger"

    # None of these touched what serves.
    assert settings.live_file.read_bytes() == route
    assert aliases(settings)["champion"] == first


def test_check_approval_accepts_a_fresh_signed_blessed_challenger(
    settings: Settings, store: Store
) -> None:
    from pipelines.tracking import client

    version = register(settings, store.good_a, compared_to="none")
    approve(settings, version, "lead-a")
    mlflow_client = client(settings)
    model_version = mlflow_client.get_model_version(settings.registered_model_name, version)
    check = check_approval(mlflow_client, settings.registered_model_name, model_version)
    assert (check.valid, check.reason) == (True, "")


def test_approve_needs_a_name_and_an_existing_version(settings: Settings, store: Store) -> None:
    version = register(settings, store.good_a, compared_to="none")
    with pytest.raises(ValueError, match="approver"):
        approve(settings, version, "  ")
    with pytest.raises(ValueError, match="no version '99'"):
        approve(settings, "99", "lead-a")
    assert version_tags(settings, version)["approval"] == "pending"


# ------------------------------------------------------------------------------ faults


def assert_untouched(settings: Settings, route: bytes, champion: str, new_version: str) -> None:
    assert settings.live_file.read_bytes() == route
    assert aliases(settings).get("champion") == champion
    live = read_live(settings.live_file)
    assert live is not None
    assert classify(live.url, ["质量太差了"])[0]["label"] == "negative"
    uri = f"models:/{settings.registered_model_name}/{new_version}"
    assert serving_processes(uri) == []
    assert [h.version for h in recorded_servers(settings)] == [champion]


def test_failed_smoke_test_leaves_the_old_champion_serving(
    settings: Settings, store: Store
) -> None:
    first = serve_first(settings, store)
    route = settings.live_file.read_bytes()
    bad = register(settings, store.constant, compared_to=first)
    approve(settings, bad, "lead-b")

    with pytest.raises(PromotionError, match=r"smoke test .* failed"):
        promote_approved(settings, store.params)

    assert_untouched(settings, route, first, bad)
    assert aliases(settings)["challenger"] == bad


def test_server_that_never_gets_ready_leaves_the_old_champion(
    settings: Settings, store: Store
) -> None:
    first = serve_first(settings, store)
    route = settings.live_file.read_bytes()
    second = register(settings, store.good_b, compared_to=first)
    approve(settings, second, "lead-b")
    impatient = settings.model_copy(update={"model_server_ready_timeout_s": 0.2})

    with pytest.raises(PromotionError, match="not ready after"):
        promote_approved(impatient, store.params)

    assert_untouched(settings, route, first, second)


def test_missing_model_artifact_is_refused_cleanly(settings: Settings, store: Store) -> None:
    from pipelines.tracking import client

    first = serve_first(settings, store)
    route = settings.live_file.read_bytes()
    broken = register(settings, store.good_b, compared_to=first)
    approve(settings, broken, "lead-b")
    source = client(settings).get_model_version_download_uri(settings.registered_model_name, broken)
    backup = Path(str(source).removeprefix("file://")).with_suffix(".bak")
    shutil.move(str(source).removeprefix("file://"), backup)
    try:
        with pytest.raises(PromotionError, match="exited before it was ready"):
            promote_approved(settings, store.params)
    finally:
        shutil.move(backup, str(source).removeprefix("file://"))

    assert_untouched(settings, route, first, broken)


def test_port_taken_by_another_process_is_retried_on_a_free_one(
    settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    ports = iter([taken])
    real_free_port = server_module.free_port
    monkeypatch.setattr(
        server_module, "free_port", lambda host: next(ports, None) or real_free_port(host)
    )
    try:
        serve_first(settings, store)
    finally:
        squatter.close()

    live = read_live(settings.live_file)
    assert live is not None and live.port != taken
    logs = sorted((settings.serving_dir / "logs").glob("*.log"))
    assert any("address already in use" in p.read_text().lower() for p in logs)


def test_two_promotions_at_once_only_one_runs(settings: Settings, store: Store) -> None:
    version = register(settings, store.good_a, compared_to="none")
    approve(settings, version, "lead-a")
    with promotion_lock(settings):
        with pytest.raises(PromotionBusy, match="another promotion"):
            promote_approved(settings, store.params)
        assert ensure_serving(settings, store.params).action == "none"
    assert read_live(settings.live_file) is None
    assert version_tags(settings, version)["approval"] == "approved"  # still waiting


# ------------------------------------------------------------------------------ supervisor


def test_supervisor_restarts_a_dead_champion_server(settings: Settings, store: Store) -> None:
    assert ensure_serving(settings, store.params).action == "none"  # no champion yet
    first = serve_first(settings, store)
    assert ensure_serving(settings, store.params).action == "healthy"
    dead = read_live(settings.live_file)
    assert dead is not None
    os.killpg(dead.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while is_model_server(dead.pid) and time.monotonic() < deadline:
        time.sleep(0.1)

    outcome = ensure_serving(settings, store.params)

    assert (outcome.action, outcome.version) == ("restarted", first)
    live = read_live(settings.live_file)
    assert live is not None and live.pid != dead.pid and live.model_version == first
    assert classify(live.url, ["质量太差了"])[0]["label"] == "negative"
    assert aliases(settings) == {"champion": first}


def test_cli_status_and_stop(
    settings: Settings,
    store: Store,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipelines.cli import main
    from pipelines.settings import get_settings

    serve_first(settings, store)
    monkeypatch.setenv("EMOREG_REGISTERED_MODEL_NAME", settings.registered_model_name)
    get_settings.cache_clear()
    try:
        assert main(["serving-status", "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["live_answers"] is True
        assert status["aliases"] == {"champion": "1"}
        pid = status["live"]["pid"]
        assert main(["serving-stop"]) == 0
        assert f"stopped 1 model server(s): [{pid}]" in capsys.readouterr().out
        assert not is_model_server(pid)
        assert main(["rollback", "--reason", "x"]) == 2  # nothing to roll back to
    finally:
        get_settings.cache_clear()
