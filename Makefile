.PHONY: setup run quick start stop status mlflow-ui airflow-env api-keys serve test lint format lock bench bench-seeds bench-domains bench-learning-curve

setup:  ## virtualenv from the lock file + converted base model
	scripts/setup.sh

PLATFORM = HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 \
	.venv/bin/python -m scripts.platform

run:  ## the main job through Airflow: retrain, approve (demo), promote, serve (idempotent)
	scripts/run.sh

quick:  ## the same with training on a 2,000-row sample (QUICK_ROWS to change it)
	scripts/run.sh --quick

start:  ## start (or reuse) the platform: Airflow, the MLflow UI, the regulation service
	$(PLATFORM) start

stop:  ## stop every process the platform started (Airflow, MLflow UI, model servers)
	@if [ -x .venv/bin/python ]; then $(PLATFORM) stop; else echo "no .venv: nothing started"; fi

status:  ## what runs (name, pid, port, health) and which model version is live
	$(PLATFORM) status

airflow-env:  ## exports for the airflow CLI on this platform: eval "$$(make -s airflow-env)"
	@$(PLATFORM) env

api-keys:  ## exports of the service URL and demo API keys: eval "$$(make -s api-keys)"
	@$(PLATFORM) api-keys

serve:  ## the regulation service alone, in the foreground (settings: EMOREG_SERVICE_*)
	HF_HUB_OFFLINE=1 .venv/bin/python -m serving serve

test:  ## lint, type check and the whole test suite (what CI runs)
	scripts/test.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

format:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

lock:  ## re-resolve requirements.lock after editing pyproject.toml
	.venv/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
		--find-links /opt/wheels -o requirements.lock

mlflow-ui:  ## start (or reuse) the MLflow UI on http://127.0.0.1:5000 (stopped by make stop)
	$(PLATFORM) mlflow-ui

bench:  ## benchmarks (print figures): training speed, quality vs the baseline, inference speed and serving (need a champion), PII redaction
	.venv/bin/python bench/train_speed.py
	.venv/bin/python bench/quality.py
	.venv/bin/python bench/inference_speed.py
	.venv/bin/python bench/serving.py
	.venv/bin/python bench/pii_corpus.py

bench-seeds:  ## train's model with 3 seeds: singles, ensemble, weight soup on validation (needs make run; 3 trainings)
	.venv/bin/python bench/seed_averaging.py

bench-domains:  ## leave one kind of shop out of training, score its reviews: transformer, n-gram, blend (3 trainings)
	.venv/bin/python bench/domain_transfer.py

bench-learning-curve:  ## 4 simulated weeks, a retrain after each, in its own platform (about an hour)
	.venv/bin/python bench/learning_curve.py
