"""Great Expectations suites of ``validate``: reading them and the values they refer to.

Suites are GE 1.x JSON files in ``expectations/`` (``{"name", "expectations": [{"type",
"kwargs", "meta"}], "meta"}``). Values that follow the configuration are suite parameters filled
in at run time: ``{"$PARAMETER": "labels"}`` (params.yaml labels), ``interval_start`` and
``interval_end`` (the partition's interval, naive UTC). A suite's ``meta.label_shares_suite``
names a second suite, run on the derived class-balance table (``companion_suite``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.partitions import Interval

ID_COLUMN = "message_id"  # the row id of the messages table every suite checks


class SuiteError(ValueError):
    """An expectation suite file is malformed."""


@dataclass(frozen=True)
class Suite:
    name: str
    expectations: list[dict[str, Any]]
    meta: dict[str, Any]
    path: Path


def load_suite(path: Path) -> Suite:
    """Read a GE 1.x suite file: ``{"name", "expectations": [{"type", "kwargs", "meta"}]}``."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"expectation suite not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise SuiteError(f"expectation suite {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise SuiteError(f"expectation suite {path} must be a mapping with a string 'name'")
    expectations = raw.get("expectations")
    if not isinstance(expectations, list):
        raise SuiteError(f"expectation suite {path} must hold an 'expectations' list")
    for number, item in enumerate(expectations, start=1):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("type"), str)
            and isinstance(item.get("kwargs", {}), dict)
        ):
            raise SuiteError(f"{path}: expectation #{number} needs a 'type' and a 'kwargs' mapping")
    meta = raw.get("meta") or {}
    return Suite(raw["name"], expectations, meta if isinstance(meta, dict) else {}, path)


def companion_suite(suite: Suite) -> Suite | None:
    """The class-balance suite a suite names in ``meta.label_shares_suite``, if any."""
    name = suite.meta.get("label_shares_suite")
    if not name:
        return None
    return load_suite(suite.path.parent / str(name))


def suite_path(expectations_dir: Path, name: str) -> Path:
    """``expectations/<name>.json``, or ``name`` itself when it is a path to a JSON file."""
    if name.endswith(".json") or "/" in name:
        return Path(name)
    return expectations_dir / f"{name}.json"


def required_columns(suite: Suite) -> list[str]:
    """Every column the suite names (checks, column sets, row conditions), plus the row id."""
    found = {ID_COLUMN}
    for item in suite.expectations:
        kwargs = item.get("kwargs", {})
        for key in ("column", "column_A", "column_B"):
            if isinstance(kwargs.get(key), str):
                found.add(kwargs[key])
        for key in ("column_list", "column_set"):
            found.update(c for c in kwargs.get(key) or [] if isinstance(c, str))
        found.update(_condition_columns(kwargs.get("row_condition")))
    return sorted(found)


def _condition_columns(condition: Any) -> set[str]:
    """Columns a serialised row condition reads (conditions nest with "and"/"or")."""
    if not isinstance(condition, dict):
        return set()
    found = (
        {str(condition["column"]["name"])} if isinstance(condition.get("column"), dict) else set()
    )
    for part in condition.get("conditions") or []:
        found |= _condition_columns(part)
    return found


def suite_parameters(labels: Sequence[str], interval: Interval) -> dict[str, Any]:
    """Values suites refer to as ``{"$PARAMETER": name}``."""
    # created_at is naive UTC by contract, so the bounds are too.
    return {
        "labels": list(labels),
        "interval_start": pd.Timestamp(interval.start.astimezone(UTC).replace(tzinfo=None)),
        "interval_end": pd.Timestamp(interval.end.astimezone(UTC).replace(tzinfo=None)),
    }
