"""The main job through Airflow: retrain, approve as the demo ML lead, promote, show the result."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

import httpx

from pipelines.params import load_params
from scripts.platform.airflow_api import (
    FAILED_TASK_STATES,
    AirflowClient,
    TaskChange,
    readable_log_tail,
    task_log_file,
)
from scripts.platform.config import (
    PROMOTE_DAG,
    RETRAIN_DAG,
    ROLLBACK_DAG,
    PlatformConfig,
    PlatformError,
)
from scripts.platform.steps import run_step, serving_status

DEMO_APPROVER = "demo-ml-lead"
EXAMPLE_TEXT = "快递三天了还没到，太失望了"


def retrain_conf(cfg: PlatformConfig, max_train_rows: int | None) -> dict[str, Any]:
    """The retrain run's conf: the params.yaml ingest interval (+ the quick profile's cap)."""
    ingest = load_params(cfg.repo / "params.yaml").ingest
    conf: dict[str, Any] = {"start": ingest.start.isoformat(), "end": ingest.end.isoformat()}
    if max_train_rows is not None:
        conf["max_train_rows"] = max_train_rows
    return conf


class _RunWatch:
    """Prints a run's state changes, and which runs it waits behind while queued."""

    def __init__(self, client: AirflowClient, dag_id: str, run_id: str) -> None:
        self.client, self.dag_id, self.run_id = client, dag_id, run_id
        self.start = time.monotonic()
        self.state = ""
        self.blockers: set[str] = set()
        self.next_check = 0.0

    def stamp(self) -> str:
        return f"[{time.monotonic() - self.start:5.0f} s]"

    def __call__(self, state: str) -> None:
        if state != self.state:
            self.state = state
            print(f"  {self.stamp()} {'(dag run)':<16} {state}", flush=True)
        if state == "queued" and time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + 10
            for run in self.client.active_runs(self.dag_id):
                other = str(run["dag_run_id"])
                if other != self.run_id and other not in self.blockers:
                    self.blockers.add(other)
                    print(f"  {self.stamp()} waits for {other} ({run['state']}): one run at a time")

    def task(self, change: TaskChange) -> None:
        took = f"{change.duration_s:7.1f} s" if change.duration_s is not None else ""
        tries = f"  (try {change.try_number})" if change.try_number > 1 else ""
        print(f"  {self.stamp()} {change.task_id:<16} {change.state:<16} {took}{tries}", flush=True)


def follow(cfg: PlatformConfig, client: AirflowClient, dag_id: str, run_id: str) -> bool:
    """Follow a run to its end; on failure print the failed task, its log file and its tail."""
    watch = _RunWatch(client, dag_id, run_id)
    state, tis = client.wait_run(dag_id, run_id, watch.task, watch)
    if state == "success":
        print(f"{dag_id}: success ({time.monotonic() - watch.start:.0f} s)")
        return True
    failed = [ti for ti in tis if ti.get("state") in FAILED_TASK_STATES] or tis
    first = next((ti for ti in failed if ti.get("state") == "failed"), None)
    first = first or (failed[0] if failed else None)
    print(f"{dag_id}: run {run_id} {state}")
    if first is not None:
        log = task_log_file(cfg.airflow_home, dag_id, run_id, first)
        print(f"  failed task: {first['task_id']} (try {first.get('try_number')})")
        print(f"  log: {log}")
        print(f"  UI:  {client.task_url(dag_id, run_id, str(first['task_id']))}")
        if log.exists():
            print(f"  last lines:\n{readable_log_tail(log)}")
    return False


def run_dag(
    cfg: PlatformConfig,
    client: AirflowClient,
    dag_id: str,
    conf: dict[str, Any],
    run_after: datetime | None = None,
) -> bool:
    """Trigger ``dag_id`` by REST and follow the run."""
    run_id = client.trigger(dag_id, conf, run_after)
    print(f"\n{dag_id}: triggered run {run_id} conf={json.dumps(conf)}", flush=True)
    return follow(cfg, client, dag_id, run_id)


def _registry_base(cfg: PlatformConfig) -> str:
    uri = cfg.mlflow_backend_uri
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else cfg.mlflow_url


def alias_version(cfg: PlatformConfig, alias: str) -> dict[str, Any] | None:
    """The model version holding ``alias`` (its tags as a dict), via the MLflow server."""
    url = f"{_registry_base(cfg)}/api/2.0/mlflow/registered-models/alias"
    params = {"name": cfg.registered_model, "alias": alias}
    try:
        response = httpx.get(url, params=params, timeout=10.0)
    except httpx.HTTPError as exc:
        raise PlatformError(f"MLflow server at {url} unreachable: {exc}") from exc
    if response.status_code != 200:
        return None
    version: dict[str, Any] = response.json().get("model_version", {})
    version["tags"] = {tag["key"]: tag["value"] for tag in version.get("tags", [])}
    return version


def approve_challenger(cfg: PlatformConfig) -> str | None:
    """Approve a pending challenger as the demo ML lead; the version to promote, if any."""
    challenger = alias_version(cfg, "challenger")
    champion = alias_version(cfg, "champion")
    if challenger is None:
        serving = f"version {champion['version']} stays champion" if champion else "no champion"
        print(f"\nno challenger waits for approval ({serving})")
        return None
    version = str(challenger["version"])
    approval = challenger["tags"].get("approval", "")
    if champion is not None and str(champion["version"]) == version:
        print(f"\nversion {version} is already the champion")
        return None
    if approval == "pending":
        print(f"\napproving version {version} as the demo ML lead", flush=True)
        done = run_step(cfg, "approve", "--version", version, "--by", DEMO_APPROVER)
        if done is None:
            return None
        if done.returncode != 0:
            raise PlatformError(f"python -m pipelines approve failed ({done.returncode})")
        return version
    if approval == "approved":
        print(f"\nversion {version} is approved already: promoting it")
        return version
    print(f"\nchallenger version {version} has approval={approval or '(none)'}: not promoting")
    return None


def wait_for_dags(client: AirflowClient) -> None:
    print("\nwaiting for the dag-processor to parse the DAGs...", flush=True)
    for dag_id in (RETRAIN_DAG, PROMOTE_DAG):
        client.wait_for_dag(dag_id)
        print(f"  {dag_id}: parsed")


def unpause_dags(client: AirflowClient) -> None:
    """Unpause retrain and promote (and rollback, if present: it runs only when triggered)."""
    dags = [RETRAIN_DAG, PROMOTE_DAG]
    dags += [ROLLBACK_DAG] if client.get_dag(ROLLBACK_DAG) is not None else []
    for dag_id in dags:
        client.unpause(dag_id)
    print(f"  unpaused: {', '.join(dags)}", flush=True)


def retrain(cfg: PlatformConfig, client: AirflowClient, max_train_rows: int | None) -> bool:
    """Trigger the retrain run, then unpause the DAGs, then follow the run.

    The run's ``run_after`` is the end of its data interval: when the DAG is unpaused the
    scheduler may create its own run for the latest schedule interval, and queued runs start
    in ``run_after`` order (one at a time): ours, on the older interval, goes first.
    """
    conf = retrain_conf(cfg, max_train_rows)
    end = date.fromisoformat(conf["end"])
    run_after = datetime(end.year, end.month, end.day, tzinfo=UTC)
    run_id = client.trigger(RETRAIN_DAG, conf, run_after)
    unpause_dags(client)
    print(f"\n{RETRAIN_DAG}: triggered run {run_id} conf={json.dumps(conf)}", flush=True)
    return follow(cfg, client, RETRAIN_DAG, run_id)


def ensure_serving(cfg: PlatformConfig) -> None:
    """The champion's model server up again after a restart (a no-op when none or running)."""
    print("\npython -m pipelines serving-ensure", flush=True)
    ensured = run_step(cfg, "serving-ensure")
    if ensured is not None and ensured.returncode != 0:
        print(f"  warning: serving-ensure failed ({ensured.returncode}); going on")


def main_job(cfg: PlatformConfig, client: AirflowClient, max_train_rows: int | None) -> int:
    ensure_serving(cfg)
    wait_for_dags(client)
    if not retrain(cfg, client, max_train_rows):
        return 1
    version = approve_challenger(cfg)
    if version is not None and not promote(cfg, client):
        return 1
    summary(cfg, serving_status(cfg))
    return 0


def promote(cfg: PlatformConfig, client: AirflowClient) -> bool:
    """Trigger the promote DAG, follow it, and say what its ``promote`` task decided."""
    run_id = client.trigger(PROMOTE_DAG, {})
    print(f"\n{PROMOTE_DAG}: triggered run {run_id}", flush=True)
    if not follow(cfg, client, PROMOTE_DAG, run_id):
        return False
    outcome = client.xcom(PROMOTE_DAG, run_id, "promote")
    if isinstance(outcome, dict):
        version = f" version {outcome['version']}" if outcome.get("version") else ""
        reason = f": {outcome['reason']}" if outcome.get("reason") else ""
        print(f"  promote: {outcome.get('action')}{version}{reason}")
        if outcome.get("action") == "none":
            print("  (a scheduled or asset-triggered promote run may have promoted it already)")
    return True


def _example(url: str) -> None:
    payload = json.dumps(
        {"dataframe_split": {"columns": ["text"], "data": [[EXAMPLE_TEXT]]}}, ensure_ascii=False
    )
    endpoint = f"{url.rstrip('/')}/invocations"
    print("\nexample classification:")
    print(f"  curl -s -X POST {endpoint} -H 'Content-Type: application/json' -d '{payload}'")
    if shutil.which("curl"):
        argv = ["curl", "-s", "-m", "60", "-X", "POST", endpoint]
        argv += ["-H", "Content-Type: application/json", "-d", payload]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        answer = done.stdout.strip() or f"(curl exit {done.returncode}) {done.stderr.strip()}"
    else:
        answer = httpx.post(endpoint, content=payload.encode(), timeout=60.0).text
    print(f"  -> {answer}")


def summary(cfg: PlatformConfig, live: dict[str, Any]) -> None:
    model_page = f"{cfg.mlflow_url}/#/models/{quote(cfg.registered_model)}"
    print("\n" + "=" * 72)
    print(f"Airflow        {cfg.airflow_url}")
    print(f"  login        user {cfg.airflow_user}, password in {cfg.password_file}")
    print(f"  password     {_password(cfg)}")
    print(f"MLflow UI      {cfg.mlflow_url}")
    print(f"  model page   {model_page}")
    if live.get("url"):
        version, pid = live.get("model_version"), live.get("pid")
        print(f"served model   version {version}: {live['url']}/invocations (pid {pid})")
        if answers_ping(f"{live['url']}/ping"):
            _example(str(live["url"]))
        else:
            print("  it does not answer: python -m pipelines serving-ensure (or make start)")
    else:
        print("served model   none yet (no champion: approve a challenger, then promote)")
    _service_example(cfg)
    print(f"logs           {cfg.logs_dir}/ and {cfg.airflow_home / 'logs'}/")
    print("stop           make stop      status: make status")


SERVICE_EXAMPLE = {
    "conversation_id": "demo-1",
    "message_id": "demo-1-m1",  # a rerun of `make run` gets the same answer, stored once
    "text": "快递五天了还没到，太慢了，什么情况？",
    "context": {"order_id": "20261201000123456", "product": "蓝牙耳机"},
}


def _service_example(cfg: PlatformConfig) -> None:
    """The regulation service's URL, the demo keys, and one real message through it."""
    print(f'regulation API {cfg.service_url}/docs  (keys: eval "$(make -s api-keys)")')
    if not answers_ping(f"{cfg.service_url}/healthz"):
        print("  it does not answer: make start; its log is in", cfg.logs_dir)
        return
    keys = json.loads(cfg.demo_keys_file.read_text())
    payload = json.dumps(SERVICE_EXAMPLE, ensure_ascii=False)
    print(
        f'  curl -s -X POST $EMOREG_SERVICE/v1/messages -H "X-API-Key: $EMOREG_CHAT_KEY" '
        f"-H 'Content-Type: application/json' -d '{payload}'"
    )
    try:
        answer = httpx.post(
            f"{cfg.service_url}/v1/messages",
            content=payload.encode(),
            headers={"X-API-Key": keys["chat_app"], "Content-Type": "application/json"},
            timeout=30.0,
        ).text
    except httpx.HTTPError as exc:
        answer = f"(no answer: {exc})"
    print(f"  -> {answer}")


def answers_ping(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _password(cfg: PlatformConfig) -> str:
    try:
        return str(json.loads(cfg.password_file.read_text())[cfg.airflow_user])
    except (FileNotFoundError, ValueError, KeyError):
        return "(not generated yet)"
