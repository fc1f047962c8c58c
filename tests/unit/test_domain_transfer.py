"""The leave-one-domain-out bench's pure helpers: scores, the blend curve, its settings."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pytest

from tests.bench_modules import load_bench


@pytest.fixture(scope="module")
def transfer() -> ModuleType:
    return load_bench("domain_transfer")


def test_scores_by_hand(transfer) -> None:
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    truth = np.array([0, 1, 2, 2])
    got = transfer.scores(proba, truth)
    # predicted 0, 1, 0, 2: three of four right; recall 1, 1 and 1/2
    assert got.accuracy == 0.75
    assert got.mean_recall == pytest.approx((1 + 1 + 0.5) / 3)
    expected_loss = -(math.log(0.8) + math.log(0.7) + math.log(0.1) + math.log(0.8)) / 4
    assert got.log_loss == pytest.approx(expected_loss)


def test_mean_recall_counts_only_the_classes_present(transfer) -> None:
    proba = np.array([[0.9, 0.05, 0.05], [0.3, 0.1, 0.6]])
    got = transfer.scores(proba, np.array([0, 0]))  # reviews: no neutral, here no positive
    assert got.accuracy == 0.5
    assert got.mean_recall == 0.5


def test_blend_curve_ends_are_each_model_alone(transfer) -> None:
    # Validation: the n-gram model is sure and right, the transformer unsure.
    val_t = np.array([[0.4, 0.2, 0.4], [0.3, 0.4, 0.3], [0.2, 0.2, 0.6]])
    val_n = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    val_truth = np.array([0, 1, 2])
    # Left out: the transformer right on both rows, the n-gram model wrong on the second.
    out_t = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
    out_n = np.array([[0.6, 0.2, 0.2], [0.5, 0.2, 0.3]])
    out_truth = np.array([0, 2])
    curve = transfer.blend_curve((val_t, val_n, val_truth), (out_t, out_n, out_truth))
    weights = [point.weight for point in curve]
    assert weights[0] == 0.0 and weights[-1] == 1.0 and len(weights) == 21

    alone = curve[-1]  # weight 1: the transformer as served, sharpness 1
    assert alone.sharpness == 1.0
    assert alone.left_out.accuracy == 1.0
    assert alone.left_out.log_loss == pytest.approx(-(math.log(0.7) + math.log(0.7)) / 2)
    # row 0 ties 0.4/0.4 between negative and positive: argmax takes the first, right
    assert alone.validation.accuracy == 1.0

    ngram = curve[0]  # weight 0: the n-gram model, sharpened as far as the grid goes
    assert ngram.sharpness == 2.0  # always right on validation: sharper is always better
    assert ngram.validation.accuracy == 1.0
    assert ngram.left_out.accuracy == 0.5
    # each row's true class squared, renormalised
    first = 0.6**2 / (0.6**2 + 0.2**2 + 0.2**2)
    second = 0.3**2 / (0.5**2 + 0.2**2 + 0.3**2)
    assert ngram.left_out.log_loss == pytest.approx(-(math.log(first) + math.log(second)) / 2)


def test_overrides_are_read_as_yaml_and_checked(transfer) -> None:
    assert transfer.parse_overrides(["train.frozen_layers=0", "train.ngram_blend=false"]) == {
        "train.frozen_layers": 0,
        "train.ngram_blend": False,
    }
    for bad in ("train.frozen_layers", "frozen_layers=0", "a.b.c=1", ".x=1"):
        with pytest.raises(ValueError, match=r"SECTION\.KEY=VALUE"):
            transfer.parse_overrides([bad])


def test_domain_params_reserve_the_domain_and_refuse_unknown_keys(transfer) -> None:
    raw = transfer.domain_params("books", {"train.frozen_layers": 0})
    assert raw["bootstrap"]["reserved_domain"] == "books"
    assert raw["simulate"]["witness_fraction"] == 0.0
    assert raw["train"]["frozen_layers"] == 0
    with pytest.raises(ValueError, match=r"no train\.frozen_layer$"):
        transfer.domain_params("books", {"train.frozen_layer": 0})


def test_served_proba_follows_the_shipped_rule(transfer) -> None:
    transformer = np.array([[0.6, 0.2, 0.2]])
    ngram = np.array([[0.2, 0.2, 0.6]])
    blend = {"weight": 0.75, "rule": "linear", "sharpness": 1.0}
    linear = transfer.served_proba(transformer, ngram, blend)
    assert linear == pytest.approx(np.array([[0.5, 0.2, 0.3]]))
    # log-linear at w 0.5, s 2: (0.6 x 0.2) ** (0.5 x 2) = 0.12 for both ends, 0.04 between
    blend = {"weight": 0.5, "rule": "log_linear", "sharpness": 2.0}
    assert transfer.served_proba(transformer, ngram, blend) == pytest.approx(
        np.array([[0.12, 0.04, 0.12]]) / 0.28
    )
    # no n-gram shipped: the transformer's own probabilities
    alone = {"weight": 1.0, "rule": "none", "sharpness": 1.0}
    assert transfer.served_proba(transformer, None, alone) is transformer
    with pytest.raises(ValueError, match="unknown blend rule"):
        transfer.served_proba(transformer, ngram, {**blend, "rule": "geometric"})
