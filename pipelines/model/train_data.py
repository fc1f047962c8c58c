"""The rows ``train`` learns from: the prepared splits, checked; the rows chosen; the batches.

``load_prepared`` reads ``data/prepared/{train,validation,test}.parquet`` and ``manifest.json``
and checks them (known labels, no empty text, at least two classes to train on).
``select_rows`` picks the training rows: with a warm start, the rows the champion has not seen
plus a replay sample of the ones it has (``replay_mix``: stratified, or restoring the class mix of
all rows), capped by
``train.max_train_rows`` (``stratified_sample``). ``with_traffic_weights`` adds each training
row's loss weight (``train.traffic_class_weighting``, ``traffic_weights``). ``length_buckets``
cuts rows into batches of similar length in random order.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.model.traffic_weights import (
    WEIGHT_COLUMN,
    DomainWeights,
    traffic_class_weights,
)
from pipelines.params import TrainParams
from pipelines.partitions import dataset_interval

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
BUCKET_POOL = 50  # batches per pool sorted by length: similar widths, still shuffled


@dataclass(frozen=True)
class PreparedData:
    train: pd.DataFrame
    validation: pd.DataFrame
    # The training split's texts: vocabulary pruning sees these only, never validation or test
    texts: list[str]
    content_hash: str
    data_interval: str | None


def _read_split(prepared_dir: Path, split: str) -> pd.DataFrame:
    from pipelines.data.prepare import read_split

    frame = read_split(prepared_dir, split)
    return frame.assign(id=frame["id"].astype(str))


def load_prepared(prepared_dir: Path, labels: Sequence[str]) -> PreparedData:
    """The prepared splits, checked: columns, known labels, a usable training set."""
    frames = {split: _read_split(prepared_dir, split) for split in SPLITS}
    manifest_path = prepared_dir / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found (run `prepare` first)")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if not manifest.get("content_hash"):
        raise ValueError(f"{manifest_path} has no content_hash")
    for split in ("train", "validation"):
        check_labels(frames[split], labels, split)
    check_trainable(frames["train"], "train")
    texts = [str(t) for t in frames["train"]["text"]]
    return PreparedData(
        frames["train"],
        frames["validation"],
        texts,
        str(manifest["content_hash"]),
        dataset_interval(manifest),
    )


def check_labels(frame: pd.DataFrame, labels: Sequence[str], what: str) -> None:
    unknown = sorted({str(v) for v in frame["label"]} - set(labels))
    if unknown:
        raise ValueError(
            f"{what} split holds labels not in params.labels {list(labels)}: {unknown}"
        )
    blank = frame.index[frame["text"].isna() | (frame["text"].astype(str).str.strip() == "")]
    if len(blank):
        raise ValueError(f"{what} split has {len(blank)} empty texts (rows {list(blank[:10])})")


def check_trainable(frame: pd.DataFrame, what: str) -> None:
    if frame.empty:
        raise ValueError(f"the {what} set is empty: nothing to train on")
    classes = sorted(frame["label"].unique())
    if len(classes) < 2:
        raise ValueError(f"the {what} set holds a single class {classes}: a classifier needs two")


def stratified_sample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """``rows`` rows keeping the label shares (each class at least one row when possible)."""
    if rows >= len(frame):
        return frame
    shares = frame["label"].value_counts(normalize=True).sort_index()
    quota = {label: max(1, math.floor(share * rows)) for label, share in shares.items()}
    # Hand out the rows lost to rounding by largest remainder, deterministically.
    remainder = sorted(shares.index, key=lambda lbl: (-(shares[lbl] * rows % 1), str(lbl)))
    for label in remainder:
        if sum(quota.values()) >= rows:
            break
        quota[label] += 1
    parts = [
        group.sample(n=min(len(group), quota[label]), random_state=seed)
        for label, group in frame.groupby("label", sort=True)
    ]
    return pd.concat(parts).sort_index()


def replay_quotas(
    new_counts: Mapping[str, float], seen_counts: Mapping[str, float], replay_rows: int
) -> dict[str, int]:
    """Seen rows to replay per class so that new plus replayed rows keep the class mix of all
    rows (new and seen together), as a cold start would train on.

    A class wants ``share x (new + replay_rows) - its new rows``, none when its new rows exceed
    that; when the wants add up to more than ``replay_rows`` they are scaled down to it. Whole
    rows by largest remainder. No class wants more than it has seen while ``replay_rows`` is at
    most the seen rows: ``(new_c + seen_c) x planned / total - new_c <= seen_c``.
    """
    labels = sorted(set(new_counts) | set(seen_counts))
    total = sum(new_counts.values()) + sum(seen_counts.values())
    planned = sum(new_counts.values()) + replay_rows
    wants = {
        label: max(
            0.0,
            (new_counts.get(label, 0) + seen_counts.get(label, 0)) / total * planned
            - new_counts.get(label, 0),
        )
        for label in labels
    }
    wanted = sum(wants.values())
    if wanted > replay_rows:
        wants = {label: want * replay_rows / wanted for label, want in wants.items()}
    quota = {label: math.floor(want) for label, want in wants.items()}
    target = min(replay_rows, round(sum(wants.values())))
    by_remainder = sorted(labels, key=lambda lbl: (-(wants[lbl] - quota[lbl]), lbl))
    for label in by_remainder[: target - sum(quota.values())]:
        quota[label] += 1
    return quota


def replay_mix(
    frame: pd.DataFrame,
    seen_ids: set[str],
    replay_fraction: float,
    seed: int,
    *,
    restore_class_mix: bool = False,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Rows not in ``seen_ids`` plus ``replay_fraction`` of the rest: a stratified sample, or
    with ``restore_class_mix`` per class as many as ``replay_quotas`` says, so that a week of
    traffic that is mostly complaints does not tilt the warm-started model towards them."""
    seen = frame["id"].isin(seen_ids)
    new, old = frame[~seen], frame[seen]
    rows = round(replay_fraction * len(old))
    if not len(old):
        replay = old
    elif restore_class_mix:
        quota = replay_quotas(_label_counts(new), _label_counts(old), rows)
        replay = pd.concat(
            [
                group.sample(n=quota[str(label)], random_state=seed)
                for label, group in old.groupby("label", sort=True)
            ]
        )
    else:
        replay = stratified_sample(old, rows, seed)
    mixed = pd.concat([new, replay]).sort_index()
    return mixed, {"new_rows": len(new), "replay_rows": len(replay), "seen_rows": len(old)}


def _label_counts(frame: pd.DataFrame) -> dict[str, float]:
    """Rows per label; with a ``weight`` column (``train.traffic_class_weighting``) their weights,
    so that the replay restores the class mix the loss sees, not the raw row counts."""
    if WEIGHT_COLUMN in frame:
        sums = frame.groupby("label", sort=True)[WEIGHT_COLUMN].sum()
        return {str(label): float(n) for label, n in sums.items()}
    return {str(label): int(n) for label, n in frame["label"].value_counts().items()}


def with_traffic_weights(
    data: PreparedData, labels: Sequence[str], tp: TrainParams
) -> tuple[PreparedData, list[DomainWeights]]:
    """``data`` with a ``weight`` column on its train split when ``train.traffic_class_weighting``
    is on (unchanged, and no domains, when off; unchanged, with its domains, when every weight
    is 1)."""
    if not tp.traffic_class_weighting:
        return data, []
    weights, described = traffic_class_weights(
        data.train,
        labels,
        max_weight=tp.traffic_max_weight,
        min_class_share=tp.traffic_min_class_share,
    )
    for domain in described:
        log.info(
            "traffic weights, %s (%d rows, reference: %s): %s",
            domain.domain,
            sum(domain.rows.values()),
            domain.reference,
            {label: round(w, 3) for label, w in domain.weights.items()},
        )
    if bool((weights == 1.0).all()):
        # Nothing to reweigh (a week of traffic too small for any domain to have two classes
        # of MIN_CLASS_ROWS): train exactly as without weighting, not on a mean of ones whose
        # rounding would still move the weights.
        return data, described
    return replace(data, train=data.train.assign(**{WEIGHT_COLUMN: weights})), described


def select_rows(
    data: PreparedData, tp: TrainParams, seen_ids: set[str] | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The training rows and how they were chosen (counts, logged with the run).

    ``seen_ids``: the ids the champion was trained on (warm start), or None to use every row.
    """
    frame, info = data.train, {"prepared_rows": len(data.train)}
    if seen_ids is not None:
        frame, mix = replay_mix(
            frame,
            seen_ids,
            tp.replay_fraction,
            tp.seed,
            restore_class_mix=tp.replay_restores_class_mix,
        )
        info.update(mix)
        if mix["new_rows"] == 0:
            log.warning("no training rows are new since the champion: training on replay only")
    if tp.max_train_rows is not None and len(frame) > tp.max_train_rows:
        frame = stratified_sample(frame, tp.max_train_rows, tp.seed)
    check_trainable(frame, "selected training")
    info["train_rows"] = len(frame)
    return frame.reset_index(drop=True), info


def length_buckets(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator, pool: int = BUCKET_POOL
) -> list[np.ndarray]:
    """Batches of row indices of similar length, in random order.

    Rows are shuffled, cut into pools of ``pool`` batches, sorted by length within a pool and
    cut into batches; the batches are then shuffled. Padding stays small, order stays random.
    """
    order = rng.permutation(len(lengths))
    size = batch_size * pool
    lengths_arr = np.asarray(lengths)
    batches: list[np.ndarray] = []
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        chunk = chunk[np.argsort(lengths_arr[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]
