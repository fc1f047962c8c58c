"""Request and response bodies of the HTTP API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StringConstraints

# Control characters and lone surrogates: never meaningful in a chat message, and a lone
# surrogate cannot even be written as UTF-8 (it would fail later, in the store).
_FORBIDDEN_CATEGORIES = {"Cc", "Cs"}
_ALLOWED_CONTROLS = {"\t", "\n", "\r"}


def _printable(value: str) -> str:
    for ch in value:
        if ch not in _ALLOWED_CONTROLS and unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            raise ValueError(f"contains the control character U+{ord(ch):04X}")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty or only whitespace")
    return value


Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$"),
]
ShortText = Annotated[str, StringConstraints(max_length=128), AfterValidator(_printable)]
Label = Literal["negative", "neutral", "positive"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MessageContext(_Strict):
    """What the chat app knows about the customer's situation; every field optional."""

    order_id: ShortText | None = None
    product: ShortText | None = None
    order_status: ShortText | None = Field(
        default=None, description="for example paid, shipped, delivered, returned"
    )
    channel: ShortText | None = Field(default=None, description="app, web, wechat, ...")
    ordered_at: datetime | None = Field(
        default=None, description="when the order was placed: replies say how long it has been"
    )


class MessageIn(_Strict):
    conversation_id: Identifier
    message_id: Identifier | None = Field(
        default=None, description="the chat app's id; a retry with the same id is answered again"
    )
    # The length limit is applied by the route (it comes from settings).
    text: Annotated[str, AfterValidator(_printable), AfterValidator(_not_blank)]
    customer_id: Identifier | None = None
    context: MessageContext | None = None


class EmotionOut(BaseModel):
    label: Label
    score: float
    probabilities: dict[str, float]


class MessageOut(BaseModel):
    message_id: str
    conversation_id: str
    emotion: EmotionOut
    strategy: str
    topic: str | None
    reply: str
    escalate: bool
    model_version: str
    degraded: bool
    request_id: str


class FeedbackIn(_Strict):
    message_id: Identifier
    label: Label | None = Field(default=None, description="the correct emotion of the message")
    rating: StrictInt | None = Field(
        default=None, ge=1, le=5, description="the customer's rating of the reply, 1 to 5"
    )
    source: Literal["agent", "customer"]


class FeedbackOut(BaseModel):
    feedback_id: str
    message_id: str
    label: Label | None
    rating: int | None
    source: str
    created_at: datetime


class TurnOut(BaseModel):
    message_id: str
    turn: int
    role: str
    text: str
    created_at: datetime
    emotion: EmotionOut | None
    strategy: str | None
    topic: str | None
    reply: str | None
    escalate: bool | None
    model_version: str | None
    degraded: bool | None
    feedback: list[FeedbackOut]


class TrajectoryOut(BaseModel):
    negative_streak: int
    trend: str
    solution_offered: bool
    escalated: bool
    complaint_count: int
    labels: list[str]
    p_negative: list[float]


class ConversationOut(BaseModel):
    conversation_id: str
    customer_id: str | None
    channel: str
    started_at: datetime
    turns: list[TurnOut]
    trajectory: TrajectoryOut
