"""The learning-curve bench's per-retrain figures: class mix, per-class recall, the direction of
the disagreements (pure helpers)."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.bench_modules import load_bench

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(scope="module")
def learning_curve() -> ModuleType:
    return load_bench("learning_curve")


def test_label_shares_in_label_order_with_absent_labels_at_zero(learning_curve) -> None:
    shares = learning_curve.label_shares({"positive": 1, "negative": 3}, LABELS)
    assert list(shares) == LABELS
    assert shares == {"negative": 0.75, "neutral": 0.0, "positive": 0.25}


def test_label_shares_of_no_rows_is_an_error(learning_curve) -> None:
    with pytest.raises(ValueError, match="no training rows"):
        learning_curve.label_shares({}, LABELS)


def test_golden_by_label_reads_the_test_metrics_of_one_measure(learning_curve) -> None:
    metrics = {
        "test_positive_recall": 0.8,
        "test_negative_recall": 0.9,
        "test_neutral_recall": 1.0,
        "test_positive_f1": 0.82,
        "test_negative_f1": 0.87,
        "test_neutral_f1": 0.99,
        "champion_test_negative_f1": 0.5,
        "test_real_accuracy": 0.85,
    }
    assert learning_curve.golden_by_label(metrics, LABELS, "recall") == {
        "negative": 0.9,
        "neutral": 1.0,
        "positive": 0.8,
    }
    assert list(learning_curve.golden_by_label(metrics, LABELS, "f1").items()) == [
        ("negative", 0.87),
        ("neutral", 0.99),
        ("positive", 0.82),
    ]
    assert learning_curve.golden_by_label({"test_real_accuracy": 0.85}, LABELS, "recall") is None
    assert learning_curve.golden_by_label({"test_negative_f1": 0.87}, LABELS, "f1") is None


def test_disagreements_by_label_read_the_evaluate_metrics_and_print(learning_curve) -> None:
    metrics = {
        "disagreement_rows": 124.0,
        "disagreement_challenger_says_negative": 110.0,
        "disagreement_challenger_says_positive": 12.0,
        "disagreement_challenger_says_neutral": 2.0,
    }
    by_label = learning_curve.disagreements_by_label(metrics, LABELS)
    assert by_label == {"negative": 110, "neutral": 2, "positive": 12}
    assert list(by_label) == LABELS
    # Week 0 has no champion, so evaluate logs no such counts.
    assert learning_curve.disagreements_by_label({"test_real_accuracy": 0.85}, LABELS) is None
    row = learning_curve.Retrain(
        week=4, interval="x", disagreements_by_label=by_label, gate="rejected", outcome="kept v1"
    )
    assert "110/2/12" in learning_curve.format_row(row)


def test_row_prints_recall_and_class_mix(learning_curve) -> None:
    row = learning_curve.Retrain(
        week=2,
        interval="[2026-11-08, 2026-11-15)",
        challenger_real_accuracy=0.8626,
        challenger_val_accuracy=0.9073,
        challenger_recall={"negative": 0.925, "neutral": 0.991, "positive": 0.793},
        challenger_f1={"negative": 0.871, "neutral": 0.993, "positive": 0.838},
        train_label_shares={"negative": 0.4, "neutral": 0.35, "positive": 0.25},
        gate="rejected",
        outcome="kept v1",
    )
    line = learning_curve.format_row(row)
    assert "0.925/0.991/0.793" in line
    assert "0.871/0.993/0.838" in line
    assert "0.40/0.35/0.25" in line
    assert line.split()[5:8] == ["0.8626", "-", "0.9073"]  # challenger, champion, validation
    assert line.split()[0] == "2"
    assert line.endswith("kept v1")
    # A retrain that never trained shows dashes, not zeros.
    skipped = learning_curve.format_row(learning_curve.Retrain(week=3, interval="x", gate="-"))
    assert "0.000" not in skipped and skipped.count("-") >= 8


def test_reserved_domain_reaches_the_runs_params_and_its_row(learning_curve) -> None:
    args = learning_curve.parse_args(["--reserved-domain", "hotel", "--weeks", "2"])
    raw = learning_curve.bench_params(args, None)
    assert raw["bootstrap"]["reserved_domain"] == "hotel"
    assert (
        learning_curve.bench_params(learning_curve.parse_args([]), None)["bootstrap"][
            "reserved_domain"
        ]
        is None
    )  # params.yaml's
    # The metric names evaluate logs for the challenger and the champion (test_ + flatten's key).
    assert learning_curve.domain_accuracy_keys("hotel") == (
        "test_domain_hotel_accuracy",
        "champion_test_domain_hotel_accuracy",
    )
    assert learning_curve.domain_accuracy_keys(None) is None
    row = learning_curve.Retrain(
        week=1,
        interval="[2026-11-01, 2026-11-08)",
        challenger_domain_accuracy=0.8512,
        champion_domain_accuracy=0.8301,
        gate="rejected",
        outcome="kept v1",
    )
    assert "0.8512/0.8301" in learning_curve.format_row(row)
    with pytest.raises(SystemExit):
        learning_curve.parse_args(["--reserved-domain", "food"])


@pytest.mark.parametrize(
    ("flag", "section", "other"),
    [("--train-seed", "train", "simulate"), ("--traffic-seed", "simulate", "train")],
)
def test_a_seed_flag_sets_its_own_seed_and_leaves_the_other(
    learning_curve, flag: str, section: str, other: str
) -> None:
    project = learning_curve.bench_params(learning_curve.parse_args([]), None)
    assert (project["train"]["seed"], project["simulate"]["seed"]) == (0, 7)  # params.yaml's
    raw = learning_curve.bench_params(learning_curve.parse_args([flag, "11"]), None)
    assert raw[section]["seed"] == 11
    assert raw[other]["seed"] == project[other]["seed"]
    both = learning_curve.parse_args(["--traffic-seed", "8", "--train-seed", "2"])
    raw = learning_curve.bench_params(both, None)
    assert (raw["simulate"]["seed"], raw["train"]["seed"]) == (8, 2)


def test_sent_reviews_finds_whole_messages_and_either_side_of_a_composite(learning_curve) -> None:
    from pipelines.data.bootstrap import joined

    reviews = {"房间很干净。", "早餐太差了", "服务热情", "隔音不好", "从没发出"}
    short = reviews - {"从没发出"} | {"位置好"}  # the composite pool: chat-length reviews
    question = "请问可以开发票吗？"
    texts = [
        "服务热情",  # a whole message
        joined("房间很干净。", question),  # review first, ends a sentence: no comma
        joined(question, "早餐太差了"),  # review last
        joined("隔音不好", question),  # review first, with a comma
        "请问几点退房？",  # an inquiry alone
    ]
    assert joined("隔音不好", question) == "隔音不好，请问可以开发票吗？"
    sent = learning_curve.sent_reviews(texts, reviews, short)
    assert sent == {"服务热情", "房间很干净。", "早餐太差了", "隔音不好"}


def test_unsent_reviews_keep_pool_order_and_drop_texts_of_two_labels(learning_curve) -> None:
    pools = {"negative": ["差", "吵", "两可"], "positive": ["好", "两可", "棒"]}
    unsent = learning_curve.unsent_reviews(pools, sent={"吵", "棒"})
    assert unsent == [("差", "negative"), ("好", "positive")]


def test_witness_scores_by_hand(learning_curve) -> None:
    truth = ["negative", "negative", "negative", "positive"]
    predicted = ["negative", "positive", "negative", "positive"]
    accuracy, recall = learning_curve.witness_scores(predicted, truth, LABELS)
    assert accuracy == 0.75
    assert recall == {"negative": 2 / 3, "positive": 1.0}  # no neutral row: no neutral recall
    with pytest.raises(ValueError, match="3 predictions for 4"):
        learning_curve.witness_scores(predicted[:3], truth, LABELS)


def test_the_champion_on_the_unsent_reserve_is_the_run_promoted_last(learning_curve) -> None:
    retrain = learning_curve.Retrain
    rows = [
        retrain(0, "bootstrap only", run_id="r0", gate="blessed", outcome="promoted v1"),
        retrain(1, "w1", run_id="r1", gate="rejected", outcome="kept v1"),
        retrain(2, "w2", gate="-", outcome="skipped: too few new labels"),
        retrain(3, "w3", run_id="r3", gate="blessed", outcome="promoted v2"),
    ]
    scores = {
        "r0": (0.80, {"negative": 0.9, "positive": 0.7}),
        "r1": (0.85, {"negative": 0.95, "positive": 0.75}),
        "r3": (0.78, {"negative": 0.8, "positive": 0.76}),
    }
    learning_curve.fill_unsent(rows, scores, {"negative": 0.6, "positive": 0.4})
    assert [r.challenger_unsent_accuracy for r in rows] == [0.80, 0.85, None, 0.78]
    # A rejected challenger better on the witness does not move the champion; a promoted one
    # worse on it does: the witness can fall.
    assert [r.champion_unsent_accuracy for r in rows] == [0.80, 0.80, 0.80, 0.78]
    assert rows[1].challenger_unsent_recall == {"negative": 0.95, "positive": 0.75}
    # At a 60/40 mix: 0.6 x 0.9 + 0.4 x 0.7 = 0.82 (r0); 0.6 x 0.95 + 0.4 x 0.75 = 0.87 (r1);
    # 0.6 x 0.8 + 0.4 x 0.76 = 0.784 (r3).
    mix = [r.challenger_unsent_mix_accuracy for r in rows]
    assert mix == pytest.approx([0.82, 0.87, None, 0.784])  # type: ignore[arg-type]
    champion_mix = [r.champion_unsent_mix_accuracy for r in rows]
    assert champion_mix == pytest.approx([0.82, 0.82, 0.82, 0.784])
    assert "0.8500   0.8000   0.8700/0.8200" in learning_curve.format_unsent_row(rows[1])


def test_accuracy_at_a_class_mix_weighs_the_recall_per_class(learning_curve) -> None:
    recall = {"negative": 0.9, "neutral": 1.0, "positive": 0.6}
    assert learning_curve.at_mix(recall, {"negative": 0.5, "positive": 0.5}) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="no recall for \\['neutral'\\]"):
        learning_curve.at_mix({"negative": 0.9}, {"negative": 0.5, "neutral": 0.5})


def test_the_witness_fraction_reaches_the_runs_params(learning_curve) -> None:
    project = learning_curve.bench_params(learning_curve.parse_args([]), None)
    assert project["simulate"]["witness_fraction"] == 0.0  # params.yaml's: the unsent reserve
    args = learning_curve.parse_args(["--witness-fraction", "0.3", "--reserved-domain", "hotel"])
    raw = learning_curve.bench_params(args, None)
    assert raw["simulate"]["witness_fraction"] == 0.3
    assert raw["simulate"]["seed"] == project["simulate"]["seed"]
    for bad in ("1", "-0.1"):
        with pytest.raises(SystemExit):
            learning_curve.parse_args(["--witness-fraction", bad])
    assert "30%" in learning_curve.witness_description(0.3)
    assert "happen not to send" in learning_curve.witness_description(0.0)


def test_the_reserves_class_mix_counts_the_pools_and_the_held_out_reviews(learning_curve) -> None:
    pools = {"negative": ["a", "b", "c"], "positive": ["d"]}
    held_out = [("e", "positive"), ("f", "positive"), ("g", "negative"), ("h", "positive")]
    # 4 negative and 4 positive reviews in all
    assert learning_curve.reserve_shares(pools, held_out) == {"negative": 0.5, "positive": 0.5}
    assert learning_curve.reserve_shares(pools, []) == {"negative": 0.75, "positive": 0.25}
    with pytest.raises(ValueError, match="no reserved reviews"):
        learning_curve.reserve_shares({"negative": []}, [])
