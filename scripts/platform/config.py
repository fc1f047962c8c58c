"""Where the platform's processes listen and keep their files (derived from pipelines' Settings)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pipelines.settings import Settings

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
DAGS_FOLDER_ENV = "EMOREG_PLATFORM_DAGS_FOLDER"  # a throwaway DAG folder (tests, trials)

RETRAIN_DAG = "retrain_emotion_classifier"
PROMOTE_DAG = "promote_emotion_classifier"
ROLLBACK_DAG = "rollback_emotion_classifier"


class PlatformError(RuntimeError):
    """A failure the user can act on; printed as one ``error:`` message, exit status 1."""


@dataclass(frozen=True)
class PlatformConfig:
    repo: Path
    var_dir: Path
    venv_bin: Path
    dags_folder: Path
    airflow_url: str
    mlflow_url: str
    mlflow_backend_uri: str
    mlflow_artifacts_dir: Path
    registered_model: str
    live_file: Path
    airflow_home: Path
    airflow_user: str
    password_file: Path  # the simple auth manager's {user: password}; tasks read it for notes
    promotion_pool: str
    service_url: str  # the regulation service (serving/)
    service_keys_file: Path  # hashed API keys the service accepts
    database_url: str

    @property
    def platform_dir(self) -> Path:
        return self.var_dir / "platform"

    @property
    def pids_dir(self) -> Path:
        return self.platform_dir / "pids"

    @property
    def logs_dir(self) -> Path:
        return self.platform_dir / "logs"

    @property
    def airflow_port(self) -> int:
        return _port(self.airflow_url)

    @property
    def mlflow_port(self) -> int:
        return _port(self.mlflow_url)

    @property
    def service_port(self) -> int:
        return _port(self.service_url)

    @property
    def demo_keys_file(self) -> Path:
        """The demo API keys in clear (mode 0600), for `make api-keys` and the README's curls."""
        return self.platform_dir / "demo_api_keys.json"

    @property
    def secrets_file(self) -> Path:
        return self.airflow_home / "secrets.json"

    @property
    def embedded_mlflow(self) -> bool:
        """True when the tracking store is a local SQLite file: then the UI server is ours."""
        return self.mlflow_backend_uri.startswith("sqlite:///")


def _port(url: str) -> int:
    parts = urlsplit(url)
    if parts.port is None:
        raise PlatformError(f"{url}: give an explicit port (http://127.0.0.1:PORT)")
    return parts.port


def _check_local(name: str, url: str) -> str:
    host = urlsplit(url).hostname or ""
    if host not in LOCAL_HOSTS:
        raise PlatformError(f"{name}={url}: the platform binds 127.0.0.1 only")
    return url.rstrip("/")


def load_config(dags_folder: Path | None = None) -> PlatformConfig:
    """The configuration from ``EMOREG_*`` settings; ``dags_folder`` overrides the repo's dags/."""
    settings = Settings()
    folder = dags_folder or Path(os.environ.get(DAGS_FOLDER_ENV) or settings.project_root / "dags")
    return PlatformConfig(
        repo=settings.project_root,
        var_dir=settings.var_dir.resolve(),
        # The venv's bin/ as invoked (not resolved: that would be the base interpreter's).
        venv_bin=Path(sys.executable).parent,
        dags_folder=folder.resolve(),
        airflow_url=_check_local("EMOREG_AIRFLOW_URL", settings.airflow_url),
        mlflow_url=_check_local("EMOREG_MLFLOW_UI_URL", settings.mlflow_ui_url),
        mlflow_backend_uri=settings.mlflow_tracking_uri,
        mlflow_artifacts_dir=settings.mlflow_artifacts_dir.resolve(),
        registered_model=settings.registered_model_name,
        live_file=settings.live_file,
        airflow_home=settings.airflow_home.resolve(),
        airflow_user=settings.airflow_user,
        password_file=settings.airflow_password_file.resolve(),
        promotion_pool=settings.promotion_pool,
        service_url=_check_local("EMOREG_SERVICE_HOST", settings.service_url),
        service_keys_file=settings.service_api_keys_file.resolve(),
        database_url=settings.database_url,
    )
