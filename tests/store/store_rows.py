"""Builders of store rows for tests."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from pipelines.store.db import session_scope
from pipelines.store.models import (
    Conversation,
    Feedback,
    FeedbackSource,
    Message,
    Prediction,
    Role,
)


def add_message(
    engine: Engine,
    message_id: str,
    text: str,
    created_at: datetime,
    *,
    role: Role = Role.customer,
    conversation_id: str = "c1",
    turn: int = 0,
) -> None:
    with session_scope(engine) as session:
        if session.get(Conversation, conversation_id) is None:
            session.add(Conversation(id=conversation_id, started_at=created_at))
        session.add(
            Message(
                id=message_id,
                conversation_id=conversation_id,
                turn=turn,
                role=role,
                text=text,
                created_at=created_at,
            )
        )


def add_prediction(
    engine: Engine, message_id: str, label: str, created_at: datetime, score: float = 0.8
) -> None:
    rest = (1 - score) / 2
    probabilities = {name: rest for name in ("negative", "neutral", "positive")}
    probabilities[label] = score
    with session_scope(engine) as session:
        session.add(
            Prediction(
                id=f"p-{message_id}-{created_at.isoformat()}",
                message_id=message_id,
                model_version="1",
                label=label,
                score=score,
                probabilities=probabilities,
                strategy="answer",
                created_at=created_at,
            )
        )


def add_feedback(
    engine: Engine,
    message_id: str,
    created_at: datetime,
    *,
    label: str | None = None,
    rating: int | None = None,
    source: FeedbackSource = FeedbackSource.agent,
) -> None:
    with session_scope(engine) as session:
        session.add(
            Feedback(
                id=f"f-{message_id}-{source.value}-{created_at.isoformat()}",
                message_id=message_id,
                corrected_label=label,
                rating=rating,
                source=source,
                created_at=created_at,
            )
        )
