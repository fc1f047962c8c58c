"""The blessing gate: does a challenger deserve to be registered?

TFX-style: absolute floors on the golden test set, optionally every behavioural check passing,
no metric of ``regression_metrics`` dropping more than its allowed drop against the champion
scored on the same test set, and no metric of ``drift_metrics`` more than its allowed drop below
the lineage's baseline: the first champion's scores on that test set, which every blessed
challenger carries on (``Baseline``), so that small allowed drops cannot add up over retrains.
With no champion the floors alone decide. Pure: metrics in, decision out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
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


@dataclass(frozen=True)
class Baseline:
    """The scores a lineage's drift is held against, and whose they are.

    ``run_id`` is the MLflow run of the model whose scores these are (the lineage's first
    champion); ``note`` says how this evaluation came by them (inherited, or started anew).
    """

    metrics: dict[str, float]
    run_id: str
    note: str

    @classmethod
    def of(
        cls, metrics: Mapping[str, float], names: Iterable[str], run_id: str, note: str
    ) -> Baseline:
        """The baseline made of ``metrics``' values of ``names`` (a missing one is an error)."""
        values = {name: _metric(metrics, name, f"baseline run {run_id}") for name in names}
        return cls(values, run_id, note)


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


def _drop_within(value: float, reference: float, allowed: float) -> tuple[float, bool]:
    """How far ``value`` falls below ``reference``, and whether that is within ``allowed``
    (a NaN on either side never is)."""
    drop = reference - value
    return drop, not math.isnan(value) and not math.isnan(reference) and drop <= allowed + _EPSILON


def _regression(name: str, value: float, champion: float, allowed: float) -> dict[str, Any]:
    drop, passed = _drop_within(value, champion, allowed)
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


def _drift(
    name: str, value: float, baseline: Baseline, allowed: float, champion: float
) -> dict[str, Any]:
    """``value`` within ``allowed`` of the baseline's, or at least the champion's: a challenger
    that loses nothing against the champion is not held back by its lineage's past (a champion
    beyond a tightened allowance could otherwise never be replaced)."""
    reference = _metric(baseline.metrics, name, f"baseline run {baseline.run_id}")
    drop, within = _drop_within(value, reference, allowed)
    kept = not math.isnan(value) and not math.isnan(champion) and value >= champion - _EPSILON
    message = (
        f"{name} {value:.4f} vs the lineage's baseline {reference:.4f} "
        f"(run {baseline.run_id[:8]}): change {-drop:+.4f}, "
        f"{'within' if within else 'beyond'} the allowed drift {allowed:.4f}"
    )
    if kept and not within:
        message += f", but not below the champion's {champion:.4f}"
    return {
        "kind": "drift",
        "metric": name,
        "value": value,
        "baseline": reference,
        "baseline_run": baseline.run_id,
        "drop": drop,
        "threshold": allowed,
        "passed": within or kept,
        "message": message,
    }


def _repeats_a_failed_step(check: Mapping[str, Any], checks: Mapping[str, Any]) -> bool:
    """Whether ``check`` is a failed drift check held against the very figure its metric's failed
    step check was (the champion started the lineage): one reason says it (both stay checks)."""
    if check["kind"] != "drift":
        return False
    step = checks.get(f"regression_{check['metric']}")
    return (
        step is not None
        and not step["passed"]
        and abs(step["champion"] - check["baseline"]) <= _EPSILON
    )


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
    baseline: Baseline | None = None,
) -> GateDecision:
    """Bless or reject the challenger.

    Both mappings are flat metrics (``pipelines.evaluation.metrics.flatten``, plus
    ``behaviour_passed`` / ``behaviour_pass_rate`` when behavioural checks ran). The drift
    checks run when there is a champion and a ``baseline`` (without a champion the challenger
    would start its own lineage: nothing to drift from). A metric the gate needs but cannot find
    is a configuration error (``ValueError``), not a rejection.
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
        if baseline is not None:
            for name, allowed_drift in params.drift_metrics.items():
                checks[f"drift_{name}"] = _drift(
                    name,
                    _metric(challenger, name, "challenger"),
                    baseline,
                    allowed_drift,
                    _metric(champion, name, "champion"),
                )
    failing = [c for c in checks.values() if not c["passed"]]
    if failing:
        reasons = [c["message"] for c in failing if not _repeats_a_failed_step(c, checks)]
        return GateDecision(blessed=False, reasons=reasons, checks=checks)
    reasons = [c["message"] for c in checks.values()]
    if champion is None:
        reasons.append("no champion to compare with: the floors alone decide")
    return GateDecision(blessed=True, reasons=reasons, checks=checks)
