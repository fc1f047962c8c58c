"""The service's reads and writes in the chat store (plain functions on a SQLAlchemy session).

Texts and context arrive here already normalised and redacted: nothing personal is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from pipelines.store.models import (
    Conversation,
    Feedback,
    FeedbackSource,
    Message,
    Prediction,
    Role,
)


@dataclass(frozen=True)
class PriorTurn:
    """An earlier customer turn with its (latest) prediction, as the policy needs it."""

    text: str
    reply: str | None
    label: str
    p_negative: float
    strategy: str
    escalate: bool
    topic: str | None


def prediction_id(message_id: str) -> str:
    """The service's prediction of a message has a fixed id: a second insert is refused."""
    return "svc-" + hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:40]


def get_message(session: Session, message_id: str) -> Message | None:
    return session.get(Message, message_id)


def service_prediction(session: Session, message_id: str) -> Prediction | None:
    return session.get(Prediction, prediction_id(message_id))


def add_customer_message(
    session: Session,
    *,
    message_id: str,
    conversation_id: str,
    customer_id: str | None,
    channel: str | None,
    text: str,
    context: dict[str, Any] | None,
    now: datetime,
) -> Message:
    """Store a customer message at the next turn, opening its conversation when new."""
    if session.get(Conversation, conversation_id) is None:
        session.add(
            Conversation(
                id=conversation_id,
                customer_id=customer_id,
                channel=channel or "chat",
                started_at=now,
            )
        )
        session.flush()
    last_turn = session.scalar(
        select(func.max(Message.turn)).where(Message.conversation_id == conversation_id)
    )
    message = Message(
        id=message_id,
        conversation_id=conversation_id,
        turn=0 if last_turn is None else last_turn + 1,
        role=Role.customer,
        text=text,
        context=context,
        created_at=now,
    )
    session.add(message)
    session.flush()
    return message


def prior_turns(session: Session, conversation_id: str, before_turn: int) -> list[PriorTurn]:
    """Customer turns before ``before_turn`` that have a prediction, oldest first."""
    messages = session.scalars(
        select(Message)
        .where(
            Message.conversation_id == conversation_id,
            Message.role == Role.customer,
            Message.turn < before_turn,
        )
        .order_by(Message.turn)
        .options(selectinload(Message.predictions))
    ).all()
    turns = []
    for message in messages:
        prediction = latest(message.predictions)
        if prediction is not None:
            turns.append(
                PriorTurn(
                    text=message.text,
                    reply=prediction.reply,
                    label=prediction.label,
                    p_negative=float(prediction.probabilities.get("negative", 0.0)),
                    strategy=prediction.strategy or "",
                    escalate=bool(prediction.escalate),
                    topic=prediction.topic,
                )
            )
    return turns


def latest(predictions: Sequence[Prediction]) -> Prediction | None:
    return max(predictions, key=lambda p: (p.created_at, p.id), default=None)


def add_feedback(
    session: Session,
    *,
    feedback_id: str,
    message_id: str,
    label: str | None,
    rating: int | None,
    source: FeedbackSource,
    now: datetime,
) -> Feedback:
    feedback = Feedback(
        id=feedback_id,
        message_id=message_id,
        corrected_label=label,
        rating=rating,
        source=source,
        created_at=now,
    )
    session.add(feedback)
    session.flush()
    return feedback


def load_conversation(session: Session, conversation_id: str) -> Conversation | None:
    return session.scalars(
        select(Conversation)
        .where(Conversation.id == conversation_id)
        .options(
            selectinload(Conversation.messages).selectinload(Message.predictions),
            selectinload(Conversation.messages).selectinload(Message.feedback),
        )
    ).one_or_none()
