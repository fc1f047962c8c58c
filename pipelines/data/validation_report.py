"""The readable side of ``validate``: JSON-safe values, an expectation's result in words.

``check_report`` is one entry of ``validation.json``'s ``expectations`` list; ``failed_check_lines``
are the lines a failed critical expectation adds to the message ``ValidationFailed`` carries
(observed against expected, why it matters, example rows).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pipelines.data.validate import Check


def plain(value: Any, limit: int = 120) -> Any:
    """JSON-safe, short value: NaN to None, long strings cut, timestamps as ISO."""
    if isinstance(value, dict):
        return {str(k): plain(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain(v, limit) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[: limit // 2]}… ({len(value)} chars)"
    if isinstance(value, datetime | np.datetime64):
        return pd.Timestamp(value).isoformat()
    if hasattr(value, "item") and not isinstance(value, int | bool):
        return plain(value.item(), limit)  # numpy scalars
    if value is None or isinstance(value, int | float | bool):
        return value
    try:
        if pd.isna(value):  # pd.NA, NaT and other missing markers
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def condition_text(condition: Any) -> str:
    """A serialised GE row condition as text: ``role == 'customer' and label is not null``."""
    if not isinstance(condition, dict):
        return str(condition)
    if condition.get("type") in ("and", "or"):
        joiner = f" {condition['type']} "
        return joiner.join(condition_text(part) for part in condition.get("conditions") or [])
    column = (condition.get("column") or {}).get("name", "?")
    if condition.get("type") == "nullity":
        return f"{column} is {'null' if condition.get('is_null') else 'not null'}"
    return f"{column} {condition.get('operator')} {condition.get('parameter')!r}"


def _expected_text(check: Check) -> str:
    parts = []
    for key, value in check.kwargs.items():
        if key in ("column", "column_list"):
            continue
        if key != "row_condition":  # already in the name
            parts.append(f"{key}={plain(value, 40)!r}")
    return ", ".join(parts)


def _observed_text(check: Check) -> str:
    if check.error:
        return f"error: {check.error}"
    if check.unexpected_count is not None:
        checked = (check.element_count or 0) - (check.missing_count or 0)
        percent = check.unexpected_percent or 0.0
        return f"{check.unexpected_count} of {checked} checked values unexpected ({percent:.2f}%)"
    return f"observed {plain(check.observed, 60)!r}"


def check_report(check: Check) -> dict[str, Any]:
    """The expectation's entry in ``validation.json``."""
    return {
        "table": check.table,
        "expectation": check.name,
        "type": check.type,
        "kwargs": plain(check.kwargs),
        "why": check.why,
        "severity": check.severity,
        "success": check.success,
        "observed": _observed_text(check),
        "observed_value": plain(check.observed),
        "unexpected_count": check.unexpected_count,
        "unexpected_percent": plain(check.unexpected_percent),
        "examples": list(check.examples),
        "error": check.error,
    }


def failed_check_lines(check: Check) -> list[str]:
    """What a failed expectation adds to the failure message: result, why, example rows."""
    expected = _expected_text(check)
    lines = [
        f"- {check.name}: {_observed_text(check)}" + (f"; expected {expected}" if expected else "")
    ]
    if check.why:
        lines.append(f"  why: {check.why}")
    for example in check.examples:
        lines.append("  e.g. " + ", ".join(f"{k}={v!r}" for k, v in example.items()))
    return lines
