"""Behavioural checks: the shipped data file, template expansion, and the runner with toy models."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pipelines.evaluation.behaviour import Check, load_checks, parse_checks, run_behaviour_checks
from pipelines.settings import PROJECT_ROOT

LABELS = ("negative", "neutral", "positive")
SHIPPED = PROJECT_ROOT / "expectations" / "behaviour.yaml"


def frame(labels: list[str], probas: list[list[float]] | None = None) -> pd.DataFrame:
    if probas is None:
        probas = [[1.0 if lab == label else 0.0 for lab in LABELS] for label in labels]
    out = pd.DataFrame(probas, columns=[f"p_{lab}" for lab in LABELS])
    out.insert(0, "label", labels)
    return out


def rule_model(handles_negation: bool) -> Callable[[list[str]], pd.DataFrame]:
    """Keyword model; without negation handling "很不满意" reads as praise."""

    def label(text: str) -> str:
        negated = handles_negation and "不" in text
        if any(w in text for w in ("差", "失望", "坏")):
            return "negative"
        if any(w in text for w in ("好", "满意", "喜欢")):
            return "negative" if negated else "positive"
        return "neutral"

    return lambda texts: frame([label(t) for t in texts])


@pytest.fixture(scope="module")
def shipped() -> list[Check]:
    return load_checks(SHIPPED, LABELS)


# ------------------------------------------------------------------ the shipped file


def test_shipped_checks_cover_the_three_types_and_enough_cases(shipped: list[Check]) -> None:
    assert len(shipped) >= 15
    assert sum(len(c.cases) for c in shipped) >= 150
    assert {c.type for c in shipped} == {"MFT", "INV", "DIR"}
    mft_labels = {c.expect_label for c in shipped if c.type == "MFT"}
    assert mft_labels == set(LABELS)
    for check in shipped:
        assert 0 < check.threshold <= 1, check.name
        expected_width = 1 if check.type == "MFT" else 2
        assert all(len(case) == expected_width for case in check.cases), check.name
        if check.type != "MFT":
            assert all(base != variant for base, variant in check.cases), check.name


def test_shipped_mft_texts_have_one_expected_label(shipped: list[Check]) -> None:
    expected: dict[str, set[str]] = {}
    for check in shipped:
        if check.type == "MFT":
            for (text,) in check.cases:
                expected.setdefault(text, set()).add(str(check.expect_label))
    conflicts = {t: labels for t, labels in expected.items() if len(labels) > 1}
    assert not conflicts


# Read off expectations/behaviour.yaml by hand: each MFT check's label and number of cases.
MFT_BY_HAND = {
    "mft_negative_quality": ("negative", 12),
    "mft_negative_service": ("negative", 10),
    "mft_negative_logistics": ("negative", 10),
    "mft_negative_templates": ("negative", 12),  # 4 items x 3 problems x 1 demand
    "mft_positive_praise": ("positive", 12),
    "mft_positive_service": ("positive", 10),
    "mft_neutral_inquiry": ("neutral", 12),
    "mft_neutral_templates": ("neutral", 12),  # 4 items x 3 questions
}


def test_mft_checks_are_read_as_written(shipped: list[Check]) -> None:
    mft = {c.name: (c.expect_label, len(c.cases)) for c in shipped if c.type == "MFT"}
    assert mft == MFT_BY_HAND
    cases = {c.name: c.cases for c in shipped}
    assert cases["mft_negative_quality"][0] == ("质量太差了，要求退款",)
    assert cases["mft_neutral_inquiry"][-1] == ("请问保修期是多久？",)
    # Templates expanded by hand: the last item with the last problem, the first with a question.
    assert ("买的保温杯跟描述的完全不一样，必须给我退款",) in cases["mft_negative_templates"]
    assert ("请问这款电饭煲能包邮吗？",) in cases["mft_neutral_templates"]


def test_mft_scores_follow_the_hand_labels(shipped: list[Check]) -> None:
    """A model right by the hand table except on three texts chosen here: the pass rates are
    worked out by hand (threshold 0.9: 10 of 12 fails, 11 of 12 passes)."""
    mft = [c for c in shipped if c.type == "MFT"]
    hand_label = {text: MFT_BY_HAND[c.name][0] for c in mft for (text,) in c.cases}
    wrong = {
        "质量太差了，要求退款": "positive",  # mft_negative_quality
        "耳机左边没声音，退货！": "neutral",  # mft_negative_quality
        "请问什么时候发货？": "negative",  # mft_neutral_inquiry
    }
    report = run_behaviour_checks(
        lambda texts: frame([wrong.get(t, hand_label[t]) for t in texts]), mft
    )

    by_name = {r.name: r for r in report.checks}
    quality, inquiry = by_name["mft_negative_quality"], by_name["mft_neutral_inquiry"]
    assert (quality.n_cases, quality.n_passed, quality.passed) == (12, 10, False)
    assert quality.pass_rate == pytest.approx(10 / 12)
    assert [(f["texts"], f["predicted"]) for f in quality.failures] == [
        (["质量太差了，要求退款"], ["positive"]),
        (["耳机左边没声音，退货！"], ["neutral"]),
    ]
    assert (inquiry.n_cases, inquiry.n_passed, inquiry.passed) == (12, 11, True)
    assert inquiry.failures[0]["texts"] == ["请问什么时候发货？"]
    others = [r for r in report.checks if r.name not in {quality.name, inquiry.name}]
    assert [(r.pass_rate, r.failures) for r in others] == [(1.0, [])] * 6
    assert report.failed_checks == ["mft_negative_quality"]
    assert report.pass_rate == pytest.approx(87 / 90)  # 90 MFT cases by hand, 3 wrong


def test_constant_model_passes_invariance_and_fails_the_rest(shipped: list[Check]) -> None:
    calls: list[list[str]] = []

    def always_neutral(texts: list[str]) -> pd.DataFrame:
        calls.append(texts)
        return frame(["neutral"] * len(texts), [[0.2, 0.6, 0.2]] * len(texts))

    report = run_behaviour_checks(always_neutral, shipped, max_failures=3)
    by_name = {r.name: r for r in report.checks}
    for check in shipped:
        result = by_name[check.name]
        if check.type == "INV" or check.expect_label == "neutral":
            assert result.pass_rate == 1.0, check.name
        elif check.type == "MFT" or (check.direction and "flip" in check.direction.relation):
            assert result.pass_rate == 0.0, check.name
            assert not result.passed
            assert len(result.failures) == min(3, result.n_cases)
            assert result.failures[0]["texts"] == list(check.cases[0])
        else:  # not_less / not_more: equal probabilities keep the relation
            assert result.pass_rate == 1.0, check.name
    assert not report.passed
    assert "mft_negative_quality" in report.failed_checks
    # One call, every distinct text once.
    assert len(calls) == 1
    assert not [t for t, n in Counter(calls[0]).items() if n > 1]
    assert set(calls[0]) == {t for c in shipped for case in c.cases for t in case}


# ------------------------------------------------------------------ runner on inline checks

INLINE = """
version: 1
checks:
  - name: mft_complaints
    type: MFT
    capability: vocabulary
    expect: negative
    threshold: 1.0
    cases: [质量太差了, 太失望了]
  - name: mft_praise
    type: MFT
    capability: vocabulary
    expect: positive
    threshold: 1.0
    cases: [很好用, 很满意]
  - name: inv_item
    type: INV
    capability: NER
    threshold: 1.0
    vary: item
    templates: ["{item}很好用", "{item}太差了"]
    slots: {item: [耳机, 杯子, 台灯]}
  - name: dir_negation
    type: DIR
    capability: negation
    expect: {flip_to: negative}
    threshold: 0.5
    pairs: [[很满意, 很不满意], [很喜欢, 不喜欢]]
"""


@pytest.fixture
def inline() -> list[Check]:
    return parse_checks(yaml.safe_load(INLINE), LABELS)


def test_model_that_handles_negation_passes(inline: list[Check]) -> None:
    report = run_behaviour_checks(rule_model(handles_negation=True), inline)
    assert report.passed, report.failed_checks
    assert report.to_dict()["n_cases"] == 2 + 2 + 4 + 2


def test_model_blind_to_negation_fails_only_the_negation_check(inline: list[Check]) -> None:
    report = run_behaviour_checks(rule_model(handles_negation=False), inline)
    assert report.failed_checks == ["dir_negation"]
    result = report.checks[-1]
    assert (result.n_passed, result.pass_rate) == (0, 0.0)
    assert result.failures[0]["texts"] == ["很满意", "很不满意"]
    assert result.failures[0]["predicted"] == ["positive", "positive"]
    assert report.pass_rate == pytest.approx(8 / 10)


def test_probability_relations_respect_tolerance() -> None:
    raw = {
        "version": 1,
        "checks": [
            {"name": "more_negative", "type": "DIR", "capability": "intensifier",
             "expect": {"not_less": "negative", "tolerance": 0.05}, "threshold": 1.0,
             "pairs": [["有点差", "非常差"]]},
        ],
    }  # fmt: skip
    check = parse_checks(raw, LABELS)

    def model(p_variant: float) -> Callable[[list[str]], pd.DataFrame]:
        p = {"有点差": 0.80, "非常差": p_variant}
        return lambda texts: frame(
            ["negative"] * len(texts), [[p[t], 1 - p[t], 0.0] for t in texts]
        )

    assert run_behaviour_checks(model(0.90), check).passed
    assert run_behaviour_checks(model(0.76), check).passed  # within the tolerance
    assert not run_behaviour_checks(model(0.70), check).passed


# ------------------------------------------------------------------ expansion and validation


def test_templates_expand_other_slots_and_pair_the_varied_one() -> None:
    raw: dict[str, Any] = {
        "version": 1,
        "checks": [
            {"name": "inv", "type": "INV", "capability": "robustness", "threshold": 1,
             "vary": "mark", "templates": ["{text}{mark}"],
             "slots": {"text": ["好", "差"], "mark": ["！", "！！！", "。"]}},
            {"name": "mft", "type": "MFT", "capability": "vocabulary", "threshold": 1,
             "expect": "neutral", "templates": ["请问{a}{b}"],
             "slots": {"a": ["甲", "乙"], "b": ["吗", "呢", "？"]}},
        ],
    }  # fmt: skip
    inv, mft = parse_checks(raw, LABELS)
    assert inv.cases == (
        ("好！", "好！！！"),
        ("好！", "好。"),
        ("差！", "差！！！"),
        ("差！", "差。"),
    )
    assert len(mft.cases) == 6
    assert ("请问乙呢",) in mft.cases


def base_check(**changes: Any) -> dict[str, Any]:
    check = {"name": "c", "type": "MFT", "capability": "x", "threshold": 0.9,
             "expect": "negative", "cases": ["差"]}  # fmt: skip
    check.update(changes)
    return {k: v for k, v in check.items() if v is not None}


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (base_check(expect="angry"), "'angry' is not in params.labels"),
        (base_check(threshold=1.5), "threshold"),
        (base_check(type="INV", expect="negative", cases=None, pairs=[["a", "b"]]), "INV"),
        (base_check(type="DIR", expect={"flip_to": "negative", "not_less": "positive"},
                    cases=None, pairs=[["a", "b"]]), "exactly one"),
        (base_check(type="DIR", expect="negative", cases=None, pairs=[["a", "b"]]), "DIR"),
        (base_check(cases=None, templates=["{x}差"], slots={"y": ["a"]}), "undefined slots"),
        (base_check(type="INV", expect=None, cases=None, templates=["{x}"],
                    slots={"x": ["a", "b"], "y": ["c", "d"]}, vary="y"), "do not use"),
        (base_check(cases=[]), "no cases"),
        (base_check(colour="red"), "colour"),
    ],
)  # fmt: skip
def test_invalid_checks_are_named(check: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_checks({"version": 1, "checks": [check]}, LABELS)
    assert "'c'" in str(info.value)


def test_duplicate_names_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        parse_checks({"version": 1, "checks": [base_check(), base_check()]}, LABELS)
    with pytest.raises(ValueError, match="version"):
        parse_checks({"checks": []}, LABELS)
    broken = tmp_path / "broken.yaml"
    broken.write_text("checks: [", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_checks(broken, LABELS)
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        load_checks(tmp_path / "missing.yaml", LABELS)


def test_predict_fn_with_wrong_row_count_is_refused(inline: list[Check]) -> None:
    with pytest.raises(ValueError, match="one row per text"):
        run_behaviour_checks(lambda texts: frame(["neutral"]), inline)
