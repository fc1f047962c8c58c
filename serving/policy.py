"""The regulation policy: from a customer's emotion and conversation to a reply strategy.

The thresholds, topics and guards are data (``serving/policy.yaml``), validated when the service
starts; this module holds the logic that reads them. ``decide`` is pure: the same emotion,
history and text always give the same ``Decision``, so it is tested without a model or a store.

Order of the rules in ``decide`` (the first that applies wins):

1. hysteresis: the previous turn was escalated and the calm turns needed to release it have not
   been seen yet: stay escalated;
2. entering escalation: a negative streak, a clearly negative turn right after a solution, or
   rising negativity;
3. low confidence: the cautious strategy (never ``thank``);
4. by label, with a second complaint in a row answered by the repeat-complaint strategy.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

LABELS = ("negative", "neutral", "positive")
DEFAULT_POLICY_PATH = Path(__file__).resolve().parent / "policy.yaml"
# In a strategy's ``solution``: take the detected topic's solution.
TOPIC_SOLUTION = "topic"
_T = TypeVar("_T")


class Strategy(StrEnum):
    ACKNOWLEDGE_AND_ANSWER = "acknowledge_and_answer"
    REASSURE = "reassure"
    APOLOGIZE_AND_SOLVE = "apologize_and_solve"
    COMPENSATE = "compensate"
    THANK = "thank"
    ESCALATE_TO_HUMAN = "escalate_to_human"


STRATEGIES = tuple(Strategy)
# Strategies whose reply offers the customer a concrete fix: a negative turn right after one of
# them means the fix was rejected.
SOLUTION_STRATEGIES = frozenset({Strategy.APOLOGIZE_AND_SOLVE, Strategy.COMPENSATE})


class PolicyError(ValueError):
    """The policy file is missing, is not YAML, or does not validate; the message says where."""


# --- conversation state -----------------------------------------------------------------------


@dataclass(frozen=True)
class Emotion:
    """The emotion model's answer for the current message."""

    label: str
    score: float
    probabilities: Mapping[str, float]

    def __post_init__(self) -> None:
        # A missing class would silently read as p_negative 0 and disable escalation.
        if self.label not in LABELS:
            raise ValueError(f"unknown emotion label {self.label!r}; expected one of {LABELS}")
        missing = [label for label in LABELS if label not in self.probabilities]
        if missing:
            raise ValueError(f"probabilities lack {missing}")

    @property
    def p_negative(self) -> float:
        return self.probabilities["negative"]


@dataclass(frozen=True)
class Turn:
    """An earlier customer turn of the conversation (history is given oldest first)."""

    label: str
    p_negative: float
    strategy: str
    escalate: bool
    topic: str | None = None


@dataclass(frozen=True)
class Decision:
    """What to do with the current message.

    ``reasons`` are short machine-readable codes (``negative_streak=3``, ``low_confidence``,
    ``hysteresis_hold``, ...) for logs and the conversation view. ``label`` is the emotion label
    the decision was made for (``decide`` fills it; the LLM prompt states it).
    """

    strategy: Strategy
    topic: str | None
    solution: str | None
    escalate: bool
    reasons: tuple[str, ...]
    label: str | None = None


@dataclass(frozen=True)
class Trajectory:
    """A summary of the conversation: the history plus the current turn.

    - ``negative_streak``: consecutive negative turns ending with the current one (0 when the
      current turn is not negative);
    - ``trend``: ``rising``/``falling`` when p_negative strictly increases/decreases over the
      last turns (up to ``window``, at least two), else ``flat``;
    - ``solution_offered``: an earlier turn was answered with a solution strategy;
    - ``escalated``: some turn, the current one included, was handed to a human;
    - ``complaint_count``: negative turns so far, the current one included.
    """

    negative_streak: int
    trend: str
    solution_offered: bool
    escalated: bool
    complaint_count: int


# --- policy schema ----------------------------------------------------------------------------

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Name = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
Phrase = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Label = Literal["negative", "neutral", "positive"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EscalationPolicy(_Strict):
    enter_negative_streak: int = Field(ge=1)
    enter_p_negative: Probability
    escalate_after: tuple[Strategy, ...] = Field(min_length=1)
    rising_window: int = Field(ge=2)
    release_calm_turns: int = Field(ge=1)
    release_p_negative: Probability

    @model_validator(mode="after")
    def _hysteresis_band(self) -> EscalationPolicy:
        # Releasing at or above the entry threshold would let a conversation flap every turn.
        if self.release_p_negative >= self.enter_p_negative:
            raise ValueError(
                f"release_p_negative ({self.release_p_negative}) must be below "
                f"enter_p_negative ({self.enter_p_negative})"
            )
        return self


class TopicPolicy(_Strict):
    name: Name
    solution: Name
    keywords: list[Phrase] = Field(min_length=1)


class StrategyPolicy(_Strict):
    solution: Name | None
    required_actions: list[Phrase] = Field(min_length=1)
    description: Phrase


class DenyRule(_Strict):
    category: Name
    pattern: str = Field(min_length=1)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression: {exc}") from None
        return value


class Guards(_Strict):
    max_reply_chars: int = Field(gt=0)
    denylist: list[DenyRule]


class Policy(_Strict):
    min_confidence: Probability
    cautious_strategy: Strategy
    by_label: dict[Label, Strategy]
    repeat_complaint_strategy: Strategy
    escalation: EscalationPolicy
    solutions: dict[Name, Phrase]
    topics: list[TopicPolicy]
    strategies: dict[Strategy, StrategyPolicy]
    guards: Guards

    @field_validator("cautious_strategy")
    @classmethod
    def _cautious_is_safe(cls, value: Strategy) -> Strategy:
        # Thanking a customer we cannot read is the one reply that can insult an angry one.
        if value is Strategy.THANK:
            raise ValueError("thank cannot be the cautious strategy")
        return value

    @model_validator(mode="after")
    def _references_resolve(self) -> Policy:
        for label in LABELS:
            if label not in self.by_label:
                raise ValueError(f"by_label.{label}: missing (every label needs a strategy)")
        for strategy in Strategy:
            if strategy not in self.strategies:
                raise ValueError(f"strategies.{strategy}: missing (every strategy needs an entry)")
        names = [topic.name for topic in self.topics]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"topics: the name {name!r} appears more than once")
        for i, topic in enumerate(self.topics):
            self._known_solution(f"topics[{i}].solution", topic.solution)
        for strategy, config in self.strategies.items():
            if config.solution not in (None, TOPIC_SOLUTION):
                self._known_solution(f"strategies.{strategy}.solution", config.solution)
        return self

    def _known_solution(self, key: str, name: str) -> None:
        if name not in self.solutions:
            raise ValueError(f"{key}: unknown solution {name!r} (known: {sorted(self.solutions)})")

    def strategy_for_label(self, label: str) -> Strategy:
        for key, strategy in self.by_label.items():
            if key == label:
                return strategy
        raise KeyError(label)  # unreachable: every label is checked at load

    def required_actions(self, strategy: Strategy) -> tuple[str, ...]:
        return tuple(self.strategies[strategy].required_actions)

    def topic_solution(self, topic: str) -> str | None:
        return next((t.solution for t in self.topics if t.name == topic), None)


# --- loading ----------------------------------------------------------------------------------


def load_policy(path: Path | None = None) -> Policy:
    """The validated policy in ``path`` (default: ``policy.yaml`` beside this module)."""
    path = DEFAULT_POLICY_PATH if path is None else path
    raw = read_yaml_mapping(path, PolicyError, what="policy")
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(f"{path}: invalid policy: {describe_errors(exc)}") from None


def read_yaml_mapping(path: Path, error: type[ValueError], *, what: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file; ``error`` names the file for every failure."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} file: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: the {what} file must hold a mapping, got {type(raw).__name__}")
    return raw


def describe_errors(exc: ValidationError) -> str:
    """Pydantic errors as ``key.path: message (got value)``, joined by ``; ``."""
    parts = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        value = error["input"]
        # Scalars only: a whole section echoed back would bury the message.
        scalar = isinstance(value, str | int | float | bool) and error["type"] != "missing"
        shown = f" (got {value!r})" if scalar else ""
        parts.append(f"{key}: {message}{shown}" if key else message)
    return "; ".join(parts)


# --- decisions --------------------------------------------------------------------------------


def detect_topic(policy: Policy, text: str) -> str | None:
    """The first topic (in policy order) one of whose keywords occurs in ``text``."""
    folded = text.casefold()
    for topic in policy.topics:
        if any(keyword.casefold() in folded for keyword in topic.keywords):
            return topic.name
    return None


def trajectory(
    history: Sequence[Turn], current: Emotion, *, current_escalate: bool = False, window: int = 3
) -> Trajectory:
    """Summary of ``history`` (earlier customer turns, oldest first) plus the current turn."""
    labels = [turn.label for turn in history] + [current.label]
    p_negative = [turn.p_negative for turn in history] + [current.p_negative]
    return Trajectory(
        negative_streak=_trailing(labels, lambda label: label == "negative"),
        trend=_trend(p_negative[-window:]),
        solution_offered=any(turn.strategy in SOLUTION_STRATEGIES for turn in history),
        escalated=current_escalate or any(turn.escalate for turn in history),
        complaint_count=labels.count("negative"),
    )


def decide(policy: Policy, emotion: Emotion, history: Sequence[Turn], text: str) -> Decision:
    """The strategy for the current message (see the module docstring for the rule order)."""
    # "还是没到！" names no topic of its own: it continues the conversation's latest one.
    topic = detect_topic(policy, text) or next(
        (t.topic for t in reversed(history) if t.topic), None
    )
    escalation = policy.escalation
    previous = history[-1] if history else None
    released = False

    if previous is not None and previous.escalate:
        p_negative = [turn.p_negative for turn in history] + [emotion.p_negative]
        calm = _trailing(p_negative, lambda p: p < escalation.release_p_negative)
        if calm < escalation.release_calm_turns:
            return _decision(
                policy, Strategy.ESCALATE_TO_HUMAN, topic, emotion, ("hysteresis_hold",)
            )
        # The customer has calmed down: back to normal answers, and no re-entry on this calm turn.
        released = True

    if not released:
        triggers = _escalation_triggers(policy, emotion, history)
        if triggers:
            return _decision(policy, Strategy.ESCALATE_TO_HUMAN, topic, emotion, triggers)

    reasons: tuple[str, ...] = ("escalation_released",) if released else ()
    if emotion.score < policy.min_confidence:
        reasons += ("low_confidence",)
        return _decision(policy, policy.cautious_strategy, topic, emotion, reasons)

    strategy = policy.strategy_for_label(emotion.label)
    reasons += (f"label={emotion.label}",)
    if (
        emotion.label == "negative"
        and previous is not None
        and previous.strategy == Strategy.APOLOGIZE_AND_SOLVE
    ):
        strategy = policy.repeat_complaint_strategy
        reasons += ("repeat_complaint",)
    return _decision(policy, strategy, topic, emotion, reasons)


def _escalation_triggers(
    policy: Policy, emotion: Emotion, history: Sequence[Turn]
) -> tuple[str, ...]:
    """Reason codes of every entry condition the current turn meets (empty: do not escalate)."""
    rules = policy.escalation
    reasons: list[str] = []
    streak = trajectory(history, emotion).negative_streak
    if streak >= rules.enter_negative_streak:
        reasons.append(f"negative_streak={streak}")
    clearly_negative = emotion.label == "negative" and emotion.p_negative >= rules.enter_p_negative
    if clearly_negative and history and history[-1].strategy in rules.escalate_after:
        reasons.append("negative_after_solution")
    recent = ([turn.p_negative for turn in history] + [emotion.p_negative])[-rules.rising_window :]
    if (
        len(recent) == rules.rising_window
        and _trend(recent) == "rising"
        and emotion.p_negative >= rules.enter_p_negative
    ):
        reasons.append("rising_negativity")
    return tuple(reasons)


def _decision(
    policy: Policy,
    strategy: Strategy,
    topic: str | None,
    emotion: Emotion,
    reasons: tuple[str, ...],
) -> Decision:
    configured = policy.strategies[strategy].solution
    if configured == TOPIC_SOLUTION:
        solution = policy.topic_solution(topic) if topic is not None else None
    else:
        solution = configured
    return Decision(
        strategy=strategy,
        topic=topic,
        solution=solution,
        escalate=strategy is Strategy.ESCALATE_TO_HUMAN,
        reasons=reasons,
        label=emotion.label,
    )


def _trailing(values: Sequence[_T], keep: Callable[[_T], bool]) -> int:
    """How many of the last ``values`` in a row satisfy ``keep``."""
    count = 0
    for value in reversed(values):
        if not keep(value):
            break
        count += 1
    return count


def _trend(values: Sequence[float]) -> str:
    if len(values) < 2:
        return "flat"
    pairs = list(itertools.pairwise(values))
    if all(later > earlier for earlier, later in pairs):
        return "rising"
    if all(later < earlier for earlier, later in pairs):
        return "falling"
    return "flat"
