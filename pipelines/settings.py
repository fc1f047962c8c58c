"""Environment settings: the one place where paths, URLs and service names are configured.

Every field can be overridden by an environment variable prefixed ``EMOREG_`` (for example
``EMOREG_DATABASE_URL=postgresql+psycopg://127.0.0.1:5432/test``). The embedded default needs no
variable at all: SQLite and local folders under the repository's ``var/`` and ``data/``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ApiKeyDigest(BaseModel):
    """An API key of the regulation service as it is stored: its SHA-256, never the key."""

    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[str]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMOREG_", extra="ignore")

    project_root: Path = PROJECT_ROOT
    var_dir: Path = Field(default=PROJECT_ROOT / "var", description="runtime state, never in git")
    data_dir: Path = Field(default=PROJECT_ROOT / "data", description="DVC-tracked datasets")
    params_path: Path = PROJECT_ROOT / "params.yaml"
    expectations_dir: Path = PROJECT_ROOT / "expectations"

    database_url: str = Field(default="", description="SQLAlchemy URL of the chat store")
    models_dir: Path = Field(default=Path(), description="converted base models live here")

    mlflow_tracking_uri: str = ""
    mlflow_artifacts_dir: Path = Field(default=Path())
    mlflow_experiment: str = "emotion-classifier"
    registered_model_name: str = "emotion-classifier"
    mlflow_ui_url: str = Field(
        default="http://127.0.0.1:5000", description="where people open the MLflow UI (links)"
    )

    # Airflow: schedules of the DAGs and the API that `make run` talks to.
    retrain_schedule: str = Field(default="@daily", description="cron or preset of the retrain DAG")
    promote_schedule: str = Field(
        default="*/5 * * * *", description="how often the promote DAG looks for an approval"
    )
    airflow_url: str = "http://127.0.0.1:8080"
    promotion_pool: str = Field(
        default="model_promotion", description="one-slot pool of promotions and rollbacks"
    )
    airflow_user: str = Field(
        default="admin", description="the platform's Airflow account (login, run notes)"
    )
    airflow_password_file: Path = Field(
        default=Path(), description="the simple auth manager's JSON {user: password} file"
    )

    # Model servers started by promotion (blue/green), one `mlflow models serve` per version.
    model_server_host: str = "127.0.0.1"
    model_server_ready_timeout_s: float = Field(default=180.0, gt=0)
    model_server_drain_s: float = Field(
        default=5.0, ge=0, description="the old server keeps answering this long after a switch"
    )
    model_server_request_timeout_s: float = Field(default=30.0, gt=0)
    model_server_onnx_threads: int = Field(
        default=1,
        ge=1,
        description="ONNX Runtime threads per request in a model server: the scoring server "
        "already runs concurrent requests in threads of their own (see bench/serving.py)",
    )
    model_server_onnx_spinning: bool = Field(
        default=False,
        description="let a model server's idle ONNX Runtime threads spin (faster wake-up, busy "
        "cores): only with several threads per request and cores of its own",
    )
    smoke_cases_path: Path = Field(
        default=PROJECT_ROOT / "expectations" / "smoke.yaml",
        description="texts whose labels a new server must return before it is switched in",
    )

    # The regulation service (serving/): where it listens, who may call it, how it degrades.
    service_host: str = "127.0.0.1"
    service_port: int = Field(default=8000, ge=1, le=65535)
    service_workers: int = Field(
        default=1, ge=1, description="uvicorn workers; one batches best (see bench/serving.py)"
    )
    service_api_keys_file: Path = Field(
        default=Path(), description="JSON list of {name, sha256, scopes}: hashed API keys"
    )
    service_api_keys: list[ApiKeyDigest] = Field(
        default_factory=list,
        description="more hashed keys, as JSON in EMOREG_SERVICE_API_KEYS (Compose uses this)",
    )
    service_max_body_bytes: int = Field(default=16_384, gt=0)
    service_max_text_chars: int = Field(default=2_000, gt=0)
    service_deadline_s: float = Field(
        default=1.0, gt=0, description="a message's emotion comes from the model within this"
    )
    service_batch_max_size: int = Field(default=32, ge=1)
    service_batch_max_wait_ms: float = Field(
        default=2.0, ge=0, description="how long a batch waits for company before it is sent"
    )
    service_batch_max_inflight: int = Field(default=2, ge=1)
    service_breaker_failures: int = Field(
        default=3, ge=1, description="consecutive failed or slow model calls that open the circuit"
    )
    service_breaker_backoff_s: float = Field(default=0.5, gt=0)
    service_breaker_backoff_max_s: float = Field(default=30.0, gt=0)
    service_policy_path: Path = PROJECT_ROOT / "serving" / "policy.yaml"
    service_templates_path: Path = PROJECT_ROOT / "serving" / "templates.yaml"
    service_fallback_lexicon_path: Path = PROJECT_ROOT / "serving" / "fallback_lexicon.yaml"
    llm_base_url: str = Field(
        default="", description="OpenAI-compatible API (…/v1); empty: replies from templates"
    )
    llm_model: str = ""
    llm_api_key: SecretStr | None = None
    llm_timeout_s: float = Field(default=3.0, gt=0)

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        # Defaults that depend on var_dir are derived here so that overriding var_dir alone
        # moves every embedded file with it.
        if not self.database_url:
            self.database_url = f"sqlite:///{self.var_dir / 'chats.db'}"
        if self.models_dir == Path():
            self.models_dir = self.var_dir / "models"
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{self.var_dir / 'mlflow.db'}"
        if self.mlflow_artifacts_dir == Path():
            self.mlflow_artifacts_dir = self.var_dir / "mlartifacts"
        if self.service_api_keys_file == Path():
            self.service_api_keys_file = self.serving_dir / "api_keys.json"
        if self.airflow_password_file == Path():
            self.airflow_password_file = self.airflow_home / "simple_auth_manager_passwords.json"
        return self

    @property
    def bootstrap_dir(self) -> Path:
        return self.data_dir / "bootstrap"

    @property
    def partitions_dir(self) -> Path:
        return self.data_dir / "partitions"

    @property
    def prepared_dir(self) -> Path:
        return self.data_dir / "prepared"

    @property
    def airflow_home(self) -> Path:
        """AIRFLOW_HOME of the platform that `make run` starts (metadata DB, logs, login)."""
        return self.var_dir / "airflow"

    @property
    def serving_dir(self) -> Path:
        """Model-server state: the live routing file, server records, logs, the promotion lock."""
        return self.var_dir / "serving"

    @property
    def service_url(self) -> str:
        return f"http://{self.service_host}:{self.service_port}"

    @property
    def live_file(self) -> Path:
        """The live routing file: which server answers for the champion (contract)."""
        return self.serving_dir / "live.json"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
