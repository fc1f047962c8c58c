#!/usr/bin/env bash
# The test command (what .ci/run calls): set-up, lint, type check, then the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-model
export HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest "$@"
