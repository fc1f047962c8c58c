"""Register a blessed run as a new version of the registered model, aliased ``challenger``.

The run's ``gate`` tag (written by evaluate) is the authority; ``var/runs/evaluation.json`` is
the hand-over that names the run by default. A run that is not blessed is never registered.
No half-registered version: if tagging or aliasing fails after the version is created, the
version is deleted again. Registering the same run twice returns the existing version.
The version's lineage tags (``dataset_hash``, ``data_interval``, ``git_commit``,
``params_hash``) are copied from the training run, tagged when training started; nothing about
the code is read at register time.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.evaluation.disagreement import READING_ADVICE, direction_summary
from pipelines.evaluation.evaluate import (
    ARTIFACT_DIR,
    BASELINE_PREFIX,
    BASELINE_RUN_TAG,
    DISAGREEMENTS_FILE,
    evaluation_record_path,
)
from pipelines.settings import Settings, get_settings
from pipelines.tracking import CHALLENGER_ALIAS, UNKNOWN

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisterResult:
    registered: bool  # a version of this run exists in the registry (now or from before)
    run_id: str
    version: str | None = None
    created: bool = False  # this call created the version
    reasons: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def message(self) -> str:
        if not self.registered:
            return f"run {self.run_id} not blessed: " + "; ".join(self.reasons)
        verb = "registered as" if self.created else "already registered as"
        return f"run {self.run_id} {verb} version {self.version}"


def _read_record(settings: Settings, run_id: str | None) -> dict[str, Any] | None:
    """evaluation.json when it concerns ``run_id`` (or any run when none is given)."""
    path = evaluation_record_path(settings)
    if not path.is_file():
        if run_id is None:
            raise FileNotFoundError(f"no evaluation to register: run evaluate first ({path})")
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(record, dict) or not record.get("run_id"):
        raise ValueError(f"{path} has no run_id")
    if run_id is not None and record["run_id"] != run_id:
        return None
    if run_id is None:
        _refuse_stale(settings, str(record["run_id"]), path)
    return record


def _refuse_stale(settings: Settings, evaluated: str, path: Path) -> None:
    # A training run newer than the evaluation means evaluate failed or was skipped since.
    train_path = settings.var_dir / "runs" / "train.json"
    if not train_path.is_file():
        return
    trained = json.loads(train_path.read_text(encoding="utf-8")).get("run_id")
    if trained and trained != evaluated:
        raise ValueError(
            f"{path} is for run {evaluated} but the latest training run is {trained}: "
            "evaluate it first, or pass --run-id to register an older run"
        )


def _existing_version(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return min(versions, key=lambda v: int(v.version)) if versions else None


def _lineage_tags(run: Run, record: dict[str, Any] | None, run_id: str) -> dict[str, str]:
    """The version's tags: lineage copied from the training run's tags (set when training
    started, ``pipelines.tracking.lineage_tags``), nothing recomputed now."""
    record = record or {}
    run_tags, run_params = run.data.tags, run.data.params

    def pick(*candidates: Any) -> str:
        return next((str(c) for c in candidates if c not in (None, "", UNKNOWN)), UNKNOWN)

    return {
        "approval": "pending",
        "gate": "blessed",
        "run_id": run_id,
        "compared_to": pick(run_tags.get("compared_to"), record.get("compared_to")),
        # A run logged outside `train` lacks the data tags: evaluate's (the same prepared
        # dataset's manifest) stand in. Code and params have no such stand-in: `unknown`.
        "dataset_hash": pick(
            run_tags.get("dataset_hash"),
            run_tags.get("eval_dataset_hash"),
            record.get("dataset_hash"),
        ),
        "data_interval": pick(
            run_tags.get("data_interval"),
            run_params.get("dataset.data_interval"),
            run_tags.get("eval_data_interval"),
            record.get("data_interval"),
        ),
        "git_commit": pick(run_tags.get("git_commit")),
        "params_hash": pick(run_tags.get("params_hash")),
    }


# The gate's metrics (params.yaml gate:) and the calibration, challenger beside champion.
EVIDENCE_METRICS = (
    "accuracy", "macro_f1", "real_accuracy", "real_macro_f1",
    "negative_recall", "neutral_recall", "positive_recall",
    "negative_f1", "neutral_f1", "positive_f1", "ece",
)  # fmt: skip


def evidence_links(settings: Settings, run: Run) -> dict[str, str]:
    """Links from the version page to the evaluation the ML lead approves on."""
    base = settings.mlflow_ui_url.rstrip("/")
    run_page = f"{base}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    artifacts = f"{run_page}/artifacts/{ARTIFACT_DIR}"
    return {
        "report": f"{artifacts}/report.html",
        "confusion matrix": f"{artifacts}/confusion_matrix.png",
        "all evaluation files": artifacts,
    }


def evidence_description(settings: Settings, run: Run, tags: dict[str, str]) -> str:
    """The version's description (Markdown in the UI): the numbers and where the rest is."""
    metrics = run.data.metrics
    champion = tags.get("compared_to", "none")

    def cell(key: str) -> str:
        return f" {metrics[key]:.4f} |" if key in metrics else " - |"

    rows = [
        f"| {key} |{cell(f'test_{key}')}{cell(f'champion_test_{key}')}"
        f"{cell(f'{BASELINE_PREFIX}{key}')}"
        for key in EVIDENCE_METRICS
        if f"test_{key}" in metrics
    ]
    baseline_run = str(run.data.tags.get(BASELINE_RUN_TAG, "none"))
    links = " · ".join(f"[{k}]({v})" for k, v in evidence_links(settings, run).items())
    return "\n".join(
        [
            f"Challenger from run `{run.info.run_id}`, gate **{tags.get('gate')}**, evaluated "
            f"on the golden test set against champion **{champion}**.",
            "",
            f"| metric (golden test set) | challenger | champion v{champion} | "
            f"lineage baseline (run `{baseline_run[:8]}`) |",
            "|---|---|---|---|",
            *rows,
            "",
            "The gate holds the challenger against the champion (`regression_metrics`) and "
            "against the lineage's baseline, the first champion's scores (`drift_metrics`), so "
            "that allowed steps cannot add up to a larger loss.",
            "",
            f"Evidence: {links} (the report shows challenger and champion side by side, with the "
            "behavioural checks).",
            "",
            *disagreement_lines(settings, run),
            "To approve: on this page set the tags `approval` = `approved` and `approved_by` = "
            "your name. Promotion checks that this version is still the challenger and that the "
            f"champion is still v{champion}; otherwise it refuses and says why in `approval`.",
        ]
    )


def disagreement_lines(settings: Settings, run: Run) -> list[str]:
    """What the version page says of the rows the two models label differently (none without a
    champion)."""
    metrics = run.data.metrics
    if "disagreement_rows" not in metrics:
        return []
    base = evidence_links(settings, run)["all evaluation files"]
    direction = direction_summary(metrics)  # empty for runs logged before it existed
    direction = f"{direction} " if direction else ""
    return [
        f"The two models label **{metrics['disagreement_rows']:.0f}** golden rows differently: "
        f"the challenger matches the dataset label on "
        f"{metrics['disagreement_challenger_matches_label']:.0f} of them, the champion on "
        f"{metrics['disagreement_champion_matches_label']:.0f} "
        f"([the rows]({base}/{DISAGREEMENTS_FILE})). {direction}{READING_ADVICE}",
        "",
    ]


def _create_version(
    client: MlflowClient,
    name: str,
    model_uri: str,
    tags: dict[str, str],
    description: str | None = None,
) -> ModelVersion:
    """Create the version with its tags, then alias it; undo the version if anything fails."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        version = mlflow.register_model(model_uri, name, tags=tags)
    except MlflowException as exc:
        raise RuntimeError(f"cannot register {model_uri} as {name!r}: {exc}") from exc
    try:
        if description:
            client.update_model_version(name, str(version.version), description=description)
        missing = {k for k, v in tags.items() if version.tags.get(k) != v}
        for key in sorted(missing):  # a store that dropped tags at creation gets them again
            client.set_model_version_tag(name, str(version.version), key, tags[key])
        client.set_registered_model_alias(name, CHALLENGER_ALIAS, str(version.version))
    except BaseException:
        log.error("tagging or aliasing version %s failed: deleting it", version.version)
        client.delete_model_version(name, str(version.version))
        raise
    return version


def register(settings: Settings, *, run_id: str | None = None) -> RegisterResult:
    """Register the evaluated run (default: the one in evaluation.json) if the gate blessed it."""
    from mlflow.exceptions import MlflowException

    from pipelines.tracking import client as tracking_client

    record = _read_record(settings, run_id)
    run_id = run_id or str(record["run_id"] if record else "")
    client = tracking_client(settings)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ValueError(f"run {run_id!r} not found in {settings.mlflow_tracking_uri}") from exc

    run_tags = dict(run.data.tags)
    verdict = run_tags.get("gate")
    if verdict is None:
        raise ValueError(f"run {run_id} has not been evaluated (no `gate` tag): run evaluate")
    if record is not None and record.get("verdict", verdict) != verdict:
        raise RuntimeError(
            f"evaluation.json says {record.get('verdict')} but run {run_id} is tagged "
            f"{verdict}: evaluate it again"
        )
    evaluated_for = run_tags.get("eval_registered_model", settings.registered_model_name)
    if evaluated_for != settings.registered_model_name:
        raise ValueError(
            f"run {run_id} was evaluated against the champion of {evaluated_for!r}, not "
            f"{settings.registered_model_name!r}: evaluate it again"
        )
    if verdict != "blessed":
        reasons = list(record.get("reasons", [])) if record else []
        return RegisterResult(
            registered=False, run_id=run_id, reasons=reasons or [run_tags.get("gate_reasons", "")]
        )

    name = settings.registered_model_name
    existing = _existing_version(client, name, run_id)
    if existing is not None:
        return RegisterResult(
            registered=True, run_id=run_id, version=str(existing.version), tags=existing.tags
        )
    tags = _lineage_tags(run, record, run_id)
    tags["evaluation_report"] = evidence_links(settings, run)["report"]
    description = evidence_description(settings, run, tags)
    version = _create_version(client, name, f"runs:/{run_id}/model", tags, description)
    log.info("registered run %s as %s version %s (alias challenger)", run_id, name, version.version)
    return RegisterResult(
        registered=True, run_id=run_id, version=str(version.version), created=True, tags=tags
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-id", default=None, help="run to register (default: var/runs/evaluation.json)"
    )


def registration_record_path(settings: Settings) -> Path:
    return settings.var_dir / "runs" / "registration.json"


def run_cli(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from pipelines.partitions import write_json

    settings = get_settings()
    result = register(settings, run_id=args.run_id)
    # The outcome, blessed or not, is the stage's output (dvc.yaml) and the DAG's XCom source.
    write_json({**asdict(result), "message": result.message}, registration_record_path(settings))
    print(result.message)
    # Not blessed is a refusal, not a crash: exit 1 so that a pipeline stops here.
    return 0 if result.registered else 1
