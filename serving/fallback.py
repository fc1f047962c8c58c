"""The local fallback estimate used when the model endpoint is slow or down (degraded mode).

A small sentiment lexicon shipped with the service (``fallback_lexicon.yaml``): matched words add
to a negative or a positive score, a negator just before a word flips it, and a softmax turns the
scores into probabilities. Far weaker than the model, but it keeps the policy working (an angry
message is still apologised to) and it costs microseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

FALLBACK_VERSION = "fallback-lexicon"


class LexiconError(ValueError):
    """The fallback lexicon file is missing or malformed."""


@dataclass(frozen=True)
class Lexicon:
    negative: dict[str, float]
    positive: dict[str, float]
    negators: tuple[str, ...]
    neutral_bias: float
    temperature: float


def load_lexicon(path: Path) -> Lexicon:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        lexicon = Lexicon(
            negative={str(k): float(v) for k, v in data["negative"].items()},
            positive={str(k): float(v) for k, v in data["positive"].items()},
            negators=tuple(str(n) for n in data["negators"]),
            neutral_bias=float(data["neutral_bias"]),
            temperature=float(data["temperature"]),
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LexiconError(f"the fallback lexicon {path} is unreadable: {exc}") from exc
    if lexicon.temperature <= 0 or not lexicon.negative or not lexicon.positive:
        raise LexiconError(f"the fallback lexicon {path} needs words and a temperature > 0")
    return lexicon


def _negated(text: str, start: int, negators: tuple[str, ...]) -> bool:
    window = text[max(0, start - 2) : start]
    return any(window.endswith(n) or n in window for n in negators)


def _polarity_scores(lexicon: Lexicon, text: str) -> tuple[float, float]:
    negative = positive = 0.0
    for words, sign in ((lexicon.negative, -1), (lexicon.positive, 1)):
        for word, weight in words.items():
            start = text.find(word)
            while start != -1:
                polarity = -sign if _negated(text, start, lexicon.negators) else sign
                if polarity < 0:
                    negative += weight
                else:
                    positive += weight
                start = text.find(word, start + len(word))
    return negative, positive


def estimate(lexicon: Lexicon, text: str) -> dict[str, float]:
    """Probabilities of negative / neutral / positive for ``text``."""
    negative, positive = _polarity_scores(lexicon, text)
    logits = {
        "negative": negative / lexicon.temperature,
        "neutral": lexicon.neutral_bias / lexicon.temperature,
        "positive": positive / lexicon.temperature,
    }
    top = max(logits.values())
    exps = {label: math.exp(value - top) for label, value in logits.items()}
    total = sum(exps.values())
    return {label: exps[label] / total for label in logits}
