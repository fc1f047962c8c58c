"""The character n-gram model blended into the served classifier, and the blend's weight.

A TF-IDF of character 1..n-grams with a multinomial logistic regression, fitted on the train
split, knows surface cues (shop jargon, emoticons, spellings) that the transformer misses, and
the two err on different rows. The served probabilities are ``w * transformer + (1 - w) *
n-gram`` (rule ``linear``) or proportional to ``(transformer ** w * n-gram ** (1 - w)) ** s``
(rule ``log_linear``: a row both models lean to wins more clearly), with ``w`` (and ``s``) chosen
on the validation split by log loss (a calibrated mixture, not the best accuracy on ~1k rows);
``w = 1`` means the n-gram model is not shipped. The golden test set plays no part in either
fit.

The fitted model is exported as plain arrays (``modeling.NGRAM_FILES``: vocabulary, idf,
weights), scored in the pyfunc by ``modeling.NgramClassifier`` with numpy alone: no pickle, no
scikit-learn where the model is served.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.model.modeling import BLEND_RULES, NGRAM_CONFIG, NGRAM_WEIGHTS
from pipelines.model.traffic_weights import WEIGHT_COLUMN

log = logging.getLogger(__name__)

WEIGHT_GRID = tuple(round(0.05 * i, 2) for i in range(21))  # transformer share 0, 0.05, ..., 1
SHARPNESS_GRID = tuple(round(0.5 + 0.1 * i, 1) for i in range(16))  # log-linear: 0.5, ..., 2.0


@dataclass(frozen=True)
class BlendChoice:
    weight: float  # the transformer's share; 1.0: no n-gram model
    folder: Path | None  # the exported n-gram model, None when weight is 1
    val_log_loss: dict[float, float] = field(default_factory=dict)
    val_accuracy: dict[float, float] = field(default_factory=dict)
    fit_s: float = 0.0
    train_rows: int = 0  # rows the n-gram model was fitted on
    rule: str = "linear"  # modeling.BLEND_RULES
    sharpness: float = 1.0  # log_linear only


def fit_ngram(
    texts: Sequence[str], labels_of_rows: Sequence[str], labels: Sequence[str], *,
    max_n: int, min_df: int, c: float, row_weights: Sequence[float] | None = None,
) -> tuple[object, np.ndarray]:  # fmt: skip
    """A fitted scikit-learn pipeline and the column order that puts its classes as ``labels``.

    ``row_weights`` weight each row's loss in the logistic regression (the vocabulary and the
    idf see every row alike)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(
            analyzer="char",
            ngram_range=(1, max_n),
            min_df=min_df,
            sublinear_tf=True,
            lowercase=True,
            dtype=np.float32,
        ),
        LogisticRegression(max_iter=2000, C=c),
    )
    fit_params = {} if row_weights is None else {"logisticregression__sample_weight": row_weights}
    model.fit(list(texts), list(labels_of_rows), **fit_params)
    classes = list(model.classes_)
    missing = [label for label in labels if label not in classes]
    if missing:
        raise ValueError(f"the train split has no rows labelled {missing}")
    return model, np.array([classes.index(label) for label in labels])


def export_ngram(model: object, order: np.ndarray, labels: Sequence[str], folder: Path) -> Path:
    """Vocabulary, idf and weights as JSON + npz, in ``labels`` order."""
    vectorizer, regression = model.named_steps.values()  # type: ignore[attr-defined]
    folder.mkdir(parents=True, exist_ok=True)
    vocabulary = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
    config = {
        "labels": list(labels),
        "ngram_range": list(vectorizer.ngram_range),
        "lowercase": bool(vectorizer.lowercase),
        "sublinear_tf": bool(vectorizer.sublinear_tf),
        "vocabulary": vocabulary,
    }
    (folder / NGRAM_CONFIG).write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    np.savez(
        folder / NGRAM_WEIGHTS,
        idf=vectorizer.idf_.astype(np.float32),
        coef=regression.coef_[order].astype(np.float32),
        intercept=regression.intercept_[order].astype(np.float32),
    )
    return folder


def log_loss(proba: np.ndarray, truth: np.ndarray) -> float:
    picked = proba[np.arange(len(truth)), truth]
    return float(-np.log(np.clip(picked, 1e-12, None)).mean())


def choose_weight(
    transformer: np.ndarray, ngram: np.ndarray, truth: np.ndarray
) -> tuple[float, dict[float, float], dict[float, float]]:
    """The transformer share of the lowest validation log loss (ties: the larger share)."""
    losses, accuracies = {}, {}
    for weight in WEIGHT_GRID:
        blend = weight * transformer + (1 - weight) * ngram
        losses[weight] = log_loss(blend, truth)
        accuracies[weight] = float((blend.argmax(axis=1) == truth).mean())
    best = min(WEIGHT_GRID, key=lambda w: (round(losses[w], 6), -w))
    return best, losses, accuracies


def best_sharpness(
    transformer: np.ndarray, ngram: np.ndarray, truth: np.ndarray, weight: float
) -> tuple[float, float, np.ndarray]:
    """The sharpness of the lowest log loss of the log-linear blend at ``weight``, that loss
    and the blend. Weight 1 (the transformer alone, the n-gram model not shipped) is taken as
    it is served: sharpness 1. Ties: the sharpness nearer 1."""
    from pipelines.model.modeling import log_linear_blend

    candidates = (1.0,) if weight == 1.0 else SHARPNESS_GRID
    scored = []
    for sharpness in candidates:
        blend = log_linear_blend(transformer, ngram, weight, sharpness)
        scored.append((round(log_loss(blend, truth), 6), abs(sharpness - 1), sharpness, blend))
    loss, _, sharpness, blend = min(scored, key=lambda item: item[:2])
    return sharpness, loss, blend


def choose_log_linear(
    transformer: np.ndarray, ngram: np.ndarray, truth: np.ndarray
) -> tuple[float, float, dict[float, float], dict[float, float]]:
    """The weight and sharpness of the lowest validation log loss of the log-linear blend.

    Per weight, the losses and accuracies are those at its best sharpness (``best_sharpness``).
    Ties: the larger transformer share.
    """
    losses, accuracies, sharpness_of = {}, {}, {}
    for weight in WEIGHT_GRID:
        sharpness, loss, blend = best_sharpness(transformer, ngram, truth, weight)
        losses[weight], sharpness_of[weight] = loss, sharpness
        accuracies[weight] = float((blend.argmax(axis=1) == truth).mean())
    best = min(WEIGHT_GRID, key=lambda w: (losses[w], -w))
    return best, sharpness_of[best], losses, accuracies


def build_blend(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    transformer_val_proba: np.ndarray,
    labels: Sequence[str],
    folder: Path,
    *,
    enabled: bool,
    max_n: int,
    min_df: int,
    c: float,
    rule: str,
) -> BlendChoice:
    """Fit the n-gram model on ``train``, choose the weight on ``validation``, export it."""
    if rule not in BLEND_RULES:  # before the fit: a bad rule costs no work
        raise ValueError(f"unknown blend rule {rule!r}: linear or log_linear")
    if not enabled:
        return BlendChoice(1.0, None)
    if not len(validation):
        log.warning("no validation rows to choose the blend weight on: transformer alone")
        return BlendChoice(1.0, None)
    from pipelines.model.modeling import NgramClassifier

    started = time.perf_counter()
    texts, rows = list(train["text"]), list(train["label"])
    weights = list(train[WEIGHT_COLUMN]) if WEIGHT_COLUMN in train.columns else None
    model, order = fit_ngram(
        texts, rows, labels, max_n=max_n, min_df=min_df, c=c, row_weights=weights
    )
    export_ngram(model, order, labels, folder)
    # Scored as the pyfunc will score it, so the weight is chosen on the served numbers.
    ngram_proba = NgramClassifier.load(folder).predict_proba(list(validation["text"]))
    truth = np.array([list(labels).index(v) for v in validation["label"]])
    sharpness = 1.0
    if rule == "log_linear":
        weight, sharpness, losses, accuracies = choose_log_linear(
            transformer_val_proba, ngram_proba, truth
        )
    else:
        weight, losses, accuracies = choose_weight(transformer_val_proba, ngram_proba, truth)
    elapsed = time.perf_counter() - started
    log.info(
        "n-gram blend (%s): transformer weight %.2f, sharpness %.1f (validation log loss %.4f, "
        "accuracy %.4f; transformer alone %.4f / %.4f; n-gram alone %.4f / %.4f), %.1f s",
        rule, weight, sharpness, losses[weight], accuracies[weight], losses[1.0],
        accuracies[1.0], losses[0.0], accuracies[0.0], elapsed,
    )  # fmt: skip
    if weight == 1.0:
        return BlendChoice(1.0, None, losses, accuracies, elapsed, len(train))
    return BlendChoice(weight, folder, losses, accuracies, elapsed, len(train), rule, sharpness)
