"""MLflow wiring shared by train, evaluate, register and predict, and the lineage tags.

The embedded default is a SQLite tracking store plus a local artifact folder under ``var/``; a
tracking server URL (``EMOREG_MLFLOW_TRACKING_URI=http://...``) works the same way.

Lineage (README "Contracts"): the training run is tagged when it starts with ``git_commit``,
``params_hash``, ``dataset_hash`` and ``data_interval`` (``lineage_tags``); register copies
them to the version.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

# Registry contract (README "Model registry"): aliases of the registered model.
CHALLENGER_ALIAS = "challenger"
CHAMPION_ALIAS = "champion"
PREVIOUS_ALIAS = "previous"


# Tags the training run carries from its start and register copies to the version.
LINEAGE_TAGS = ("dataset_hash", "data_interval", "git_commit", "params_hash")
UNKNOWN = "unknown"

# What makes a model besides its data (dataset_hash): changes here, committed or not (new files
# included), mark the commit ``-dirty``. dvc.lock and the data are not code: DVC rewrites the
# lock as stages run, and the data has its own hash.
MODEL_SOURCES = (
    "pipelines", "params.yaml", "dvc.yaml", "expectations", "pyproject.toml", "requirements.lock",
)  # fmt: skip


class TrackingError(RuntimeError):
    """The tracking server or store cannot be used."""


def configure_mlflow(settings: Settings) -> str:
    """Point MLflow at the configured store and make sure the experiment exists.

    Returns the experiment id. Raises ``TrackingError`` with the URI when it is unreachable.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        experiment = mlflow.get_experiment_by_name(settings.mlflow_experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            artifact_location = None
            if not uri.startswith(("http://", "https://", "databricks")):
                settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
                artifact_location = settings.mlflow_artifacts_dir.resolve().as_uri()
            experiment_id = mlflow.create_experiment(
                settings.mlflow_experiment, artifact_location=artifact_location
            )
    except Exception as exc:  # MLflow raises many types for an unreachable store
        raise TrackingError(f"cannot use the MLflow tracking store at {uri}: {exc}") from exc
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


def client(settings: Settings) -> MlflowClient:
    from mlflow import MlflowClient

    configure_mlflow(settings)
    return MlflowClient(
        tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
    )


def alias_version(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    """The version holding ``alias``, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = registered.aliases.get(alias)
    return client.get_model_version(model_name, str(version)) if version is not None else None


def _git(project_root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=project_root,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(project_root: Path) -> str:
    """``git rev-parse HEAD`` of the project; ``-dirty`` appended when a file of
    ``MODEL_SOURCES`` differs from it (modified, staged, deleted or new and not git-ignored):
    the model was not made by that commit alone. ``unknown`` outside a git checkout (or a
    repository without commits, or without git)."""
    commit = _git(project_root, "rev-parse", "--verify", "-q", "HEAD")
    if not commit:
        return UNKNOWN
    changed = _git(
        project_root, "status", "--porcelain", "--untracked-files=all", "--", *MODEL_SOURCES
    )
    if changed is None:  # git answered rev-parse but not status: do not claim a clean tree
        return f"{commit}-dirty"
    return f"{commit}-dirty" if changed else commit


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes, or ``unknown`` when it cannot be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return UNKNOWN


def lineage_tags(
    settings: Settings, *, dataset_hash: str, data_interval: str | None
) -> dict[str, str]:
    """The lineage of a training run, read when it starts (README "Contracts").

    ``git_commit``: see ``git_commit``; ``params_hash``: sha256 of the bytes of the params file
    the run reads (``settings.params_path``); ``dataset_hash``: prepare's ``content_hash``;
    ``data_interval``: the interval prepare's manifest covers.
    """
    return {
        "dataset_hash": dataset_hash or UNKNOWN,
        "data_interval": data_interval or UNKNOWN,
        "git_commit": git_commit(settings.project_root),
        "params_hash": file_sha256(settings.params_path),
    }
