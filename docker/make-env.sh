#!/usr/bin/env bash
# Writes the production stack's secrets, freshly generated, to an env file (default
# var/compose.env: var/ is git-ignored, so they never reach the repository), then:
#   docker compose --env-file var/compose.env up -d
# An existing file is left as it is (the database and Airflow already hold these values).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/var/compose.env}
if [[ -e $out ]]; then
    echo "$out exists, left as it is"
    exit 0
fi
mkdir -p "$(dirname "$out")"
umask 077
python3 - "$out" <<'PY'
import base64
import os
import secrets
import sys

values = {
    # URL-safe: it is written into database URLs as it is.
    "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
    "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(48),
    "AIRFLOW_API_SECRET_KEY": secrets.token_urlsafe(48),
    "AIRFLOW_FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(18),
}
with open(sys.argv[1], "x") as stream:
    stream.writelines(f"{name}={value}\n" for name, value in values.items())
PY
echo "wrote $out (the Airflow password of user admin is AIRFLOW_ADMIN_PASSWORD there)"
