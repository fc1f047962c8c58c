"""`python -m serving serve` as its own process: starts from settings, logs JSON, stops by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pipelines.registry.live import LiveRoute, write_live
from pipelines.registry.server import free_port
from tests.serving.conftest import ModelServers, prepare_var, service_settings

ROOT = Path(__file__).resolve().parents[2]


def _env(root: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOREG_")}
    env.update(
        EMOREG_VAR_DIR=str(root / "var"),
        EMOREG_DATA_DIR=str(root / "data"),
        EMOREG_SERVICE_PORT=str(port),
    )
    return env


def test_serve_command_answers_and_logs_json_with_the_request_id(
    tmp_path: Path, model_servers: ModelServers
) -> None:
    settings = service_settings(tmp_path)
    chat, _ = prepare_var(settings)
    write_live(settings.live_file, LiveRoute.for_server(model_servers.v1, "test"))
    port = free_port("127.0.0.1")
    log_path = tmp_path / "service.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "serving", "serve"],
            cwd=ROOT,
            env=_env(tmp_path, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if process.poll() is not None:
                pytest.fail(f"the service exited: {log_path.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        answer = httpx.post(
            f"{url}/v1/messages",
            json={"conversation_id": "p1", "text": "质量很好，非常满意"},
            headers={"X-API-Key": chat, "X-Request-ID": "trace-42"},
            timeout=30,
        )
        assert answer.status_code == 200 and answer.json()["emotion"]["label"] == "positive"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    assert process.returncode is not None

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    request_lines = [line for line in lines if line.get("path") == "/v1/messages"]
    assert request_lines, log_path.read_text()
    assert request_lines[0]["request_id"] == "trace-42"
    assert request_lines[0]["status"] == 200 and request_lines[0]["duration_ms"] > 0
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)


def test_a_broken_policy_stops_start_up_with_a_clear_error(tmp_path: Path) -> None:
    settings = service_settings(tmp_path)
    prepare_var(settings)
    policy = tmp_path / "policy.yaml"
    policy.write_text("min_confidence: 1.5\n", encoding="utf-8")
    env = _env(tmp_path, free_port("127.0.0.1"))
    env["EMOREG_SERVICE_POLICY_PATH"] = str(policy)
    done = subprocess.run(
        [sys.executable, "-m", "serving", "serve"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "policy.yaml" in done.stdout + done.stderr
