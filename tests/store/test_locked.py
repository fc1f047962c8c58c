"""A SQLite chat store locked by another writer: every command that touches it ends in one clear
``StoreError`` line (as ingest does), never a traceback, and leaves the store as it was."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from pipelines.cli import main
from pipelines.data import simulate as simulate_module
from pipelines.data.simulate import TextPools, simulate
from pipelines.params import SimulateParams
from pipelines.settings import Settings
from pipelines.store import db
from pipelines.store.db import StoreError, make_engine, upgrade
from pipelines.store.models import Conversation, Message

LABELS = ("negative", "neutral", "positive")
POOLS = TextPools(
    negative=tuple(f"差评{i}：东西坏了" for i in range(10)),
    neutral=tuple(f"请问订单{i}什么时候发货？" for i in range(10)),
    positive=tuple(f"好评{i}：很好用" for i in range(10)),
)
PARAMS = SimulateParams.model_validate(
    {"seed": 5, "start": date(2026, 11, 1), "days": 1, "conversations_per_day": 4}
)


@pytest.fixture(autouse=True)
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every engine (the CLIs', Alembic's) waits 0.1 s for a lock instead of 15 s."""
    monkeypatch.setattr(db, "make_engine", functools.partial(make_engine, busy_timeout_s=0.1))


@pytest.fixture(autouse=True)
def small_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulate CLI gets small text pools instead of loading the corpora."""
    monkeypatch.setattr(simulate_module, "load_text_pools", lambda *_args, **_kwargs: POOLS)


@contextmanager
def locked(path: Path, mode: str) -> Iterator[None]:
    """Another connection holding the store: EXCLUSIVE blocks readers and writers, IMMEDIATE
    (a writer mid-transaction) blocks writers only."""
    holder = sqlite3.connect(path)
    holder.execute(f"BEGIN {mode}")
    try:
        yield
    finally:
        holder.rollback()
        holder.close()


def store_path(settings: Settings) -> Path:
    return settings.var_dir / "chats.db"


def row_counts(url: str) -> tuple[int, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conversations = conn.scalar(select(func.count()).select_from(Conversation))
            messages = conn.scalar(select(func.count()).select_from(Message))
    finally:
        engine.dispose()
    return int(conversations or 0), int(messages or 0)


def revision(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.scalar(text("SELECT version_num FROM alembic_version")))
    finally:
        engine.dispose()


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


# --- simulate ------------------------------------------------------------------------------------


def test_simulate_into_a_store_another_writer_holds_is_a_store_error(
    settings: Settings, store_url: str
) -> None:
    engine = make_engine(store_url, busy_timeout_s=0.1)
    with locked(store_path(settings), "IMMEDIATE"), pytest.raises(StoreError) as caught:
        simulate(engine, PARAMS, LABELS, pools=POOLS)
    message = str(caught.value)
    assert message.startswith(f"cannot write to the chat store at {store_url}: ")
    assert message.endswith("database is locked")
    assert "\n" not in message and "INSERT" not in message  # the reason, not the SQL
    engine.dispose()
    # The day's transaction was rolled back whole; once the lock is gone a rerun writes it all.
    assert row_counts(store_url) == (0, 0)
    report = simulate(make_engine(store_url), PARAMS, LABELS, pools=POOLS)
    assert report.conversations == 4 and report.inserted["conversations"] == 4
    assert row_counts(store_url) == (4, report.messages)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("IMMEDIATE", "cannot write to the chat store"),  # reads pass, the insert is refused
        ("EXCLUSIVE", "cannot reach the chat store"),  # even the schema check is refused
    ],
)
def test_simulate_cli_on_a_locked_store_prints_one_line(
    settings: Settings,
    store_url: str,
    capsys: pytest.CaptureFixture[str],
    mode: str,
    expected: str,
) -> None:
    with locked(store_path(settings), mode):
        assert main(["simulate", "--days", "1", "--start", "2026-11-01"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {expected} at {store_url}: ")
    assert line.endswith("database is locked")
    assert row_counts(store_url) == (0, 0)


# --- db-upgrade ----------------------------------------------------------------------------------


def test_db_upgrade_cli_on_a_locked_store_prints_one_line_and_migrates_nothing(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    url = settings.database_url
    upgrade(url, "0001")
    with locked(store_path(settings), "EXCLUSIVE"):
        assert main(["db-upgrade"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot migrate the chat store at {url}: ")
    assert line.endswith("database is locked")
    assert revision(url) == "0001"
    # Once the lock is gone the same command completes the migration.
    assert main(["db-upgrade"]) == 0
    assert revision(url) == "0002"


def test_db_upgrade_to_an_unknown_revision_is_a_store_error(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db-upgrade", "--revision", "9999"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: cannot migrate the chat store to '9999': ")
