"""``ingest``: pull one data interval's messages and feedback from the chat store.

Which messages: those created in ``[start, end)``, plus older ones that received feedback in it
(late corrections must reach training too). Only store rows created before ``end`` are read, so a
rerun of the same interval reads the same rows and overwrites the partition with the same content.

Label rule, first match wins (documented in the README):
1. the latest agent correction (``feedback.source = agent`` with a ``corrected_label``);
2. the latest customer correction;
3. the latest prediction of the served model (``label_source = prediction``; prepare uses these
   only when ``prepare.use_predicted_labels`` is on); the service's degraded answers (a local
   fallback estimate, not the model) never count;
4. none: the row is ``unlabelled``. Agent turns never get a label.

Personal data: every text is normalised and PII-redacted here (``textprep.redact_text``), before
anything is written, whatever wrote it to the store; the regulation service and the simulator
already store redacted text, and redacting again changes nothing. So no partition, validation
report or DVC remote ever holds a phone number, e-mail, ID, card, account or address.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, or_, select

from pipelines.data.textprep import redact_text
from pipelines.partitions import Interval, partition_dir, write_parquet
from pipelines.store.db import assert_migrated, make_engine, store_errors
from pipelines.store.models import Feedback, FeedbackSource, Message, Prediction, Role, utc_naive

log = logging.getLogger(__name__)

RAW_FILE = "raw.parquet"
RAW_COLUMNS = [
    "message_id",
    "conversation_id",
    "turn",
    "role",
    "text",
    "created_at",
    "label",
    "label_source",
    "predicted_label",
    "predicted_score",
    "model_version",
    "rating",
    "source",
]


@dataclass(frozen=True)
class IngestResult:
    interval: str
    path: Path
    rows: int
    labelled: int
    late_feedback_rows: int


def _read_frames(
    engine: Engine, interval: Interval
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    start, end = utc_naive(interval.start), utc_naive(interval.end)
    feedback_in_interval = select(Feedback.message_id).where(
        Feedback.created_at >= start, Feedback.created_at < end
    )
    messages_query = select(
        Message.id.label("message_id"),
        Message.conversation_id,
        Message.turn,
        Message.role,
        Message.text,
        Message.created_at,
    ).where(
        Message.created_at < end,
        or_(Message.created_at >= start, Message.id.in_(feedback_in_interval)),
    )
    with engine.connect() as connection:
        messages = pd.read_sql(messages_query, connection)
        ids = messages["message_id"].tolist()
        feedback = pd.read_sql(
            select(
                Feedback.message_id,
                Feedback.corrected_label,
                Feedback.rating,
                Feedback.source,
                Feedback.created_at,
                Feedback.id,
            ).where(Feedback.created_at < end, Feedback.message_id.in_(ids)),
            connection,
        )
        predictions = pd.read_sql(
            select(
                Prediction.message_id,
                Prediction.label,
                Prediction.score,
                Prediction.model_version,
                Prediction.created_at,
                Prediction.id,
            ).where(
                Prediction.created_at < end,
                Prediction.message_id.in_(ids),
                Prediction.degraded.is_(False),
            ),
            connection,
        )
    return messages, feedback, predictions


def _latest(frame: pd.DataFrame) -> pd.DataFrame:
    """The newest row per message (ties broken by id, so the result never depends on order)."""
    ordered = frame.sort_values(["message_id", "created_at", "id"])
    return ordered.groupby("message_id", sort=False).tail(1).set_index("message_id")


def label_messages(
    messages: pd.DataFrame, feedback: pd.DataFrame, predictions: pd.DataFrame
) -> pd.DataFrame:
    """Apply the label rule of this module's docstring; returns the raw partition's rows."""
    rows = messages.copy()
    rows["role"] = rows["role"].map(lambda role: Role(role).value)
    corrections = feedback[feedback["corrected_label"].notna()]
    by_agent = _latest(corrections[corrections["source"] == FeedbackSource.agent.value])
    by_customer = _latest(corrections[corrections["source"] == FeedbackSource.customer.value])
    latest_prediction = _latest(predictions)
    latest_rating = _latest(feedback[feedback["rating"].notna()])

    ids = rows["message_id"]
    agent_label = ids.map(by_agent["corrected_label"])
    customer_label = ids.map(by_customer["corrected_label"])
    rows["predicted_label"] = ids.map(latest_prediction["label"])
    rows["predicted_score"] = ids.map(latest_prediction["score"]).astype("float64")
    rows["model_version"] = ids.map(latest_prediction["model_version"])
    rows["rating"] = ids.map(latest_rating["rating"]).astype("Int64")

    is_customer = rows["role"] == Role.customer.value
    label = pd.Series(pd.NA, index=rows.index, dtype="object")
    label_source = pd.Series(pd.NA, index=rows.index, dtype="object")
    # Lowest precedence first, so each later assignment overrides the earlier ones.
    for candidate, name in (
        (rows["predicted_label"], "prediction"),
        (customer_label, "customer_correction"),
        (agent_label, "agent_correction"),
    ):
        take = is_customer & candidate.notna()
        label[take] = candidate[take]
        label_source[take] = name
    rows["label"] = label
    rows["label_source"] = label_source
    source_of = {
        "agent_correction": "feedback",
        "customer_correction": "feedback",
        "prediction": "prediction",
    }
    rows["source"] = label_source.map(source_of).fillna("unlabelled")
    rows["created_at"] = pd.to_datetime(rows["created_at"]).astype("datetime64[us]")
    rows["turn"] = rows["turn"].astype("int64")
    return rows[RAW_COLUMNS].sort_values("message_id").reset_index(drop=True)


def ingest(engine: Engine, interval: Interval, partitions_root: Path) -> IngestResult:
    """Write ``raw.parquet`` of ``interval``'s partition, replacing any earlier run's."""
    assert_migrated(engine)
    with store_errors(engine):
        messages, feedback, predictions = _read_frames(engine, interval)
    messages["text"] = messages["text"].map(redact_text)
    rows = label_messages(messages, feedback, predictions)
    target = write_parquet(rows, partition_dir(partitions_root, interval) / RAW_FILE)
    late = int((rows["created_at"] < utc_naive(interval.start)).sum())
    result = IngestResult(
        interval=str(interval),
        path=target,
        rows=len(rows),
        labelled=int(rows["label"].notna().sum()),
        late_feedback_rows=late,
    )
    log.info(
        "ingested %d messages (%d labelled, %d older with late feedback) of %s into %s",
        result.rows,
        result.labelled,
        result.late_feedback_rows,
        interval,
        target,
    )
    return result


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", help="interval start, ISO date/time (default: params.yaml)")
    parser.add_argument("--end", help="interval end, exclusive (default: params.yaml)")


def interval_from_args(args: argparse.Namespace) -> Interval:
    """The interval named on the command line, defaulting to params.yaml ``ingest``."""
    from pipelines.params import load_params

    if args.start and args.end:
        return Interval.parse(args.start, args.end)
    if args.start or args.end:
        raise ValueError("give both --start and --end, or neither (params.yaml ingest)")
    params = load_params()
    return Interval.parse(params.ingest.start, params.ingest.end)


def run_cli(args: argparse.Namespace) -> int:
    from pipelines.settings import get_settings

    settings = get_settings()
    result = ingest(
        make_engine(settings.database_url), interval_from_args(args), settings.partitions_dir
    )
    print(f"{result.rows} rows ({result.labelled} labelled) -> {result.path}")
    return 0
