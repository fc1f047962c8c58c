"""The service's reads and writes in the chat store (plain functions on a SQLAlchemy session,
or on a connection for the per-message path).

Texts and context arrive here already normalised and redacted: nothing personal is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Row, Table, bindparam, insert, or_, select
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


# --- the message path: Core statements on one connection ---------------------------------------
#
# Per customer message the service does one read and one write before calling the model and one
# write after it. The ORM's identity map and unit of work cost more than the statements here, so
# this path uses Core on the mapped tables (their column types still convert JSON, enums,
# booleans and timestamps).

_conversations = cast(Table, Conversation.__table__)
_messages = cast(Table, Message.__table__)
_predictions = cast(Table, Prediction.__table__)
# A result row of any shape (columns are read by name).
AnyRow = Row[*tuple[Any, ...]]

# Every message of the conversation (with its predictions), plus the message ``message_id``
# wherever it is: in one round trip the idempotency check, the next turn and the history.
_CONVERSATION_STATE = (
    select(
        _messages.c.id,
        _messages.c.conversation_id,
        _messages.c.turn,
        _messages.c.role,
        _messages.c.text,
        _predictions.c.id.label("prediction_id"),
        _predictions.c.message_id,
        _predictions.c.model_version,
        _predictions.c.label,
        _predictions.c.score,
        _predictions.c.probabilities,
        _predictions.c.strategy,
        _predictions.c.topic,
        _predictions.c.escalate,
        _predictions.c.reply,
        _predictions.c.request_id,
        _predictions.c.degraded,
        _predictions.c.created_at.label("predicted_at"),
    )
    .select_from(_messages.outerjoin(_predictions, _predictions.c.message_id == _messages.c.id))
    .where(
        or_(
            _messages.c.conversation_id == bindparam("conversation_id"),
            _messages.c.id == bindparam("message_id"),
        )
    )
    .order_by(_messages.c.turn)
)
_INSERT_MESSAGE = insert(_messages)
_INSERT_PREDICTION = insert(_predictions)
_SERVICE_PREDICTION = select(_predictions).where(_predictions.c.id == bindparam("id"))


@dataclass(frozen=True)
class StoredMessage:
    """A message as the service stored it."""

    id: str
    conversation_id: str
    turn: int
    role: str
    text: str


@dataclass(frozen=True)
class OpenedMessage:
    """The customer message ``message_id`` in the store, and what the policy needs about it.

    ``created`` is False when the message was stored before (a retry); then ``message`` is what
    was stored (the caller checks that it is the same message) and ``answer`` the service's
    prediction of it, when it got that far.
    """

    message: StoredMessage
    created: bool
    history: list[PriorTurn]
    answer: AnyRow | None


def open_customer_message(
    connection: Connection,
    *,
    message_id: str,
    conversation_id: str,
    customer_id: str | None,
    channel: str | None,
    text: str,
    context: dict[str, Any] | None,
    now: datetime,
) -> OpenedMessage:
    """Find the message ``message_id`` or store it at the conversation's next turn (opening the
    conversation when new); one query reads what both need. The caller commits."""
    rows = connection.execute(
        _CONVERSATION_STATE, {"conversation_id": conversation_id, "message_id": message_id}
    ).all()
    own = [row for row in rows if row.id == message_id]
    if own:
        first = own[0]
        stored = StoredMessage(first.id, first.conversation_id, first.turn, first.role, first.text)
        service_id = prediction_id(message_id)
        answer = next((row for row in own if row.prediction_id == service_id), None)
        history = _prior_turns(rows, conversation_id, stored.turn) if answer is None else []
        return OpenedMessage(stored, False, history, answer)
    turns = [row.turn for row in rows if row.conversation_id == conversation_id]
    if not turns:
        _open_conversation(connection, conversation_id, customer_id, channel or "chat", now)
    turn = max(turns) + 1 if turns else 0
    connection.execute(
        _INSERT_MESSAGE,
        {
            "id": message_id,
            "conversation_id": conversation_id,
            "turn": turn,
            "role": Role.customer,
            "text": text,
            "context": context,
            "created_at": now,
        },
    )
    stored = StoredMessage(message_id, conversation_id, turn, Role.customer, text)
    return OpenedMessage(stored, True, _prior_turns(rows, conversation_id, turn), None)


def _open_conversation(
    connection: Connection,
    conversation_id: str,
    customer_id: str | None,
    channel: str,
    now: datetime,
) -> None:
    """Insert the conversation unless it exists (it may, with no message yet)."""
    values = {
        "id": conversation_id,
        "customer_id": customer_id,
        "channel": channel,
        "started_at": now,
    }
    dialect = connection.dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        connection.execute(sqlite_insert(_conversations).on_conflict_do_nothing(), values)
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        connection.execute(postgresql_insert(_conversations).on_conflict_do_nothing(), values)
    else:
        found = connection.scalar(
            select(_conversations.c.id).where(_conversations.c.id == conversation_id)
        )
        if found is None:
            connection.execute(insert(_conversations), values)


def _prior_turns(rows: Sequence[AnyRow], conversation_id: str, before_turn: int) -> list[PriorTurn]:
    """Customer turns before ``before_turn`` that have a prediction (the latest one), oldest
    first, from the rows of ``_CONVERSATION_STATE`` (ordered by turn)."""
    latest_rows: dict[str, AnyRow] = {}
    for row in rows:
        if (
            row.conversation_id != conversation_id
            or row.role != Role.customer
            or row.turn >= before_turn
            or row.prediction_id is None
        ):
            continue
        seen = latest_rows.get(row.id)
        if seen is None or (row.predicted_at, row.prediction_id) > (
            seen.predicted_at,
            seen.prediction_id,
        ):
            latest_rows[row.id] = row
    return [
        PriorTurn(
            text=row.text,
            reply=row.reply,
            label=row.label,
            p_negative=float(row.probabilities.get("negative", 0.0)),
            strategy=row.strategy or "",
            escalate=bool(row.escalate),
            topic=row.topic,
        )
        for row in latest_rows.values()  # insertion order: by turn
    ]


def add_service_prediction(connection: Connection, values: dict[str, Any]) -> None:
    """Insert the service's prediction (``values`` hold every column; its id is
    ``prediction_id(message_id)``, so a second insert raises ``IntegrityError``)."""
    connection.execute(_INSERT_PREDICTION, values)


def service_prediction(connection: Connection, message_id: str) -> AnyRow | None:
    return connection.execute(_SERVICE_PREDICTION, {"id": prediction_id(message_id)}).first()


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
