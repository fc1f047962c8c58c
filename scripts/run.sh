#!/usr/bin/env bash
# The main job on the embedded default, through Airflow: set-up, chat store, simulated traffic,
# the bootstrap corpus, then the platform (Airflow api-server, scheduler, dag-processor,
# triggerer; the MLflow UI), all on 127.0.0.1 and kept running; then the retrain DAG by REST,
# the demo ML lead's approval, the promote DAG, and the served model's answer to one example.
#
#   scripts/run.sh            the full retrain (train on all prepared rows)
#   scripts/run.sh --quick    train on a stratified sample of ${QUICK_ROWS:-2000} rows
#
# Idempotent: a second run reuses the running processes (started 0) and what DVC/MLflow hold.
# Stop everything with `make stop`; see it with `make status`.
set -euo pipefail
cd "$(dirname "$0")/.."
job_args=()
if [[ "${1:-}" == "--quick" ]]; then job_args=(--max-train-rows "${QUICK_ROWS:-2000}"); shift; fi

scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
python -m pipelines db-upgrade
python -m pipelines simulate
# prepare (a DAG task) reads data/bootstrap/corpus.parquet; DVC skips this when it is up to date
dvc repro bootstrap
exec python -m scripts.platform run "${job_args[@]}" "$@"
