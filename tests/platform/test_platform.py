"""The platform's process machinery, for real: start -> status -> reuse -> a DAG run -> stop.

MLflow's server and Airflow's four components run on free ports of 127.0.0.1 with var/ and a
throwaway DAG folder in a temporary directory; afterwards none of their processes may be left.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from scripts.platform.airflow_api import AirflowClient, readable_log_tail
from scripts.platform.config import PlatformError, load_config
from scripts.platform.procs import Record, leader, members, port_in_use, read_record, records

REPO = Path(__file__).resolve().parents[2]
Done = subprocess.CompletedProcess[str]
SERVICES = (
    "mlflow",
    "airflow-api",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "regulation",
)
PORT_KEYS = ("EMOREG_MLFLOW_UI_URL", "EMOREG_AIRFLOW_URL", "EMOREG_SERVICE_PORT")

SMOKE_DAG = """
from datetime import datetime

from airflow.sdk import dag, task


@dag(dag_id="platform_smoke", schedule=None, start_date=datetime(2026, 1, 1), catchup=False)
def platform_smoke():
    @task
    def first(**context):
        return context["params"].get("x", 0)

    @task(pool="model_promotion")
    def second(value, **context):
        from pipelines.run_notes import write_run_note
        from pipelines.settings import get_settings

        print("got", value)
        ti = context["ti"]
        assert write_run_note(get_settings(), ti.dag_id, ti.run_id, "x" * 1200 + str(value))

    second(first())


platform_smoke()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _platform(env: dict[str, str], *args: str, timeout: float = 240) -> Done:
    return subprocess.run(
        [sys.executable, "-m", "scripts.platform", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _env(tmp: Path, mlflow_port: int, airflow_port: int) -> dict[str, str]:
    dags = tmp / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "platform_smoke.py").write_text(SMOKE_DAG)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMOREG_", "AIRFLOW"))}
    return env | {
        "EMOREG_VAR_DIR": str(tmp / "var"),
        "EMOREG_DATA_DIR": str(tmp / "data"),
        "EMOREG_MLFLOW_UI_URL": f"http://127.0.0.1:{mlflow_port}",
        "EMOREG_AIRFLOW_URL": f"http://127.0.0.1:{airflow_port}",
        "EMOREG_SERVICE_PORT": str(_free_port()),
        "EMOREG_PLATFORM_DAGS_FOLDER": str(dags),
    }


@pytest.fixture
def platform_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = _env(tmp_path, _free_port(), _free_port())
    yield env
    # Safety net: whatever the test did, leave no process behind.
    _platform(env, "stop")
    pids = tmp_path / "var" / "platform" / "pids"
    for path in pids.glob("*.json"):
        record = Record(**json.loads(path.read_text()))
        for proc in members(record):
            proc.kill()


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    return [
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids
    ]


def test_start_status_reuse_run_stop(platform_env: dict[str, str]) -> None:
    env = platform_env
    started = _platform(env, "start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "started 6, reused 0" in started.stdout
    cfg_var = Path(env["EMOREG_VAR_DIR"])
    first = {name: read_record_at(cfg_var, name) for name in SERVICES}
    assert all(record is not None and leader(record) for record in first.values())

    everything = {proc.pid for record in first.values() if record for proc in members(record)}
    addresses = _listening(everything)
    ports = {int(env[key].rsplit(":", 1)[-1]) for key in PORT_KEYS}
    assert ports <= {port for _ip, port in addresses}
    assert {ip for ip, _port in addresses} == {"127.0.0.1"}, addresses

    status = _platform(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    states = {row["name"]: row["state"] for row in json.loads(status.stdout)["services"]}
    assert states == dict.fromkeys(SERVICES, "healthy")

    # The regulation service answers with the demo key; with no champion served yet, degraded.
    keys = json.loads((cfg_var / "platform" / "demo_api_keys.json").read_text())
    answer = httpx.post(
        f"http://127.0.0.1:{env['EMOREG_SERVICE_PORT']}/v1/messages",
        json={"conversation_id": "p-1", "text": "太差了，垃圾"},
        headers={"X-API-Key": keys["chat_app"]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["degraded"] is True
    assert answer.json()["emotion"]["label"] == "negative"

    again = _platform(env, "start")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "started 0, reused 6" in again.stdout
    assert {name: read_record_at(cfg_var, name) for name in SERVICES} == first

    run = _platform(env, "trigger", "platform_smoke", "--unpause", "--conf", '{"x": 3}')
    assert run.returncode == 0, run.stdout + run.stderr
    assert "second" in run.stdout and "platform_smoke: success" in run.stdout
    # The task wrote its run's note through the REST API, cut to Airflow's 1000 characters.
    password_file = cfg_var / "airflow" / "simple_auth_manager_passwords.json"
    password = json.loads(password_file.read_text())["admin"]
    client = AirflowClient(env["EMOREG_AIRFLOW_URL"], "admin", password)
    try:
        runs = client.request("GET", "/api/v2/dags/platform_smoke/dagRuns").json()["dag_runs"]
    finally:
        client.close()
    assert [r["note"] for r in runs] == ["x" * 999 + "…"]

    stopped = _platform(env, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for record in first.values():
        assert record is not None
        assert leader(record) is None
        assert members(record) == []
    assert not any(port_in_use(port) for port in ports)
    assert not list((cfg_var / "platform" / "pids").glob("*.json"))

    twice = _platform(env, "stop")
    assert twice.returncode == 0, twice.stdout + twice.stderr


def read_record_at(var_dir: Path, name: str) -> Record | None:
    path = var_dir / "platform" / "pids" / f"{name}.json"
    return Record(**json.loads(path.read_text())) if path.exists() else None


def test_port_taken_gives_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = _env(tmp_path, port, _free_port())
        done = _platform(env, "mlflow-ui", timeout=60)
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "EMOREG_MLFLOW_UI_URL" in done.stderr
    assert not list((tmp_path / "var" / "platform" / "pids").glob("*.json"))


def test_non_local_urls_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOREG_AIRFLOW_URL", "http://0.0.0.0:8080")
    with pytest.raises(PlatformError, match=r"binds 127\.0\.0\.1 only"):
        load_config()


def test_a_reused_pid_is_not_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    me = psutil.Process()
    assert leader(Record("x", me.pid, me.create_time(), None, "now")) is not None
    assert leader(Record("x", me.pid, me.create_time() - 100, None, "earlier")) is None
    monkeypatch.setenv("EMOREG_VAR_DIR", str(tmp_path))
    cfg = load_config()
    (cfg.pids_dir).mkdir(parents=True)
    (cfg.pids_dir / "broken.json").write_text("{not json")
    assert read_record(cfg, "broken") is None
    assert records(cfg) == []


def test_task_log_tail_is_readable(tmp_path: Path) -> None:
    log = tmp_path / "attempt=1.log"
    frames = [{"filename": "d.py", "lineno": 3}]
    error = {"exc_type": "ValueError", "exc_value": "boom", "frames": frames}
    lines = [
        {"timestamp": "2026-12-02T17:08:08.1Z", "level": "info", "event": "start"},
        {"timestamp": "2026-12-02T17:08:09.1Z", "level": "error", "event": "failed"},
    ]
    lines[1]["error_detail"] = [error]
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\nplain line\n")
    tail = readable_log_tail(log)
    assert "17:08:09 error   failed" in tail
    assert "ValueError: boom  (d.py:3)" in tail
    assert tail.endswith("plain line")
