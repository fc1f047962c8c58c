"""The one text pipeline of training and serving, and the canonical key every split decision uses.

``prepare_text`` is what ``prepare`` applies to every training row, what ``ingest`` and the
regulation service apply before anything is stored, and what the logged model applies before it
scores: NFKC normalisation (``text.normalize``), PII redaction (``pii.redact``) and a cut at
``max_chars`` that never splits a placeholder. So a chat app's raw text and a training row reach
the classifier in the same form.

``canonical_form`` goes one step further for split decisions: it also drops punctuation,
symbols (emoji included) and whitespace, so "很好", "很好。" and "很 好!!" share one key and
cannot straddle the golden, validation and training sets.

This module, ``text.py`` and ``pii.py`` use only the standard library and import each other
relatively: ``export_package`` copies the three into a package that the logged MLflow model
carries, so the served model needs nothing from this repository.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import unicodedata
from pathlib import Path
from typing import NamedTuple

from .pii import PLACEHOLDERS, redact_with_counts
from .text import normalize

PACKAGE_NAME = "emoreg_textprep"  # the name the logged model imports the copy under
_PLACEHOLDER_RE = re.compile("|".join(re.escape(token) for token in PLACEHOLDERS.values()))
# Punctuation (P*), symbols (S*: emoji, arrows, currency) and separators (Z*) carry no words.
_NOT_WORDS = ("P", "S", "Z")


class PreparedText(NamedTuple):
    text: str
    pii_kinds: list[str]
    truncated: bool


def prepare_text(raw: str, max_chars: int) -> PreparedText:
    """Normalise, redact, and cut to ``max_chars`` characters (never inside a placeholder)."""
    text, matches = redact_with_counts(normalize(raw))
    kinds = [match.kind for match in matches]
    if len(text) <= max_chars:
        return PreparedText(text, kinds, False)
    return PreparedText(_cut(text, max_chars), kinds, True)


def redact_text(raw: str) -> str:
    """Normalised and redacted, uncut: the form in which a text may be stored anywhere."""
    return redact_with_counts(normalize(raw))[0]


def content_chars(text: str) -> int:
    """Characters of ``text`` besides placeholders and surrounding whitespace."""
    return len(_PLACEHOLDER_RE.sub("", text).strip())


def _cut(text: str, max_chars: int) -> str:
    end = max_chars
    for match in _PLACEHOLDER_RE.finditer(text):
        if match.start() < end < match.end():  # never leave half a placeholder
            end = match.start()
    return text[:end].rstrip()


def canonical_form(text: str) -> str:
    """Normalised, redacted, lower-cased, without punctuation, symbols and whitespace.

    A text made only of such characters keeps its normalised form, so that it still has a key.
    """
    redacted, _ = redact_with_counts(normalize(text))
    kept = "".join(
        ch for ch in redacted.lower() if not unicodedata.category(ch).startswith(_NOT_WORDS)
    )
    return kept or normalize(text)


def canonical_key(text: str) -> str:
    """Identity of a text for split decisions: sha256 (hex) of ``canonical_form``."""
    return hashlib.sha256(canonical_form(text).encode("utf-8")).hexdigest()


def key_fraction(key: str, salt: str) -> float:
    """A number in [0, 1) fixed by a key and a salt naming the purpose."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_golden_text(text: str, golden_fraction: float) -> bool:
    """Whether a free text (a review, a chat message) belongs to the golden test set.

    Decided on the canonical key, so near-duplicates fall on the same side. Synthetic inquiries
    are decided by their template instead (``is_golden_template``).
    """
    return key_fraction(canonical_key(text), "golden") < golden_fraction


def is_golden_template(template: str, golden_fraction: float) -> bool:
    """Whether an inquiry template is held out: all its texts are golden, none is trained on."""
    return key_fraction(_template_key(template), "golden") < golden_fraction


# The three sides of the bootstrap split. Golden is decided first (its own salt, unchanged by
# the reserve); of the rest, a share decided by a second salt is reserved: the shop's future
# traffic, which the corpus never holds and the simulator sends; the others are trained on.
GOLDEN, RESERVED, TRAIN = "golden", "reserved", "train"


def validation_score(key: str) -> float:
    """Where a canonical key falls in prepare's train/validation split: validation below
    ``prepare.validation_fraction`` (``bootstrap`` keeps composites on their review's side)."""
    return key_fraction(key, "validation")


def _template_key(template: str) -> str:
    return f"template\x00{template}"


def _side(key: str, golden_fraction: float, reserved_fraction: float) -> str:
    if key_fraction(key, "golden") < golden_fraction:
        return GOLDEN
    if key_fraction(key, "reserved") < reserved_fraction:
        return RESERVED
    return TRAIN


def text_side(text: str, golden_fraction: float, reserved_fraction: float) -> str:
    """``GOLDEN``, ``RESERVED`` or ``TRAIN`` for a free text (a review), by its canonical key.

    Golden exactly when ``is_golden_text``; ``reserved_fraction`` of the other keys are reserved.
    Near-duplicates share a key, hence a side.
    """
    return _side(canonical_key(text), golden_fraction, reserved_fraction)


def template_side(template: str, golden_fraction: float, reserved_fraction: float) -> str:
    """``GOLDEN``, ``RESERVED`` or ``TRAIN`` for an inquiry template (golden exactly when
    ``is_golden_template``)."""
    return _side(_template_key(template), golden_fraction, reserved_fraction)


_INIT = f'''"""The platform's text pipeline (pipelines/data), shipped inside a logged model."""

from .textprep import PreparedText, canonical_form, prepare_text, redact_text

__all__ = ["PreparedText", "canonical_form", "prepare_text", "redact_text"]
PACKAGE = "{PACKAGE_NAME}"
'''


def export_package(directory: Path) -> Path:
    """Write ``directory/emoreg_textprep/`` (this module, ``text.py``, ``pii.py``); return it."""
    package = directory / PACKAGE_NAME
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    here = Path(__file__).parent
    for name in ("textprep.py", "text.py", "pii.py"):
        shutil.copyfile(here / name, package / name)
    (package / "__init__.py").write_text(_INIT, encoding="utf-8")
    return package
