"""Template replies: selection, personalisation, optional fragments, redaction, load errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.policy import Decision, Policy, Strategy, load_policy
from serving.replies import (
    DEFAULT_TEMPLATES_PATH,
    Reply,
    ReplyContext,
    TemplateError,
    TemplateWriter,
    complaint_nth,
    render_template,
)

ORDER_ID = "20261203123456789"
FULL = ReplyContext(
    product="无线蓝牙耳机",
    order_id=ORDER_ID,
    order_status="shipped",
    waited_days=3,
    complaint_count=3,
    turn=4,
)
# Worst case for length: a product name at the 24-character cap and a long order number.
LONGEST = ReplyContext(
    product="超长的商品标题" * 6,
    order_id="2026120312345678901234",
    order_status="out_for_delivery",
    waited_days=12,
    complaint_count=11,
)
CONTEXTS = {
    "full": FULL,
    "longest": LONGEST,
    "empty": ReplyContext(),
    "order_only": ReplyContext(order_id=ORDER_ID),
    "first_complaint": ReplyContext(product="保温杯", waited_days=1, complaint_count=1),
}
KEYS = [f"msg-{i}" for i in range(20)]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


@pytest.fixture(scope="module")
def writer() -> TemplateWriter:
    return TemplateWriter()


@pytest.fixture(scope="module")
def raw_templates() -> dict[str, dict[str, list[str]]]:
    raw = yaml.safe_load(DEFAULT_TEMPLATES_PATH.read_text(encoding="utf-8"))
    return raw["templates"]


def decision(strategy: Strategy, topic: str | None = None) -> Decision:
    return Decision(strategy=strategy, topic=topic, solution=None, escalate=False, reasons=())


def write_templates(tmp_path: Path, templates: dict[str, Any]) -> Path:
    path = tmp_path / "templates.yaml"
    path.write_text(yaml.safe_dump({"templates": templates}, allow_unicode=True), "utf-8")
    return path


def minimal(**overrides: list[str] | dict[str, list[str]]) -> dict[str, Any]:
    """One plain default per strategy, with ``overrides`` per strategy."""
    templates: dict[str, Any] = {str(s): {"default": ["您好。"]} for s in Strategy}
    for name, value in overrides.items():
        templates[name] = value if isinstance(value, dict) else {"default": value}
    return templates


# --- rendering with a hand-written template file ----------------------------------------------


def test_optional_fragments_render_only_when_their_values_are_known(tmp_path: Path) -> None:
    template = (
        "非常抱歉[，这已经是您{complaint_nth}反映这个问题了]。"
        "[{product}的问题]我来处理[，订单{order_id}]。"
    )
    path = write_templates(tmp_path, minimal(apologize_and_solve=[template]))
    writer = TemplateWriter(path)
    apologize = decision(Strategy.APOLOGIZE_AND_SOLVE)

    full = writer.write(apologize, FULL, variation_key="k")
    assert full == Reply(
        text=f"非常抱歉，这已经是您第三次反映这个问题了。无线蓝牙耳机的问题我来处理，订单{ORDER_ID}。",
        source="template",
    )
    empty = writer.write(apologize, ReplyContext(), variation_key="k")
    assert empty.text == "非常抱歉。我来处理。"
    # The first complaint is not "第一次反映": the fragment is only for repeats.
    first = writer.write(apologize, ReplyContext(complaint_count=1), variation_key="k")
    assert first.text == "非常抱歉。我来处理。"


def test_variants_with_unknown_required_placeholders_are_not_chosen(tmp_path: Path) -> None:
    variants = ["让您等了{waited}，非常抱歉。", "非常抱歉。"]
    path = write_templates(
        tmp_path, minimal(apologize_and_solve={"default": ["抱歉。"], "logistics": variants})
    )
    writer = TemplateWriter(path)
    logistics = decision(Strategy.APOLOGIZE_AND_SOLVE, "logistics")

    unknown = {writer.write(logistics, ReplyContext(), variation_key=k).text for k in KEYS}
    assert unknown == {"非常抱歉。"}
    known = {
        writer.write(logistics, ReplyContext(waited_days=3), variation_key=k).text for k in KEYS
    }
    assert known == {"让您等了3天，非常抱歉。", "非常抱歉。"}


def test_unknown_topic_falls_back_to_the_default(tmp_path: Path) -> None:
    path = write_templates(tmp_path, minimal(thank={"default": ["谢谢。"], "quality": ["感谢。"]}))
    writer = TemplateWriter(path)
    assert (
        writer.write(decision(Strategy.THANK, "invoice"), FULL, variation_key="k").text == "谢谢。"
    )
    assert writer.write(decision(Strategy.THANK, None), FULL, variation_key="k").text == "谢谢。"
    assert (
        writer.write(decision(Strategy.THANK, "quality"), FULL, variation_key="k").text == "感谢。"
    )


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (ReplyContext(order_status="shipped"), "订单已发货。"),
        (ReplyContext(order_status=" Delivered "), "订单已签收。"),
        (ReplyContext(order_status="已退款"), "订单已退款。"),
        (ReplyContext(order_status="partially_shipped"), "您好。"),  # unknown code: dropped
        (ReplyContext(waited_days=0), "您好。"),  # "等了0天" says nothing
        (ReplyContext(waited_days=5), "等了5天。"),
        (ReplyContext(product="  保温杯\n 500ml "), "保温杯 500ml。"),
        (
            ReplyContext(product="超长的商品标题" * 6),
            "超长的商品标题超长的商品标题超长的商品标题超长…。",  # 23 + the ellipsis,
        ),
    ],
)
def test_context_values(tmp_path: Path, context: ReplyContext, expected: str) -> None:
    # One variant per possible value, and a plain one: exactly one matches each context.
    variants = ["订单{order_status}。", "等了{waited}。", "{product}。", "您好。"]
    path = write_templates(tmp_path, minimal(thank=["谢谢[{order_status}]。"]))
    templates = minimal(acknowledge_and_answer=variants)
    path = write_templates(tmp_path, templates)
    writer = TemplateWriter(path)
    texts = {
        writer.write(decision(Strategy.ACKNOWLEDGE_AND_ANSWER), context, variation_key=k).text
        for k in KEYS
    }
    assert expected in texts
    assert texts <= {expected, "您好。"}


def test_a_phone_in_the_product_is_never_echoed_and_the_order_id_stays(tmp_path: Path) -> None:
    path = write_templates(
        tmp_path, minimal(apologize_and_solve=["抱歉[，{product}][，订单{order_id}]。"])
    )
    context = ReplyContext(product="耳机 有事打13812345678", order_id=ORDER_ID)
    reply = TemplateWriter(path).write(
        decision(Strategy.APOLOGIZE_AND_SOLVE), context, variation_key="k"
    )
    assert reply.text == f"抱歉，订单{ORDER_ID}。"


def test_an_order_id_that_is_a_phone_number_is_not_echoed(tmp_path: Path) -> None:
    path = write_templates(tmp_path, minimal(apologize_and_solve=["抱歉[，订单{order_id}]。"]))
    context = ReplyContext(order_id="13812345678")
    reply = TemplateWriter(path).write(
        decision(Strategy.APOLOGIZE_AND_SOLVE), context, variation_key="k"
    )
    assert reply.text == "抱歉。"


def test_values_are_not_expanded_twice(tmp_path: Path) -> None:
    path = write_templates(tmp_path, minimal(thank=["谢谢[，{product}]。"]))
    context = ReplyContext(product="{order_id}杯", order_id=ORDER_ID)
    reply = TemplateWriter(path).write(decision(Strategy.THANK), context, variation_key="k")
    assert reply.text == "谢谢，{order_id}杯。"


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (1, "第一次"),
        (2, "第二次"),
        (3, "第三次"),
        (9, "第九次"),
        (10, "第十次"),
        (11, "第11次"),
        (25, "第25次"),
    ],
)
def test_complaint_nth(count: int, expected: str) -> None:
    assert complaint_nth(count) == expected


def test_render_template() -> None:
    assert (
        render_template("您好[，您的订单{order_id}]。", {"order_id": "123"})
        == "您好，您的订单123。"
    )
    assert render_template("您好[，您的订单{order_id}]。", {}) == "您好。"
    with pytest.raises(KeyError):
        render_template("让您等了{waited}。", {})


# --- the shipped templates --------------------------------------------------------------------


def test_same_key_same_reply(writer: TemplateWriter) -> None:
    apologize = decision(Strategy.APOLOGIZE_AND_SOLVE, "logistics")
    first = writer.write(apologize, FULL, variation_key="msg-42")
    again = TemplateWriter().write(apologize, FULL, variation_key="msg-42")
    assert first == again
    assert first.source == "template"


def test_replies_vary_across_keys(writer: TemplateWriter) -> None:
    apologize = decision(Strategy.APOLOGIZE_AND_SOLVE, "logistics")
    texts = {writer.write(apologize, FULL, variation_key=k).text for k in KEYS}
    assert len(texts) >= 2


def test_personalisation_appears(writer: TemplateWriter) -> None:
    apologize = decision(Strategy.APOLOGIZE_AND_SOLVE, "logistics")
    texts = [writer.write(apologize, FULL, variation_key=k).text for k in KEYS]
    assert any(ORDER_ID in text for text in texts)
    assert any("让您等了3天" in text for text in texts)
    assert any("这已经是您第三次反映了" in text for text in texts)
    assert any("无线蓝牙耳机" in text for text in texts)


def test_no_repeat_complaint_wording_on_a_first_complaint(writer: TemplateWriter) -> None:
    for strategy in Strategy:
        for k in KEYS:
            text = writer.write(
                decision(strategy), CONTEXTS["first_complaint"], variation_key=k
            ).text
            assert "这已经是您" not in text and "第一次" not in text


@pytest.mark.parametrize("context_name", sorted(CONTEXTS))
def test_no_placeholder_leaks_in_any_combination(
    writer: TemplateWriter, policy: Policy, context_name: str
) -> None:
    topics = [None, *(topic.name for topic in policy.topics)]
    for strategy in Strategy:
        for topic in topics:
            for k in KEYS:
                text = writer.write(
                    decision(strategy, topic), CONTEXTS[context_name], variation_key=k
                ).text
                assert not re.search(r"None|null|[{}\[\]<>]", text), (strategy, topic, text)
                assert len(text) <= policy.guards.max_reply_chars, (strategy, topic, text)


def test_every_variant_carries_a_required_action_and_no_denied_phrase(
    raw_templates: dict[str, dict[str, list[str]]], policy: Policy
) -> None:
    checked = 0
    for strategy, by_topic in raw_templates.items():
        actions = policy.strategies[Strategy(strategy)].required_actions
        for topic, variants in by_topic.items():
            for variant in variants:
                assert any(action in variant for action in actions), (strategy, topic, variant)
                for rule in policy.guards.denylist:
                    assert not re.search(rule.pattern, variant, re.IGNORECASE), (rule, variant)
                checked += 1
    assert checked >= 60


def test_every_variant_fits_with_every_placeholder_filled(
    raw_templates: dict[str, dict[str, list[str]]], policy: Policy
) -> None:
    longest = {
        "product": "超长的商品标题超长的商品标题超长的商品标题超长…",  # 24 characters, the cap
        "order_id": "2026120312345678901234",
        "order_status": "已付款，等待发货",
        "waited": "12天",
        "complaint_nth": "第11次",
    }
    for by_topic in raw_templates.values():
        for variants in by_topic.values():
            for variant in variants:
                text = render_template(variant, longest)
                assert len(text) <= policy.guards.max_reply_chars, text


def test_common_lists_have_at_least_three_variants(
    raw_templates: dict[str, dict[str, list[str]]], policy: Policy
) -> None:
    for strategy in Strategy:
        assert len(raw_templates[strategy]["default"]) >= 3, strategy
    for strategy in (Strategy.APOLOGIZE_AND_SOLVE, Strategy.ACKNOWLEDGE_AND_ANSWER):
        for topic in policy.topics:
            assert len(raw_templates[strategy][topic.name]) >= 3, (strategy, topic.name)


def test_shipped_templates_agree_with_the_policy(writer: TemplateWriter, policy: Policy) -> None:
    writer.check_policy(policy)  # raises TemplateError on disagreement


def test_check_policy_reports_a_template_the_guard_would_reject(
    tmp_path: Path, policy: Policy
) -> None:
    templates = minimal(
        apologize_and_solve={"default": ["我们会处理。"], "shipping": ["抱歉。"]},
        compensate=["抱歉，全额赔偿。"],
    )
    writer = TemplateWriter(write_templates(tmp_path, templates))
    with pytest.raises(TemplateError) as caught:
        writer.check_policy(policy)
    message = str(caught.value)
    assert (
        "apologize_and_solve.default[0]: contains none of ['抱歉', '对不起', '不好意思']" in message
    )
    assert "apologize_and_solve.shipping: not a topic of the policy" in message
    assert "compensate.default[0]: matches the overpromise denylist" in message


# --- load errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("templates", "fragments"),
    [
        (
            minimal(thank=["谢谢{prodcut}。"]),
            ["templates.thank.default[0]", "unknown placeholder {prodcut}"],
        ),
        (
            minimal(reassure={"logistics": ["放心。"]}),
            ["templates.reassure", "'default'"],
        ),
        (
            {str(s): {"default": ["好。"]} for s in Strategy if s is not Strategy.COMPENSATE},
            ["templates.compensate: missing"],
        ),
        (
            {**minimal(), "apologise": {"default": ["抱歉。"]}},
            ["templates.apologise: unknown strategy"],
        ),
        (minimal(thank=["谢谢[您[{product}]]。"]), ["templates.thank.default[0]", "[ ]"]),
        (minimal(thank=["谢谢[，亲]。"]), ["templates.thank.default[0]", "no placeholder"]),
        (minimal(thank=["谢谢{product。"]), ["templates.thank.default[0]", "{ }"]),
        (
            minimal(thank={"default": ["谢谢。"], "quality": ["谢谢{product}。"]}),
            ["templates.thank.quality", "at least one must render with nothing known"],
        ),
        (minimal(thank=[]), ["templates.thank.default", "non-empty list"]),
    ],
)
def test_invalid_templates_name_the_file_and_the_template(
    tmp_path: Path, templates: dict[str, Any], fragments: list[str]
) -> None:
    path = write_templates(tmp_path, templates)
    with pytest.raises(TemplateError) as caught:
        TemplateWriter(path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_templates_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="not found"):
        TemplateWriter(tmp_path / "nope.yaml")


def test_templates_section_is_required(tmp_path: Path) -> None:
    path = tmp_path / "templates.yaml"
    path.write_text("thank:\n  default: [谢谢]\n", "utf-8")
    with pytest.raises(TemplateError, match="unknown top-level key 'thank'"):
        TemplateWriter(path)


def test_the_rendered_text_itself_is_redacted(tmp_path: Path) -> None:
    # Values are screened before rendering; the final pass also covers the template's own text.
    path = write_templates(
        tmp_path, minimal(thank=["谢谢，有事请打13812345678[，订单{order_id}]。"])
    )
    reply = TemplateWriter(path).write(
        decision(Strategy.THANK), ReplyContext(order_id=ORDER_ID), variation_key="k"
    )
    assert reply.text == f"谢谢，有事请打<PHONE>，订单{ORDER_ID}。"
