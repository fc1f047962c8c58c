"""Shared fixtures: every test gets its own var/ and data/ folders and a migrated SQLite store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from pipelines.settings import Settings, get_settings  # noqa: E402


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings pointing at a fresh temporary var/ and data/; get_settings() returns them."""
    monkeypatch.setenv("EMOREG_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("EMOREG_DATA_DIR", str(tmp_path / "data"))
    for name in ("DATABASE_URL", "MODELS_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_ARTIFACTS_DIR"):
        monkeypatch.delenv(f"EMOREG_{name}", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def store_url(settings: Settings) -> str:
    """A migrated, empty SQLite chat store."""
    from pipelines.store.db import upgrade

    upgrade(settings.database_url)
    return settings.database_url
