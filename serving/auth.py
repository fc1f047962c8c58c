"""API keys: only their SHA-256 digests are stored; each key carries scopes.

Scopes: ``messages`` (chat apps: ``POST /v1/messages``), ``feedback`` (agents and customer
surveys: ``POST /v1/feedback``), ``read`` (agents: ``GET /v1/conversations/{id}``).
The keys file (settings ``service_api_keys_file``) is a JSON list of
``{"name": ..., "sha256": ..., "scopes": [...]}``; ``python -m serving create-key`` appends one.
Settings ``service_api_keys`` (``EMOREG_SERVICE_API_KEYS``, the same JSON) adds more: Compose
passes the digests that ``docker/make-env.sh`` generated that way.
Keys are 32 random bytes, so one unsalted SHA-256 is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCOPES = ("messages", "feedback", "read")
API_KEY_HEADER = "X-API-Key"


class KeysFileError(ValueError):
    """The API keys file is missing, unreadable or malformed."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    scopes: frozenset[str]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def load_keys(path: Path, digests: Sequence[Any] = ()) -> list[ApiKey]:
    """The keys of the keys file (when it exists) plus ``digests`` from settings; at least one."""
    keys = [ApiKey(d.name, d.sha256.lower(), frozenset(d.scopes)) for d in digests]
    if path.is_file():
        try:
            keys += [
                ApiKey(str(e["name"]), str(e["sha256"]).lower(), frozenset(e["scopes"]))
                for e in json.loads(path.read_text(encoding="utf-8"))
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise KeysFileError(f"the API keys file {path} is malformed: {exc}") from exc
    elif not keys:
        raise KeysFileError(
            f"no API keys file at {path} and none in EMOREG_SERVICE_API_KEYS: "
            "create a key with `python -m serving create-key`"
        )
    for key in keys:
        unknown = key.scopes - set(SCOPES)
        if unknown or len(key.sha256) != 64:
            raise KeysFileError(
                f"API key {key.name!r} ({path} or EMOREG_SERVICE_API_KEYS) has unknown scopes "
                f"{sorted(unknown)} or a digest that is not 64 hex characters"
            )
    return keys


def find_key(keys: list[ApiKey], presented: str) -> ApiKey | None:
    """The key whose digest matches, compared in constant time."""
    presented_digest = digest(presented)
    found = None
    for key in keys:
        if hmac.compare_digest(key.sha256, presented_digest):
            found = key
    return found


def create_key(path: Path, name: str, scopes: list[str]) -> str:
    """Append a new key to the keys file and return it: the only time it is ever shown."""
    entries = _entries(path)
    if any(e["name"] == name for e in entries):
        raise KeysFileError(f"a key named {name!r} exists in {path} already")
    key = new_key()
    register_key(path, name, key, scopes)
    return key


def new_key() -> str:
    return secrets.token_urlsafe(32)


def register_key(path: Path, name: str, key: str, scopes: list[str]) -> None:
    """Make ``key`` (by its digest) the key named ``name``, replacing an older key of that name."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise KeysFileError(f"scopes must be some of {list(SCOPES)}, got {scopes}")
    entry = {"name": name, "sha256": digest(key), "scopes": sorted(scopes)}
    entries = _entries(path)
    if entry in entries:
        return
    entries = [e for e in entries if e["name"] != name] + [entry]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(entries, indent=2) + "\n")
    tmp.replace(path)


def _entries(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise KeysFileError(f"the API keys file {path} is malformed: {exc}") from exc
    if not isinstance(entries, list):
        raise KeysFileError(f"the API keys file {path} must hold a JSON list")
    return entries
