"""The DAG tasks' entry points: one Airflow-free function per task, small JSON-able results.

``dags/`` stays thin: each task makes one call into this module and hands the result's
``to_dict()`` to XCom, so XCom carries references only (interval bounds, paths, run ids,
versions, counts), never frames or models. The same functions run without Airflow (tests, a
shell), with settings and ``params.yaml`` as defaults.

Failures: every function raises :class:`FlowError` with a readable ``reason``.
``TransientError`` (``retryable``) means a retry may help: the chat store or the tracking
store is unreachable or locked, the network failed, another promotion holds the lock.
``PermanentError`` means it cannot: bad input, a failed validation (``ValidationRejected``), a
rejected gate (``GateRejected``), a refused or failed promotion attempt, a bug. The DAGs retry
the first kind and fail the task at once on the second.

Idempotence: a rerun of an interval overwrites its partition (see ``pipelines.partitions``), and
``train`` reuses the finished run whose ``training_key`` tag matches (same prepared data, same
``labels``/``train`` params, same code), so ``register`` returns the version it registered before
instead of adding one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar

from pipelines.params import Params, TrainParams, load_params
from pipelines.partitions import Interval
from pipelines.settings import Settings, get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.registry.promotion import PromotionOutcome

log = logging.getLogger(__name__)

TRAINING_KEY_TAG = "training_key"
TRAIN_IDS_ARTIFACT = "data/train_ids.parquet"  # logged by pipelines.model.train
VALIDATION_IDS_ARTIFACT = "data/validation_ids.parquet"  # logged here, after training

P = ParamSpec("P")
R = TypeVar("R")


# --- failures ------------------------------------------------------------------------------


class FlowError(RuntimeError):
    """A task's step failed; ``reason`` says why in one readable message."""

    retryable: ClassVar[bool] = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientError(FlowError):
    """A service was unreachable, locked or busy: the same call may succeed later."""

    retryable = True


class PermanentError(FlowError):
    """Retrying cannot help: the input, the configuration or the code must change."""


class ValidationRejected(PermanentError):
    """The interval's partition failed its expectation suite (rows quarantined)."""

    def __init__(self, reason: str, *, summary: str, report: str) -> None:
        super().__init__(reason)
        self.summary = summary  # one line, for notes and alerts
        self.report = report  # path of validation.json


class GateRejected(PermanentError):
    """The evaluation gate did not bless the challenger; ``reasons`` are the gate's."""

    def __init__(self, run_id: str, reasons: Iterable[str]) -> None:
        self.run_id = run_id
        self.reasons = [str(r) for r in reasons if str(r)]
        self.summary = f"gate rejected run {run_id}: " + ("; ".join(self.reasons) or "no reason")
        super().__init__(self.summary)


# Exceptions that say "try again later", matched by the qualified names in their MRO, so that
# classifying an error never imports a library the step did not load.
_TRANSIENT_TYPES = frozenset(
    {
        "pipelines.tracking.TrackingError",
        "pipelines.store.db.StoreError",
        "requests.exceptions.ConnectionError",
        "requests.exceptions.Timeout",
        "httpx.TransportError",
        "urllib3.exceptions.ProtocolError",
        "urllib3.exceptions.TimeoutError",
        "sqlalchemy.exc.OperationalError",
        "sqlalchemy.exc.TimeoutError",
    }
)
_TRANSIENT_MLFLOW_CODES = frozenset(
    {
        "TEMPORARILY_UNAVAILABLE",
        "SERVICE_UNDER_MAINTENANCE",
        "WORKSPACE_TEMPORARILY_UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "REQUEST_LIMIT_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "COULD_NOT_ACQUIRE_LOCK",
        "ABORTED",
    }
)
_TRANSIENT_MESSAGES = ("database is locked", "connection refused", "max retries exceeded")


def _qualified_names(exc: BaseException) -> set[str]:
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__}


def _transient_by_itself(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    names = _qualified_names(exc)
    if names & _TRANSIENT_TYPES:
        return True
    if "mlflow.exceptions.MlflowException" in names:
        if getattr(exc, "error_code", None) in _TRANSIENT_MLFLOW_CODES:
            return True
        return any(text in str(exc).lower() for text in _TRANSIENT_MESSAGES)
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether a retry may help: ``exc`` or an exception it was raised ``from`` is transient.

    A :class:`FlowError` says so itself (``retryable``). Only explicit causes count
    (``raise ... from``), not exceptions that merely happened while another was handled.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, FlowError):
            return current.retryable
        if _transient_by_itself(current):
            return True
        current = current.__cause__
    return False


def _step(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Classify what escapes the step as ``TransientError`` or ``PermanentError``."""

    def wrap(func: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except FlowError:
                raise
            except Exception as exc:
                if type(exc).__module__.split(".")[0] == "airflow":
                    raise  # the orchestrator's own signals (a task timeout, say) stay as they are
                what = f"{name}: {type(exc).__name__}: {exc}"
                if is_transient(exc):
                    log.warning("%s (transient: a retry may succeed)", what)
                    raise TransientError(what) from exc
                raise PermanentError(what) from exc

        return run

    return wrap


def _context(settings: Settings | None, params: Params | None) -> tuple[Settings, Params]:
    settings = settings or get_settings()
    return settings, params or load_params(settings.params_path)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# --- interval ------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntervalRef:
    """A data interval as XCom carries it: ISO bounds and the partition key."""

    start: str
    end: str
    key: str

    @classmethod
    def of(cls, interval: Interval) -> IntervalRef:
        return cls(interval.start.isoformat(), interval.end.isoformat(), interval.key)

    def interval(self) -> Interval:
        return Interval.parse(self.start, self.end)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _interval_of(ref: Mapping[str, Any] | IntervalRef) -> Interval:
    if isinstance(ref, IntervalRef):
        return ref.interval()
    try:
        return Interval.parse(ref["start"], ref["end"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentError(f"not an interval reference {dict(ref)!r}: {exc}") from exc


def resolve_interval(
    conf: Mapping[str, Any] | None,
    data_interval_start: datetime | None = None,
    data_interval_end: datetime | None = None,
) -> IntervalRef:
    """The run's data interval: ``conf`` ``start``/``end`` (ISO) when given, else the run's own.

    Manual and API-triggered runs in Airflow 3 may have no data interval (no logical date), and
    a trigger timetable gives an empty one: both need ``start`` and ``end`` in the conf.
    """
    conf = conf or {}
    start, end = conf.get("start"), conf.get("end")
    if start or end:
        if not (start and end):
            raise PermanentError(
                f"give both conf start and end (ISO dates), or neither; got start={start!r}, "
                f"end={end!r}"
            )
        try:
            return IntervalRef.of(Interval.parse(str(start), str(end)))
        except ValueError as exc:
            raise PermanentError(f"bad interval in the run's conf: {exc}") from exc
    if data_interval_start is None or data_interval_end is None:
        raise PermanentError(
            "this run has no data interval (a manual or API-triggered run without a logical "
            'date): trigger it with conf {"start": "YYYY-MM-DD", "end": "YYYY-MM-DD"}'
        )
    try:
        return IntervalRef.of(Interval.parse(data_interval_start, data_interval_end))
    except ValueError as exc:
        raise PermanentError(
            f"the run's data interval is unusable ({exc}); with a trigger timetable pass conf "
            "start and end"
        ) from exc


# --- ingest, validate, prepare -------------------------------------------------------------


@dataclass(frozen=True)
class IngestRef:
    interval: dict[str, str]
    partition: str
    rows: int
    labelled: int
    late_feedback_rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@_step("ingest")
def ingest(
    conf: Mapping[str, Any] | None = None,
    data_interval_start: datetime | None = None,
    data_interval_end: datetime | None = None,
    *,
    settings: Settings | None = None,
) -> IngestRef:
    """Resolve the run's interval (``resolve_interval``) and write its ``raw.parquet``."""
    from pipelines.data.ingest import ingest as ingest_interval
    from pipelines.store.db import make_engine

    settings = settings or get_settings()
    ref = resolve_interval(conf, data_interval_start, data_interval_end)
    engine = make_engine(settings.database_url)
    try:
        result = ingest_interval(engine, ref.interval(), settings.partitions_dir)
    finally:
        engine.dispose()
    log.info(
        "ingest %s: %d rows (%d labelled) -> %s", ref.key, result.rows, result.labelled, result.path
    )
    return IngestRef(
        interval=ref.to_dict(),
        partition=str(result.path.parent),
        rows=result.rows,
        labelled=result.labelled,
        late_feedback_rows=result.late_feedback_rows,
    )


@dataclass(frozen=True)
class ValidateRef:
    interval: dict[str, str]
    partition: str
    report: str
    rows: int
    validated: int
    quarantined: int
    empty: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@_step("validate")
def validate(
    interval: Mapping[str, Any] | IntervalRef,
    *,
    settings: Settings | None = None,
    params: Params | None = None,
) -> ValidateRef:
    """Check the interval's partition with the suite of ``params.validate``.

    A failed batch raises ``ValidationRejected`` (its rows are in quarantine.parquet, the report
    in validation.json); retrying cannot fix the data.
    """
    from pipelines.data.validate import ValidationFailed, suite_path, validate_partition
    from pipelines.partitions import partition_dir

    settings, params = _context(settings, params)
    span = _interval_of(interval)
    directory = partition_dir(settings.partitions_dir, span)
    try:
        outcome = validate_partition(
            directory,
            labels=params.labels,
            suite_path=suite_path(settings.expectations_dir, params.validate_.suite),
            interval=span,
        )
    except ValidationFailed as exc:
        failed = ", ".join(exc.outcome.failed_expectations) or "see the report"
        summary = (
            f"validation failed: partition {directory.name} failed suite "
            f"'{exc.outcome.suite}' ({len(exc.outcome.failed_expectations)} expectation(s): "
            f"{failed}); {exc.outcome.counts.get('raw', 0)} rows quarantined"
        )
        raise ValidationRejected(
            f"{summary}\n{exc}", summary=summary, report=str(exc.outcome.report_path)
        ) from exc
    return ValidateRef(
        interval=IntervalRef.of(span).to_dict(),
        partition=str(directory),
        report=str(outcome.report_path),
        rows=outcome.counts["raw"],
        validated=outcome.counts["validated"],
        quarantined=outcome.counts["quarantined"],
        empty=outcome.empty,
    )


@dataclass(frozen=True)
class PrepareRef:
    interval_end: str
    prepared_dir: str
    content_hash: str
    counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@_step("prepare")
def prepare(
    interval: Mapping[str, Any] | IntervalRef,
    *,
    settings: Settings | None = None,
    params: Params | None = None,
) -> PrepareRef:
    """Build the prepared dataset for the window ending at the interval's end."""
    from pipelines.data.prepare import prepare_dataset

    settings, params = _context(settings, params)
    end = _interval_of(interval).end
    result = prepare_dataset(settings, params, interval_end=end)
    return PrepareRef(
        interval_end=end.isoformat(),
        prepared_dir=str(result.directory),
        content_hash=result.content_hash,
        counts=dict(result.counts),
    )


def _manifest_hash(prepared_dir: Path) -> str:
    path = prepared_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PermanentError(f"{path} not found: run prepare first") from exc
    content_hash = manifest.get("content_hash") if isinstance(manifest, dict) else None
    if not content_hash:
        raise PermanentError(f"{path} has no content_hash")
    return str(content_hash)


def _require_same_dataset(prepared_dir: Path, expected: str | None) -> str:
    """The prepared dataset's hash; it must still be the one ``prepare`` reported."""
    content_hash = _manifest_hash(prepared_dir)
    if expected and content_hash != expected:
        raise PermanentError(
            f"the prepared dataset in {prepared_dir} changed since this run prepared it "
            f"(content hash {content_hash[:12]}, expected {expected[:12]}): another run or a "
            "manual `prepare` wrote it; rerun this run from prepare"
        )
    return content_hash


# --- "nothing new" -------------------------------------------------------------------------


@dataclass(frozen=True)
class NewDataCheck:
    proceed: bool
    reason: str
    new_labelled_rows: int | None
    labelled_rows: int
    threshold: int
    baseline_alias: str | None  # "champion", or "challenger" while no champion exists
    baseline_version: str | None
    content_hash: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def labelled_partition_ids(prepared_dir: Path, params: Params) -> set[str]:
    """Ids of the prepared train and validation rows that came labelled from partitions."""
    from pipelines.data.prepare import FEEDBACK_SOURCE, PREDICTION_SOURCE, read_split

    sources = {FEEDBACK_SOURCE}
    if params.prepare.use_predicted_labels:
        sources.add(PREDICTION_SOURCE)
    ids: set[str] = set()
    for split in ("train", "validation"):
        frame = read_split(prepared_dir, split)
        ids.update(frame.loc[frame["source"].isin(sorted(sources)), "id"].astype(str))
    return ids


def _artifact_ids(client: MlflowClient, run_id: str, artifact: str, work: Path) -> set[str] | None:
    import pandas as pd
    from mlflow.exceptions import MlflowException

    try:
        local = client.download_artifacts(run_id, artifact, str(work))
    except (MlflowException, OSError) as exc:
        if is_transient(exc):
            raise
        log.info("run %s has no %s (%s)", run_id, artifact, type(exc).__name__)
        return None
    return set(pd.read_parquet(local, columns=["id"])["id"].astype(str))


def seen_ids(client: MlflowClient, run_id: str) -> tuple[set[str] | None, bool]:
    """Ids a training run trained on plus those it validated on, if it logged them.

    ``(None, False)`` when the run logged no training ids; the flag says whether validation ids
    were found too.
    """
    with tempfile.TemporaryDirectory(prefix="emoreg-seen-") as tmp:
        trained = _artifact_ids(client, run_id, TRAIN_IDS_ARTIFACT, Path(tmp) / "train")
        if trained is None:
            return None, False
        validated = _artifact_ids(client, run_id, VALIDATION_IDS_ARTIFACT, Path(tmp) / "val")
    return trained | (validated or set()), validated is not None


@_step("check_new_data")
def check_new_data(
    prepared: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    params: Params | None = None,
) -> NewDataCheck:
    """Is there enough newly labelled data to train a challenger?

    Counts the labelled partition rows (source ``feedback``; ``prediction`` too with
    ``prepare.use_predicted_labels``) of the prepared train and validation splits whose id the
    baseline never saw (its logged training ids, plus its validation ids when logged). The
    baseline is the champion; while none exists, the challenger waiting for approval (training
    again on what it saw would only queue a twin behind it). Fewer than
    ``retrain.min_new_labelled_rows``: ``proceed`` is False. Without either, or when the
    baseline's training ids are unknown, it always proceeds.
    """
    from pipelines.tracking import CHALLENGER_ALIAS, CHAMPION_ALIAS, alias_version
    from pipelines.tracking import client as tracking_client

    settings, params = _context(settings, params)
    prepared_dir = settings.prepared_dir
    content_hash = _require_same_dataset(prepared_dir, (prepared or {}).get("content_hash"))
    labelled = labelled_partition_ids(prepared_dir, params)
    threshold = params.retrain.min_new_labelled_rows
    client = tracking_client(settings)
    name = settings.registered_model_name
    alias, baseline = CHAMPION_ALIAS, alias_version(client, name, CHAMPION_ALIAS)
    if baseline is None:
        alias, baseline = CHALLENGER_ALIAS, alias_version(client, name, CHALLENGER_ALIAS)

    def outcome(proceed: bool, reason: str, new: int | None) -> NewDataCheck:
        log.info("check_new_data: %s", reason)
        version = str(baseline.version) if baseline is not None else None
        return NewDataCheck(
            proceed,
            reason,
            new,
            len(labelled),
            threshold,
            alias if baseline is not None else None,
            version,
            content_hash,
        )

    if baseline is None:
        return outcome(
            True,
            f"no champion or challenger of {name} yet: training one "
            f"({len(labelled)} labelled partition rows prepared)",
            None,
        )
    version = str(baseline.version)
    seen, with_validation = seen_ids(client, baseline.run_id) if baseline.run_id else (None, False)
    if seen is None:
        return outcome(
            True,
            f"{alias} version {version} logged no training ids ({TRAIN_IDS_ARTIFACT}): cannot "
            "tell what is new, training",
            None,
        )
    new = len(labelled - seen)
    basis = "" if with_validation else " (its validation ids were not logged: they count as new)"
    counted = (
        f"{new} of {len(labelled)} labelled partition rows in the prepared train/validation "
        f"splits are new since {alias} version {version}{basis}; threshold "
        f"retrain.min_new_labelled_rows={threshold}"
    )
    if new >= threshold:
        return outcome(True, f"{counted}: training", new)
    return outcome(False, f"nothing new enough: {counted}: skipping train, evaluate, register", new)


# --- train ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainRef:
    run_id: str
    model_uri: str
    training_key: str
    reused: bool
    content_hash: str
    git_commit: str
    max_train_rows: int | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def training_key(
    content_hash: str, labels: Iterable[str], train: TrainParams, git_commit: str
) -> str:
    """sha256 of what determines a trained model: data, labels, train params, code."""
    payload = {
        "content_hash": content_hash,
        "labels": list(labels),
        "train": train.model_dump(mode="json"),
        "git_commit": git_commit,
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def with_max_train_rows(params: Params, max_train_rows: int | None) -> Params:
    """``params`` with ``train.max_train_rows`` replaced (validated) when given."""
    if max_train_rows is None:
        return params
    try:
        train = TrainParams.model_validate(
            params.train.model_dump() | {"max_train_rows": max_train_rows}
        )
    except ValueError as exc:
        raise PermanentError(f"bad max_train_rows {max_train_rows!r}: {exc}") from exc
    return params.model_copy(update={"train": train})


def find_reusable_run(client: MlflowClient, experiment_id: str, key: str) -> str | None:
    """The newest FINISHED run tagged with ``key`` whose model can be resolved, if any."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{TRAINING_KEY_TAG} = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=20,
    )
    for run in runs:
        try:
            get_model_info(f"runs:/{run.info.run_id}/model")
        except (MlflowException, OSError) as exc:
            if is_transient(exc):
                raise
            log.warning(
                "run %s has training key %s but no model (%s): not reused",
                run.info.run_id,
                key[:12],
                exc,
            )
            continue
        return str(run.info.run_id)
    return None


def _log_validation_ids(client: MlflowClient, run_id: str, prepared_dir: Path) -> None:
    """Log the validation split's ids beside the training ids (``check_new_data`` reads both)."""
    from pipelines.data.prepare import read_split

    with tempfile.TemporaryDirectory(prefix="emoreg-valids-") as tmp:
        path = Path(tmp) / Path(VALIDATION_IDS_ARTIFACT).name
        read_split(prepared_dir, "validation")[["id", "label"]].to_parquet(path, index=False)
        client.log_artifact(run_id, str(path), str(Path(VALIDATION_IDS_ARTIFACT).parent))


@_step("train")
def train(
    prepared: Mapping[str, Any] | None = None,
    *,
    max_train_rows: int | None = None,
    settings: Settings | None = None,
    params: Params | None = None,
) -> TrainRef:
    """Train on the prepared dataset, or reuse the finished run with the same training key.

    The key (``training_key``) covers the prepared ``content_hash``, the ``labels`` and ``train``
    params (``max_train_rows`` included) and the git commit. A new run gets the tag
    ``training_key`` and its validation ids (``data/validation_ids.parquet``) once trained.
    """
    from mlflow import MlflowClient

    from pipelines.model.train import train as train_model
    from pipelines.tracking import configure_mlflow, git_commit

    settings, params = _context(settings, params)
    params = with_max_train_rows(params, max_train_rows)
    content_hash = _require_same_dataset(
        settings.prepared_dir, (prepared or {}).get("content_hash")
    )
    commit = git_commit(settings.project_root)
    key = training_key(content_hash, params.labels, params.train, commit)
    experiment_id = configure_mlflow(settings)
    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    reused = find_reusable_run(client, experiment_id, key)
    if reused is not None:
        log.info("train: reusing run %s (same training key %s): no new training", reused, key[:12])
        return TrainRef(
            run_id=reused,
            model_uri=f"runs:/{reused}/model",
            training_key=key,
            reused=True,
            content_hash=content_hash,
            git_commit=commit,
            max_train_rows=params.train.max_train_rows,
        )
    result = train_model(settings, params)
    _log_validation_ids(client, result.run_id, settings.prepared_dir)
    client.set_tag(result.run_id, TRAINING_KEY_TAG, key)
    log.info(
        "train: run %s trained in %.0f s (training key %s)", result.run_id, result.wall_s, key[:12]
    )
    metrics = {name: _finite(value) for name, value in result.metrics.items()}
    return TrainRef(
        run_id=result.run_id,
        model_uri=result.model_uri,
        training_key=key,
        reused=False,
        content_hash=content_hash,
        git_commit=commit,
        max_train_rows=params.train.max_train_rows,
        metrics=metrics,
    )


# --- evaluate, register --------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluateRef:
    run_id: str
    verdict: str
    reasons: list[str]
    compared_to: str
    metrics: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


HEADLINE_METRICS = ("macro_f1", "accuracy", "negative_recall", "ece")


@_step("evaluate")
def evaluate(
    run_id: str, *, settings: Settings | None = None, params: Params | None = None
) -> EvaluateRef:
    """Score the run on the golden test set against the champion; ``GateRejected`` if not
    blessed (the run keeps its ``gate``/``gate_reasons`` tags and report either way)."""
    from pipelines.evaluation.evaluate import evaluate as evaluate_run

    settings, params = _context(settings, params)
    result = evaluate_run(settings, params, run_id=run_id)
    decision = result.decision
    if not decision.blessed:
        raise GateRejected(run_id, decision.reasons)
    return EvaluateRef(
        run_id=run_id,
        verdict=decision.verdict,
        reasons=list(decision.reasons),
        compared_to=result.compared_to,
        metrics={name: _finite(result.metrics.get(name)) for name in HEADLINE_METRICS},
    )


@dataclass(frozen=True)
class RegisterRef:
    model_name: str
    version: str
    run_id: str
    created: bool
    model_uri: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@_step("register")
def register(run_id: str, *, settings: Settings | None = None) -> RegisterRef:
    """Register the blessed run as a version aliased ``challenger`` (``approval=pending``).

    Registering a run twice returns its existing version with ``created`` False.
    """
    from pipelines.registry.register import register as register_run

    settings = settings or get_settings()
    result = register_run(settings, run_id=run_id)
    if not result.registered or result.version is None:
        raise GateRejected(run_id, result.reasons)
    log.info("register: %s", result.message)
    name = settings.registered_model_name
    return RegisterRef(
        model_name=name,
        version=result.version,
        run_id=result.run_id,
        created=result.created,
        model_uri=f"models:/{name}/{result.version}",
    )


# --- promotion (pipelines.registry.promotion) ----------------------------------------------


def _promotion(name: str, call: Callable[[ModuleType], PromotionOutcome]) -> PromotionOutcome:
    """``call(pipelines.registry.promotion)``: a held lock is transient, a failed attempt
    permanent (the old champion keeps serving; the next scheduled run tries again)."""
    from pipelines.registry import promotion

    try:
        outcome = call(promotion)
    except promotion.PromotionBusy as exc:
        raise TransientError(f"{name}: another promotion holds the lock: {exc}") from exc
    except promotion.PromotionError as exc:
        raise PermanentError(f"{name} failed (the old champion keeps serving): {exc}") from exc
    log.info("%s: %s%s", name, outcome.action, f" ({outcome.reason})" if outcome.reason else "")
    return outcome


@_step("check_serving")
def check_serving(
    *, settings: Settings | None = None, params: Params | None = None
) -> PromotionOutcome:
    """Make sure the champion's model server answers (restart it if needed)."""
    settings, params = _context(settings, params)
    return _promotion("check_serving", lambda module: module.ensure_serving(settings, params))


@_step("promote")
def promote(*, settings: Settings | None = None, params: Params | None = None) -> PromotionOutcome:
    """Promote an approved challenger; ``action`` ``none`` when no approval waits, ``refused``
    (with the reason) when the approval does not hold: both are successful outcomes."""
    settings, params = _context(settings, params)
    return _promotion("promote", lambda module: module.promote_approved(settings, params))


@_step("rollback")
def rollback(
    reason: str, *, settings: Settings | None = None, params: Params | None = None
) -> PromotionOutcome:
    """Put the ``previous`` champion back in service; ``reason`` is recorded with it."""
    if not reason or not reason.strip():
        raise PermanentError("rollback needs a reason (who asked and why)")
    settings, params = _context(settings, params)
    return _promotion("rollback", lambda module: module.rollback(settings, params, reason.strip()))
