"""``validate``: check an ingest partition with its Great Expectations suite.

Reads ``<partition>/raw.parquet`` and writes beside it, each file atomically:

- ``validated.parquet``: the rows that passed, only when the batch passed (a stale one is
  removed when it fails);
- ``quarantine.parquet``: the rows that failed plus a ``quarantine_reason`` column; every row
  when the batch failed;
- ``validation.json``: each expectation with its result and up to five example rows.

Suites and their run-time parameters are read by ``pipelines.data.suites``; results are put in
words by ``pipelines.data.validation_report``. Rows flagged by a critical map expectation are
quarantined even when ``mostly`` lets the batch pass; a failed critical expectation fails the
batch; ``"severity": "warning"`` or ``"info"`` only reports. The companion suite a suite names in
``meta.label_shares_suite`` runs on the derived class-balance table (see ``label_shares``).
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.data.suites import (
    ID_COLUMN,
    Suite,
    SuiteError,
    companion_suite,
    load_suite,
    required_columns,
    suite_parameters,
    suite_path,
)
from pipelines.data.validation_report import (
    check_report,
    condition_text,
    failed_check_lines,
    plain,
)
from pipelines.partitions import Interval, partition_dir, write_json, write_parquet

if TYPE_CHECKING:
    from pipelines.params import Params

log = logging.getLogger(__name__)

RAW_FILE = "raw.parquet"
VALIDATED_FILE = "validated.parquet"
QUARANTINE_FILE = "quarantine.parquet"
REPORT_FILE = "validation.json"
REASON_COLUMN = "quarantine_reason"
MESSAGES_TABLE = "messages"
SHARES_TABLE = "label_shares"
MAX_EXAMPLES = 5
_SHARES_INDEX = ["label", "rows", "labelled_rows"]


class PartitionError(ValueError):
    """raw.parquet exists but cannot be read."""


@dataclass(frozen=True)
class ValidationOutcome:
    """What a validation run decided and where it wrote it."""

    partition_dir: Path
    suite: str
    success: bool
    counts: dict[str, int]  # raw, validated, quarantined
    report_path: Path
    failed_expectations: tuple[str, ...] = ()
    empty: bool = False
    duration_s: float = 0.0

    @property
    def validated_path(self) -> Path | None:
        return self.partition_dir / VALIDATED_FILE if self.success else None

    @property
    def quarantine_path(self) -> Path:
        return self.partition_dir / QUARANTINE_FILE


class ValidationFailed(RuntimeError):
    """The batch failed its suite; the message is the readable report."""

    def __init__(self, message: str, outcome: ValidationOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True)
class Check:
    """One expectation's result, in plain Python."""

    table: str
    type: str
    kwargs: dict[str, Any]
    why: str
    severity: str
    success: bool
    observed: Any = None
    element_count: int | None = None
    missing_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    flagged: tuple[Any, ...] = ()  # message ids of the rows a map expectation flagged
    examples: tuple[dict[str, Any], ...] = ()
    error: str | None = None

    @property
    def name(self) -> str:
        target = self.kwargs.get("column") or ",".join(self.kwargs.get("column_list") or [])
        name = f"{self.type}({target})" if target else self.type
        if self.kwargs.get("row_condition"):
            name += f" where {condition_text(self.kwargs['row_condition'])}"
        return name if self.table == MESSAGES_TABLE else f"{name} on {self.table}"

    @property
    def critical(self) -> bool:
        return self.severity == "critical"

    @property
    def fails_batch(self) -> bool:
        return self.critical and not self.success


@dataclass
class _Verdict:
    checks: list[Check] = field(default_factory=list)
    batch_failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- the class-balance table ---------------------------------------------------------------------


def label_shares(frame: pd.DataFrame, labels: Sequence[str]) -> pd.DataFrame:
    """One row per configured label: ``label, rows, labelled_rows, share``.

    Only labels from the configured set count, so a label absent from the partition shows as a
    zero share instead of vanishing.
    """
    counts = frame["label"].value_counts() if "label" in frame.columns else pd.Series(dtype=int)
    rows = [int(counts.get(label, 0)) for label in labels]
    total = sum(rows)
    return pd.DataFrame(
        {
            "label": pd.Series(list(labels), dtype=object),
            "rows": rows,
            "labelled_rows": [total] * len(rows),
            "share": [count / total if total else 0.0 for count in rows],
        }
    )


# --- running Great Expectations ------------------------------------------------------------------


def _ge_frame(frame: pd.DataFrame) -> pd.DataFrame:
    # GE 1.24 does not recognise pandas 3's "str" dtype in type checks; as object columns it
    # checks each value's Python type instead, which is the contract anyway.
    strings = {
        name: object for name, dtype in frame.dtypes.items() if isinstance(dtype, pd.StringDtype)
    }
    return frame.astype(strings) if strings else frame


def _gx() -> Any:
    # GE logs hundreds of INFO lines while importing, and one module pins its own logger to
    # INFO; the step's own log says what matters.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    return gx


def _context() -> Any:
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def run_suite(
    context: Any,
    table: str,
    suite: Suite,
    frame: pd.DataFrame,
    parameters: Mapping[str, Any],
    index_columns: Sequence[str],
) -> list[Check]:
    """Validate ``frame`` against ``suite``; results in the suite's order."""
    gx = _gx()

    try:
        gx_suite = context.suites.add(
            gx.ExpectationSuite(name=table, expectations=copy.deepcopy(suite.expectations))
        )
    except Exception as exc:  # GE raises pydantic and its own errors for a bad expectation
        raise SuiteError(f"expectation suite {suite.path} is not a valid GE suite: {exc}") from exc
    batch = (
        context.data_sources.add_pandas(table)
        .add_dataframe_asset(name=table)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": _ge_frame(frame)})
    )
    result = batch.validate(
        gx_suite,
        result_format={
            "result_format": "COMPLETE",
            "unexpected_index_column_names": list(index_columns),
        },
        expectation_parameters=dict(parameters),
    )
    order = {expectation.id: n for n, expectation in enumerate(gx_suite.expectations)}
    results = sorted(result.results, key=lambda r: order.get(r.expectation_config.id, len(order)))
    return [_to_check(table, r, index_columns) for r in results]


def _to_check(table: str, result: Any, index_columns: Sequence[str]) -> Check:
    config = result.expectation_config
    details = result.result or {}
    unexpected = [
        item for item in details.get("unexpected_index_list") or [] if isinstance(item, dict)
    ]
    flagged = (
        tuple(_key(item.get(ID_COLUMN)) for item in unexpected) if table == MESSAGES_TABLE else ()
    )
    # Row identity first, then the offending value.
    examples = [
        dict(sorted(item.items(), key=lambda pair: pair[0] not in index_columns))
        for item in unexpected[:MAX_EXAMPLES]
    ]
    return Check(
        table=table,
        type=config.type,
        kwargs={k: v for k, v in config.kwargs.items() if k != "batch_id"},
        why=str((config.meta or {}).get("why", "")),
        severity=str(getattr(config.severity, "value", config.severity) or "critical"),
        success=bool(result.success),
        observed=details.get("observed_value"),
        element_count=details.get("element_count"),
        missing_count=details.get("missing_count"),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        flagged=flagged,
        examples=tuple(plain(item) for item in examples),
        error=_exception_message(result.exception_info),
    )


def _exception_message(info: Any) -> str | None:
    # GE gives either one {"raised_exception", "exception_message"} or one per metric.
    if not isinstance(info, dict) or not info:
        return None
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    messages = [
        str(value.get("exception_message"))
        for value in info.values()
        if isinstance(value, dict) and value.get("raised_exception")
    ]
    return "; ".join(messages) or None


# --- deciding rows -------------------------------------------------------------------------------


def _key(value: Any) -> Any:
    """Hashable row id; every kind of missing value is one key."""
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def quarantine_reasons(
    ids: Sequence[Any], checks: Sequence[Check], batch_failures: Sequence[str]
) -> list[str | None]:
    """A reason per row (None: the row passed), in row order.

    Rows are found by message id; when ids repeat, every row with a flagged id is quarantined
    (never fewer), and the uniqueness expectation flags those rows anyway.
    """
    positions: dict[Any, list[int]] = {}
    for position, value in enumerate(ids):
        positions.setdefault(_key(value), []).append(position)
    reasons: list[list[str]] = [[] for _ in ids]
    if batch_failures:
        for row in reasons:
            row.append("batch failed: " + ", ".join(batch_failures))
    for check in checks:
        if not check.critical:
            continue
        hit = {position for key in check.flagged for position in positions.get(key, ())}
        for position in sorted(hit):
            reasons[position].append(check.name)
    return ["; ".join(row) if row else None for row in reasons]


def _ids(frame: pd.DataFrame) -> Counter[Any]:
    if ID_COLUMN not in frame.columns:
        return Counter({None: len(frame)})
    return Counter(_key(value) for value in frame[ID_COLUMN].tolist())


def _assert_complete(raw: pd.DataFrame, validated: pd.DataFrame, quarantined: pd.DataFrame) -> None:
    # A real check, not `assert`: it must hold under python -O too.
    same_count = len(validated) + len(quarantined) == len(raw)
    same_ids = _ids(validated) + _ids(quarantined) == _ids(raw)
    if not (same_count and same_ids):
        raise RuntimeError(
            f"validate lost or duplicated rows: raw {len(raw)}, validated {len(validated)}, "
            f"quarantined {len(quarantined)}"
        )


# --- reporting -----------------------------------------------------------------------------------


def failure_message(outcome: ValidationOutcome, verdict: _Verdict) -> str:
    """The readable report ``ValidationFailed`` carries."""
    lines = [
        f"partition {outcome.partition_dir.name} failed suite '{outcome.suite}': "
        f"{len(verdict.batch_failures)} expectation(s) failed.",
        f"All {outcome.counts['raw']} rows were quarantined in {outcome.quarantine_path}; "
        f"no {VALIDATED_FILE} was written. Report: {outcome.report_path}",
    ]
    lines += [f"- {note}" for note in verdict.notes]
    for check in verdict.checks:
        if not check.fails_batch:
            continue
        lines += failed_check_lines(check)
    return "\n".join(lines)


# --- the step ------------------------------------------------------------------------------------


def read_raw(directory: Path) -> pd.DataFrame:
    """The partition's raw.parquet, or a clear error."""
    path = directory / RAW_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no {RAW_FILE} in {directory}: "
            "run `python -m pipelines ingest` for this interval first"
        )
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise PartitionError(
            f"cannot read {path} as parquet ({type(exc).__name__}: {exc}); "
            "re-run ingest for this interval"
        ) from exc


def _evaluate(
    raw: pd.DataFrame, suite: Suite, labels: Sequence[str], interval: Interval
) -> _Verdict:
    verdict = _Verdict()
    missing = [c for c in required_columns(suite) if c not in raw.columns]
    if missing:
        verdict.batch_failures.append("missing columns " + ", ".join(missing))
        verdict.notes.append(
            f"{RAW_FILE} lacks columns {', '.join(missing)} that suite '{suite.name}' needs "
            f"(it has: {', '.join(map(str, raw.columns)) or 'none'})"
        )
        return verdict
    if raw.empty:
        verdict.notes.append("the partition has no rows: nothing to check, validated is empty")
        return verdict
    context = _context()
    parameters = suite_parameters(labels, interval)
    verdict.checks += run_suite(context, MESSAGES_TABLE, suite, raw, parameters, [ID_COLUMN])
    shares_suite = companion_suite(suite)
    if shares_suite is not None:
        shares = label_shares(raw, labels)
        verdict.checks += run_suite(
            context, SHARES_TABLE, shares_suite, shares, parameters, _SHARES_INDEX
        )
    verdict.batch_failures += [check.name for check in verdict.checks if check.fails_batch]
    return verdict


def split_rows(raw: pd.DataFrame, verdict: _Verdict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(validated, quarantined)``: every raw row lands in exactly one of them."""
    ids = raw[ID_COLUMN].tolist() if ID_COLUMN in raw.columns else [None] * len(raw)
    reasons = quarantine_reasons(ids, verdict.checks, verdict.batch_failures)
    flagged = pd.Series([reason is not None for reason in reasons], index=raw.index, dtype=bool)
    quarantined = raw.loc[flagged].reset_index(drop=True)
    quarantined[REASON_COLUMN] = pd.Series(
        [reason for reason in reasons if reason is not None], dtype=object
    ).astype("str")
    validated = raw.loc[~flagged].reset_index(drop=True)
    _assert_complete(raw, validated, quarantined)
    return validated, quarantined


def _write(
    directory: Path,
    validated: pd.DataFrame,
    quarantined: pd.DataFrame,
    report: dict[str, Any],
) -> None:
    # Order matters to readers: on failure the stale validated file goes first; on success it
    # is replaced only once the quarantine beside it is current.
    validated_path = directory / VALIDATED_FILE
    if not report["success"]:
        validated_path.unlink(missing_ok=True)
    write_parquet(quarantined, directory / QUARANTINE_FILE)
    if report["success"]:
        write_parquet(validated, validated_path)
    write_json(report, directory / REPORT_FILE)


def validate_partition(
    partition_dir: Path,
    *,
    labels: Sequence[str],
    suite_path: Path,
    interval: Interval | None = None,
) -> ValidationOutcome:
    """Validate ``partition_dir/raw.parquet``; write validated, quarantine and report files.

    ``interval`` defaults to the one the directory name encodes. Raises ``ValidationFailed``
    (after writing the quarantine and the report) when the batch fails.
    """
    started = time.perf_counter()
    interval = interval or Interval.from_key(partition_dir.name)
    suite = load_suite(suite_path)
    try:
        raw = read_raw(partition_dir)
    except PartitionError as exc:
        stale = partition_dir / VALIDATED_FILE
        if stale.exists():
            stale.unlink()
            raise PartitionError(f"{exc}; removed the stale {stale}") from exc
        raise
    verdict = _evaluate(raw, suite, labels, interval)
    success = not verdict.batch_failures
    validated, quarantined = split_rows(raw, verdict)
    counts = {
        "raw": len(raw),
        "validated": len(validated) if success else 0,
        "quarantined": len(quarantined),
    }
    report: dict[str, Any] = {
        "suite": suite.name,
        "suite_path": str(suite.path),
        "partition": partition_dir.name,
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "labels": list(labels),
        "success": success,
        "empty": raw.empty,
        "counts": counts,
        "failed_expectations": verdict.batch_failures,
        "notes": verdict.notes,
        "validated_file": VALIDATED_FILE if success else None,
        "quarantine_file": QUARANTINE_FILE,
        "validated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "expectations": [check_report(check) for check in verdict.checks],
    }
    _write(partition_dir, validated, quarantined, report)
    outcome = ValidationOutcome(
        partition_dir=partition_dir,
        suite=suite.name,
        success=success,
        counts=counts,
        report_path=partition_dir / REPORT_FILE,
        failed_expectations=tuple(verdict.batch_failures),
        empty=raw.empty,
        duration_s=time.perf_counter() - started,
    )
    if not success:
        raise ValidationFailed(failure_message(outcome, verdict), outcome)
    log.info(
        "validated %s: %d rows, %d quarantined (%.2f s)",
        partition_dir.name,
        len(raw),
        len(quarantined),
        outcome.duration_s,
    )
    return outcome


def validate_interval(
    interval: Interval, *, suite: str | None = None, params: Params | None = None
) -> ValidationOutcome:
    """Validate the partition of ``interval`` with settings and params.yaml (the DAG's entry)."""
    from pipelines.params import load_params
    from pipelines.settings import get_settings

    settings = get_settings()
    params = params or load_params(settings.params_path)
    name = suite or params.validate_.suite
    return validate_partition(
        partition_dir(settings.partitions_dir, interval),
        labels=params.labels,
        suite_path=suite_path(settings.expectations_dir, name),
        interval=interval,
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", help="interval start, ISO date or datetime (default: params)")
    parser.add_argument("--end", help="interval end, exclusive (default: params ingest.end)")
    parser.add_argument(
        "--suite", help="suite name in expectations/ or a JSON path (default: params)"
    )


def run_cli(args: argparse.Namespace) -> int:
    from pipelines.params import load_params
    from pipelines.settings import get_settings

    params = load_params(get_settings().params_path)
    interval = Interval.parse(args.start or params.ingest.start, args.end or params.ingest.end)
    outcome = validate_interval(interval, suite=args.suite, params=params)
    counts = outcome.counts
    note = " (empty partition)" if outcome.empty else ""
    print(
        f"{outcome.partition_dir.name}: passed suite '{outcome.suite}'{note}: "
        f"{counts['validated']} rows validated, {counts['quarantined']} quarantined; "
        f"report {outcome.report_path}"
    )
    return 0
