#!/usr/bin/env bash
# The main job on the embedded default (SQLite, local files, local processes):
# set-up, chat store, simulated traffic, then the DVC pipeline (bootstrap, ingest, validate, prepare,
# train, evaluate, register). Idempotent: DVC skips every stage whose inputs did not change.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
python -m pipelines db-upgrade
python -m pipelines simulate
dvc repro "$@"
