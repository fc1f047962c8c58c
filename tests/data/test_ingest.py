from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime

import pandas as pd
import pytest

from pipelines.data.ingest import RAW_COLUMNS, RAW_FILE, ingest
from pipelines.partitions import Interval, partition_dir
from pipelines.store.db import StoreError, make_engine
from pipelines.store.models import FeedbackSource, Role
from tests.store.store_rows import add_feedback, add_message, add_prediction

DAY = Interval.parse("2026-11-02", "2026-11-03")


def at(day: int, hour: int) -> datetime:
    return datetime(2026, 11, day, hour)


@pytest.fixture
def engine(store_url):
    engine = make_engine(store_url)
    yield engine
    engine.dispose()


def read_raw(settings, interval=DAY) -> pd.DataFrame:
    return pd.read_parquet(partition_dir(settings.partitions_dir, interval) / RAW_FILE)


def test_label_precedence_agent_beats_customer_beats_prediction(settings, engine):
    add_message(engine, "m-agent", "东西坏了", at(2, 9))
    add_prediction(engine, "m-agent", "positive", at(2, 9))
    add_feedback(engine, "m-agent", at(2, 10), label="neutral", source=FeedbackSource.customer)
    add_feedback(engine, "m-agent", at(2, 11), label="negative", source=FeedbackSource.agent)
    add_message(engine, "m-cust", "请问几号发货", at(2, 9), conversation_id="c2")
    add_prediction(engine, "m-cust", "negative", at(2, 9))
    add_feedback(engine, "m-cust", at(2, 10), label="neutral", source=FeedbackSource.customer)
    add_message(engine, "m-pred", "很好用", at(2, 9), conversation_id="c3")
    add_prediction(engine, "m-pred", "positive", at(2, 9), score=0.95)
    add_message(engine, "m-none", "在吗", at(2, 9), conversation_id="c4")

    ingest(engine, DAY, settings.partitions_dir)
    raw = read_raw(settings).set_index("message_id")

    assert list(read_raw(settings).columns) == RAW_COLUMNS
    assert raw.loc["m-agent", ["label", "label_source", "source"]].tolist() == [
        "negative",
        "agent_correction",
        "feedback",
    ]
    assert raw.loc["m-cust", ["label", "label_source"]].tolist() == [
        "neutral",
        "customer_correction",
    ]
    assert raw.loc["m-pred", ["label", "label_source", "source"]].tolist() == [
        "positive",
        "prediction",
        "prediction",
    ]
    assert raw.loc["m-pred", "predicted_score"] == pytest.approx(0.95)
    assert pd.isna(raw.loc["m-none", "label"])
    assert raw.loc["m-none", "source"] == "unlabelled"


def test_latest_agent_correction_wins(settings, engine):
    add_message(engine, "m1", "还行吧", at(2, 9))
    add_feedback(engine, "m1", at(2, 10), label="positive")
    add_feedback(engine, "m1", at(2, 12), label="neutral")
    ingest(engine, DAY, settings.partitions_dir)
    assert read_raw(settings).loc[0, "label"] == "neutral"


def test_agent_turns_carry_ratings_but_no_label(settings, engine):
    add_message(engine, "m1", "您好，已为您处理", at(2, 9), role=Role.agent)
    add_prediction(engine, "m1", "neutral", at(2, 9))
    add_feedback(engine, "m1", at(2, 10), rating=5, source=FeedbackSource.customer)
    ingest(engine, DAY, settings.partitions_dir)
    row = read_raw(settings).iloc[0]
    assert row["role"] == "agent"
    assert pd.isna(row["label"])
    assert row["rating"] == 5


def test_interval_is_half_open_and_ignores_the_future(settings, engine):
    add_message(engine, "before", "a", at(1, 23))
    add_message(engine, "first", "b", at(2, 0), conversation_id="c2")
    add_message(engine, "last", "c", datetime(2026, 11, 2, 23, 59, 59), conversation_id="c3")
    add_message(engine, "after", "d", at(3, 0), conversation_id="c4")
    # Feedback after the interval must not change this interval's labels.
    add_feedback(engine, "first", at(3, 1), label="negative")
    ingest(engine, DAY, settings.partitions_dir)
    raw = read_raw(settings)
    assert sorted(raw["message_id"]) == ["first", "last"]
    assert raw["label"].isna().all()


def test_late_feedback_brings_an_older_message(settings, engine):
    add_message(engine, "old", "上周买的鞋开胶了", at(1, 8))
    add_feedback(engine, "old", at(2, 8), label="negative")
    result = ingest(engine, DAY, settings.partitions_dir)
    raw = read_raw(settings)
    assert raw["message_id"].tolist() == ["old"]
    assert raw.loc[0, "label"] == "negative"
    assert result.late_feedback_rows == 1


def test_reingest_overwrites_without_duplicates(settings, engine):
    add_message(engine, "m1", "a", at(2, 9))
    first = ingest(engine, DAY, settings.partitions_dir)
    before = read_raw(settings)
    second = ingest(engine, DAY, settings.partitions_dir)
    pd.testing.assert_frame_equal(before, read_raw(settings))
    assert first.rows == second.rows == 1
    # New feedback inside the interval is picked up by a rerun, still one row per message.
    add_feedback(engine, "m1", at(2, 10), label="positive")
    ingest(engine, DAY, settings.partitions_dir)
    after = read_raw(settings)
    assert len(after) == 1
    assert after.loc[0, "label"] == "positive"
    leftovers = [p.name for p in partition_dir(settings.partitions_dir, DAY).iterdir()]
    assert leftovers == [RAW_FILE]


def test_empty_interval_writes_an_empty_partition(settings, engine):
    result = ingest(engine, DAY, settings.partitions_dir)
    assert result.rows == 0
    assert list(read_raw(settings).columns) == RAW_COLUMNS


def test_missing_store_is_a_clear_error_and_writes_nothing(settings):
    with pytest.raises(StoreError, match="does not exist"):
        ingest(make_engine(settings.database_url), DAY, settings.partitions_dir)
    assert not settings.partitions_dir.exists()


def test_invalid_interval_is_rejected():
    with pytest.raises(ValueError, match="after its start"):
        Interval.parse("2026-11-03", "2026-11-02")


def test_cli_reports_a_missing_store_without_traceback(settings):
    env = {**os.environ, "EMOREG_VAR_DIR": str(settings.var_dir)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines",
            "ingest",
            "--start",
            "2026-11-02",
            "--end",
            "2026-11-03",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 2
    assert "db-upgrade" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_locked_store_is_a_clear_error_and_writes_nothing(settings, store_url):
    import sqlite3

    holder = sqlite3.connect(settings.var_dir / "chats.db")
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than we wait
    try:
        engine = make_engine(store_url, busy_timeout_s=0.1)
        with pytest.raises(StoreError, match="locked"):
            ingest(engine, DAY, settings.partitions_dir)
    finally:
        holder.rollback()
        holder.close()
    assert not settings.partitions_dir.exists()


def test_personal_data_is_redacted_before_the_partition_is_written(settings, engine):
    # A writer that bypassed the service (an import, an older client) left raw text behind.
    add_message(engine, "m-pii", "快递没到！电话13812345678，邮箱li.na@163.com", at(2, 9))
    add_message(engine, "m-wide", "ＯＲＤＥＲ　订单2026110112345678 Tel:021-64371234", at(2, 10))
    add_message(engine, "m-clean", "很好用", at(2, 11), conversation_id="c2")

    ingest(engine, DAY, settings.partitions_dir)
    texts = read_raw(settings).set_index("message_id")["text"].to_dict()

    # Worked out by hand: normalised (NFKC, whitespace), personal data replaced, order kept.
    assert texts == {
        "m-pii": "快递没到!电话<PHONE>,邮箱<EMAIL>",
        "m-wide": "ORDER 订单2026110112345678 Tel:<PHONE>",
        "m-clean": "很好用",
    }
    raw_bytes = (partition_dir(settings.partitions_dir, DAY) / RAW_FILE).read_bytes()
    assert b"13812345678" not in raw_bytes and b"li.na" not in raw_bytes
