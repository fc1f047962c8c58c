"""The golden rows that challenger and champion label differently.

Only these rows make the two models' accuracies differ: the challenger's accuracy minus the
champion's is (rows where only the challenger matches the label − rows where only the champion
does) / all rows. They are therefore the rows an ML lead should read before trusting a small
difference either way, all the more because the golden labels are themselves wrong on about one
real row in twenty (README, "How far the labels allow"). ``evaluate`` writes them as
``disagreements.csv`` beside the report whenever a champion exists.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def disagreement_counts(rows: pd.DataFrame) -> dict[str, float]:
    """Flat metrics of ``disagreements``' rows: how many, and whose label matches the dataset's."""
    matches = rows["matches_label"].value_counts()
    return {
        "disagreement_rows": float(len(rows)),
        "disagreement_challenger_matches_label": float(matches.get(CHALLENGER, 0)),
        "disagreement_champion_matches_label": float(matches.get(CHAMPION, 0)),
    }
