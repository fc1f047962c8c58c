"""Personalised Chinese replies from templates (``serving/templates.yaml``).

A reply is chosen per strategy and topic (falling back to the strategy's ``default`` list), among
the variants whose required placeholders are known, by a stable hash of a variation key (the
message id: a retried request gets the same reply). Optional fragments ``[...]`` are dropped when
one of their placeholders is unknown, so a reply never says "None" or "您的订单" with nothing
after it. The template syntax is documented in the YAML header.

Context values that carry personal data (a phone number typed into the product field) are left
out rather than echoed, and the final text goes through ``pipelines.data.pii.redact`` as well.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.data import pii
from serving.policy import Decision, Policy, Strategy, read_yaml_mapping

DEFAULT_TEMPLATES_PATH = Path(__file__).resolve().parent / "templates.yaml"
DEFAULT_TOPIC = "default"
PLACEHOLDERS = ("product", "order_id", "order_status", "waited", "complaint_nth")
# Product titles in e-commerce are long keyword strings; a reply names the product, not its title.
MAX_PRODUCT_CHARS = 24
# Longer "order ids" are not order ids (free text pasted into the field); never echo them.
MAX_ORDER_ID_CHARS = 32
# Status codes the chat app sends (see serving/schemas.py MessageContext), in reply wording.
ORDER_STATUS_TEXT = {
    "created": "待付款",
    "pending": "待付款",
    "paid": "已付款，等待发货",
    "shipped": "已发货",
    "in_transit": "运输中",
    "out_for_delivery": "正在派送",
    "delivered": "已签收",
    "returned": "已退货",
    "refunded": "已退款",
    "cancelled": "已取消",
    "canceled": "已取消",
}
_CHINESE_DIGITS = "零一二三四五六七八九十"
_FRAGMENT = re.compile(r"(\[[^\[\]]*\])")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_CJK = re.compile(r"[\u4e00-\u9fff]")


@functools.lru_cache(maxsize=4096)
def redact(text: str) -> str:
    """``pipelines.data.pii.redact``, remembered: a pure function of the text, and the same
    rendered replies and context values recur across messages (it costs about 0.1 ms a call)."""
    return pii.redact(text)


class TemplateError(ValueError):
    """The templates file is missing or invalid; the message names the file and the template."""


@dataclass(frozen=True)
class ReplyContext:
    """What is known about the customer's order and conversation; every field optional."""

    product: str | None = None
    order_id: str | None = None
    order_status: str | None = None
    waited_days: int | None = None
    complaint_count: int = 0
    turn: int = 1


@dataclass(frozen=True)
class Reply:
    text: str
    source: str  # "template" or "llm"


@dataclass(frozen=True)
class _Segment:
    text: str
    fields: frozenset[str]
    optional: bool


@dataclass(frozen=True)
class _Template:
    source: str
    segments: tuple[_Segment, ...]

    @property
    def required(self) -> frozenset[str]:
        return frozenset().union(*(s.fields for s in self.segments if not s.optional))


class TemplateWriter:
    """Renders the reply for a decision from the templates file (validated on construction)."""

    def __init__(self, templates_path: Path | None = None) -> None:
        self.path = DEFAULT_TEMPLATES_PATH if templates_path is None else templates_path
        self._templates = _load(self.path)

    def write(self, decision: Decision, context: ReplyContext, *, variation_key: str) -> Reply:
        values = context_values(context)
        topic, variants = self._variants(decision.strategy, decision.topic)
        eligible = [t for t in variants if t.required <= values.keys()]
        # Never empty: every list has a variant without required placeholders (checked at load).
        index = _stable_index(f"{decision.strategy}/{topic}/{variation_key}", len(eligible))
        return Reply(text=redact(_render(eligible[index], values)), source="template")

    def variants(self, strategy: Strategy, topic: str | None) -> tuple[str, ...]:
        """The raw variants ``write`` chooses from for ``strategy`` and ``topic``."""
        return tuple(template.source for template in self._variants(strategy, topic)[1])

    def check_policy(self, policy: Policy) -> None:
        """Raise ``TemplateError`` where the templates disagree with ``policy``.

        For start-up: every topic key must be a policy topic, and every variant must contain one
        of its strategy's required actions and match no denylist pattern, since a template is
        the reply the service falls back to when an LLM reply fails those same guards.
        """
        topics = {topic.name for topic in policy.topics}
        problems: list[str] = []
        for strategy, by_topic in self._templates.items():
            actions = policy.required_actions(strategy)
            for topic, variants in by_topic.items():
                if topic != DEFAULT_TOPIC and topic not in topics:
                    problems.append(f"{strategy}.{topic}: not a topic of the policy")
                for i, template in enumerate(variants):
                    where = f"{strategy}.{topic}[{i}]"
                    if not any(action in template.source for action in actions):
                        problems.append(f"{where}: contains none of {list(actions)}")
                    for rule in policy.guards.denylist:
                        if re.search(rule.pattern, template.source, re.IGNORECASE):
                            problems.append(f"{where}: matches the {rule.category} denylist")
        if problems:
            raise TemplateError(
                f"{self.path}: templates disagree with the policy: " + "; ".join(problems)
            )

    def _variants(self, strategy: Strategy, topic: str | None) -> tuple[str, tuple[_Template, ...]]:
        by_topic = self._templates[strategy]
        if topic is not None and topic in by_topic:
            return topic, by_topic[topic]
        return DEFAULT_TOPIC, by_topic[DEFAULT_TOPIC]


# --- values -----------------------------------------------------------------------------------


def context_values(context: ReplyContext) -> dict[str, str]:
    """Placeholder values known from ``context``; unknown or unsafe ones are absent."""
    values: dict[str, str] = {}
    product = _clean(context.product)
    if product and not _has_pii(product):
        values["product"] = _shorten(product, MAX_PRODUCT_CHARS)
    order_id = _clean(context.order_id)
    # Checked where templates put it, after 订单: ID-shaped order numbers are kept there.
    if order_id and len(order_id) <= MAX_ORDER_ID_CHARS and not _has_pii(f"订单{order_id}"):
        values["order_id"] = order_id
    status = order_status_text(context.order_status)
    if status is not None:
        values["order_status"] = status
    # "让您等了0天" reads as sarcasm; under a day says nothing worth saying.
    if context.waited_days is not None and context.waited_days >= 1:
        values["waited"] = f"{context.waited_days}天"
    if context.complaint_count >= 2:
        values["complaint_nth"] = complaint_nth(context.complaint_count)
    return values


def order_status_text(status: str | None) -> str | None:
    """The status in reply wording: known codes translated, Chinese kept, anything else dropped."""
    cleaned = _clean(status)
    if not cleaned:
        return None
    if cleaned.lower() in ORDER_STATUS_TEXT:
        return ORDER_STATUS_TEXT[cleaned.lower()]
    # An unknown English code ("partially_shipped") would read as jargon in a Chinese reply.
    if _CJK.search(cleaned) and not _has_pii(cleaned):
        return _shorten(cleaned, 12)
    return None


def complaint_nth(count: int) -> str:
    """第二次 ... 第十次 in Chinese numerals, 第11次 beyond (as people write it)."""
    if count < 1:
        raise ValueError(f"a complaint count is at least 1, got {count}")
    if count <= 10:
        return f"第{_CHINESE_DIGITS[count]}次"
    return f"第{count}次"


def render_template(template: str, values: Mapping[str, str]) -> str:
    """``template`` with ``values`` filled in; raises ``TemplateError`` on bad syntax and
    ``KeyError`` when a required placeholder has no value."""
    return _render(_parse(template, where="template"), values)


def _clean(value: str | None) -> str:
    # Newlines or runs of spaces from the chat app would break the reply's layout.
    return " ".join(value.split()) if value else ""


def _shorten(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _has_pii(value: str) -> bool:
    return redact(value) != value


def _stable_index(key: str, size: int) -> int:
    # hashlib, not hash(): Python salts str hashes per process, and a retry may hit another worker.
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % size


# --- parsing and rendering --------------------------------------------------------------------


def _render(template: _Template, values: Mapping[str, str]) -> str:
    pieces = []
    for segment in template.segments:
        if segment.optional and not segment.fields <= values.keys():
            continue
        # One pass: a value that itself contains "{order_id}" is not expanded again.
        pieces.append(_PLACEHOLDER.sub(lambda m: values[m.group(1)], segment.text))
    return "".join(pieces)


def _parse(source: str, *, where: str) -> _Template:
    segments = []
    for part in _FRAGMENT.split(source):
        if not part:
            continue
        optional = part.startswith("[")
        text = part[1:-1] if optional else part
        if "[" in text or "]" in text:
            raise TemplateError(f"{where}: unbalanced or nested [ ] in {source!r}")
        fields = _PLACEHOLDER.findall(text)
        if "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
            raise TemplateError(f"{where}: unbalanced {{ }} in {source!r}")
        unknown = [name for name in fields if name not in PLACEHOLDERS]
        if unknown:
            raise TemplateError(
                f"{where}: unknown placeholder {{{unknown[0]}}} in {source!r} "
                f"(known: {', '.join(PLACEHOLDERS)})"
            )
        if optional and not fields:
            raise TemplateError(f"{where}: the fragment [{text}] has no placeholder")
        segments.append(_Segment(text=text, fields=frozenset(fields), optional=optional))
    return _Template(source=source, segments=tuple(segments))


def _load(path: Path) -> dict[Strategy, dict[str, tuple[_Template, ...]]]:
    raw = read_yaml_mapping(path, TemplateError, what="templates")
    extra = sorted(set(raw) - {"templates"})
    if extra:
        raise TemplateError(f"{path}: unknown top-level key {extra[0]!r} (expected 'templates')")
    sections = raw.get("templates")
    if not isinstance(sections, dict):
        raise TemplateError(f"{path}: 'templates' must be a mapping of strategy to topics")
    known = {str(s) for s in Strategy}
    for name in sections:
        if name not in known:
            raise TemplateError(
                f"{path}: templates.{name}: unknown strategy (known: {', '.join(sorted(known))})"
            )
    return {
        strategy: _load_strategy(path, strategy, sections.get(str(strategy)))
        for strategy in Strategy
    }


def _load_strategy(
    path: Path, strategy: Strategy, section: Any
) -> dict[str, tuple[_Template, ...]]:
    where = f"{path}: templates.{strategy}"
    if not isinstance(section, dict) or DEFAULT_TOPIC not in section:
        raise TemplateError(f"{where}: missing (every strategy needs a '{DEFAULT_TOPIC}' list)")
    by_topic: dict[str, tuple[_Template, ...]] = {}
    for topic, variants in section.items():
        here = f"{where}.{topic}"
        if not isinstance(topic, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", topic):
            raise TemplateError(f"{here}: a topic key is a lower-case name")
        if not isinstance(variants, list) or not variants:
            raise TemplateError(f"{here}: must be a non-empty list of templates")
        parsed = []
        for i, source in enumerate(variants):
            if not isinstance(source, str) or not source.strip():
                raise TemplateError(f"{here}[{i}]: must be a non-empty string")
            parsed.append(_parse(source.strip(), where=f"{here}[{i}]"))
        if all(template.required for template in parsed):
            raise TemplateError(
                f"{here}: every variant needs a placeholder outside [ ]; at least one must "
                "render with nothing known"
            )
        by_topic[topic] = tuple(parsed)
    return by_topic
