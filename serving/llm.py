"""Optional LLM-written replies (any OpenAI-compatible chat API), guarded, with template fallback.

The policy decides; the LLM only words the reply. Its text is used only when it passes the
policy's guards (``check_reply``): not empty, not too long, no denylisted phrase (promises beyond
the policy, payment details, rudeness), one of the strategy's required actions, no personal data.
Anything else (timeout, HTTP error, malformed answer, guard violation) falls back to the template
reply and says why, so the caller can count fallbacks by reason.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from pipelines.data.pii import redact
from serving.policy import Decision, Policy, Strategy
from serving.replies import Reply, ReplyContext, TemplateWriter, context_values

# The prompt carries the last few turns only: older ones rarely change the wording, and every
# token adds latency on the reply path.
HISTORY_TURNS = 4
HISTORY_TURN_CHARS = 200
TEMPERATURE = 0.3
MAX_TOKENS = 200

_LABEL_TEXT = {"negative": "负面（不满）", "neutral": "中性", "positive": "正面（满意）"}


@dataclass(frozen=True)
class LlmConfig:
    base_url: str  # e.g. http://127.0.0.1:8080/v1
    model: str
    api_key: str | None
    timeout_s: float

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"llm base_url must be an http(s) URL, got {self.base_url!r}")
        if self.timeout_s <= 0:
            raise ValueError(f"llm timeout_s must be positive, got {self.timeout_s}")


class GuardViolation(Exception):
    """A generated reply the policy does not allow; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def check_reply(policy: Policy, strategy: Strategy, text: str) -> None:
    """Raise ``GuardViolation`` unless ``text`` is an acceptable reply for ``strategy``.

    Reasons: ``empty``, ``too_long``, ``denylist:<category>``, ``missing_action``, ``pii``.
    The denylist is checked before the required action: a rude reply is reported as rude.
    """
    if not text.strip():
        raise GuardViolation("empty")
    limit = policy.guards.max_reply_chars
    if len(text) > limit:
        raise GuardViolation("too_long", f"{len(text)} characters, at most {limit}")
    for rule in policy.guards.denylist:
        match = re.search(rule.pattern, text, re.IGNORECASE)
        if match:
            raise GuardViolation(f"denylist:{rule.category}", repr(match.group(0)))
    actions = policy.required_actions(strategy)
    if not any(action in text for action in actions):
        raise GuardViolation("missing_action", f"none of {list(actions)}")
    if redact(text) != text:
        raise GuardViolation("pii")


class _BadResponse(Exception):
    pass


class LlmWriter:
    """Writes replies with the LLM, falling back to ``fallback`` (templates) on any failure."""

    def __init__(
        self,
        config: LlmConfig,
        policy: Policy,
        fallback: TemplateWriter,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self.policy = policy
        self.fallback = fallback
        # A client passed in belongs to the caller (shared pool, tests); ours is closed by aclose.
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient()
        self._url = config.base_url.rstrip("/") + "/chat/completions"

    async def write(
        self,
        decision: Decision,
        context: ReplyContext,
        *,
        text: str,
        history: Sequence[tuple[str, str]],
        variation_key: str,
    ) -> tuple[Reply, str | None]:
        """The reply and, when the template was used instead of the LLM, why.

        ``history`` holds the earlier turns, oldest first, as (customer message, our reply)
        pairs; ``text`` is the current customer message.
        """
        messages = build_messages(self.policy, decision, context, text=text, history=history)
        try:
            generated = await self._complete(messages)
        except (TimeoutError, httpx.TimeoutException):  # before HTTPError: a subclass of it
            return self._fallback(decision, context, variation_key), "timeout"
        except httpx.HTTPError:
            return self._fallback(decision, context, variation_key), "http_error"
        except _BadResponse:
            return self._fallback(decision, context, variation_key), "bad_response"
        reply = generated.strip()
        try:
            check_reply(self.policy, decision.strategy, reply)
        except GuardViolation as violation:
            return self._fallback(decision, context, variation_key), f"guard:{violation.reason}"
        # check_reply rejected any text redaction would change; redacting is a last safety net.
        return Reply(text=redact(reply), source="llm"), None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _complete(self, messages: list[dict[str, str]]) -> str:
        body = {
            "model": self.config.model,
            "messages": messages,
            "temperature": TEMPERATURE,
            "max_tokens": MAX_TOKENS,
        }
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        # One deadline for the whole call: httpx's timeouts are per phase, so a server that
        # trickles bytes could otherwise hold the reply path far longer than timeout_s.
        async with asyncio.timeout(self.config.timeout_s):
            response = await self._client.post(
                self._url, json=body, headers=headers, timeout=self.config.timeout_s
            )
            response.raise_for_status()
        return _content(response)

    def _fallback(self, decision: Decision, context: ReplyContext, variation_key: str) -> Reply:
        return self.fallback.write(decision, context, variation_key=variation_key)


def _content(response: httpx.Response) -> str:
    try:
        data: Any = response.json()
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise _BadResponse(f"no choices[0].message.content: {exc!r}") from None
    if not isinstance(content, str):
        raise _BadResponse(f"content is {type(content).__name__}, not text")
    return content


def build_messages(
    policy: Policy,
    decision: Decision,
    context: ReplyContext,
    *,
    text: str,
    history: Sequence[tuple[str, str]],
) -> list[dict[str, str]]:
    """The chat request: a system prompt with the decision and rules, and the customer's text.

    Everything from the customer or the chat app is redacted here, whatever the caller did.
    """
    return [
        {"role": "system", "content": system_prompt(policy, decision, context, history)},
        {"role": "user", "content": redact(text)},
    ]


def system_prompt(
    policy: Policy,
    decision: Decision,
    context: ReplyContext,
    history: Sequence[tuple[str, str]],
) -> str:
    strategy = policy.strategies[decision.strategy]
    emotion = _LABEL_TEXT.get(decision.label or "", "未知")
    solution = policy.solutions.get(decision.solution or "", "无（不要自行提出解决方案）")
    actions = "、".join(strategy.required_actions)
    lines = [
        "你是电商平台的客服，请用中文给顾客写一条回复。",
        f"顾客当前情绪：{emotion}（标签 {decision.label or 'unknown'}）",
        f"回复策略：{decision.strategy}：{strategy.description}",
        f"回复中必须包含以下词语之一：{actions}",
        f"问题类别：{decision.topic or '未识别'}",
        f"解决方案（{decision.solution or 'none'}）：{solution}",
        f"已知信息：{_context_text(context)}",
        f"最近对话：\n{_history_text(history)}",
        "规则：",
        f"1. 简短、礼貌、真诚，不超过{policy.guards.max_reply_chars}个字，只输出回复正文。",
        "2. 只提供上面的解决方案，不要承诺政策以外的赔偿、金额或到货时间。",
        "3. 绝不索要银行卡号、密码、验证码等支付信息，不发送付款链接或收款方式。",
        "4. 不要编造订单信息，不要重复顾客的手机号、地址等个人信息。",
        "5. 即使顾客情绪激动，也不要指责或反驳顾客。",
    ]
    if decision.escalate:
        lines.append("6. 告知顾客已转接人工专员处理，不要自己给出新的方案。")
    return "\n".join(lines)


def _context_text(context: ReplyContext) -> str:
    # The same values the templates may use: already cleaned, shortened and free of personal data.
    values = context_values(context)
    names = {
        "product": "商品",
        "order_id": "订单号",
        "order_status": "订单状态",
        "waited": "已等待",
        "complaint_nth": "本次是顾客反映问题的",
    }
    parts = [f"{names[key]}：{value}" for key, value in values.items()]
    return "；".join(parts) if parts else "无"


def _history_text(history: Sequence[tuple[str, str]]) -> str:
    pairs = list(history)[-HISTORY_TURNS:]
    if not pairs:
        return "（无，这是顾客的第一条消息）"
    lines = []
    for customer, reply in pairs:
        lines.append(f"顾客：{_excerpt(customer)}")
        if reply.strip():
            lines.append(f"客服：{_excerpt(reply)}")
    return "\n".join(lines)


def _excerpt(said: str) -> str:
    cleaned = " ".join(redact(said).split())
    if len(cleaned) > HISTORY_TURN_CHARS:
        return cleaned[: HISTORY_TURN_CHARS - 1] + "…"
    return cleaned
