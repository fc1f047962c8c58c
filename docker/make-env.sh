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
keys_out=$(dirname "$out")/compose-api-keys.env
python3 - "$out" "$keys_out" <<'PY'
import base64
import hashlib
import json
import os
import secrets
import sys

# The regulation service's API keys: the service gets only their SHA-256 digests
# (EMOREG_SERVICE_API_KEYS); the keys themselves go to a second file for the chat app and agents.
api_keys = {
    "EMOREG_CHAT_KEY": ("chat-app", ["messages"]),
    "EMOREG_AGENT_KEY": ("agent-desk", ["feedback", "read"]),
}
raw_keys = {variable: secrets.token_urlsafe(32) for variable in api_keys}
digests = [
    {"name": name, "sha256": hashlib.sha256(raw_keys[variable].encode()).hexdigest(), "scopes": scopes}
    for variable, (name, scopes) in api_keys.items()
]

values = {
    # URL-safe: it is written into database URLs as it is.
    "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
    "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(48),
    "AIRFLOW_API_SECRET_KEY": secrets.token_urlsafe(48),
    "AIRFLOW_FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    "AIRFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(18),
    "EMOREG_SERVICE_API_KEYS": json.dumps(digests, separators=(",", ":")),
}
with open(sys.argv[1], "x") as stream:
    stream.writelines(f"{name}={value}\n" for name, value in values.items())
with open(sys.argv[2], "w") as stream:
    stream.writelines(f"{name}={value}\n" for name, value in raw_keys.items())
PY
echo "wrote $out (the Airflow password of user admin is AIRFLOW_ADMIN_PASSWORD there)"
echo "wrote $keys_out (the regulation API's keys: EMOREG_CHAT_KEY, EMOREG_AGENT_KEY)"
