#!/usr/bin/env bash
# The main job on the embedded default (SQLite, local files, local processes):
# set-up, chat store, simulated traffic, then the DVC pipeline (bootstrap, ingest, validate, prepare,
# train, evaluate, register). Idempotent: DVC skips every stage whose inputs did not change.
#
#   scripts/run.sh            the full job (train on all prepared rows)
#   scripts/run.sh --quick    the data stages under DVC, then train on a 2,000-row sample
#                             outside DVC: a first registered challenger in about five minutes
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
if [[ "${1:-}" == "--quick" ]]; then quick=1; shift; fi

scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
python -m pipelines db-upgrade
python -m pipelines simulate
if (( quick )); then
  dvc repro prepare
  python -m pipelines train --max-train-rows "${QUICK_ROWS:-2000}"
  python -m pipelines evaluate
  python -m pipelines register
else
  dvc repro "$@"
fi
cat <<'TXT'

Done. Look at the runs and the registered model in the MLflow UI:
  make mlflow-ui      then open http://127.0.0.1:5000
  (experiment "emotion-classifier"; Models > emotion-classifier, alias "challenger")
TXT
