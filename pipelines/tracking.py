"""MLflow wiring shared by train, evaluate, register and predict.

The embedded default is a SQLite tracking store plus a local artifact folder under ``var/``; a
tracking server URL (``EMOREG_MLFLOW_TRACKING_URI=http://...``) works the same way.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pipelines.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

# Registry contract (README "Model registry"): aliases of the registered model.
CHALLENGER_ALIAS = "challenger"
CHAMPION_ALIAS = "champion"
PREVIOUS_ALIAS = "previous"


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
