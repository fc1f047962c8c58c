"""One customer message through the service: store → emotion → strategy → reply → store.

Every write happens before the answer leaves, and the message itself is committed before the
model is asked, so a crash or a failing endpoint loses nothing: a retry with the same
``message_id`` finds the message and finishes it, or finds the stored answer and returns it.
Messages of one conversation are handled one at a time (its history decides the strategy);
different conversations run concurrently, which is what lets the model client batch them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from pipelines.data.textprep import redact_text
from pipelines.store.db import session_scope
from pipelines.store.models import FeedbackSource, Prediction, Role, utc_naive
from serving import repository as repo
from serving.errors import ApiError
from serving.metrics import ServiceMetrics
from serving.model_client import EmotionClient, EmotionEstimate
from serving.policy import Decision, Emotion, Policy, Turn, decide, trajectory
from serving.replies import Reply, ReplyContext, TemplateWriter
from serving.schemas import (
    ConversationOut,
    EmotionOut,
    FeedbackIn,
    FeedbackOut,
    MessageContext,
    MessageIn,
    MessageOut,
    TrajectoryOut,
    TurnOut,
)

log = logging.getLogger(__name__)
HISTORY_FOR_LLM = 4


def clean_text(text: str) -> str:
    """What is stored and scored: normalised like training text, personal data redacted (the
    function ``ingest`` applies too; the served model applies it again, which changes nothing)."""
    return redact_text(text)


@dataclass(frozen=True)
class _Opened:
    turn: int
    history: list[repo.PriorTurn]
    answer: MessageOut | None  # set when this message was answered before (a retry)


class Regulator:
    def __init__(
        self,
        *,
        engine: Engine,
        client: EmotionClient,
        policy: Policy,
        templates: TemplateWriter,
        llm: Any | None,  # serving.llm.LlmWriter when an LLM backend is configured
        metrics: ServiceMetrics,
        max_text_chars: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.client = client
        self.policy = policy
        self.templates = templates
        self.llm = llm
        self.metrics = metrics
        self.max_text_chars = max_text_chars
        self._clock = clock
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # ------------------------------------------------------------------ messages

    async def handle_message(self, body: MessageIn, request_id: str) -> MessageOut:
        if len(body.text) > self.max_text_chars:
            raise ApiError(
                422,
                "text_too_long",
                f"text has {len(body.text)} characters; the limit is {self.max_text_chars}",
            )
        text = clean_text(body.text)
        if not text:
            raise ApiError(422, "empty_text", "text holds nothing but invisible characters")
        message_id = body.message_id or uuid.uuid4().hex
        lock = self._locks.setdefault(body.conversation_id, asyncio.Lock())
        async with lock:
            opened = await run_in_threadpool(self._open_message, body, message_id, text)
            if opened.answer is not None:
                return opened.answer
            emotion = await self.client.estimate(text)
            decision = decide(self.policy, _emotion(emotion), _turns(opened.history), text)
            context = self._reply_context(body.context, opened, emotion)
            reply = await self._write_reply(decision, context, text, opened, message_id)
            answer = await run_in_threadpool(
                self._store_answer,
                message_id,
                body.conversation_id,
                emotion,
                decision,
                reply,
                request_id,
            )
        self._count(answer, emotion)
        return answer

    def _open_message(self, body: MessageIn, message_id: str, text: str) -> _Opened:
        with session_scope(self.engine) as session:
            message = repo.get_message(session, message_id)
            if message is not None:
                if (
                    message.conversation_id != body.conversation_id
                    or message.text != text
                    or message.role != Role.customer
                ):
                    raise ApiError(
                        409,
                        "duplicate_message_id",
                        f"message {message_id!r} exists with another conversation or text",
                    )
                prediction = repo.service_prediction(session, message_id)
                if prediction is not None:
                    return _Opened(message.turn, [], _answer(prediction, body.conversation_id))
            else:
                message = repo.add_customer_message(
                    session,
                    message_id=message_id,
                    conversation_id=body.conversation_id,
                    customer_id=body.customer_id,
                    channel=body.context.channel if body.context else None,
                    text=text,
                    context=_stored_context(body.context),
                    now=utc_naive(self._clock()),
                )
            history = repo.prior_turns(session, body.conversation_id, message.turn)
            return _Opened(message.turn, history, None)

    def _reply_context(
        self, context: MessageContext | None, opened: _Opened, emotion: EmotionEstimate
    ) -> ReplyContext:
        waited_days = None
        if context is not None and context.ordered_at is not None:
            ordered_at = context.ordered_at
            if ordered_at.tzinfo is None:
                ordered_at = ordered_at.replace(tzinfo=UTC)
            waited_days = max(0, (self._clock() - ordered_at).days) or None
        complaints = sum(t.label == "negative" for t in opened.history) + (
            emotion.label == "negative"
        )
        return ReplyContext(
            product=context.product if context else None,
            order_id=context.order_id if context else None,
            order_status=context.order_status if context else None,
            waited_days=waited_days,
            complaint_count=complaints,
            turn=len(opened.history) + 1,
        )

    async def _write_reply(
        self,
        decision: Decision,
        context: ReplyContext,
        text: str,
        opened: _Opened,
        message_id: str,
    ) -> Reply:
        if self.llm is None:
            return self.templates.write(decision, context, variation_key=message_id)
        history = [(t.text, t.reply or "") for t in opened.history[-HISTORY_FOR_LLM:]]
        reply, fallback_reason = await self.llm.write(
            decision, context, text=text, history=history, variation_key=message_id
        )
        if fallback_reason is not None:
            self.metrics.reply_fallbacks.labels(fallback_reason.split(":")[0]).inc()
            log.warning("LLM reply replaced by a template", extra={"reason": fallback_reason})
        return reply

    def _store_answer(
        self,
        message_id: str,
        conversation_id: str,
        emotion: EmotionEstimate,
        decision: Decision,
        reply: Reply,
        request_id: str,
    ) -> MessageOut:
        prediction = Prediction(
            id=repo.prediction_id(message_id),
            message_id=message_id,
            model_version=emotion.model_version,
            label=emotion.label,
            score=emotion.score,
            probabilities=emotion.probabilities,
            strategy=str(decision.strategy),
            topic=decision.topic,
            escalate=decision.escalate,
            reply=reply.text,  # both writers redact what they return
            reply_source=reply.source,
            request_id=request_id,
            degraded=emotion.degraded,
            created_at=utc_naive(self._clock()),
        )
        try:
            with session_scope(self.engine) as session:
                session.add(prediction)
        except IntegrityError:
            # Another worker answered the same message first: its answer is the answer.
            with session_scope(self.engine) as session:
                stored = repo.service_prediction(session, message_id)
                if stored is None:
                    raise
                return _answer(stored, conversation_id)
        return _answer(prediction, conversation_id)

    def _count(self, answer: MessageOut, emotion: EmotionEstimate) -> None:
        self.metrics.emotions.labels(answer.emotion.label).inc()
        self.metrics.strategies.labels(answer.strategy).inc()
        if answer.escalate:
            self.metrics.escalations.inc()
        if emotion.degraded:
            self.metrics.degraded.labels(emotion.degraded_reason or "unknown").inc()

    # ------------------------------------------------------------------ feedback

    async def add_feedback(self, body: FeedbackIn) -> FeedbackOut:
        if body.label is None and body.rating is None:
            raise ApiError(422, "empty_feedback", "feedback needs a label, a rating or both")
        out = await run_in_threadpool(self._add_feedback, body)
        self.metrics.feedback.labels(body.source).inc()
        return out

    def _add_feedback(self, body: FeedbackIn) -> FeedbackOut:
        with session_scope(self.engine) as session:
            message = repo.get_message(session, body.message_id)
            if message is None:
                raise ApiError(404, "unknown_message", f"no message {body.message_id!r}")
            if body.label is not None and message.role != Role.customer:
                raise ApiError(
                    422, "not_a_customer_message", "only a customer's message has an emotion label"
                )
            feedback = repo.add_feedback(
                session,
                feedback_id=uuid.uuid4().hex,
                message_id=body.message_id,
                label=body.label,
                rating=body.rating,
                source=FeedbackSource(body.source),
                now=utc_naive(self._clock()),
            )
            return _feedback_out(feedback)

    # ------------------------------------------------------------------ conversations

    async def conversation(self, conversation_id: str) -> ConversationOut:
        return await run_in_threadpool(self._conversation, conversation_id)

    def _conversation(self, conversation_id: str) -> ConversationOut:
        with session_scope(self.engine) as session:
            conversation = repo.load_conversation(session, conversation_id)
            if conversation is None:
                raise ApiError(404, "unknown_conversation", f"no conversation {conversation_id!r}")
            turns = [_turn_out(message) for message in conversation.messages]
            return ConversationOut(
                conversation_id=conversation.id,
                customer_id=conversation.customer_id,
                channel=conversation.channel,
                started_at=conversation.started_at,
                turns=turns,
                trajectory=_trajectory_out(turns),
            )


# ---------------------------------------------------------------------- conversions


def _emotion(estimate: EmotionEstimate) -> Emotion:
    return Emotion(estimate.label, estimate.score, estimate.probabilities)


def _turns(history: list[repo.PriorTurn]) -> list[Turn]:
    return [Turn(t.label, t.p_negative, t.strategy, t.escalate, t.topic) for t in history]


def _stored_context(context: MessageContext | None) -> dict[str, Any] | None:
    if context is None:
        return None
    stored: dict[str, Any] = {}
    for key, value in context.model_dump(exclude_none=True).items():
        stored[key] = value.isoformat() if isinstance(value, datetime) else clean_text(str(value))
    return stored


def _emotion_out(prediction: Prediction) -> EmotionOut:
    return EmotionOut(
        label=prediction.label,
        score=prediction.score,
        probabilities=dict(prediction.probabilities),
    )


def _answer(prediction: Prediction, conversation_id: str) -> MessageOut:
    return MessageOut(
        message_id=prediction.message_id,
        conversation_id=conversation_id,
        emotion=_emotion_out(prediction),
        strategy=prediction.strategy or "",
        topic=prediction.topic,
        reply=prediction.reply or "",
        escalate=bool(prediction.escalate),
        model_version=prediction.model_version,
        degraded=bool(prediction.degraded),
        request_id=prediction.request_id or "",
    )


def _feedback_out(feedback: Any) -> FeedbackOut:
    return FeedbackOut(
        feedback_id=feedback.id,
        message_id=feedback.message_id,
        label=feedback.corrected_label,
        rating=feedback.rating,
        source=str(feedback.source),
        created_at=feedback.created_at,
    )


def _turn_out(message: Any) -> TurnOut:
    prediction = repo.latest(message.predictions)
    return TurnOut(
        message_id=message.id,
        turn=message.turn,
        role=str(message.role),
        text=message.text,
        created_at=message.created_at,
        emotion=_emotion_out(prediction) if prediction else None,
        strategy=prediction.strategy if prediction else None,
        topic=prediction.topic if prediction else None,
        reply=prediction.reply if prediction else None,
        escalate=bool(prediction.escalate) if prediction else None,
        model_version=prediction.model_version if prediction else None,
        degraded=bool(prediction.degraded) if prediction else None,
        feedback=[_feedback_out(f) for f in sorted(message.feedback, key=lambda f: f.created_at)],
    )


def _trajectory_out(turns: list[TurnOut]) -> TrajectoryOut:
    scored = [t for t in turns if t.role == Role.customer and t.emotion is not None]
    if not scored:
        return TrajectoryOut(
            negative_streak=0,
            trend="flat",
            solution_offered=False,
            escalated=False,
            complaint_count=0,
            labels=[],
            p_negative=[],
        )
    history = [
        Turn(
            t.emotion.label,  # type: ignore[union-attr]
            t.emotion.probabilities.get("negative", 0.0),  # type: ignore[union-attr]
            t.strategy or "",
            bool(t.escalate),
        )
        for t in scored[:-1]
    ]
    last = scored[-1]
    assert last.emotion is not None
    summary = trajectory(
        history,
        Emotion(last.emotion.label, last.emotion.score, last.emotion.probabilities),
        current_escalate=bool(last.escalate),
    )
    return TrajectoryOut(
        negative_streak=summary.negative_streak,
        trend=summary.trend,
        solution_offered=summary.solution_offered,
        escalated=summary.escalated,
        complaint_count=summary.complaint_count,
        labels=[t.emotion.label for t in scored if t.emotion],
        p_negative=[
            round(t.emotion.probabilities.get("negative", 0.0), 4) for t in scored if t.emotion
        ],
    )
