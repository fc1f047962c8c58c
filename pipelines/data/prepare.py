"""``prepare``: build the train/validation/test dataset from the bootstrap corpus and feedback.

Inputs: ``data/bootstrap/corpus.parquet`` and the ``validated.parquet`` of every partition whose
interval ends within ``params.prepare.window_days`` before the interval end (and not after it).
Outputs under ``data/prepared/``: ``train.parquet``, ``validation.parquet``, ``test.parquet``
(columns ``id, text, label, source``; rows sorted by ``id``) and ``manifest.json``.

Every text goes through ``textprep.prepare_text`` (normalised, PII-redacted, cut to ``max_chars``
characters: counted as ``truncated``), the function the logged model applies before it scores,
and is dropped when it holds fewer than ``min_chars`` characters besides placeholders. Rows are
deduplicated by the hash of their final text; conflicting labels of one text are resolved by
precedence (feedback > bootstrap > prediction), then recency within a tier (newer beats older),
then majority; ties are dropped.

Split decisions all use one key, the canonical key (``textprep.canonical_key``: normalised,
redacted, without punctuation, symbols and whitespace), so near-duplicates cannot straddle a
split. The test split is the bootstrap's golden rows (golden reviews by canonical key, golden
inquiries by held-out template), whatever the feedback says. A row whose canonical key equals a
golden row's, or a feedback row whose key lies in the golden range, never reaches
train/validation (``golden_leak``). The validation split takes, per label, the rows whose
canonical key's ``validation`` fraction is below ``validation_fraction``, so a text keeps its
split as data grows.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from itertools import chain, repeat
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from pipelines.data.pii import PLACEHOLDERS
from pipelines.data.text import text_hash
from pipelines.data.textprep import (
    canonical_key,
    content_chars,
    is_golden_text,
    prepare_text,
    validation_score,
)
from pipelines.params import Params, load_params
from pipelines.partitions import Interval, as_utc, atomic_path, list_partitions
from pipelines.settings import Settings, get_settings

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
OUTPUT_COLUMNS = ["id", "text", "label", "source"]
HUMAN_LABEL_SOURCES = frozenset({"agent_correction", "customer_correction"})
BOOTSTRAP_COLUMNS = ("text", "label", "source", "golden")
PARTITION_COLUMNS = (
    "message_id",
    "role",
    "text",
    "created_at",
    "label",
    "label_source",
    "predicted_label",
    "predicted_score",
)
# The ``source`` of prepared rows from partitions (the shop's traffic): a human's label, or with
# ``prepare.use_predicted_labels`` the served model's own. Corpus rows keep the corpus's source.
FEEDBACK_SOURCE = "feedback"
PREDICTION_SOURCE = "prediction"
TRAFFIC_SOURCES = (FEEDBACK_SOURCE, PREDICTION_SOURCE)
# Which origin wins when one text carries different labels.
_TIER = {PREDICTION_SOURCE: 0, "bootstrap": 1, FEEDBACK_SOURCE: 2}
_FEEDBACK_COLUMNS = ["message_id", "text", "label", "source", "created_at"]


@dataclass(frozen=True)
class PreparedDataset:
    """Where ``prepare`` wrote the dataset, and what it holds."""

    directory: Path
    train_path: Path
    validation_path: Path
    test_path: Path
    manifest_path: Path
    counts: dict[str, int]
    content_hash: str


@dataclass
class _Report:
    dropped: Counter[str] = field(default_factory=Counter)
    conflicts: Counter[str] = field(default_factory=Counter)
    pii: Counter[str] = field(default_factory=Counter)
    truncated: int = 0
    validation_floor: int = 0
    golden_disagreements: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "dropped": {
                reason: self.dropped[reason]
                for reason in ("too_short", "duplicate", "conflict_tie", "golden_leak")
            },
            "conflicts": {
                how: self.conflicts[how] for how in ("precedence", "newer", "majority", "tie")
            },
            "pii_redacted": {kind: self.pii[kind] for kind in PLACEHOLDERS},
            "truncated": self.truncated,
            "validation_floor": self.validation_floor,
            "golden_disagreements": self.golden_disagreements,
        }


class _Candidate(NamedTuple):
    id: str
    text: str
    label: str
    source: str
    tier: int
    # (when the label was known, when the message was written) in ns; None for bootstrap rows
    recency: tuple[int, int] | None
    key: str  # canonical key: every split decision is made on it


# --- text cleaning -------------------------------------------------------------------------


class CleanText(NamedTuple):
    text: str | None
    pii_kinds: list[str]
    truncated: bool


def clean_text(raw: object, *, min_chars: int, max_chars: int) -> CleanText:
    """``textprep.prepare_text``, and None for a text too short to keep.

    ``text`` is None when fewer than ``min_chars`` characters remain besides placeholders (a
    message that is only a phone number says nothing about emotion).
    """
    text, kinds, truncated = prepare_text(raw if isinstance(raw, str) else "", max_chars)
    if content_chars(text) < min_chars:
        return CleanText(None, kinds, False)
    return CleanText(text, kinds, truncated)


def _clean_rows(
    rows: Iterable[tuple[object, str, str, str, tuple[int, int] | None]],
    *,
    min_chars: int,
    max_chars: int,
    report: _Report,
) -> list[_Candidate]:
    """(raw text, label, source, origin, recency) -> cleaned candidates; drops counted."""
    kept = []
    for raw, label, source, origin, recency in rows:
        text, kinds, truncated = clean_text(raw, min_chars=min_chars, max_chars=max_chars)
        report.pii.update(kinds)
        report.truncated += truncated
        if text is None:
            report.dropped["too_short"] += 1
            continue
        kept.append(
            _Candidate(
                text_hash(text), text, label, source, _TIER[origin], recency, canonical_key(text)
            )
        )
    return kept


# --- conflicts -----------------------------------------------------------------------------


def resolve_labels(rows: Sequence[_Candidate]) -> tuple[_Candidate | None, str]:
    """Pick the row whose label a group of same-text rows keeps, and say how.

    Order: the highest tier (feedback > bootstrap > prediction); within it the newest timestamp;
    then the majority; a tie keeps nothing. ``how`` is "agree" when there was no conflict.
    """
    if len({row.label for row in rows}) == 1:
        return _representative(rows, rows[0].label), "agree"
    top = max(row.tier for row in rows)
    pool = [row for row in rows if row.tier == top]
    if len({row.label for row in pool}) == 1:
        return _representative(pool, pool[0].label), "precedence"
    stamps = [row.recency for row in pool if row.recency is not None]
    if stamps:
        newest = max(stamps)
        pool = [row for row in pool if row.recency == newest]
        if len({row.label for row in pool}) == 1:
            return _representative(pool, pool[0].label), "newer"
    ranked = Counter(row.label for row in pool).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None, "tie"
    return _representative(pool, ranked[0][0]), "majority"


def _representative(rows: Sequence[_Candidate], label: str) -> _Candidate:
    # Smallest (text, source) among the winners: the same inputs always give the same row.
    return min((row for row in rows if row.label == label), key=lambda row: (row.text, row.source))


def _dedupe(rows: Sequence[_Candidate], report: _Report) -> list[_Candidate]:
    groups: dict[str, list[_Candidate]] = defaultdict(list)
    for row in rows:
        groups[row.id].append(row)
    kept = []
    for group in groups.values():
        winner, how = resolve_labels(group)
        if how != "agree":
            report.conflicts[how] += 1
        if winner is None:
            report.dropped["conflict_tie"] += len(group)
            continue
        report.dropped["duplicate"] += len(group) - 1
        kept.append(winner)
    return kept


# --- splits --------------------------------------------------------------------------------


def _split_train_validation(
    rows: Sequence[_Candidate], fraction: float, report: _Report
) -> tuple[list[_Candidate], list[_Candidate]]:
    """Per label, by the canonical key: a text's split never depends on other rows, and
    near-duplicates ("很好", "很好。") fall on the same side.

    A label with at least two rows but none below the threshold lends its lowest-hash row to
    validation, so that tiny classes are still measured (counted as ``validation_floor``).
    """
    by_label: dict[str, list[tuple[float, _Candidate]]] = defaultdict(list)
    for row in rows:
        by_label[row.label].append((validation_score(row.key), row))
    train: list[_Candidate] = []
    validation: list[_Candidate] = []
    for label in sorted(by_label):
        scored = sorted(by_label[label], key=lambda item: (item[0], item[1].id))
        held = [row for score, row in scored if score < fraction]
        if not held and len(scored) >= 2:
            held = [scored[0][1]]
            report.validation_floor += 1
        held_ids = {row.id for row in held}
        validation.extend(held)
        train.extend(row for _, row in scored if row.id not in held_ids)
    return train, validation


def _frame(rows: Iterable[_Candidate]) -> pd.DataFrame:
    records = sorted((row.id, row.text, row.label, row.source) for row in rows)
    frame = pd.DataFrame.from_records(records, columns=OUTPUT_COLUMNS)
    return frame.astype(dict.fromkeys(OUTPUT_COLUMNS, "str"))


def build_splits(
    bootstrap: pd.DataFrame, feedback: pd.DataFrame, params: Params
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The pure core of ``prepare``: split frames keyed by split name, and the report.

    ``bootstrap`` has columns ``text, label, source, golden``; ``feedback`` has ``text, label,
    source`` ("feedback" | "prediction"), ``created_at`` and optionally ``seen_at`` (the end of
    the partition that carried the label; recency is ``(seen_at, created_at)``).
    """
    prep = params.prepare
    report = _Report()
    _check_labels(bootstrap["label"], params.labels, "bootstrap corpus")
    _check_labels(feedback["label"], params.labels, "feedback")

    is_gold = bootstrap["golden"].astype(bool)
    golden = _dedupe(
        _clean_rows(
            _bootstrap_rows(bootstrap[is_gold]),
            min_chars=prep.min_chars,
            max_chars=prep.max_chars,
            report=report,
        ),
        report,
    )
    golden_labels = {row.key: row.label for row in golden}
    fraction = params.bootstrap.golden_fraction
    clean = partial(_clean_rows, min_chars=prep.min_chars, max_chars=prep.max_chars, report=report)
    # Bootstrap rows carry bootstrap's golden decision (inquiries are golden by template, so a
    # training inquiry may hash into the golden range); feedback rows are decided here.
    training_bootstrap = clean(_bootstrap_rows(bootstrap[~is_gold]))
    feedback_rows = clean(_feedback_rows(feedback))
    allowed = []
    for row, from_feedback in chain(
        zip(training_bootstrap, repeat(False)), zip(feedback_rows, repeat(True))
    ):
        leak = row.key in golden_labels or (from_feedback and is_golden_text(row.text, fraction))
        if leak:
            report.dropped["golden_leak"] += 1
            report.golden_disagreements += golden_labels.get(row.key, row.label) != row.label
        else:
            allowed.append(row)

    train, validation = _split_train_validation(
        _dedupe(allowed, report), prep.validation_fraction, report
    )
    frames = {"train": _frame(train), "validation": _frame(validation), "test": _frame(golden)}
    return frames, report.as_dict()


def _bootstrap_rows(frame: pd.DataFrame) -> list[tuple[object, str, str, str, None]]:
    return [
        (text, str(label), str(source), "bootstrap", None)
        for text, label, source in zip(
            frame["text"].tolist(), frame["label"].tolist(), frame["source"].tolist(), strict=True
        )
    ]


def _feedback_rows(
    frame: pd.DataFrame,
) -> list[tuple[object, str, str, str, tuple[int, int] | None]]:
    created = pd.to_datetime(frame["created_at"], utc=True)
    seen = pd.to_datetime(frame["seen_at"], utc=True) if "seen_at" in frame else created
    return [
        (text, str(label), str(source), str(source), _recency(seen_at, created_at))
        for text, label, source, seen_at, created_at in zip(
            frame["text"].tolist(),
            frame["label"].tolist(),
            frame["source"].tolist(),
            seen.tolist(),
            created.tolist(),
            strict=True,
        )
    ]


def _recency(seen_at: pd.Timestamp, created_at: pd.Timestamp) -> tuple[int, int] | None:
    if pd.isna(seen_at) or pd.isna(created_at):
        return None
    return (seen_at.value, created_at.value)


def _check_labels(labels: pd.Series, allowed: Sequence[str], where: str) -> None:
    bad = sorted({str(label) for label in labels.tolist() if label not in allowed})
    if bad:
        raise ValueError(
            f"{where} has labels not in params.yaml labels {list(allowed)}: {bad} "
            f"({int((~labels.isin(list(allowed))).sum())} rows)"
        )


# --- inputs --------------------------------------------------------------------------------


def _read_checked(path: Path, what: str, columns: Sequence[str], step: str) -> pd.DataFrame:
    """``path`` as a frame holding ``columns``; a clear error naming the step that writes it."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} (run `python -m pipelines {step}`)")
    frame = pd.read_parquet(path)
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{what} {path} lacks columns {missing}; it has {list(frame.columns)}")
    return frame.reset_index(drop=True)


def read_split(prepared_dir: Path, split: str) -> pd.DataFrame:
    """One split as this step writes it (``OUTPUT_COLUMNS``); clear errors when absent or
    malformed. Train and evaluate read the dataset through here."""
    path = prepared_dir / f"{split}.parquet"
    return _read_checked(path, "prepared split", OUTPUT_COLUMNS, "prepare")


def load_bootstrap(path: Path, labels: Sequence[str]) -> pd.DataFrame:
    """The bootstrap corpus, checked: columns present, golden flags set, labels known."""
    frame = _read_checked(path, "bootstrap corpus", BOOTSTRAP_COLUMNS, "bootstrap")
    for column in ("label", "golden"):
        if frame[column].isna().any():
            raise ValueError(f"bootstrap corpus {path} has empty values in column {column!r}")
    _check_labels(frame["label"], labels, f"bootstrap corpus {path}")
    return frame


def select_partitions(
    root: Path, interval_end: datetime, window_days: int
) -> list[tuple[Interval, Path]]:
    """Partitions whose interval ends in ``(interval_end - window_days, interval_end]``."""
    end = as_utc(interval_end)
    earliest = end - timedelta(days=window_days)
    return [(iv, path) for iv, path in list_partitions(root) if earliest < iv.end <= end]


def labelled_feedback(
    frame: pd.DataFrame, params: Params, where: str
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Customer rows of a validated partition with a label we trust, and what was kept.

    Human labels (agent or customer corrections) always; the served model's own prediction only
    with ``use_predicted_labels`` and a score of at least ``min_prediction_score``. Agent turns
    are never trained on: those carrying a label are counted (``agent_labelled_dropped``).
    """
    missing = [column for column in PARTITION_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{where} lacks columns {missing}")
    prep = params.prepare
    frame = frame.assign(created_at=_timestamps(frame["created_at"], where))
    customer = frame[frame["role"] == "customer"]
    human = customer[customer["label_source"].isin(HUMAN_LABEL_SOURCES) & customer["label"].notna()]
    _check_labels(human["label"], params.labels, where)
    parts = [human.assign(source=FEEDBACK_SOURCE)[_FEEDBACK_COLUMNS]]
    agent_labelled = int(((frame["role"] == "agent") & frame["label"].notna()).sum())
    if agent_labelled:
        log.warning(
            "%s: dropped %d labelled agent turns (customer turns only)", where, agent_labelled
        )
    stats = {
        "rows": len(frame),
        "customer_rows": len(customer),
        "human_labelled": len(human),
        "agent_labelled_dropped": agent_labelled,
    }
    predicted_count = 0
    if prep.use_predicted_labels:
        rest = customer.drop(index=human.index)
        score = pd.to_numeric(rest["predicted_score"], errors="coerce")
        confident = rest[rest["predicted_label"].notna() & (score >= prep.min_prediction_score)]
        _check_labels(confident["predicted_label"], params.labels, f"{where} (predicted_label)")
        predicted = confident.assign(label=confident["predicted_label"], source=PREDICTION_SOURCE)
        parts.append(predicted[_FEEDBACK_COLUMNS])
        predicted_count = len(predicted)
    stats["predicted_used"] = predicted_count
    non_empty = [part for part in parts if len(part)]
    merged = pd.concat(non_empty, ignore_index=True) if non_empty else parts[0].iloc[0:0]
    return merged, stats


def _timestamps(values: pd.Series, where: str) -> pd.Series:
    try:
        return pd.to_datetime(values, utc=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where} has unreadable created_at values: {exc}") from exc


def _read_feedback(
    partitions: Sequence[tuple[Interval, Path]], params: Params
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Trusted feedback of the partitions, one row per message, and what was read.

    Ingest writes a message again into the partition in which it got new feedback, so the row of
    the latest partition is the message's current label; earlier rows are ``superseded``.
    """
    frames, used, skipped = [], [], []
    agent_dropped = 0
    for interval, directory in partitions:
        path = directory / "validated.parquet"
        if not path.is_file():
            log.warning("partition %s has no validated.parquet; skipped", interval.key)
            skipped.append(interval.key)
            continue
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise ValueError(
                f"cannot read {path} as parquet ({type(exc).__name__}: {exc}); "
                "re-run validate for this interval"
            ) from exc
        rows, stats = labelled_feedback(frame, params, str(path))
        frames.append(rows.assign(seen_at=pd.Timestamp(interval.end)))
        used.append({"key": interval.key, **stats})
        agent_dropped += stats["agent_labelled_dropped"]
    non_empty = [frame for frame in frames if len(frame)]
    if non_empty:
        merged = pd.concat(non_empty, ignore_index=True).sort_values(["seen_at", "created_at"])
    else:
        merged = pd.DataFrame(columns=[*_FEEDBACK_COLUMNS, "seen_at"])
    has_id = merged["message_id"].notna()
    latest = pd.concat(
        [merged[has_id].drop_duplicates("message_id", keep="last"), merged[~has_id]],
        ignore_index=True,
    )
    info = {
        "partitions": used,
        "partitions_without_validated": skipped,
        "feedback_superseded": len(merged) - len(latest),
        "agent_labelled_dropped": agent_dropped,
    }
    return latest, info


# --- wiring --------------------------------------------------------------------------------


def prepare_dataset(
    settings: Settings, params: Params, *, interval_end: datetime
) -> PreparedDataset:
    """Build and write the prepared dataset for the window ending at ``interval_end``."""
    end = as_utc(interval_end)
    corpus_path = settings.bootstrap_dir / "corpus.parquet"
    bootstrap = load_bootstrap(corpus_path, params.labels)
    window = select_partitions(settings.partitions_dir, end, params.prepare.window_days)
    feedback, inputs = _read_feedback(window, params)

    frames, report = build_splits(bootstrap, feedback, params)
    for split, frame in frames.items():
        if frame.empty:
            raise ValueError(
                f"prepare left the {split} split empty (bootstrap {corpus_path}: "
                f"{len(bootstrap)} rows, {len(inputs['partitions'])} partitions); check the "
                "inputs and params.prepare"
            )
    absent = [label for label in params.labels if label not in set(frames["train"]["label"])]
    if absent:
        log.warning("labels without training rows: %s", absent)

    manifest: dict[str, Any] = {
        "interval_end": end.isoformat(),
        "params": {
            "labels": list(params.labels),
            "golden_fraction": params.bootstrap.golden_fraction,
            "prepare": params.prepare.model_dump(),
        },
        "inputs": {
            "bootstrap": {
                "path": _relative(corpus_path, settings.data_dir),
                "rows": len(bootstrap),
            },
            **inputs,
        },
        "counts": {split: _counts(frame) for split, frame in frames.items()},
        "labels_without_training_rows": absent,
        **report,
    }
    return _write(settings.prepared_dir, frames, manifest)


def _counts(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "rows": len(frame),
        "label": {str(k): int(v) for k, v in sorted(frame["label"].value_counts().items())},
        "source": {str(k): int(v) for k, v in sorted(frame["source"].value_counts().items())},
    }


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _update_content_hash(digest: Any, split: str, frame: pd.DataFrame) -> None:
    """Feed one split's values to ``digest``: a JSON line ``[split, [columns...]]``, then one
    JSON array of the values per row (compact, UTF-8, missing values as null), in row order."""
    import json

    def line(values: list[Any]) -> bytes:
        text = json.dumps(values, ensure_ascii=False, separators=(",", ":"), default=str)
        return text.encode("utf-8") + b"\n"

    digest.update(line([split, [str(column) for column in frame.columns]]))
    for row in frame.itertuples(index=False, name=None):
        digest.update(line([None if pd.isna(value) else value for value in row]))


def _write(
    directory: Path, frames: dict[str, pd.DataFrame], manifest: dict[str, Any]
) -> PreparedDataset:
    """Write the splits and the manifest; each file appears whole or not at all.

    All four are written to temporary files first and renamed together at the end, manifest
    last, so a failure while writing leaves the previous dataset untouched.

    ``content_hash`` is the sha256 of the splits' values (``_update_content_hash``, splits in
    ``SPLITS`` order), not of the parquet bytes, which change with the pandas/pyarrow version;
    ``files.<split>.sha256`` is each file's byte checksum.
    """
    import json

    paths = {split: directory / f"{split}.parquet" for split in SPLITS}
    manifest_path = directory / "manifest.json"
    with ExitStack() as stack:
        # ExitStack renames in reverse order of entry: enter the manifest first so it lands last.
        manifest_tmp = stack.enter_context(atomic_path(manifest_path))
        digest = hashlib.sha256()
        files = {}
        for split in SPLITS:
            tmp = stack.enter_context(atomic_path(paths[split]))
            frames[split].to_parquet(tmp, index=False)
            _update_content_hash(digest, split, frames[split])
            sha256 = hashlib.sha256(tmp.read_bytes()).hexdigest()
            files[split] = {"file": paths[split].name, "sha256": sha256}
        content_hash = digest.hexdigest()
        manifest = {**manifest, "files": files, "content_hash": content_hash}
        manifest_tmp.write_text(
            json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True, default=str) + "\n",
            encoding="utf-8",
        )
    return PreparedDataset(
        directory=directory,
        train_path=paths["train"],
        validation_path=paths["validation"],
        test_path=paths["test"],
        manifest_path=manifest_path,
        counts={split: len(frames[split]) for split in SPLITS},
        content_hash=content_hash,
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--end",
        help="end of the data interval, ISO date or datetime (default: params.yaml ingest.end)",
    )


def run_cli(args: argparse.Namespace) -> int:
    settings = get_settings()
    params = load_params(settings.params_path)
    end = as_utc(args.end) if args.end else as_utc(params.ingest.end)
    result = prepare_dataset(settings, params, interval_end=end)
    counts = ", ".join(f"{split} {n}" for split, n in result.counts.items())
    print(f"prepared {counts} rows in {result.directory} (content hash {result.content_hash[:12]})")
    return 0
