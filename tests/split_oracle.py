"""The bootstrap split (golden / reserved / train) worked out from its definition, for tests.

Independent of ``pipelines.data.textprep``'s own side functions: golden when the sha256 of
``"golden\\x00" + key`` (first 8 bytes, big-endian, over 2**64) is under ``golden_fraction``;
otherwise reserved when the same with salt ``"reserved"`` is under ``reserved_fraction``. A
review's key is the canonical key of its text (shared by near-duplicates), a template's is
``"template\\x00" + template``. Only ``canonical_key``/``canonical_form`` and ``review_domain``
come from the code (their own tests cover them).
"""

from __future__ import annotations

import hashlib

from pipelines.data.textprep import canonical_form, canonical_key
from pipelines.domains import review_domain
from pipelines.params import BootstrapParams


def fraction(key: str, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def side(key: str, bootstrap: BootstrapParams) -> str:
    if fraction(key, "golden") < bootstrap.golden_fraction:
        return "golden"
    if fraction(key, "reserved") < bootstrap.reserved_fraction:
        return "reserved"
    return "train"


def review_side(text: str, bootstrap: BootstrapParams) -> str:
    """With ``reserved_domain``: golden as always, then reserved exactly when the review (its
    canonical form) is of that domain (``review_domain``, hand-checked in its own tests)."""
    key = canonical_key(text)
    if bootstrap.reserved_domain is None:
        return side(key, bootstrap)
    if fraction(key, "golden") < bootstrap.golden_fraction:
        return "golden"
    return (
        "reserved" if review_domain(canonical_form(text)) == bootstrap.reserved_domain else "train"
    )


def template_side(template: str, bootstrap: BootstrapParams) -> str:
    return side(f"template\x00{template}", bootstrap)
