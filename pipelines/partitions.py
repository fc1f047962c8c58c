"""Data intervals, the partition layout keyed by them, and atomic file writes.

Layout under ``settings.partitions_dir``::

    interval=2026-11-01_2026-11-02/    (bounds that are not midnight: 2026-11-01T06-00-00)
        raw.parquet           ingest: messages of the interval with their labels
        validated.parquet     validate: rows of a batch that passed the suite
        quarantine.parquet    validate: rows that failed, with the reasons
        validation.json       validate: the readable report

Reruns of the same interval overwrite these files; nothing is appended.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pandas as pd

_DAY_FORMAT = "%Y-%m-%d"
_KEY_FORMAT = "%Y-%m-%dT%H-%M-%S"
_BOUND = r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:T[0-9]{2}-[0-9]{2}-[0-9]{2})?"
_KEY_RE = re.compile(rf"^interval=(?P<start>{_BOUND})_(?P<end>{_BOUND})$")


def _format_bound(moment: datetime) -> str:
    # Midnight bounds read as plain dates, so daily partitions are interval=2026-11-01_2026-11-02
    # and dvc.yaml can name them from the dates in params.yaml.
    if moment.time() == time.min:
        return moment.strftime(_DAY_FORMAT)
    return moment.strftime(_KEY_FORMAT)


def _parse_bound(text: str) -> datetime:
    fmt = _KEY_FORMAT if "T" in text else _DAY_FORMAT
    return datetime.strptime(text, fmt).replace(tzinfo=UTC)


def as_utc(moment: datetime | date | str) -> datetime:
    """Parse a date, datetime or ISO string as a timezone-aware UTC datetime."""
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError as exc:
            raise ValueError(f"not an ISO date or datetime: {moment!r}") from exc
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, time.min)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class Interval:
    """A half-open data interval ``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("interval bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"interval end {self.end} must be after its start {self.start}")

    @classmethod
    def parse(cls, start: datetime | date | str, end: datetime | date | str) -> Interval:
        return cls(as_utc(start), as_utc(end))

    @property
    def key(self) -> str:
        return f"interval={_format_bound(self.start)}_{_format_bound(self.end)}"

    @classmethod
    def from_key(cls, key: str) -> Interval:
        match = _KEY_RE.match(key)
        if not match:
            raise ValueError(f"not a partition key: {key!r}")
        return cls(_parse_bound(match["start"]), _parse_bound(match["end"]))

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def dataset_interval(manifest: dict[str, Any]) -> str | None:
    """The data interval a prepared dataset covers, from what prepare's manifest records.

    ``[start of the earliest partition prepare read (inputs.partitions), interval_end)``;
    ``bootstrap only, until END`` when its window held no partition; None when the manifest names
    no end (not written by prepare).
    """
    end = manifest.get("interval_end")
    if not end:
        return None
    partitions = manifest.get("inputs", {}).get("partitions", [])
    keys = [p.get("key", "") for p in partitions if isinstance(p, dict)]
    starts = sorted(Interval.from_key(k).start.isoformat() for k in keys if k)
    return f"[{starts[0]}, {end})" if starts else f"bootstrap only, until {end}"


def partition_dir(root: Path, interval: Interval) -> Path:
    return root / interval.key


def list_partitions(root: Path) -> list[tuple[Interval, Path]]:
    """Existing partitions under ``root`` ordered by interval start."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.is_dir() and _KEY_RE.match(child.name):
            found.append((Interval.from_key(child.name), child))
    return sorted(found, key=lambda item: item[0].start)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` only on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet(frame: pd.DataFrame, target: Path) -> Path:
    """Write ``frame`` to ``target`` atomically (readers never see half a file)."""
    with atomic_path(target) as tmp:
        frame.to_parquet(tmp, index=False)
    return target


def write_json(payload: Any, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(
            json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=True, default=str) + "\n",
            encoding="utf-8",
        )
    return target
