"""The golden rows that challenger and champion label differently.

Only these rows make the two models' accuracies differ: the challenger's accuracy minus the
champion's is (rows where only the challenger matches the label − rows where only the champion
does) / all rows. They are therefore the rows an ML lead should read before trusting a small
difference either way, all the more because the golden labels are themselves wrong on about one
real row in twenty (README, "How far the labels allow"). ``evaluate`` writes them as
``disagreements.csv`` beside the report whenever a champion exists.

Which way the rows go says something too. A challenger that learned new cases moves rows both
ways; one that moved its line between two classes (for example after a week of traffic that was
mostly complaints) moves nearly all of them towards one class. In the ninth learning-curve run
109 of 124 such rows went from positive to negative (README, "Learning curve").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

CHALLENGER = "challenger"
CHAMPION = "champion"
NEITHER = "neither"
COLUMNS = ("id", "source", "domain", "label", CHAMPION, CHALLENGER, "matches_label", "text")
# What the report and the version page tell the ML lead about these rows.
READING_ADVICE = (
    "Only these rows make the two accuracies differ, and the golden labels are wrong on about "
    "one real row in twenty: read them before trusting a small difference either way."
)
SAYS_PREFIX = "disagreement_challenger_says_"
# When at least this share of at least this many rows goes to one label, the summary says that
# the challenger moved one way. Under 20 rows a one-way split is too easily chance.
ONE_WAY_SHARE = 0.8
ONE_WAY_MIN_ROWS = 20
ONE_WAY_ADVICE = (
    "Nearly all of them go one way: the challenger moved its line between classes rather than "
    "learned new cases in both directions, as new training rows of another class balance (a "
    "week of traffic that is mostly complaints) make it do."
)


def disagreements(
    test: pd.DataFrame, challenger: Sequence[str], champion: Sequence[str]
) -> pd.DataFrame:
    """The rows of ``test`` (``id``, ``text``, ``label``, ``source``; ``domain`` optional) whose
    predicted labels differ, with both predictions and which of them matches the dataset label,
    ordered by that, then domain, then label."""
    if not len(challenger) == len(champion) == len(test):
        raise ValueError(
            f"predictions do not match the test set: {len(challenger)} challenger and "
            f"{len(champion)} champion labels for {len(test)} rows"
        )
    frame = test.reset_index(drop=True).assign(
        **{
            CHALLENGER: [str(v) for v in challenger],
            CHAMPION: [str(v) for v in champion],
        }
    )
    if "domain" not in frame:
        frame = frame.assign(domain=None)
    rows = frame[frame[CHALLENGER] != frame[CHAMPION]].copy()
    label = rows["label"].astype(str)
    rows["matches_label"] = NEITHER
    rows.loc[rows[CHALLENGER] == label, "matches_label"] = CHALLENGER
    rows.loc[rows[CHAMPION] == label, "matches_label"] = CHAMPION
    rows = rows.sort_values(["matches_label", "domain", "label", "id"], na_position="last")
    return rows[list(COLUMNS)].reset_index(drop=True)


def disagreement_counts(rows: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
    """Flat metrics of ``disagreements``' rows: how many, whose label matches the dataset's, and
    per label of ``labels`` on how many the challenger says that label (``SAYS_PREFIX``)."""
    matches = rows["matches_label"].value_counts()
    says = rows[CHALLENGER].value_counts()
    unknown = sorted(set(says.index) - set(labels))
    if unknown:
        raise ValueError(f"the challenger says labels not in {list(labels)}: {unknown}")
    return {
        "disagreement_rows": float(len(rows)),
        "disagreement_challenger_matches_label": float(matches.get(CHALLENGER, 0)),
        "disagreement_champion_matches_label": float(matches.get(CHAMPION, 0)),
        **{f"{SAYS_PREFIX}{label}": float(says.get(label, 0)) for label in labels},
    }


def direction_summary(counts: Mapping[str, float]) -> str:
    """Which labels the challenger gives the rows, most first, from ``disagreement_counts``'
    metrics (or the same keys read back from a run); the one-way advice when it applies.
    Empty when there are no rows or no such counts (a run logged before they existed)."""
    says = {
        key.removeprefix(SAYS_PREFIX): int(value)
        for key, value in counts.items()
        if key.startswith(SAYS_PREFIX) and value
    }
    total = sum(says.values())
    if not total:
        return ""
    ordered = sorted(says.items(), key=lambda item: (-item[1], item[0]))
    text = "The challenger says " + ", ".join(f"{label} on {n}" for label, n in ordered) + "."
    if total >= ONE_WAY_MIN_ROWS and ordered[0][1] >= ONE_WAY_SHARE * total:
        text += " " + ONE_WAY_ADVICE
    return text
