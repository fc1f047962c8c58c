from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from pipelines.store.db import StoreError, assert_migrated, make_engine, session_scope, upgrade
from pipelines.store.models import Conversation, Feedback, FeedbackSource, Message, Role


def test_upgrade_creates_tables_and_is_idempotent(settings):
    upgrade(settings.database_url)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    assert {"conversations", "messages", "predictions", "feedback"} <= set(
        inspect(engine).get_table_names()
    )
    assert_migrated(engine)


def test_missing_sqlite_store_is_a_clear_error(settings):
    with pytest.raises(StoreError, match="db-upgrade"):
        make_engine(settings.database_url)


def test_unmigrated_store_is_a_clear_error(settings):
    engine = make_engine(settings.database_url, create_dir=True)
    with pytest.raises(StoreError, match="lacks tables"):
        assert_migrated(engine)


def test_feedback_needs_a_label_or_a_rating(store_url):
    engine = make_engine(store_url)
    now = datetime(2026, 11, 1, 12)
    with session_scope(engine) as session:
        session.add(Conversation(id="c1", started_at=now))
        session.add(
            Message(
                id="m1", conversation_id="c1", turn=0, role=Role.customer, text="hi", created_at=now
            )
        )
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(Feedback(id="f1", message_id="m1", source=FeedbackSource.agent, created_at=now))
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(
            Feedback(
                id="f2", message_id="m1", rating=9, source=FeedbackSource.customer, created_at=now
            )
        )


def test_message_needs_its_conversation(store_url):
    engine = make_engine(store_url)
    with pytest.raises(IntegrityError), session_scope(engine) as session:
        session.add(
            Message(
                id="m1",
                conversation_id="missing",
                turn=0,
                role=Role.customer,
                text="hi",
                created_at=datetime(2026, 11, 1),
            )
        )
