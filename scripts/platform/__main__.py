"""``python -m scripts.platform COMMAND``: start, run, stop, status, mlflow-ui, env, api-keys,
trigger."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import httpx

from scripts.platform.airflow_api import AirflowClient
from scripts.platform.config import (
    PlatformConfig,
    PlatformError,
    load_config,
)
from scripts.platform.job import answers_ping, ensure_serving, main_job, run_dag, summary
from scripts.platform.lifecycle import recorded_names, start, status_rows, stop_named
from scripts.platform.procs import members, records
from scripts.platform.services import (
    AIRFLOW_COMPONENTS,
    airflow_env,
    airflow_password,
    demo_api_keys,
    mlflow_service,
    platform_services,
    prepare_regulation_service,
)
from scripts.platform.steps import read_live_file, run_step, serving_status

# Signalled together; listed scheduler first (no new task starts), the api-server last.
_AIRFLOW_STOP_ORDER = tuple(reversed(AIRFLOW_COMPONENTS))


def _client(cfg: PlatformConfig) -> AirflowClient:
    return AirflowClient(cfg.airflow_url, cfg.airflow_user, airflow_password(cfg))


def start_platform(cfg: PlatformConfig) -> None:
    """Every service up (reusing what runs), then the one-slot promotion pool."""
    began = time.monotonic()
    print(f"platform: starting (state in {cfg.platform_dir})", flush=True)
    airflow_password(cfg)  # the login exists before the api-server first starts
    prepare_regulation_service(cfg)  # its store and keys exist before the service starts
    outcome = start(cfg, platform_services(cfg))
    client = _client(cfg)
    try:
        pool = client.ensure_pool(cfg.promotion_pool, 1, "one promotion or rollback at a time")
    finally:
        client.close()
    started = [name for name, how in outcome.items() if how == "started"]
    print(f"  pool {cfg.promotion_pool} (1 slot): {pool}")
    print(
        f"platform: ready in {time.monotonic() - began:.1f} s "
        f"(started {len(started)}, reused {len(outcome) - len(started)})",
        flush=True,
    )


def cmd_start(cfg: PlatformConfig, _args: argparse.Namespace) -> int:
    start_platform(cfg)
    ensure_serving(cfg)
    summary(cfg, serving_status(cfg))
    return 0


def cmd_run(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    start_platform(cfg)
    client = _client(cfg)
    try:
        return main_job(cfg, client, args.max_train_rows)
    finally:
        client.close()


def cmd_trigger(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    client = _client(cfg)
    try:
        client.wait_for_dag(args.dag_id, timeout_s=args.parse_timeout)
        if args.unpause:
            client.unpause(args.dag_id)
        return 0 if run_dag(cfg, client, args.dag_id, json.loads(args.conf)) else 1
    finally:
        client.close()


def cmd_stop(cfg: PlatformConfig, _args: argparse.Namespace) -> int:
    before = records(cfg)
    print("platform: stopping", flush=True)
    # Airflow first (no task starts a model server after this), then the model servers.
    # The regulation service first: no chat message arrives while the rest goes down.
    survivors = stop_named(cfg, ["regulation", *_AIRFLOW_STOP_ORDER, "mlflow"])
    print("python -m pipelines serving-stop", flush=True)
    stopped = run_step(cfg, "serving-stop")
    if stopped is not None and stopped.returncode != 0:
        survivors.append(f"model servers (serving-stop exit {stopped.returncode})")
    survivors += stop_named(cfg, recorded_names(cfg))  # anything else with a PID file
    left = [proc.pid for record in before for proc in members(record)]
    if survivors or left:
        print(f"error: still running: {survivors or left}", file=sys.stderr)
        return 1
    print("platform: stopped; no platform process left")
    return 0


def cmd_status(cfg: PlatformConfig, args: argparse.Namespace) -> int:
    rows = status_rows(cfg, platform_services(cfg))
    live = read_live_file(cfg)
    if args.json:
        print(json.dumps({"services": [asdict(row) for row in rows], "live": live}, indent=1))
        return 0
    print(f"{'service':<22} {'pid':>7} {'port':>6}  state")
    for row in rows:
        pid, port = row.pid or "-", row.port or "-"
        print(f"{row.name:<22} {pid:>7} {port:>6}  {row.state:<22} {row.url}")
    if live:
        answers = "answers" if answers_ping(f"{live.get('url')}/ping") else "DOES NOT ANSWER"
        print(f"live model: version {live.get('model_version')} at {live.get('url')} "
              f"(pid {live.get('pid')}, since {live.get('started_at')}; {answers})")  # fmt: skip
    else:
        print("live model: none (no var/serving/live.json)")
    print(f"logs: {cfg.logs_dir}")
    return 0


def cmd_mlflow_ui(cfg: PlatformConfig, _args: argparse.Namespace) -> int:
    if not cfg.embedded_mlflow:
        print(f"the tracking store is {cfg.mlflow_backend_uri}: open its own UI")
        return 0
    start(cfg, [mlflow_service(cfg)])
    print(f"MLflow UI: {cfg.mlflow_url}  (stop everything with: make stop)")
    return 0


def cmd_env(cfg: PlatformConfig, _args: argparse.Namespace) -> int:
    """Shell exports for running the ``airflow`` CLI against this platform."""
    for key, value in sorted(airflow_env(cfg).items()):
        if "SECRET" not in key:
            print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_api_keys(cfg: PlatformConfig, _args: argparse.Namespace) -> int:
    """Shell exports of the demo API keys and the service's URL (for the README's curls)."""
    keys = demo_api_keys(cfg)
    print(f"export EMOREG_SERVICE={shlex.quote(cfg.service_url)}")
    print(f"export EMOREG_CHAT_KEY={shlex.quote(keys['chat_app'])}")
    print(f"export EMOREG_AGENT_KEY={shlex.quote(keys['agent'])}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts.platform", description=__doc__)
    parser.add_argument(
        "--dags-folder", type=Path, help="DAG folder (default: the repo's dags/ or "
        "$EMOREG_PLATFORM_DAGS_FOLDER); used when Airflow starts",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="start (or reuse) Airflow and the MLflow UI")
    run = sub.add_parser("run", help="start, then retrain -> approve -> promote through Airflow")
    run.add_argument("--max-train-rows", type=int, help="train on a sample (quick profile)")
    trigger = sub.add_parser("trigger", help="trigger a DAG by REST and follow it")
    trigger.add_argument("dag_id")
    trigger.add_argument("--conf", default="{}", help="JSON conf of the run")
    trigger.add_argument("--unpause", action="store_true", help="unpause the DAG first")
    trigger.add_argument("--parse-timeout", type=float, default=180.0)
    sub.add_parser("stop", help="stop every platform process and model server")
    status = sub.add_parser("status", help="what runs, and the live model")
    status.add_argument("--json", action="store_true")
    sub.add_parser("mlflow-ui", help="start (or reuse) the MLflow UI only")
    sub.add_parser("env", help="print exports for the airflow CLI")
    sub.add_parser("api-keys", help="print exports of the demo API keys of the service")
    return parser


COMMANDS = {
    "start": cmd_start,
    "run": cmd_run,
    "trigger": cmd_trigger,
    "stop": cmd_stop,
    "status": cmd_status,
    "mlflow-ui": cmd_mlflow_ui,
    "env": cmd_env,
    "api-keys": cmd_api_keys,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.dags_folder)
        return COMMANDS[args.command](cfg, args)
    except PlatformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"error: HTTP {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; the platform's processes keep running (make stop)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    sys.exit(main())
