"""The platform's services (MLflow UI, Airflow's four components) and how each is judged healthy.

Airflow runs as separate processes, not ``airflow standalone`` (whose log servers bind 0.0.0.0):
LocalExecutor on SQLite (accepted by Airflow 3: the SequentialExecutor is gone), examples off,
four executor workers, the simple auth manager with one generated admin password, and a JWT secret
shared by every component (tasks authenticate to the api-server's execution API with it).
"""

from __future__ import annotations

import json
import os
import secrets
import string
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx

from scripts.platform.config import PlatformConfig, PlatformError
from scripts.platform.procs import Service, log_path, log_tail

AIRFLOW_COMPONENTS = (
    "airflow-api",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
# monitor/health key and heartbeat field of each component the api-server reports on
_HEALTH_KEYS = {
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag_processor",
    "airflow-triggerer": "triggerer",
}


def base_env(cfg: PlatformConfig) -> dict[str, str]:
    """This process's environment plus the venv on PATH and the offline switches."""
    env = dict(os.environ)
    env["PATH"] = f"{cfg.venv_bin}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(cfg.venv_bin.parent)
    env.update(
        HF_HUB_OFFLINE="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        DVC_NO_ANALYTICS="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def _private_json(path: Path, make: Callable[[], dict[str, str]]) -> dict[str, str]:
    """Read a small JSON file, creating it (mode 0600) with ``make()`` the first time."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(make(), handle)
        tmp.replace(path)
    return dict(json.loads(path.read_text()))


def airflow_secrets(cfg: PlatformConfig) -> dict[str, str]:
    return _private_json(
        cfg.secrets_file,
        lambda: {"jwt_secret": secrets.token_urlsafe(48), "secret_key": secrets.token_urlsafe(32)},
    )


def airflow_password(cfg: PlatformConfig) -> str:
    """The admin password, in the simple auth manager's own file format ``{"admin": "..."}``."""
    alphabet = string.ascii_letters + string.digits
    new = "".join(secrets.choice(alphabet) for _ in range(16))
    passwords = _private_json(cfg.password_file, lambda: {cfg.airflow_user: new})
    return passwords[cfg.airflow_user]


def airflow_env(cfg: PlatformConfig) -> dict[str, str]:
    """The ``AIRFLOW__*`` variables shared by every Airflow process we start."""
    keys = airflow_secrets(cfg)
    home = cfg.airflow_home
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(cfg.dags_folder),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{cfg.airflow_url}/execution/",
        "AIRFLOW__API__BASE_URL": cfg.airflow_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(cfg.airflow_port),
        "AIRFLOW__API__SECRET_KEY": keys["secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{cfg.airflow_user}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(cfg.password_file),
        # look for new DAG files every 30 s (default 300 s)
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    }


def _get_json(url: str) -> dict[str, object] | None:
    try:
        response = httpx.get(url, timeout=3.0)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3.0).status_code == 200
    except httpx.HTTPError:
        return False


def _component_ready(cfg: PlatformConfig, key: str) -> Callable[[float], bool]:
    """Healthy in the api-server's monitor with a heartbeat from this process (not a former one)."""

    def ready(created: float) -> bool:
        health = _get_json(f"{cfg.airflow_url}/api/v2/monitor/health") or {}
        part = health.get(key)
        if not isinstance(part, dict) or part.get("status") != "healthy":
            return False
        beat = part.get(f"latest_{key}_heartbeat")
        if not isinstance(beat, str):
            return False
        return datetime.fromisoformat(beat).timestamp() >= created - 2

    return ready


def mlflow_service(cfg: PlatformConfig) -> Service:
    """The MLflow UI: a lean tracking server on the embedded store the steps write to."""
    env = base_env(cfg) | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    argv = (
        str(cfg.venv_bin / "mlflow"), "server", "--workers", "1",
        "--backend-store-uri", cfg.mlflow_backend_uri,
        "--artifacts-destination", str(cfg.mlflow_artifacts_dir),
        "--host", "127.0.0.1", "--port", str(cfg.mlflow_port),
    )  # fmt: skip
    return Service(
        "mlflow",
        argv,
        env,
        lambda _created: _http_ok(f"{cfg.mlflow_url}/health"),
        port=cfg.mlflow_port,
        url=cfg.mlflow_url,
    )


def airflow_services(cfg: PlatformConfig) -> list[Service]:
    env = base_env(cfg) | airflow_env(cfg)
    airflow = str(cfg.venv_bin / "airflow")
    api = Service(
        "airflow-api",
        (airflow, "api-server", "-H", "127.0.0.1", "-p", str(cfg.airflow_port), "-w", "1"),
        env,
        lambda _created: _http_ok(f"{cfg.airflow_url}/api/v2/monitor/health"),
        port=cfg.airflow_port,
        url=cfg.airflow_url,
    )
    others = {
        "airflow-scheduler": (airflow, "scheduler", "--skip-serve-logs"),
        "airflow-dag-processor": (airflow, "dag-processor"),
        "airflow-triggerer": (airflow, "triggerer", "--skip-serve-logs"),
    }
    return [api] + [
        Service(name, argv, env, _component_ready(cfg, _HEALTH_KEYS[name]))
        for name, argv in others.items()
    ]


def regulation_service(cfg: PlatformConfig) -> Service:
    """The regulation service (serving/): chat apps' HTTP API in front of the live model."""
    return Service(
        "regulation",
        (str(cfg.venv_bin / "python"), "-m", "serving", "serve"),
        base_env(cfg),
        lambda _created: _http_ok(f"{cfg.service_url}/healthz"),
        port=cfg.service_port,
        url=cfg.service_url,
    )


def platform_services(cfg: PlatformConfig) -> list[Service]:
    """Every service, the MLflow UI first (only when the tracking store is the embedded one),
    the regulation service last."""
    mlflow = [mlflow_service(cfg)] if cfg.embedded_mlflow else []
    return mlflow + airflow_services(cfg) + [regulation_service(cfg)]


DEMO_KEYS = {
    "chat_app": ("demo-chat-app", ["messages"]),
    "agent": ("demo-agent", ["feedback", "read"]),
}


def demo_api_keys(cfg: PlatformConfig) -> dict[str, str]:
    """The demo chat-app and agent keys: in clear in a 0600 file of ours, hashed in the
    service's keys file (added there when missing)."""
    from serving.auth import register_key

    keys = _private_json(
        cfg.demo_keys_file, lambda: {role: secrets.token_urlsafe(32) for role in DEMO_KEYS}
    )
    for role, (name, scopes) in DEMO_KEYS.items():
        register_key(cfg.service_keys_file, name, keys[role], scopes)
    return keys


def prepare_regulation_service(cfg: PlatformConfig) -> None:
    """What the service needs before it starts: a migrated chat store and the demo keys."""
    from pipelines.store.db import upgrade

    upgrade(cfg.database_url)
    demo_api_keys(cfg)


def migrate_airflow_db(cfg: PlatformConfig) -> None:
    """``airflow db migrate`` (creates or upgrades var/airflow/airflow.db; about 4 s)."""
    cfg.dags_folder.mkdir(parents=True, exist_ok=True)
    log = log_path(cfg, "airflow-db-migrate")
    log.parent.mkdir(parents=True, exist_ok=True)
    env = base_env(cfg) | airflow_env(cfg)
    with log.open("ab") as out:
        done = subprocess.run(
            [str(cfg.venv_bin / "airflow"), "db", "migrate"],
            cwd=cfg.repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        raise PlatformError(f"airflow db migrate failed; last lines of {log}:\n{log_tail(log)}")
