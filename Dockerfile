# One image for the whole production stack (docker-compose.yml): the pipeline steps, the MLflow
# tracking server, every Airflow component (api-server, scheduler with its LocalExecutor workers,
# dag-processor, triggerer) and the model servers that promotion starts in the scheduler.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 \
    AIRFLOW_HOME=/opt/airflow \
    EMOREG_MODELS_DIR=/opt/emoreg/models \
    PATH=/app/.venv/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends gcc git && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 50000 --gid 0 --create-home --home-dir /home/emoreg emoreg
WORKDIR /app
# The lock pins torch==2.13.0+cpu, which only the PyTorch CPU index has; best-match lets the other
# packages come from PyPI even where that index carries a copy.
COPY requirements.lock pyproject.toml ./
RUN python -m venv .venv && .venv/bin/pip install -q --no-cache-dir uv==0.13.9 \
 && .venv/bin/uv pip sync --no-cache --python .venv/bin/python requirements.lock \
      --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match
COPY . .
# The base model is converted into the image (EMOREG_MODELS_DIR, outside every volume, so a new
# image brings its own). The folders that become named volumes are created here, owned by the
# runtime user, so that Docker seeds the volumes with that owner.
RUN .venv/bin/uv pip install --no-cache --python .venv/bin/python --no-deps -e . \
 && python -m pipelines convert-base-model \
 && mkdir -p /app/data /app/var/serving /opt/airflow/logs /opt/airflow/auth /mlartifacts \
 && chown -R emoreg:0 /app/data /app/var /opt/airflow /opt/emoreg /mlartifacts
USER emoreg
EXPOSE 5000 8080
