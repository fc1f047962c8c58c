"""Score the challenger (and the champion) on the golden test set, run the behavioural checks,
decide with the gate, and record everything in the challenger's MLflow run.

Outputs:

* MLflow, in the challenger's run: metrics ``test_*`` (challenger) and ``champion_test_*``
  (champion on the same test set), ``baseline_test_*`` (the lineage's baseline of the gate's
  ``drift_metrics``, which a blessed run carries on to its challengers), ``gate_blessed``; tags
  ``gate``, ``gate_reasons``, ``compared_to``, ``gate_baseline_run``, ``eval_registered_model``,
  ``eval_dataset_hash``, ``eval_data_interval``, ``eval_test_sha256``;
  artifacts under ``evaluation/``: ``confusion_matrix.png``, ``per_class.png``,
  ``calibration.png``, ``report.html``, ``metrics.json``, ``behaviour.json``, ``gate.json``;
  with a champion also ``confusion_matrix_champion.png`` and ``disagreements.csv`` (the golden
  rows the two models label differently), and metrics ``disagreement_rows``,
  ``disagreement_challenger_matches_label``, ``disagreement_champion_matches_label`` and, per
  label, ``disagreement_challenger_says_<label>``.
* Local: the same files under ``var/runs/evaluation/<run_id>/`` and the hand-over record
  ``var/runs/evaluation.json`` for ``register`` (written last, atomically).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipelines.data.prepare import read_split
from pipelines.domains import review_domain
from pipelines.evaluation.behaviour import (
    BehaviourReport,
    Check,
    PredictFn,
    load_checks,
    run_behaviour_checks,
)
from pipelines.evaluation.disagreement import disagreement_counts, disagreements
from pipelines.evaluation.gate import Baseline, GateDecision, decide
from pipelines.evaluation.metrics import flatten, proba_matrix, scorecard, source_group
from pipelines.evaluation.report import ModelReport, ReportPaths, write_report
from pipelines.params import Params, load_params
from pipelines.partitions import atomic_path, dataset_interval, write_json
from pipelines.settings import Settings, get_settings
from pipelines.tracking import CHAMPION_ALIAS, alias_version

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

ARTIFACT_DIR = "evaluation"
DISAGREEMENTS_FILE = "disagreements.csv"
# The lineage's baseline in a run: metrics BASELINE_PREFIX + name, and whose scores they are.
BASELINE_PREFIX = "baseline_test_"
BASELINE_RUN_TAG = "gate_baseline_run"
TEST_SHA_TAG = "eval_test_sha256"
# MLflow keeps tag values up to 8000 characters in its SQL store; stay well below.
MAX_TAG_CHARS = 4000


@dataclass(frozen=True)
class ScoredModel:
    name: str
    uri: str
    scorecard: dict[str, Any]
    behaviour: BehaviourReport | None
    flat: dict[str, float]
    predicted_labels: tuple[str, ...]

    def as_report(self) -> ModelReport:
        behaviour = self.behaviour.to_dict() if self.behaviour else None
        return ModelReport(self.name, self.scorecard, behaviour)


@dataclass(frozen=True)
class EvaluationResult:
    run_id: str
    model_uri: str
    metrics: dict[str, float]
    champion_version: str | None
    champion_metrics: dict[str, float] | None
    baseline: Baseline
    comparison: dict[str, float]  # disagreement counts; empty without a champion
    decision: GateDecision
    report: ReportPaths
    record_path: Path

    @property
    def compared_to(self) -> str:
        return self.champion_version or "none"


# ------------------------------------------------------------------------------ inputs


def evaluation_record_path(settings: Settings) -> Path:
    return settings.var_dir / "runs" / "evaluation.json"


def read_test_set(path: Path, labels: Sequence[str]) -> pd.DataFrame:
    """The golden test split, checked: required columns, no empty text, only known labels."""
    frame = read_split(path.parent, path.stem)
    if frame.empty:
        raise ValueError(f"{path} holds no rows")
    text = frame["text"]
    if text.isna().any() or (text.astype(str).str.strip() == "").any():
        raise ValueError(f"{path} holds rows with empty text")
    unknown = sorted(set(frame["label"].astype(str)) - set(labels))
    if frame["label"].isna().any() or unknown:
        raise ValueError(f"{path} holds labels not in params.labels {list(labels)}: {unknown}")
    frame = frame.assign(source=frame["source"].fillna("unknown").astype(str))
    return with_domains(frame).reset_index(drop=True)


def with_domains(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a ``domain`` column: the kind of shop of each real row (``review_domain``),
    None for generated rows, so that the scorecard reports accuracy per domain."""
    domains = [
        review_domain(str(text)) if source_group(str(source)) == "real" else None
        for text, source in zip(frame["text"], frame["source"], strict=True)
    ]
    return frame.assign(domain=pd.Series(domains, index=frame.index, dtype=object))


def read_manifest(prepared_dir: Path) -> dict[str, Any]:
    path = prepared_dir / "manifest.json"
    if not path.is_file():
        log.warning("no %s: dataset_hash and data_interval will read 'unknown'", path)
        return {}
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return manifest


def resolve_run_id(settings: Settings, run_id: str | None) -> str:
    """The given run id, else the one ``train`` recorded in ``var/runs/train.json``."""
    if run_id:
        return run_id
    path = settings.var_dir / "runs" / "train.json"
    if not path.is_file():
        raise FileNotFoundError(f"no run to evaluate: pass --run-id or run train first ({path})")
    record = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(record, dict) or not record.get("run_id"):
        raise ValueError(f"{path} has no run_id")
    return str(record["run_id"])


# ------------------------------------------------------------------------------ scoring


def predict_in_batches(model: Any, texts: Sequence[str], batch_size: int) -> pd.DataFrame:
    """The pyfunc's output for ``texts``, batch by batch, as one frame aligned with the input."""
    parts = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        output = pd.DataFrame(model.predict(pd.DataFrame({"text": batch})))
        if len(output) != len(batch):
            raise ValueError(f"the model returned {len(output)} rows for {len(batch)} texts")
        parts.append(output.reset_index(drop=True))
    if not parts:
        return pd.DataFrame(columns=["label"])
    return pd.concat(parts, ignore_index=True)


def make_predict_fn(model: Any, batch_size: int) -> PredictFn:
    return lambda texts: predict_in_batches(model, texts, batch_size)


def score_model(
    name: str,
    uri: str,
    model: Any,
    test: pd.DataFrame,
    params: Params,
    checks: Sequence[Check],
) -> ScoredModel:
    """Scorecard on the test set, behavioural checks, and the flat metrics the gate reads."""
    batch = params.evaluate.batch_size
    predictions = predict_in_batches(model, test["text"].astype(str).tolist(), batch)
    proba_matrix(predictions, params.labels)  # fail early, naming missing columns
    card = scorecard(test, predictions, params.labels, bins=params.evaluate.calibration_bins)
    behaviour = None
    flat = flatten(card)
    if checks:
        behaviour = run_behaviour_checks(
            make_predict_fn(model, batch), checks, max_failures=params.evaluate.max_failures_shown
        )
        flat["behaviour_pass_rate"] = behaviour.pass_rate
        flat["behaviour_passed"] = float(behaviour.passed)
    labels = tuple(predictions["label"].astype(str))
    return ScoredModel(name, uri, card, behaviour, flat, predicted_labels=labels)


def load_pyfunc(uri: str) -> Any:
    import mlflow

    try:
        return mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # MLflow raises many types for a missing or broken model
        raise RuntimeError(f"cannot load the model at {uri}: {exc}") from exc


def find_champion(client: MlflowClient, model_name: str) -> ModelVersion | None:
    """The version holding the champion alias, or None when the model or alias does not exist."""
    return alias_version(client, model_name, CHAMPION_ALIAS)


# ------------------------------------------------------------------------------ recording


def lineage_baseline(
    client: MlflowClient,
    names: Sequence[str],
    challenger: ScoredModel,
    run_id: str,
    champion: tuple[ScoredModel, ModelVersion] | None,
    test_sha256: str,
) -> Baseline:
    """The scores the challenger's drift is held against.

    Without a champion the challenger starts a lineage: its own scores. Otherwise the baseline
    the champion's run carries, when it was scored on this very test set and holds every metric
    of ``names``; else (a champion evaluated before the baseline existed, a new golden set, a
    metric added to ``drift_metrics``) the champion's scores on this test set start it anew.
    """
    if champion is None:
        note = "no champion: the challenger's own scores start the lineage"
        return Baseline.of(challenger.flat, names, run_id, note)
    scored, version = champion
    if not version.run_id:  # a version registered from files, not from a run
        note = f"champion v{version.version}'s own scores: it has no run to carry one"
        return Baseline.of(scored.flat, names, "unknown", note)
    champion_run = client.get_run(version.run_id)
    carried = champion_run.data.metrics
    origin = champion_run.data.tags.get(BASELINE_RUN_TAG)
    missing = [n for n in names if f"{BASELINE_PREFIX}{n}" not in carried]
    if origin and not missing and champion_run.data.tags.get(TEST_SHA_TAG) == test_sha256:
        values = {n: carried[f"{BASELINE_PREFIX}{n}"] for n in names}
        return Baseline(values, origin, f"carried by champion v{version.version}")
    if not origin:
        why = "it carries none"
    elif missing:
        why = f"it carries none for {', '.join(missing)}"
    else:
        why = "it was evaluated on another test set"
    note = f"champion v{version.version}'s own scores: {why}"
    log.warning("the lineage's baseline starts anew at %s", note)
    return Baseline.of(scored.flat, names, version.run_id, note)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not math.isnan(v)}


def _log_to_run(
    client: MlflowClient,
    run_id: str,
    challenger: ScoredModel,
    champion: ScoredModel | None,
    comparison: dict[str, float],
    decision: GateDecision,
    baseline: Baseline,
    tags: dict[str, str],
    out_dir: Path,
) -> None:
    from mlflow.entities import Metric

    now = int(datetime.now(UTC).timestamp() * 1000)
    values = {f"test_{k}": v for k, v in _finite(challenger.flat).items()}
    if champion is not None:
        values |= {f"champion_test_{k}": v for k, v in _finite(champion.flat).items()}
    values |= comparison
    values |= {f"{BASELINE_PREFIX}{k}": v for k, v in _finite(baseline.metrics).items()}
    values["gate_blessed"] = float(decision.blessed)
    metrics = [Metric(key, float(value), now, 0) for key, value in sorted(values.items())]
    for start in range(0, len(metrics), 500):  # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=metrics[start : start + 500])
    client.log_artifacts(run_id, str(out_dir), artifact_path=ARTIFACT_DIR)
    # Tags last: a run tagged `gate` has its evidence logged beside it.
    for key, value in tags.items():
        client.set_tag(run_id, key, value[:MAX_TAG_CHARS])


def _write_evidence(
    out_dir: Path,
    challenger: ScoredModel,
    champion: ScoredModel | None,
    decision: GateDecision,
    compared_to: str,
    baseline: Baseline,
) -> None:
    def model_part(model: ScoredModel | None) -> dict[str, Any] | None:
        if model is None:
            return None
        return {"name": model.name, "uri": model.uri, "flat": model.flat, **model.scorecard}

    def behaviour_part(model: ScoredModel | None) -> dict[str, Any] | None:
        return model.behaviour.to_dict() if model and model.behaviour else None

    write_json(
        {"challenger": model_part(challenger), "champion": model_part(champion)},
        out_dir / "metrics.json",
    )
    write_json(
        {"challenger": behaviour_part(challenger), "champion": behaviour_part(champion)},
        out_dir / "behaviour.json",
    )
    write_json(
        {**decision.to_dict(), "compared_to": compared_to, "baseline": asdict(baseline)},
        out_dir / "gate.json",
    )


def _write_disagreements(out_dir: Path, rows: pd.DataFrame) -> Path:
    path = out_dir / DISAGREEMENTS_FILE
    with atomic_path(path) as tmp:
        rows.to_csv(tmp, index=False, encoding="utf-8")
    return path


def _replace_dir(new: Path, target: Path) -> None:
    """Put folder ``new`` in the place of ``target``."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------ the step


@dataclass(frozen=True)
class TestSet:
    """The golden test split with the identities recorded beside every evaluation."""

    frame: pd.DataFrame
    path: Path
    sha256: str
    dataset_hash: str
    data_interval: str

    def describe(self) -> str:
        return f"{self.path} ({len(self.frame)} rows, sha256 {self.sha256[:12]})"


def load_test_set(settings: Settings, params: Params) -> TestSet:
    path = settings.prepared_dir / "test.parquet"
    frame = read_test_set(path, params.labels)
    manifest = read_manifest(settings.prepared_dir)
    return TestSet(
        frame=frame,
        path=path,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        dataset_hash=str(manifest.get("content_hash") or "unknown"),
        data_interval=dataset_interval(manifest) or "unknown",
    )


def _score_champion(
    client: MlflowClient, settings: Settings, test: TestSet, params: Params, checks: list[Check]
) -> tuple[ScoredModel | None, ModelVersion | None]:
    version = find_champion(client, settings.registered_model_name)
    if version is None:
        return None, None
    uri = f"models:/{settings.registered_model_name}/{version.version}"
    log.info("scoring champion %s on the same test set", uri)
    name = f"champion v{version.version}"
    return score_model(name, uri, load_pyfunc(uri), test.frame, params, checks), version


def evaluate(settings: Settings, params: Params, *, run_id: str | None = None) -> EvaluationResult:
    """Evaluate a trained run against the champion and record the gate's decision."""
    from pipelines.tracking import client as tracking_client

    run_id = resolve_run_id(settings, run_id)
    test = load_test_set(settings, params)
    checks = load_checks(
        settings.expectations_dir / params.evaluate.behaviour_checks, params.labels
    )
    client = tracking_client(settings)
    _require_run(client, run_id, settings.mlflow_tracking_uri)

    model_uri = f"runs:/{run_id}/model"
    log.info("scoring challenger %s on %d test rows", model_uri, len(test.frame))
    challenger = score_model(
        f"challenger {run_id[:8]}", model_uri, load_pyfunc(model_uri), test.frame, params, checks
    )
    champion, champion_version = _score_champion(client, settings, test, params, checks)
    baseline = lineage_baseline(
        client,
        list(params.gate.drift_metrics),
        challenger,
        run_id,
        (champion, champion_version) if champion and champion_version else None,
        test.sha256,
    )
    decision = decide(challenger.flat, champion.flat if champion else None, params.gate, baseline)
    compared_to = str(champion_version.version) if champion_version else "none"
    log.info("gate: %s (%s)", decision.verdict, "; ".join(decision.reasons))

    # Everything is written to a staging folder, logged, then swapped in: no stale file of an
    # earlier evaluation of the same run (a champion picture, say) survives.
    out_dir = settings.var_dir / "runs" / "evaluation" / run_id
    staging = out_dir.with_name(f".{run_id}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    evaluated_at = datetime.now(UTC).isoformat(timespec="seconds")
    meta = {
        "run id": run_id,
        "challenger": model_uri,
        "champion": champion.uri if champion else "none",
        "registered model": settings.registered_model_name,
        "test set": test.describe(),
        "dataset hash": test.dataset_hash,
        "data interval": test.data_interval,
        "gate baseline": f"run {baseline.run_id} ({baseline.note})",
        "evaluated at": evaluated_at,
    }
    champion_report = champion.as_report() if champion else None
    disagreeing = (
        disagreements(test.frame, challenger.predicted_labels, champion.predicted_labels)
        if champion
        else None
    )
    comparison = disagreement_counts(disagreeing, params.labels) if disagreeing is not None else {}
    report = write_report(
        staging, challenger.as_report(), champion_report, decision, meta, disagreeing
    )
    _write_evidence(staging, challenger, champion, decision, compared_to, baseline)
    if disagreeing is not None:
        _write_disagreements(staging, disagreeing)
    tags = {
        "gate": decision.verdict,
        "gate_reasons": "; ".join(decision.reasons),
        "compared_to": compared_to,
        BASELINE_RUN_TAG: baseline.run_id,
        "eval_registered_model": settings.registered_model_name,
        "eval_dataset_hash": test.dataset_hash,
        "eval_data_interval": test.data_interval,
        TEST_SHA_TAG: test.sha256,
    }
    _log_to_run(client, run_id, challenger, champion, comparison, decision, baseline, tags, staging)
    _replace_dir(staging, out_dir)

    result = EvaluationResult(
        run_id=run_id,
        model_uri=model_uri,
        metrics=challenger.flat,
        champion_version=str(champion_version.version) if champion_version else None,
        champion_metrics=champion.flat if champion else None,
        baseline=baseline,
        comparison=comparison,
        decision=decision,
        report=report.moved_to(out_dir),
        record_path=evaluation_record_path(settings),
    )
    champion_run = champion_version.run_id if champion_version else None
    write_json(_record(result, settings, test, champion_run, evaluated_at), result.record_path)
    return result


def _record(
    result: EvaluationResult,
    settings: Settings,
    test: TestSet,
    champion_run_id: str | None,
    evaluated_at: str,
) -> dict[str, Any]:
    """``evaluation.json``: what register (and a person) needs without opening MLflow."""
    return {
        "run_id": result.run_id,
        "model_uri": result.model_uri,
        "registered_model_name": settings.registered_model_name,
        "blessed": result.decision.blessed,
        "verdict": result.decision.verdict,
        "reasons": result.decision.reasons,
        "gate_checks": result.decision.checks,
        "compared_to": result.compared_to,
        "champion_version": result.champion_version,
        "champion_run_id": champion_run_id,
        "dataset_hash": test.dataset_hash,
        "data_interval": test.data_interval,
        "test_set": {"path": str(test.path), "rows": len(test.frame), "sha256": test.sha256},
        "metrics": result.metrics,
        "champion_metrics": result.champion_metrics,
        "baseline": asdict(result.baseline),
        "disagreements": result.comparison or None,
        "report": result.report.as_dict(),
        "evaluated_at": evaluated_at,
    }


def _require_run(client: MlflowClient, run_id: str, uri: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException as exc:
        raise ValueError(f"run {run_id!r} not found in the tracking store {uri}") from exc


# ------------------------------------------------------------------------------ CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-id", default=None, help="MLflow run of the challenger (default: var/runs/train.json)"
    )


def run_cli(args: argparse.Namespace) -> int:
    settings = get_settings()
    result = evaluate(settings, load_params(settings.params_path), run_id=args.run_id)
    print(f"run {result.run_id}: {result.decision.verdict} (compared to {result.compared_to})")
    for reason in result.decision.reasons:
        print(f"  - {reason}")
    print(f"report: {result.report.html}")
    # Rejection is a valid outcome of evaluate; register is the step that refuses to go on.
    return 0
