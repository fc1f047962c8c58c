"""One customer message through the service: store → emotion → strategy → reply → store.

Every write happens before the answer leaves, and the message itself is committed before the
model is asked, so a crash or a failing endpoint loses nothing: a retry with the same
``message_id`` finds the message and finishes it, or finds the stored answer and returns it.
Messages of one conversation are handled one at a time (its history decides the strategy);
different conversations run concurrently, which is what lets the model client batch them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from pipelines.data.textprep import redact_text
from pipelines.store.db import session_scope
from pipelines.store.models import FeedbackSource, Role, utc_naive
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
CHECKPOINT_INTERVAL_S = 1.0
_R = TypeVar("_R")


def clean_text(text: str) -> str:
    """What is stored and scored: normalised like training text, personal data redacted (the
    function ``ingest`` applies too; the served model applies it again, which changes nothing)."""
    return redact_text(text)


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
        answer_engine: Engine | None = None,
    ) -> None:
        self.engine = engine
        # Answers may go through an engine of their own (see serving.app._answer_engine).
        self.answer_engine = answer_engine or engine
        self.client = client
        self.policy = policy
        self.templates = templates
        self.llm = llm
        self.metrics = metrics
        self.max_text_chars = max_text_chars
        self._clock = clock
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # SQLite takes one writer at a time: store work from a pool of threads would only queue
        # on its lock (SQLite's busy handler sleeps 1, 2, 5 ... ms between tries). One thread of
        # our own serialises it without sleeping. Other stores (Postgres) take concurrent
        # transactions: the shared pool.
        self._store_thread: ThreadPoolExecutor | None = None
        if engine.dialect.name == "sqlite":
            self._store_thread = ThreadPoolExecutor(1, thread_name_prefix="chat-store")
        self._checkpointer: asyncio.Task[None] | None = None
        self._written = False

    async def start(self) -> None:
        """Background work: on a SQLite store in WAL mode, a checkpoint a second while messages
        are written, so that ``chats.db`` itself (what a file copy or DVC's hash of it sees)
        lags the commits, which are durable in ``chats.db-wal`` already, by a second at most."""
        if self._store_thread is not None and await self._in_store_thread(self._wal_mode):
            self._checkpointer = asyncio.create_task(self._checkpoints(), name="wal-checkpoint")

    async def aclose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpointer
        if self._store_thread is not None:
            self._store_thread.shutdown(wait=True)
        self.answer_engine.dispose()
        self.engine.dispose()  # the last connection to close checkpoints the rest

    def _wal_mode(self) -> bool:
        with self.engine.connect() as connection:
            return connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"

    async def _checkpoints(self, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        while True:
            await asyncio.sleep(interval_s)
            if self._written:
                self._written = False
                try:
                    await self._in_store_thread(self._checkpoint)
                except Exception as exc:  # a busy store: the next one catches up
                    log.warning("WAL checkpoint failed: %s", exc)

    def _checkpoint(self) -> None:
        # PASSIVE: copies what it can without waiting for (or blocking) readers and writers.
        with self.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    async def _in_store_thread(self, fn: Callable[..., _R], *args: Any) -> _R:
        """Run ``fn(*args)`` (blocking store work) off the event loop, with the request's
        context (its request id reaches the log lines)."""
        if self._store_thread is None:
            return await run_in_threadpool(fn, *args)
        call = functools.partial(contextvars.copy_context().run, fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._store_thread, call)

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
            opened = await self._in_store_thread(self._open_message, body, message_id, text)
            if opened.answer is not None:
                return _answer(opened.answer, body.conversation_id)
            emotion = await self.client.estimate(text)
            decision = decide(self.policy, _emotion(emotion), _turns(opened.history), text)
            context = self._reply_context(body.context, opened, emotion)
            reply = await self._write_reply(decision, context, text, opened, message_id)
            answer = await self._in_store_thread(
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

    def _open_message(self, body: MessageIn, message_id: str, text: str) -> repo.OpenedMessage:
        """Store the message (or find it, on a retry) and commit, before the model is asked."""
        with self.engine.begin() as connection:
            opened = repo.open_customer_message(
                connection,
                message_id=message_id,
                conversation_id=body.conversation_id,
                customer_id=body.customer_id,
                channel=body.context.channel if body.context else None,
                text=text,
                context=_stored_context(body.context),
                now=utc_naive(self._clock()),
            )
        self._written = True
        stored = opened.message
        if not opened.created and (
            stored.conversation_id != body.conversation_id
            or stored.text != text
            or stored.role != Role.customer
        ):
            raise ApiError(
                409,
                "duplicate_message_id",
                f"message {message_id!r} exists with another conversation or text",
            )
        return opened

    def _reply_context(
        self, context: MessageContext | None, opened: repo.OpenedMessage, emotion: EmotionEstimate
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
        opened: repo.OpenedMessage,
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
        prediction = {
            "id": repo.prediction_id(message_id),
            "message_id": message_id,
            "model_version": emotion.model_version,
            "label": emotion.label,
            "score": emotion.score,
            "probabilities": emotion.probabilities,
            "strategy": str(decision.strategy),
            "topic": decision.topic,
            "escalate": decision.escalate,
            "reply": reply.text,  # both writers redact what they return
            "reply_source": reply.source,
            "request_id": request_id,
            "degraded": emotion.degraded,
            "created_at": utc_naive(self._clock()),
        }
        try:
            with self.answer_engine.begin() as connection:
                repo.add_service_prediction(connection, prediction)
            self._written = True
        except IntegrityError:
            # Another worker answered the same message first: its answer is the answer.
            with self.answer_engine.connect() as connection:
                stored = repo.service_prediction(connection, message_id)
            if stored is None:
                raise
            return _answer(stored, conversation_id)
        return _answer(SimpleNamespace(**prediction), conversation_id)

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
        out = await self._in_store_thread(self._add_feedback, body)
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
        return await self._in_store_thread(self._conversation, conversation_id)

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


def _emotion_out(prediction: Any) -> EmotionOut:
    return EmotionOut(
        label=prediction.label,
        score=prediction.score,
        probabilities=dict(prediction.probabilities),
    )


def _answer(prediction: Any, conversation_id: str) -> MessageOut:
    """The answer from the service's prediction (a stored row, or the values just stored)."""
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
