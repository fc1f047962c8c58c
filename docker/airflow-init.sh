#!/usr/bin/env bash
# The airflow-init one-shot of docker-compose.yml; idempotent, every other Airflow component
# starts after it has exited 0.
set -euo pipefail

airflow db migrate
# Promotion starts, checks and switches model servers: never two at once.
airflow pools set model_promotion 1 "One promotion or rollback at a time (model servers, live.json)"
# The chat store's schema (Alembic), so that the first DAG run finds its tables.
python -m pipelines db-upgrade

# The simple auth manager's passwords file (user admin, AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS)
# from the compose secret. The api-server opens the file for writing, so it lives on a volume,
# written atomically, readable by its owner only.
python - /run/secrets/airflow_admin_password "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?}" <<'PY'
import json
import os
import sys
from pathlib import Path

secret, target = Path(sys.argv[1]), Path(sys.argv[2])
password = secret.read_text().strip() if secret.is_file() else ""
if not password:
    sys.exit(f"error: {secret} is empty: set AIRFLOW_ADMIN_PASSWORD (docker/make-env.sh)")
target.parent.mkdir(parents=True, exist_ok=True)
partial = target.with_name(target.name + ".partial")
fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as stream:
    stream.write(json.dumps({"admin": password}) + "\n")
os.replace(partial, target)
print(f"airflow-init: password of user admin written to {target}")
PY
