"""The character n-gram model blended into the served classifier, and the blend's weight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.model.modeling import NgramClassifier
from pipelines.model.ngram import (
    build_blend,
    choose_log_linear,
    choose_weight,
    export_ngram,
    fit_ngram,
)

LABELS = ("negative", "neutral", "positive")
TRAIN = pd.DataFrame(
    {
        "text": [
            "质量太差了 退货",
            "太差了，不会再买",
            "客服态度差",
            "物流太慢了 差评",
            "请问什么时候发货",
            "请问有没有发票",
            "这个尺码怎么选",
            "请问可以改地址吗",
            "很好 很满意",
            "质量很好，好评",
            "物流很快 很满意",
            "客服态度很好",
        ],
        "label": ["negative"] * 4 + ["neutral"] * 4 + ["positive"] * 4,
    }
)
# Whitespace runs (collapsed by scikit-learn's char analyzer), capitals (lower-cased), a
# character no training text has (no n-gram known: the intercepts alone), an empty string.
TEXTS = ["太差了  \t 退货", "OK 很好", "请问 发货", "龘", "", "Ｑ质量很好" * 20]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    model, order = fit_ngram(
        TRAIN["text"].tolist(), TRAIN["label"].tolist(), LABELS, max_n=3, min_df=1, c=4.0
    )
    folder = export_ngram(model, order, LABELS, tmp_path_factory.mktemp("ngram") / "m")
    return model, folder


def sklearn_proba(model: object, texts: list[str]) -> np.ndarray:
    """The fitted scikit-learn pipeline's probabilities, columns in LABELS order."""
    proba = model.predict_proba(texts)  # type: ignore[attr-defined]
    classes = list(model.classes_)  # type: ignore[attr-defined]
    return proba[:, [classes.index(label) for label in LABELS]]


def test_numpy_scorer_matches_scikit_learn(fitted: tuple[object, Path]) -> None:
    model, folder = fitted
    scorer = NgramClassifier.load(folder)
    assert scorer.labels == list(LABELS) and scorer.ngram_range == (1, 3)
    expected = sklearn_proba(model, TEXTS)
    np.testing.assert_allclose(scorer.predict_proba(TEXTS), expected, atol=1e-5)
    # The tiny training set is learnt: its own texts get their labels.
    train_proba = scorer.predict_proba(TRAIN["text"].tolist())
    assert [LABELS[i] for i in train_proba.argmax(axis=1)] == TRAIN["label"].tolist()


def test_char_ngrams_are_scikit_learns(fitted: tuple[object, Path]) -> None:
    model, folder = fitted
    analyzer = model.named_steps["tfidfvectorizer"].build_analyzer()  # type: ignore[attr-defined]
    scorer = NgramClassifier.load(folder)
    for text in [*TEXTS, "a  b", "AB c"]:
        assert scorer.ngrams(text) == analyzer(text), text
    assert scorer.ngrams("Ab c") == ["a", "b", " ", "c", "ab", "b ", " c", "ab ", "b c"]


def test_fit_needs_every_label() -> None:
    with pytest.raises(ValueError, match="neutral"):
        fit_ngram(["好", "差"], ["positive", "negative"], LABELS, max_n=2, min_df=1, c=1.0)


def test_weight_is_chosen_by_log_loss() -> None:
    truth = np.array([0, 0])
    uniform = np.full((2, 2), 0.5)
    right = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert choose_weight(right, uniform, truth)[0] == 1.0  # the n-gram model adds nothing
    assert choose_weight(uniform, right, truth)[0] == 0.0
    # Each model is confidently right on one row and wrong on the other, symmetrically: the
    # blend gives each row p = 0.2 + 0.6 w and 0.8 - 0.6 w, whose product peaks at w = 0.5.
    transformer = np.array([[0.8, 0.2], [0.2, 0.8]])
    ngram = np.array([[0.2, 0.8], [0.8, 0.2]])
    weight, losses, accuracies = choose_weight(transformer, ngram, truth)
    assert weight == 0.5
    assert losses[0.5] == pytest.approx(-np.log(0.5))
    assert losses[0.0] == pytest.approx(-(np.log(0.2) + np.log(0.8)) / 2)
    assert accuracies[1.0] == 0.5


def test_build_blend_off_or_without_validation_ships_no_ngram(tmp_path: Path) -> None:
    kwargs = {"max_n": 3, "min_df": 1, "c": 4.0, "rule": "log_linear"}
    none = np.zeros((0, 3))
    off = build_blend(TRAIN, TRAIN, none, LABELS, tmp_path / "a", enabled=False, **kwargs)
    assert off.weight == 1.0 and off.folder is None
    empty = TRAIN.iloc[:0]
    no_val = build_blend(TRAIN, empty, none, LABELS, tmp_path / "b", enabled=True, **kwargs)
    assert no_val.weight == 1.0 and no_val.folder is None


def test_build_blend_leans_on_the_ngram_model_when_the_transformer_knows_nothing(
    tmp_path: Path,
) -> None:
    uniform = np.full((len(TRAIN), 3), 1 / 3)
    for rule in ("linear", "log_linear"):
        choice = build_blend(
            TRAIN, TRAIN, uniform, LABELS, tmp_path / rule, enabled=True, max_n=3, min_df=1,
            c=4.0, rule=rule,
        )  # fmt: skip
        assert choice.weight == 0.0 and choice.folder == tmp_path / rule, rule
        assert choice.val_accuracy[0.0] == 1.0 and choice.val_accuracy[1.0] < 0.5
        assert choice.rule == rule and choice.train_rows == len(TRAIN)
    with pytest.raises(ValueError, match="unknown blend rule 'max'"):
        build_blend(
            TRAIN, TRAIN, uniform, LABELS, tmp_path / "max", enabled=True, max_n=3, min_df=1,
            c=4.0, rule="max",
        )  # fmt: skip


def test_log_linear_blend_is_a_sharpened_weighted_geometric_mean() -> None:
    from pipelines.model.modeling import log_linear_blend

    transformer = np.array([[0.6, 0.3, 0.1]])
    ngram = np.array([[0.2, 0.6, 0.2]])
    # Worked by hand: w = 0.5, s = 2 gives p ~ t x n = 0.12, 0.18, 0.02 (sum 0.32).
    np.testing.assert_allclose(
        log_linear_blend(transformer, ngram, 0.5, 2.0), [[0.375, 0.5625, 0.0625]], atol=1e-9
    )
    # w = 1, s = 1: the transformer as it is; a zero probability does not break the logarithm.
    np.testing.assert_allclose(log_linear_blend(transformer, ngram, 1.0, 1.0), transformer)
    zero = np.array([[1.0, 0.0, 0.0]])
    assert np.isfinite(log_linear_blend(zero, ngram, 0.5, 1.0)).all()


def test_log_linear_weight_and_sharpness_are_chosen_by_log_loss() -> None:
    truth = np.array([0, 0])
    uniform = np.full((2, 3), 1 / 3)
    # Right but unsure (0.6 against 0.2 and 0.2): p(truth) = 1 / (1 + 2 x 3^-s) grows with s,
    # so the sharpest grid value wins, with all of the weight on the informed model.
    unsure = np.array([[0.6, 0.2, 0.2], [0.6, 0.2, 0.2]])
    weight, sharpness, losses, accuracies = choose_log_linear(uniform, unsure, truth)
    assert (weight, sharpness) == (0.0, 2.0)
    assert losses[0.0] == pytest.approx(-np.log(1 / (1 + 2 * 3**-2.0)), abs=1e-6)
    assert accuracies[0.0] == 1.0
    # A uniform n-gram model cancels out: the blend is the transformer raised to w x s. Right on
    # every row, the transformer gains from the largest w x s: 0.95 x 2.0 (weight 1 is taken as
    # served, unsharpened: exponent 1).
    sure = np.array([[0.98, 0.01, 0.01], [0.98, 0.01, 0.01]])
    weight, sharpness, losses, _ = choose_log_linear(sure, uniform, truth)
    assert (weight, sharpness) == (0.95, 2.0)
    assert losses[1.0] == pytest.approx(-np.log(0.98), abs=1e-6)
    tempered = 0.98**1.9 / (0.98**1.9 + 2 * 0.01**1.9)
    assert losses[0.95] == pytest.approx(-np.log(tempered), abs=1e-6)


def test_pyfunc_serves_the_weighted_blend(fitted: tuple[object, Path], tmp_path: Path) -> None:
    import mlflow
    import mlflow.pyfunc

    from pipelines.data.textprep import export_package
    from pipelines.model.modeling import TextClassifier, log_classifier
    from pipelines.settings import Settings
    from pipelines.tracking import configure_mlflow
    from tests.tiny_unigram import build_tiny_unigram_model

    model, folder = fitted
    tiny = build_tiny_unigram_model(tmp_path / "tiny", labels=LABELS, head_scale=30.0)
    configure_mlflow(Settings(var_dir=tmp_path / "var", data_dir=tmp_path / "data"))
    package = export_package(tmp_path / "code")
    with mlflow.start_run():
        info = log_classifier(
            tiny, LABELS, text_package=package, max_chars=512, ngram_folder=folder,
            blend_weight=0.25,
        )  # fmt: skip
        geometric = log_classifier(
            tiny, LABELS, text_package=package, max_chars=512, ngram_folder=folder,
            blend_weight=0.25, blend_rule="log_linear", blend_sharpness=1.5, name="geometric",
        )  # fmt: skip
        for bad, message in (
            ({"blend_rule": "max"}, "blend_rule"),
            ({"blend_sharpness": 0.0}, "positive"),
        ):
            with pytest.raises(ValueError, match=message):
                log_classifier(
                    tiny, LABELS, text_package=package, max_chars=512, ngram_folder=folder,
                    blend_weight=0.25, **bad,  # type: ignore[arg-type]
                )  # fmt: skip
        with pytest.raises(ValueError, match="needs an n-gram model"):
            log_classifier(tiny, LABELS, text_package=package, max_chars=512, blend_weight=0.5)
        with pytest.raises(ValueError, match="within"):
            log_classifier(
                tiny, LABELS, text_package=package, max_chars=512, ngram_folder=folder,
                blend_weight=1.5,
            )  # fmt: skip
    texts = ["质量很好 好评", "请问什么时候发货", "太差了"]  # prepare leaves these as they are
    served = mlflow.pyfunc.load_model(info.model_uri)
    assert served.model_config["blend_weight"] == 0.25
    out = served.predict(pd.DataFrame({"text": texts}))
    transformer = TextClassifier.load(tiny).predict_proba(texts)
    expected = 0.25 * transformer + 0.75 * sklearn_proba(model, texts)
    np.testing.assert_allclose(
        out[["p_negative", "p_neutral", "p_positive"]].to_numpy(), expected, atol=1e-5
    )
    assert out["label"].tolist() == [LABELS[i] for i in expected.argmax(axis=1)]

    served = mlflow.pyfunc.load_model(geometric.model_uri)
    assert (served.model_config["blend_rule"], served.model_config["blend_sharpness"]) == (
        "log_linear",
        1.5,
    )
    out = served.predict(pd.DataFrame({"text": texts}))
    unnormalised = (transformer**0.25 * sklearn_proba(model, texts) ** 0.75) ** 1.5
    expected = unnormalised / unnormalised.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        out[["p_negative", "p_neutral", "p_positive"]].to_numpy(), expected, atol=1e-5
    )


def test_row_weights_reach_the_logistic_regression() -> None:
    # An ambiguous text shares characters with a negative and a positive row. Weighting the
    # positive rows 3x must raise its positive probability; weights of 1 change nothing.
    texts, rows = TRAIN["text"].tolist(), TRAIN["label"].tolist()
    probe = ["客服态度"]
    fit = {"max_n": 3, "min_df": 1, "c": 4.0}
    plain, _ = fit_ngram(texts, rows, LABELS, **fit)
    ones, _ = fit_ngram(texts, rows, LABELS, **fit, row_weights=[1.0] * len(rows))
    weights = [3.0 if label == "positive" else 1.0 for label in rows]
    weighted, _ = fit_ngram(texts, rows, LABELS, **fit, row_weights=weights)
    p_plain = sklearn_proba(plain, probe)
    np.testing.assert_allclose(sklearn_proba(ones, probe), p_plain, atol=1e-6)
    p_weighted = sklearn_proba(weighted, probe)
    assert p_weighted[0, 2] > p_plain[0, 2] + 0.05
    assert p_weighted[0, 0] < p_plain[0, 0]
