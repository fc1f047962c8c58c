"""The production path: the same migrations and ingest against the PostgreSQL server of CI."""

from __future__ import annotations

import os
import uuid
from datetime import datetime

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from pipelines.data.ingest import RAW_FILE, ingest
from pipelines.partitions import Interval, partition_dir
from pipelines.store.db import assert_migrated, make_engine, upgrade
from pipelines.store.models import FeedbackSource
from tests.store.store_rows import add_feedback, add_message, add_prediction

pytestmark = pytest.mark.postgres

SERVER_URL = os.environ.get(
    "EMOREG_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def postgres_url():
    """A private schema in the shared test database, dropped afterwards."""
    schema = f"emoreg_{uuid.uuid4().hex[:12]}"
    admin = create_engine(SERVER_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{SERVER_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_migrations_and_ingest_on_postgres(settings, postgres_url):
    upgrade(postgres_url)
    upgrade(postgres_url)  # idempotent
    engine = make_engine(postgres_url)
    assert_migrated(engine)
    add_message(engine, "m1", "快递三天了还没到", datetime(2026, 11, 2, 9))
    add_prediction(engine, "m1", "neutral", datetime(2026, 11, 2, 9))
    add_feedback(
        engine, "m1", datetime(2026, 11, 2, 10), label="negative", source=FeedbackSource.agent
    )
    interval = Interval.parse("2026-11-02", "2026-11-03")
    ingest(engine, interval, settings.partitions_dir)
    raw = pd.read_parquet(partition_dir(settings.partitions_dir, interval) / RAW_FILE)
    assert raw[["message_id", "label", "label_source"]].values.tolist() == [
        ["m1", "negative", "agent_correction"]
    ]
    engine.dispose()
