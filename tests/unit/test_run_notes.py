"""Run notes degrade to a log line when Airflow cannot be reached (the REST path itself is
exercised against a real api-server in tests/platform)."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from pipelines.run_notes import RunNoteError, put_run_note, write_run_note
from pipelines.settings import Settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_missing_login_file_is_named(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path)
    expected = tmp_path / "airflow" / "simple_auth_manager_passwords.json"
    with pytest.raises(RunNoteError, match=f"no password of 'admin' in {expected}"):
        put_run_note(settings, "d", "r", "note")


def test_unreachable_api_server_is_a_warning_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"ops": "secret"}))
    url = f"http://127.0.0.1:{_closed_port()}"
    settings = Settings(
        var_dir=tmp_path, airflow_url=url, airflow_user="ops", airflow_password_file=passwords
    )
    with caplog.at_level(logging.WARNING, logger="pipelines.run_notes"):
        assert write_run_note(settings, "retrain", "manual__1", "why") is False
    assert f"Airflow at {url} unreachable" in caplog.text


def test_wrong_user_in_login_file_is_named(tmp_path: Path) -> None:
    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({"admin": "secret"}))
    settings = Settings(var_dir=tmp_path, airflow_user="ops", airflow_password_file=passwords)
    with pytest.raises(RunNoteError, match="no password of 'ops'"):
        put_run_note(settings, "d", "r", "note")
