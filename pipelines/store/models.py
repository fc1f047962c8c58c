"""SQLAlchemy 2 models of the chat store.

Timestamps are stored as timezone-naive UTC (SQLite keeps no zone); ``utc_naive`` converts.
Probabilities are a JSON mapping label -> probability so that the label set stays configurable.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utc_naive(moment: datetime) -> datetime:
    """A datetime as naive UTC; naive input is taken to be UTC already."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


class Role(enum.StrEnum):
    customer = "customer"
    agent = "agent"


class FeedbackSource(enum.StrEnum):
    agent = "agent"
    customer = "customer"


class Base(DeclarativeBase):
    pass


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    shop_id: Mapped[str] = mapped_column(String(64), default="default")
    customer_id: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(32), default="chat")
    started_at: Mapped[datetime] = mapped_column(DateTime, index=True)

    messages: Mapped[list[Message]] = relationship(
        back_populates="conversation", order_by="Message.turn"
    )


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_conversation_turn", "conversation_id", "turn"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    turn: Mapped[int] = mapped_column(Integer)
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    # What the chat app knew (order id, product, order status, ...), redacted like the text.
    context: Mapped[dict[str, object] | None] = mapped_column(JSON, default=None)

    conversation: Mapped[Conversation] = relationship(back_populates="messages")
    predictions: Mapped[list[Prediction]] = relationship(back_populates="message")
    feedback: Mapped[list[Feedback]] = relationship(back_populates="message")


class Prediction(Base):
    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    model_version: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(32))
    score: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[dict[str, float]] = mapped_column(JSON)
    strategy: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    # Written by the regulation service: its answer, so that a retried request gets it again.
    topic: Mapped[str | None] = mapped_column(String(32), default=None)
    escalate: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    reply: Mapped[str | None] = mapped_column(Text, default=None)
    reply_source: Mapped[str | None] = mapped_column(String(16), default=None)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    # A local fallback estimate, not the served model's: never a training label (ingest).
    degraded: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    message: Mapped[Message] = relationship(back_populates="predictions")


class Feedback(Base):
    __tablename__ = "feedback"
    __table_args__ = (
        CheckConstraint(
            "corrected_label IS NOT NULL OR rating IS NOT NULL", name="ck_feedback_has_content"
        ),
        CheckConstraint("rating IS NULL OR (rating >= 1 AND rating <= 5)", name="ck_rating_1_5"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    corrected_label: Mapped[str | None] = mapped_column(String(32))
    rating: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[FeedbackSource] = mapped_column(
        Enum(FeedbackSource, native_enum=False, length=16)
    )
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)

    message: Mapped[Message] = relationship(back_populates="feedback")
