"""Behavioural checks (CheckList style) kept as data in ``expectations/behaviour.yaml``.

Three kinds of check:

* **MFT** (minimum functionality): each text must get the expected label;
* **INV** (invariance): a perturbed variant must get the same label as its base text;
* **DIR** (directional): the variant must move in a stated direction from its base
  (``flip_to``, ``flip_from``, ``not_less``, ``not_more`` on one label's probability).

``load_checks`` expands templates into concrete cases; ``run_behaviour_checks`` scores every
distinct text once through ``predict_fn`` and reports per-check pass rates with failing examples.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# texts -> DataFrame with a ``label`` column and one ``p_<label>`` column per label, row-aligned.
PredictFn = Callable[[list[str]], pd.DataFrame]

DEFAULT_MAX_FAILURES = 5
RELATIONS = ("flip_to", "flip_from", "not_less", "not_more")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Direction(_Spec):
    flip_to: str | None = None
    flip_from: str | None = None
    not_less: str | None = None
    not_more: str | None = None
    tolerance: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Direction:
        named = [k for k in RELATIONS if getattr(self, k)]
        if len(named) != 1:
            raise ValueError(
                f"a DIR expectation names exactly one of {', '.join(RELATIONS)}; "
                f"got {named or 'none'}"
            )
        return self

    @property
    def relation(self) -> str:
        return next(k for k in RELATIONS if getattr(self, k))

    @property
    def label(self) -> str:
        return str(getattr(self, self.relation))


class CheckSpec(_Spec):
    """One check as written in the YAML file."""

    name: str = Field(min_length=1)
    type: Literal["MFT", "INV", "DIR"]
    capability: str = Field(min_length=1)
    description: str = ""
    threshold: float = Field(ge=0, le=1)
    expect: str | Direction | None = None
    cases: list[str] = []
    pairs: list[tuple[str, str]] = []
    templates: list[str] = []
    slots: dict[str, list[str]] = {}
    vary: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CheckSpec:
        if self.type == "MFT" and not isinstance(self.expect, str):
            raise ValueError("an MFT check needs `expect: <label>`")
        if self.type == "DIR" and not isinstance(self.expect, Direction):
            raise ValueError("a DIR check needs `expect: {flip_to|flip_from|not_less|not_more: L}`")
        if self.type == "INV" and self.expect not in (None, "same_label"):
            raise ValueError("an INV check expects the same label; leave `expect` out")
        if self.type == "MFT" and (self.pairs or self.vary):
            raise ValueError("an MFT check takes `cases` and `templates`, not `pairs` or `vary`")
        if self.type != "MFT" and self.cases:
            raise ValueError(f"a {self.type} check takes `pairs` or `templates`, not `cases`")
        if self.templates and self.type != "MFT":
            if self.vary is None or len(self.slots.get(self.vary, [])) < 2:
                raise ValueError("templates of an INV/DIR check need `vary`: a slot of 2+ values")
            unvaried = [t for t in self.templates if self.vary not in _fields(t)]
            if unvaried:
                raise ValueError(f"templates {unvaried} do not use the varied slot {self.vary!r}")
        for template in self.templates:
            missing = set(_fields(template)) - set(self.slots)
            if missing:
                raise ValueError(f"template {template!r} uses undefined slots {sorted(missing)}")
        return self


class _File(_Spec):
    version: Literal[1]
    checks: list[dict[str, Any]]


@dataclass(frozen=True)
class Check:
    """A check with its cases expanded: 1 text per MFT case, (base, variant) otherwise."""

    name: str
    type: str
    capability: str
    description: str
    threshold: float
    cases: tuple[tuple[str, ...], ...]
    expect_label: str | None = None  # MFT
    direction: Direction | None = None  # DIR

    @property
    def expectation(self) -> str:
        if self.type == "MFT":
            return f"label = {self.expect_label}"
        if self.type == "INV":
            return "same label as the base text"
        assert self.direction is not None
        d = self.direction
        tol = f" (tolerance {d.tolerance:g})" if d.tolerance else ""
        return {
            "flip_to": f"variant becomes {d.label}",
            "flip_from": f"base is {d.label}, variant is not",
            "not_less": f"p_{d.label} does not decrease{tol}",
            "not_more": f"p_{d.label} does not increase{tol}",
        }[d.relation]


@dataclass
class CheckResult:
    name: str
    type: str
    capability: str
    expectation: str
    n_cases: int
    n_passed: int
    pass_rate: float
    threshold: float
    passed: bool
    failures: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class BehaviourReport:
    checks: list[CheckResult]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def pass_rate(self) -> float:
        """Share of all cases that passed (case-weighted over every check)."""
        total = sum(c.n_cases for c in self.checks)
        return sum(c.n_passed for c in self.checks) / total if total else 1.0

    @property
    def failed_checks(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "pass_rate": self.pass_rate,
            "n_checks": len(self.checks),
            "n_cases": sum(c.n_cases for c in self.checks),
            "failed_checks": self.failed_checks,
            "checks": [asdict(c) for c in self.checks],
        }


def _fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def _fill_all(template: str, slots: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """Every combination of the values of the slots the template uses."""
    names = list(dict.fromkeys(_fields(template)))
    combos = itertools.product(*(slots[name] for name in names))
    return [dict(zip(names, combo, strict=True)) for combo in combos]


def _expand(spec: CheckSpec) -> tuple[tuple[str, ...], ...]:
    if spec.type == "MFT":
        texts = list(spec.cases)
        for template in spec.templates:
            texts += [template.format(**values) for values in _fill_all(template, spec.slots)]
        return tuple((t,) for t in texts)
    pairs = [tuple(p) for p in spec.pairs]
    vary = str(spec.vary)
    for template in spec.templates:
        base_value, *variant_values = spec.slots[vary]
        # Other slots combine freely; the varied slot holds the base value, then each variant.
        for values in _fill_all(template, {**spec.slots, vary: [base_value]}):
            base = template.format(**values)
            pairs += [(base, template.format(**{**values, vary: v})) for v in variant_values]
    return tuple(pairs)


def _to_check(spec: CheckSpec, labels: Sequence[str]) -> Check:
    label = spec.expect if isinstance(spec.expect, str) and spec.type == "MFT" else None
    direction = spec.expect if isinstance(spec.expect, Direction) else None
    named = label or (direction.label if direction else None)
    if named is not None and named not in labels:
        raise ValueError(f"label {named!r} is not in params.labels {list(labels)}")
    cases = _expand(spec)
    if not cases:
        raise ValueError("the check has no cases")
    return Check(
        name=spec.name,
        type=spec.type,
        capability=spec.capability,
        description=spec.description,
        threshold=spec.threshold,
        cases=cases,
        expect_label=label,
        direction=direction,
    )


def parse_checks(raw: Any, labels: Sequence[str], *, source: str = "checks") -> list[Check]:
    """Validate and expand the parsed YAML document; errors name the check at fault."""
    try:
        document = _File.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(
            f"{source}: not a behaviour file (version: 1, checks: [...]): {exc}"
        ) from exc
    checks: list[Check] = []
    for position, entry in enumerate(document.checks):
        name = entry.get("name", f"#{position}") if isinstance(entry, dict) else f"#{position}"
        try:
            checks.append(_to_check(CheckSpec.model_validate(entry), labels))
        except (ValidationError, ValueError, KeyError, IndexError) as exc:
            raise ValueError(f"{source}: check {name!r} is invalid: {exc}") from exc
    names = [c.name for c in checks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{source}: duplicate check names {duplicates}")
    return checks


def load_checks(path: Path, labels: Sequence[str]) -> list[Check]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"behaviour checks not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    return parse_checks(raw, labels, source=str(path))


def _case_passes(check: Check, rows: Sequence[Mapping[str, Any]]) -> bool:
    if check.type == "MFT":
        return bool(rows[0]["label"] == check.expect_label)
    base, variant = rows
    if check.type == "INV":
        return bool(base["label"] == variant["label"])
    assert check.direction is not None
    d = check.direction
    if d.relation == "flip_to":
        return bool(variant["label"] == d.label and base["label"] != d.label)
    if d.relation == "flip_from":
        return bool(base["label"] == d.label and variant["label"] != d.label)
    key = f"p_{d.label}"
    if d.relation == "not_less":
        return bool(variant[key] >= base[key] - d.tolerance)
    return bool(variant[key] <= base[key] + d.tolerance)


def _describe(texts: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "texts": list(texts),
        "predicted": [row["label"] for row in rows],
        "scores": [
            {k: round(float(v), 4) for k, v in row.items() if k.startswith("p_")} for row in rows
        ],
    }


def _predict_all(predict_fn: PredictFn, texts: list[str]) -> dict[str, dict[str, Any]]:
    output = predict_fn(texts)
    if len(output) != len(texts) or "label" not in output.columns:
        raise ValueError(
            f"predict_fn must return one row per text with a `label` column; got {len(output)} "
            f"rows and columns {list(output.columns)} for {len(texts)} texts"
        )
    keep = ["label", *[c for c in output.columns if str(c).startswith("p_")]]
    records = [{str(k): v for k, v in row.items()} for row in output[keep].to_dict("records")]
    return dict(zip(texts, records, strict=True))


def _require_probabilities(checks: Sequence[Check], columns: Sequence[str]) -> None:
    for check in checks:
        if check.direction and check.direction.relation in ("not_less", "not_more"):
            key = f"p_{check.direction.label}"
            if key not in columns:
                raise ValueError(f"check {check.name!r} needs column {key} in the model output")


def _run_one(
    check: Check, predicted: Mapping[str, Mapping[str, Any]], max_failures: int
) -> CheckResult:
    outcomes = [(case, [predicted[t] for t in case]) for case in check.cases]
    passed = [_case_passes(check, rows) for _, rows in outcomes]
    n_passed = sum(passed)
    rate = n_passed / len(passed)
    failures = [
        _describe(case, rows) for (case, rows), ok in zip(outcomes, passed, strict=True) if not ok
    ]
    return CheckResult(
        name=check.name,
        type=check.type,
        capability=check.capability,
        expectation=check.expectation,
        n_cases=len(passed),
        n_passed=n_passed,
        pass_rate=rate,
        threshold=check.threshold,
        passed=rate >= check.threshold,
        failures=failures[:max_failures],
    )


def run_behaviour_checks(
    predict_fn: PredictFn, checks: Sequence[Check], *, max_failures: int = DEFAULT_MAX_FAILURES
) -> BehaviourReport:
    """Run every check; each distinct text goes through ``predict_fn`` once."""
    texts = list(dict.fromkeys(t for c in checks for case in c.cases for t in case))
    if not texts:
        return BehaviourReport([])
    predicted = _predict_all(predict_fn, texts)
    _require_probabilities(checks, list(next(iter(predicted.values()))))
    return BehaviourReport([_run_one(check, predicted, max_failures) for check in checks])
