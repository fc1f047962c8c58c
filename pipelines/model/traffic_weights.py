"""Loss weights that keep the shop's traffic from teaching a domain's class prior.

A shop's chat is complaint-heavy: by the simulator's scenario weights about 81% of the emotional
customer turns are complaints, where the corpus's hotel reviews are 57% negative. A domain whose
labelled rows are mostly traffic (a new product line: ``bootstrap.reserved_domain``) then teaches
the model "this domain is mostly negative", and a retrained model moves its line between the
classes instead of learning new cases in both (README, "Learning curve").

With ``train.traffic_class_weighting`` each traffic row (prepare's ``source`` ``feedback``, a
human's label, or ``prediction``, the served model's own) gets the weight that gives its
domain's traffic the class mix of the corpus: that domain's corpus rows when the split holds at
least ``MIN_REFERENCE_ROWS`` of them, else all corpus rows (all rows when every row is traffic).
Within a domain, the classes that hold at least ``traffic_min_class_share`` of its traffic
rows (and ``MIN_CLASS_ROWS`` rows) are reweighted: class c weighs ``target(c) x n / n(c)``, where
``target`` is the reference mix renormalised over those classes and ``n`` counts their rows, so
that their weights add up to their row count. A rare class keeps weight 1: hotel reviews are
hardly ever neutral, and the few hotel rows labelled neutral are mostly the agents' mistakes,
which the corpus's 15% of neutral inquiries would weigh five times over. Each weight is then
clipped to ``[1 / traffic_max_weight, traffic_max_weight]`` (which can move the total off the
row count). Corpus rows (every other source) weigh 1. Domains come from
``pipelines.domains.review_domain``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.data.prepare import TRAFFIC_SOURCES
from pipelines.domains import review_domain

WEIGHT_COLUMN = "weight"
# A class with fewer traffic rows in a domain keeps weight 1: a weight from a handful of rows
# (often the agents' mistakes) would amplify noise.
MIN_CLASS_ROWS = 20
# Fewer corpus rows of a domain than this give no reliable class mix for it: the corpus's
# overall mix is the reference instead (a held-out domain has none at all).
MIN_REFERENCE_ROWS = 100


@dataclass(frozen=True)
class DomainWeights:
    """How one domain's traffic rows were weighted (logged with the run)."""

    domain: str
    rows: dict[str, int]  # traffic rows per label
    reference: str  # "domain" (its own corpus rows), "corpus" or "all rows"
    weights: dict[str, float]  # weight per label, after the clip


def class_shares(labels_of_rows: pd.Series, labels: Sequence[str]) -> dict[str, float]:
    counts = labels_of_rows.astype(str).value_counts()
    total = int(counts.sum())
    return {label: (int(counts.get(label, 0)) / total if total else 0.0) for label in labels}


def traffic_class_weights(
    frame: pd.DataFrame, labels: Sequence[str], *, max_weight: float, min_class_share: float
) -> tuple[pd.Series, list[DomainWeights]]:
    """A weight per row of ``frame`` (columns ``text, label, source``; index kept) and, per
    domain that holds traffic, how its rows were weighted."""
    if max_weight < 1:
        raise ValueError(f"traffic_max_weight must be at least 1, got {max_weight}")
    weights = pd.Series(1.0, index=frame.index, name=WEIGHT_COLUMN)
    domains = frame["text"].astype(str).map(review_domain)
    is_traffic = frame["source"].astype(str).isin(TRAFFIC_SOURCES)
    corpus = frame.loc[~is_traffic, "label"]
    corpus_reference = "corpus" if len(corpus) else "all rows"
    corpus_shares = class_shares(corpus if len(corpus) else frame["label"], labels)
    described = []
    for domain in sorted(set(domains[is_traffic])):
        traffic = is_traffic & (domains == domain)
        own = frame.loc[~is_traffic & (domains == domain), "label"]
        if len(own) >= MIN_REFERENCE_ROWS:
            reference, shares = "domain", class_shares(own, labels)
        else:
            reference, shares = corpus_reference, corpus_shares
        counts = frame.loc[traffic, "label"].astype(str).value_counts()
        rows = {str(label): int(n) for label, n in counts.items()}
        by_label = domain_class_weights(rows, shares, max_weight, min_class_share)
        weights[traffic] = frame.loc[traffic, "label"].astype(str).map(by_label).to_numpy()
        described.append(DomainWeights(domain, rows, reference, by_label))
    return weights, described


def domain_class_weights(
    rows: dict[str, int], shares: dict[str, float], max_weight: float, min_class_share: float
) -> dict[str, float]:
    """Weight per label of one domain's traffic: ``target(c) x n / n(c)``, clipped.

    Only the labels that hold at least ``min_class_share`` of the domain's traffic and
    ``MIN_CLASS_ROWS`` rows are reweighted (``n`` counts their rows); the others weigh 1, and so
    does every label when fewer than two qualify. ``target`` is ``shares`` renormalised over the
    reweighted labels; a label the reference never shows gets the lower bound.
    """
    total = sum(rows.values())
    weights = dict.fromkeys(rows, 1.0)
    kept = {
        label: n
        for label, n in rows.items()
        if n >= MIN_CLASS_ROWS and n >= min_class_share * total
    }
    if len(kept) < 2:
        return weights
    total_share = sum(shares.get(label, 0.0) for label in kept)
    n = sum(kept.values())
    for label, count in kept.items():
        target = shares.get(label, 0.0) / total_share if total_share else 1 / len(kept)
        weights[label] = float(np.clip(target * n / count, 1 / max_weight, max_weight))
    return weights


def log_fields(described: Sequence[DomainWeights]) -> dict[str, float]:
    """MLflow metrics: ``traffic_weight.<domain>.<label>`` and ``traffic_rows.<domain>.<label>``."""
    fields: dict[str, float] = {}
    for domain in described:
        for label, weight in domain.weights.items():
            fields[f"traffic_weight.{domain.domain}.{label}"] = weight
            fields[f"traffic_rows.{domain.domain}.{label}"] = float(domain.rows[label])
    return fields
