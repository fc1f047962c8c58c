# One image for the pipeline steps and the MLflow tracking server of the production stack.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 \
    PATH=/app/.venv/bin:$PATH
RUN apt-get update && apt-get install -y --no-install-recommends gcc git && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.lock pyproject.toml ./
RUN python -m venv .venv && .venv/bin/pip install -q uv==0.13.9 \
 && .venv/bin/uv pip sync --python .venv/bin/python requirements.lock \
      --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match
COPY . .
RUN .venv/bin/uv pip install --python .venv/bin/python --no-deps -e . \
 && python -m pipelines convert-base-model
