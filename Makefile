.PHONY: setup run quick test lint format lock bench mlflow-ui

setup:  ## virtualenv from the lock file + converted base model
	scripts/setup.sh

run:  ## the main job on the embedded default (idempotent)
	scripts/run.sh

quick:  ## the main job with training on a 2,000-row sample (about five minutes)
	scripts/run.sh --quick

test:  ## lint, type check and the whole test suite (what CI runs)
	scripts/test.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

format:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

lock:  ## re-resolve requirements.lock after editing pyproject.toml
	.venv/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
		--find-links /opt/wheels -o requirements.lock

mlflow-ui:  ## the MLflow UI of the embedded default on http://127.0.0.1:5000
	MLFLOW_DISABLE_TELEMETRY=true .venv/bin/mlflow ui --backend-store-uri sqlite:///var/mlflow.db \
		--host 127.0.0.1 --port 5000

bench:  ## benchmarks (print figures): training speed choices, then quality vs the baseline
	.venv/bin/python bench/train_speed.py
	.venv/bin/python bench/quality.py
