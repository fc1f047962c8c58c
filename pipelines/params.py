"""Typed view of ``params.yaml``: the experiment parameters DVC tracks.

``params.yaml`` at the project root is the one place that holds the defaults: no field here has
a default of its own. A section or key left out of a params file (or of a section built in
code, ``GateParams(min_macro_f1=0.8)``) takes the value of the project's ``params.yaml``; a key
or section this module does not know is an error that names it and the file (a misspelt
``trian:`` is never ignored). ``labels`` and ``ingest`` have no default: every file names them.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.domains import DOMAINS

# The served form of a trained model (pipelines.model.onnx_export.choose_runtime).
Inference = Literal["auto", "onnx-int8", "onnx-int8-mixed", "onnx-fp32", "torch"]

WITNESS_NEEDS_A_RESERVE = (
    "simulate.witness_fraction needs a reserve (bootstrap.reserved_fraction > 0): without one the "
    "simulator sends training texts, and a witness drawn from them would be trained on"
)

# The project's params.yaml: the source of every default (not EMOREG_PARAMS_PATH, which names the
# file a run reads; that file may leave sections out).
DEFAULTS_PATH = Path(__file__).resolve().parent.parent / "params.yaml"


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"params file not found: {path}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a mapping, got {type(raw).__name__}")
    return raw


@cache
def defaults() -> dict[str, Any]:
    """The project's ``params.yaml``, parsed once: the default of every parameter."""
    return _read_mapping(DEFAULTS_PATH)


def _section_defaults(section: str) -> dict[str, Any]:
    values = defaults().get(section)
    if not isinstance(values, dict):
        raise ValueError(f"{DEFAULTS_PATH} has no `{section}:` section to take defaults from")
    return values


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Section(_Strict):
    """A section of params.yaml; the keys left out take the project's params.yaml values."""

    SECTION: ClassVar[str]  # its name in params.yaml

    @model_validator(mode="before")
    @classmethod
    def _fill_from_params_yaml(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {**_section_defaults(cls.SECTION), **data}
        return data


class BootstrapParams(_Section):
    SECTION = "bootstrap"

    seed: int
    golden_fraction: float = Field(gt=0, lt=1)
    neutral_count: int = Field(ge=0)
    # Share of the non-golden reviews (by canonical key) and inquiry templates that never enter
    # the corpus: the shop's future traffic, the simulator's only customer texts.
    reserved_fraction: float = Field(ge=0, lt=1)
    # A kind of shop (``pipelines.domains``) whose non-golden reviews are the reserve
    # instead of ``reserved_fraction`` of all reviews (templates keep ``reserved_fraction``).
    reserved_domain: str | None
    # Messages of a training inquiry and a training review, labelled as the review
    # (``pipelines.data.bootstrap``: a question is no sign of the neutral class).
    composite_count: int = Field(ge=0)

    @field_validator("reserved_domain")
    @classmethod
    def _known_domain(cls, value: str | None) -> str | None:
        if value is not None and value not in DOMAINS:
            raise ValueError(f"unknown domain {value!r}; one of {list(DOMAINS)} or null")
        return value

    @model_validator(mode="after")
    def _templates_reserved_too(self) -> BootstrapParams:
        # The simulator's inquiries come from reserved templates: a domain alone leaves it none.
        if self.reserved_domain is not None and self.reserved_fraction == 0:
            raise ValueError("reserved_domain needs reserved_fraction > 0 (the reserved templates)")
        return self

    @property
    def has_reserve(self) -> bool:
        """Whether texts are kept out of the corpus as future traffic (the simulator's pool)."""
        return self.reserved_fraction > 0 or self.reserved_domain is not None


class SimulateParams(_Section):
    SECTION = "simulate"

    seed: int
    start: date
    days: int = Field(ge=1)
    conversations_per_day: int = Field(ge=1)
    agent_correction_rate: float = Field(ge=0, le=1)
    agent_error_rate: float = Field(ge=0, le=1)  # wrong agent labels (another class)
    customer_rating_rate: float = Field(ge=0, le=1)
    prediction_error_rate: float = Field(ge=0, le=1)
    # Complaint and praise turns sent as an inquiry and a review in one message
    # (``pipelines.data.simulate``: customers ask and complain in one breath).
    composite_share: float = Field(ge=0, le=1)
    # Reserved reviews held out of the traffic as an unselected witness (``load_witness``).
    witness_fraction: float = Field(ge=0, lt=1)


class IngestParams(_Strict):
    """The data interval ``dvc repro`` ingests: every params file names it (no default)."""

    start: date
    end: date


class ValidateParams(_Section):
    SECTION = "validate"

    suite: str


class RetrainParams(_Section):
    """Owned by the retrain DAG's "nothing new" short-circuit (pipelines/flow.py)."""

    SECTION = "retrain"

    # Labelled partition rows in the prepared train/validation splits that the champion was not
    # trained on; fewer than this and the scheduled retrain skips training.
    min_new_labelled_rows: int = Field(ge=0)


class PrepareParams(_Section):
    SECTION = "prepare"

    window_days: int = Field(ge=1)
    use_predicted_labels: bool
    min_prediction_score: float = Field(ge=0, le=1)
    validation_fraction: float = Field(gt=0, lt=1)
    min_chars: int = Field(ge=1)
    max_chars: int = Field(ge=1)


class TrainParams(_Section):
    """Owned by pipelines/model/train.py (fine-tuning; its docstring covers warm start, replay)."""

    SECTION = "train"

    base_model: str
    seed: int
    max_length: int = Field(ge=8, le=512)
    batch_size: int = Field(ge=1)
    epochs: float = Field(gt=0)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_ratio: float = Field(ge=0, lt=1)
    max_grad_norm: float = Field(gt=0)
    precision: Literal["fp32", "bf16", "auto"]
    freeze_embeddings: bool
    num_layers: int | None = Field(ge=1)
    frozen_layers: int = Field(ge=0)
    prune_vocab: bool
    warm_start: bool
    replay_fraction: float = Field(ge=0, le=1)
    # Replay per class so that new plus replayed rows keep the class mix of all rows.
    replay_restores_class_mix: bool
    max_train_rows: int | None = Field(ge=1)
    eval_batch_size: int = Field(ge=1)
    log_every: int = Field(ge=1)
    inference: Inference
    int8_max_accuracy_loss: float = Field(ge=0, le=1)
    ngram_blend: bool
    ngram_blend_rule: Literal["linear", "log_linear"]
    ngram_max_n: int = Field(ge=1, le=6)
    ngram_min_df: int = Field(ge=1)
    ngram_c: float = Field(gt=0)
    # Cross-validated label-noise filter of the training rows (pipelines/model/noise.py).
    noise_filter: bool
    noise_folds: int = Field(ge=2)
    noise_min_confidence: float = Field(gt=0.5, le=1)
    noise_max_drop_fraction: float = Field(ge=0, lt=1)
    # Traffic rows weighted per class within their domain (pipelines/model/traffic_weights.py).
    traffic_class_weighting: bool
    traffic_max_weight: float = Field(ge=1)
    traffic_min_class_share: float = Field(ge=0, lt=1)


class EvaluateParams(_Section):
    """Owned by pipelines/evaluation/evaluate.py."""

    SECTION = "evaluate"

    batch_size: int = Field(ge=1)
    calibration_bins: int = Field(ge=2)
    behaviour_checks: str = Field(min_length=1)  # under expectations/
    max_failures_shown: int = Field(ge=0)


class GateParams(_Section):
    """Owned by pipelines/evaluation/gate.py: absolute floors, allowed regression vs champion
    and allowed drift vs the lineage's baseline."""

    SECTION = "gate"

    min_macro_f1: float = Field(ge=0, le=1)
    min_negative_recall: float = Field(ge=0, le=1)
    # Flat metric name (pipelines.evaluation.metrics.flatten, higher is better) -> the drop
    # against the champion that still passes.
    regression_metrics: dict[str, Annotated[float, Field(ge=0, le=1)]]
    # Flat metric name -> the drop against the lineage's baseline (the first champion's scores,
    # pipelines.evaluation.gate.Baseline) that still passes.
    drift_metrics: dict[str, Annotated[float, Field(ge=0, le=1)]]
    require_behaviour: bool


class Params(_Strict):
    """The whole file. Sections left out take the project's params.yaml values."""

    labels: tuple[str, ...]
    bootstrap: BootstrapParams
    simulate: SimulateParams
    ingest: IngestParams
    validate_: ValidateParams = Field(alias="validate")
    prepare: PrepareParams
    train: TrainParams
    evaluate: EvaluateParams
    gate: GateParams
    retrain: RetrainParams

    @model_validator(mode="before")
    @classmethod
    def _fill_from_params_yaml(cls, data: Any) -> Any:
        if isinstance(data, dict):
            # Every section field left out is built from {}: all of its keys from params.yaml.
            sections: dict[str, Any] = {
                field.alias or name: {}
                for name, field in cls.model_fields.items()
                if isinstance(field.annotation, type) and issubclass(field.annotation, _Section)
            }
            return {**sections, **data}
        return data

    @model_validator(mode="after")
    def _witness_needs_a_reserve(self) -> Params:
        if self.simulate.witness_fraction > 0 and not self.bootstrap.has_reserve:
            raise ValueError(WITNESS_NEEDS_A_RESERVE)
        return self

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: tuple[str, ...]) -> tuple[str, ...]:
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"labels must be at least two distinct names, got {labels!r}")
        return labels


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [f.alias or n for n, f in model.model_fields.items()]


def _describe(error: Any, path: Path) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        known = ", ".join(_known_keys(tuple(error["loc"])))
        return f"unknown key `{where}` in {path} (misspelt? known here: {known})"
    return f"`{where}` in {path}: {error['msg']}"


def load_params(path: Path | None = None) -> Params:
    """Read ``params.yaml`` (default: the one named by settings).

    Raises ``ValueError`` naming the file and each unknown or invalid key.
    """
    if path is None:
        from pipelines.settings import get_settings

        path = get_settings().params_path
    raw = _read_mapping(path)
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(error, path) for error in exc.errors())
        raise ValueError(f"bad parameters: {problems}") from exc
