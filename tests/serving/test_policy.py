"""The regulation policy: decisions worked out by hand from serving/policy.yaml's thresholds.

The thresholds these cases rely on (policy.yaml): min_confidence 0.55, enter_negative_streak 3,
enter_p_negative 0.7, rising_window 3, release_calm_turns 2, release_p_negative 0.4.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.policy import (
    DEFAULT_POLICY_PATH,
    Decision,
    Emotion,
    Policy,
    PolicyError,
    Strategy,
    Trajectory,
    Turn,
    decide,
    detect_topic,
    load_policy,
    trajectory,
)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


def emo(label: str, negative: float, neutral: float, positive: float) -> Emotion:
    probabilities = {"negative": negative, "neutral": neutral, "positive": positive}
    return Emotion(label=label, score=probabilities[label], probabilities=probabilities)


def turn(label: str, p_negative: float, strategy: Strategy, escalate: bool = False) -> Turn:
    return Turn(label=label, p_negative=p_negative, strategy=strategy, escalate=escalate)


ESCALATED_HISTORY = (
    turn("negative", 0.60, Strategy.APOLOGIZE_AND_SOLVE),
    turn("negative", 0.65, Strategy.COMPENSATE),
    turn("negative", 0.80, Strategy.ESCALATE_TO_HUMAN, escalate=True),
)


# --- decisions --------------------------------------------------------------------------------


def test_one_negative_turn_apologizes_with_the_topic_solution(policy: Policy) -> None:
    decision = decide(policy, emo("negative", 0.8, 0.15, 0.05), [], "快递三天了还没到")
    assert decision == Decision(
        strategy=Strategy.APOLOGIZE_AND_SOLVE,
        topic="logistics",
        solution="tracking_update",
        escalate=False,
        reasons=("label=negative",),
        label="negative",
    )


def test_three_negative_turns_in_a_row_escalate(policy: Policy) -> None:
    # p_negative 0.6, 0.65, 0.65: not rising, and the current 0.65 is under the 0.7 needed to
    # escalate right after a solution, so the streak alone triggers.
    history = [
        turn("negative", 0.60, Strategy.APOLOGIZE_AND_SOLVE),
        turn("negative", 0.65, Strategy.COMPENSATE),
    ]
    decision = decide(policy, emo("negative", 0.65, 0.25, 0.10), history, "你们到底怎么回事")
    assert decision.strategy is Strategy.ESCALATE_TO_HUMAN
    assert decision.escalate is True
    assert decision.reasons == ("negative_streak=3",)
    assert (decision.topic, decision.solution) == (None, None)


def test_two_negative_turns_do_not_escalate(policy: Policy) -> None:
    history = [turn("negative", 0.60, Strategy.ACKNOWLEDGE_AND_ANSWER)]
    decision = decide(policy, emo("negative", 0.65, 0.25, 0.10), history, "还是不行")
    assert decision.strategy is Strategy.APOLOGIZE_AND_SOLVE
    assert decision.escalate is False


def test_escalated_conversation_stays_escalated_after_one_calm_turn(policy: Policy) -> None:
    decision = decide(policy, emo("neutral", 0.2, 0.7, 0.1), ESCALATED_HISTORY, "好的")
    assert decision.strategy is Strategy.ESCALATE_TO_HUMAN
    assert decision.escalate is True
    assert decision.reasons == ("hysteresis_hold",)


def test_two_calm_turns_release_the_escalation(policy: Policy) -> None:
    history = [*ESCALATED_HISTORY, turn("neutral", 0.2, Strategy.ESCALATE_TO_HUMAN, True)]
    decision = decide(policy, emo("neutral", 0.3, 0.6, 0.1), history, "好的，发票怎么开")
    assert decision == Decision(
        strategy=Strategy.ACKNOWLEDGE_AND_ANSWER,
        topic="invoice",
        solution="invoice_issue",
        escalate=False,
        reasons=("escalation_released", "label=neutral"),
        label="neutral",
    )


def test_a_calm_turn_then_a_tense_one_keeps_the_escalation(policy: Policy) -> None:
    # 0.2 then 0.5: the current turn is not below 0.4, so no run of calm turns ends here.
    history = [*ESCALATED_HISTORY, turn("neutral", 0.2, Strategy.ESCALATE_TO_HUMAN, True)]
    decision = decide(policy, emo("neutral", 0.5, 0.45, 0.05), history, "嗯")
    assert decision.reasons == ("hysteresis_hold",)


def test_calm_turns_before_the_escalation_do_not_count(policy: Policy) -> None:
    history = [
        turn("neutral", 0.1, Strategy.ACKNOWLEDGE_AND_ANSWER),
        turn("negative", 0.9, Strategy.ESCALATE_TO_HUMAN, escalate=True),
    ]
    decision = decide(policy, emo("neutral", 0.1, 0.8, 0.1), history, "好")
    assert decision.reasons == ("hysteresis_hold",)


def test_clearly_negative_turn_right_after_the_compensation_escalates(policy: Policy) -> None:
    history = [turn("neutral", 0.3, Strategy.COMPENSATE)]
    decision = decide(policy, emo("negative", 0.8, 0.15, 0.05), history, "这根本没用")
    assert decision.strategy is Strategy.ESCALATE_TO_HUMAN
    assert decision.reasons == ("negative_after_solution",)


def test_second_complaint_is_compensated_with_a_coupon(policy: Policy) -> None:
    # Clearly negative (0.8) right after the first solution: the ladder's next step, not a human.
    history = [turn("negative", 0.75, Strategy.APOLOGIZE_AND_SOLVE)]
    decision = decide(policy, emo("negative", 0.8, 0.15, 0.05), history, "东西还是坏的")
    assert decision == Decision(
        strategy=Strategy.COMPENSATE,
        topic="quality",
        solution="coupon",
        escalate=False,
        reasons=("label=negative", "repeat_complaint"),
        label="negative",
    )


def test_rising_negativity_escalates(policy: Policy) -> None:
    history = [
        turn("neutral", 0.3, Strategy.ACKNOWLEDGE_AND_ANSWER),
        turn("neutral", 0.5, Strategy.ACKNOWLEDGE_AND_ANSWER),
    ]
    decision = decide(policy, emo("negative", 0.75, 0.2, 0.05), history, "到底什么时候发货")
    assert decision.strategy is Strategy.ESCALATE_TO_HUMAN
    assert decision.reasons == ("rising_negativity",)
    assert decision.topic == "logistics"


@pytest.mark.parametrize(
    ("p_first", "p_second", "p_current"),
    [
        (0.3, 0.5, 0.65),  # rising, but the current turn is under 0.7
        (0.3, 0.8, 0.75),  # high, but not rising
        (0.5, 0.5, 0.75),  # a plateau is not strictly increasing
    ],
)
def test_no_rising_negativity(
    policy: Policy, p_first: float, p_second: float, p_current: float
) -> None:
    history = [
        turn("neutral", p_first, Strategy.ACKNOWLEDGE_AND_ANSWER),
        turn("neutral", p_second, Strategy.ACKNOWLEDGE_AND_ANSWER),
    ]
    current = emo("negative", p_current, 1 - p_current - 0.05, 0.05)
    decision = decide(policy, current, history, "嗯")
    assert decision.strategy is Strategy.APOLOGIZE_AND_SOLVE
    assert decision.escalate is False


def test_low_confidence_positive_is_reassured_never_thanked(policy: Policy) -> None:
    decision = decide(policy, emo("positive", 0.3, 0.3, 0.4), [], "嗯嗯")
    assert decision == Decision(
        strategy=Strategy.REASSURE,
        topic=None,
        solution=None,
        escalate=False,
        reasons=("low_confidence",),
        label="positive",
    )


def test_low_confidence_keeps_the_topic_solution(policy: Policy) -> None:
    decision = decide(policy, emo("negative", 0.45, 0.35, 0.2), [], "快递到了吗")
    assert (decision.strategy, decision.topic, decision.solution) == (
        Strategy.REASSURE,
        "logistics",
        "tracking_update",
    )


def test_confidence_at_the_threshold_is_confident(policy: Policy) -> None:
    decision = decide(policy, emo("positive", 0.15, 0.3, 0.55), [], "谢谢，收到了")
    assert decision.strategy is Strategy.THANK
    assert decision.reasons == ("label=positive",)
    assert decision.solution is None


def test_neutral_question_is_answered_with_the_topic(policy: Policy) -> None:
    decision = decide(policy, emo("neutral", 0.1, 0.8, 0.1), [], "发票怎么开")
    assert (decision.strategy, decision.topic, decision.solution) == (
        Strategy.ACKNOWLEDGE_AND_ANSWER,
        "invoice",
        "invoice_issue",
    )


def test_a_whole_conversation_enters_holds_and_releases(policy: Policy) -> None:
    # (emotion, expected strategy, expected escalate), each decision fed back as history.
    script = [
        (emo("negative", 0.60, 0.30, 0.10), Strategy.APOLOGIZE_AND_SOLVE, False),
        (emo("negative", 0.65, 0.25, 0.10), Strategy.COMPENSATE, False),
        (emo("negative", 0.66, 0.24, 0.10), Strategy.ESCALATE_TO_HUMAN, True),  # streak 3
        (emo("neutral", 0.20, 0.70, 0.10), Strategy.ESCALATE_TO_HUMAN, True),  # one calm turn
        (emo("neutral", 0.30, 0.60, 0.10), Strategy.ACKNOWLEDGE_AND_ANSWER, False),  # two
        (emo("negative", 0.56, 0.34, 0.10), Strategy.APOLOGIZE_AND_SOLVE, False),
    ]
    history: list[Turn] = []
    for emotion, strategy, escalate in script:
        decision = decide(policy, emotion, history, "怎么回事")
        assert (decision.strategy, decision.escalate) == (strategy, escalate), len(history)
        history.append(
            Turn(emotion.label, emotion.p_negative, decision.strategy, decision.escalate)
        )


# --- topics -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("快递三天了还没到", "logistics"),
        ("我要退款", "refund_return"),
        ("发票怎么开", "invoice"),
        ("快递太慢了，我要退款", "refund_return"),  # refund_return is listed before logistics
        ("快递送到就坏了", "quality"),  # quality before logistics
        ("发票还没收到", "invoice"),  # invoice before logistics (没收到 is a logistics cue)
        ("付款三天了还不发货", "logistics"),  # payment is last
        ("怎么重复扣款了", "payment"),
        ("ems到哪了", "logistics"),  # Latin keywords ignore case
        ("物流有问题", "logistics"),  # a bare 有问题 is not a quality cue
        ("你好，在吗", None),
    ],
)
def test_detect_topic(policy: Policy, text: str, topic: str | None) -> None:
    assert detect_topic(policy, text) == topic


# --- trajectory -------------------------------------------------------------------------------


def test_trajectory_of_a_worsening_conversation() -> None:
    history = [
        turn("neutral", 0.2, Strategy.ACKNOWLEDGE_AND_ANSWER),
        turn("negative", 0.6, Strategy.APOLOGIZE_AND_SOLVE),
        turn("negative", 0.7, Strategy.COMPENSATE),
    ]
    assert trajectory(history, emo("negative", 0.9, 0.05, 0.05)) == Trajectory(
        negative_streak=3, trend="rising", solution_offered=True, escalated=False, complaint_count=3
    )


def test_trajectory_of_a_calming_escalated_conversation() -> None:
    history = [
        turn("negative", 0.8, Strategy.ESCALATE_TO_HUMAN, escalate=True),
        turn("neutral", 0.3, Strategy.ESCALATE_TO_HUMAN, escalate=True),
    ]
    assert trajectory(history, emo("positive", 0.1, 0.2, 0.7)) == Trajectory(
        negative_streak=0,
        trend="falling",
        solution_offered=False,
        escalated=True,
        complaint_count=1,
    )


def test_trajectory_streak_is_broken_by_a_non_negative_turn() -> None:
    history = [
        turn("negative", 0.8, Strategy.APOLOGIZE_AND_SOLVE),
        turn("neutral", 0.3, Strategy.ACKNOWLEDGE_AND_ANSWER),
        turn("negative", 0.6, Strategy.APOLOGIZE_AND_SOLVE),
    ]
    result = trajectory(history, emo("negative", 0.6, 0.3, 0.1), current_escalate=True)
    # Last three p_negative 0.3, 0.6, 0.6: not strictly monotone.
    assert result == Trajectory(
        negative_streak=2, trend="flat", solution_offered=True, escalated=True, complaint_count=3
    )


def test_trajectory_of_a_first_turn() -> None:
    assert trajectory([], emo("neutral", 0.2, 0.7, 0.1)) == Trajectory(
        negative_streak=0, trend="flat", solution_offered=False, escalated=False, complaint_count=0
    )


def test_emotion_must_carry_every_probability() -> None:
    with pytest.raises(ValueError, match="negative"):
        Emotion(label="neutral", score=0.7, probabilities={"neutral": 0.7, "positive": 0.3})
    with pytest.raises(ValueError, match="angry"):
        Emotion(label="angry", score=0.7, probabilities={"negative": 0.7})


# --- loading ----------------------------------------------------------------------------------


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        node = raw
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda raw: raw.pop(key) and None


@pytest.mark.parametrize(
    ("mutate", "fragments"),
    [
        (_set(("by_label", "negative"), "apologise"), ["by_label.negative", "'apologise'"]),
        (_set(("cautious_strategy",), "calm_down"), ["cautious_strategy", "'calm_down'"]),
        (_set(("escalation", "enter_p_negative"), 1.5), ["escalation.enter_p_negative", "1.5"]),
        (_set(("min_confidence",), -0.1), ["min_confidence", "-0.1"]),
        (
            _set(("guards", "denylist", 0, "pattern"), "全额(赔偿"),
            ["guards.denylist.0.pattern", "not a valid regular expression"],
        ),
        (_delete("escalation"), ["escalation", "Field required"]),
        (_set(("min_confidenc",), 0.5), ["min_confidenc", "Extra inputs"]),
        (_set(("cautious_strategy",), "thank"), ["cautious_strategy", "thank"]),
        (_set(("topics", 0, "solution"), "refund_now"), ["topics[0].solution", "refund_now"]),
        (
            _set(("escalation", "release_p_negative"), 0.8),
            ["escalation", "release_p_negative (0.8) must be below enter_p_negative (0.7)"],
        ),
        (
            lambda raw: raw["strategies"].pop("thank") and None,
            ["strategies.thank: missing"],
        ),
    ],
)
def test_invalid_policy_names_the_file_and_the_key(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], fragments: list[str]
) -> None:
    raw = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))
    mutate(raw)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_missing_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError, match="not found") as caught:
        load_policy(path)
    assert str(path) in str(caught.value)


def test_broken_yaml_syntax(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("min_confidence: [0.55\ncautious_strategy: reassure\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="invalid YAML") as caught:
        load_policy(path)
    assert str(path) in str(caught.value)


def test_policy_file_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("- reassure\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="must hold a mapping"):
        load_policy(path)


def test_shipped_policy_loads_every_strategy() -> None:
    policy = load_policy(DEFAULT_POLICY_PATH)
    assert set(policy.strategies) == set(Strategy)
    assert [topic.name for topic in policy.topics] == [
        "refund_return",
        "quality",
        "invoice",
        "logistics",
        "payment",
    ]
    assert policy.strategies[Strategy.COMPENSATE].solution == "coupon"


def test_a_message_without_a_topic_continues_the_conversations_topic(policy: Policy) -> None:
    history = [
        Turn("negative", 0.8, Strategy.APOLOGIZE_AND_SOLVE, False, topic="quality"),
        Turn("neutral", 0.2, Strategy.ACKNOWLEDGE_AND_ANSWER, False, topic=None),
    ]
    carried = decide(policy, emo("negative", 0.6, 0.3, 0.1), history, "还是不行！")
    assert (carried.topic, carried.solution) == ("quality", "return_label")
    # A topic of its own wins over the history's.
    own = decide(policy, emo("negative", 0.6, 0.3, 0.1), history, "我要退款")
    assert (own.topic, own.solution) == ("refund_return", "refund_timeline")
    # Nothing in the text or the history: no topic, no solution.
    none = decide(policy, emo("negative", 0.6, 0.3, 0.1), [], "还是不行！")
    assert (none.topic, none.solution) == (None, None)
