"""The blessing gate: does a challenger deserve to be registered?

TFX-style: absolute floors on the golden test set, optionally every behavioural check passing,
and no metric of ``regression_metrics`` dropping more than its allowed drop against the champion
scored on the same test set.
With no champion the floors alone decide. Pure: metrics in, decision out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines.params import GateParams

# Float noise must not turn "equal to the floor" into a rejection.
_EPSILON = 1e-9


@dataclass(frozen=True)
class GateDecision:
    blessed: bool
    reasons: list[str]
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "blessed" if self.blessed else "rejected"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, **asdict(self)}


def _metric(metrics: Mapping[str, float], name: str, whose: str) -> float:
    if name not in metrics:
        raise ValueError(
            f"the gate needs metric {name!r} of the {whose}; it has {sorted(metrics)[:20]}"
        )
    return float(metrics[name])


def _floor(name: str, value: float, floor: float) -> dict[str, Any]:
    passed = not math.isnan(value) and value >= floor - _EPSILON
    sign = ">=" if passed else "<"
    return {
        "kind": "floor",
        "metric": name,
        "value": value,
        "threshold": floor,
        "passed": passed,
        "message": f"{name} {value:.4f} {sign} floor {floor:.4f}",
    }


def _regression(name: str, value: float, champion: float, allowed: float) -> dict[str, Any]:
    drop = champion - value
    passed = not math.isnan(value) and not math.isnan(champion) and drop <= allowed + _EPSILON
    verb = "within" if passed else "beyond"
    return {
        "kind": "regression",
        "metric": name,
        "value": value,
        "champion": champion,
        "drop": drop,
        "threshold": allowed,
        "passed": passed,
        "message": (
            f"{name} {value:.4f} vs champion {champion:.4f}: change {-drop:+.4f}, "
            f"{verb} the allowed drop {allowed:.4f}"
        ),
    }


def _behaviour(metrics: Mapping[str, float]) -> dict[str, Any]:
    passed_flag = _metric(metrics, "behaviour_passed", "challenger (behavioural checks)")
    rate = float(metrics.get("behaviour_pass_rate", math.nan))
    passed = passed_flag >= 1.0
    return {
        "kind": "behaviour",
        "metric": "behaviour_passed",
        "value": rate,
        "threshold": 1.0,
        "passed": passed,
        "message": (
            f"behavioural checks {'all pass' if passed else 'fail'} (case pass rate {rate:.3f})"
        ),
    }


def decide(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    params: GateParams,
) -> GateDecision:
    """Bless or reject the challenger.

    Both mappings are flat metrics (``pipelines.evaluation.metrics.flatten``, plus
    ``behaviour_passed`` / ``behaviour_pass_rate`` when behavioural checks ran). A metric the
    gate needs but cannot find is a configuration error (``ValueError``), not a rejection.
    """
    checks: dict[str, dict[str, Any]] = {
        "floor_macro_f1": _floor(
            "macro_f1", _metric(challenger, "macro_f1", "challenger"), params.min_macro_f1
        ),
        "floor_negative_recall": _floor(
            "negative_recall",
            _metric(challenger, "negative_recall", "challenger"),
            params.min_negative_recall,
        ),
    }
    if params.require_behaviour:
        checks["behaviour"] = _behaviour(challenger)
    if champion is not None:
        for name, allowed_drop in params.regression_metrics.items():
            checks[f"regression_{name}"] = _regression(
                name,
                _metric(challenger, name, "challenger"),
                _metric(champion, name, "champion"),
                allowed_drop,
            )
    failed = [c["message"] for c in checks.values() if not c["passed"]]
    if failed:
        return GateDecision(blessed=False, reasons=failed, checks=checks)
    reasons = [c["message"] for c in checks.values()]
    if champion is None:
        reasons.append("no champion to compare with: the floors alone decide")
    return GateDecision(blessed=True, reasons=reasons, checks=checks)
