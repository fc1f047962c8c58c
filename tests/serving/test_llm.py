"""The LLM backend against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from serving.llm import GuardViolation, LlmConfig, LlmWriter, check_reply
from serving.policy import Decision, Policy, Strategy, load_policy
from serving.replies import Reply, ReplyContext, TemplateWriter

ORDER_ID = "20261203123456789"
CONTEXT = ReplyContext(product="无线蓝牙耳机", order_id=ORDER_ID, waited_days=3, complaint_count=1)
APOLOGIZE = Decision(
    strategy=Strategy.APOLOGIZE_AND_SOLVE,
    topic="logistics",
    solution="tracking_update",
    escalate=False,
    reasons=("label=negative",),
    label="negative",
)
CUSTOMER_TEXT = "快递三天了还没到，急死了，电话13812345678"
# (customer message, our reply) per earlier turn, oldest first.
HISTORY = [("我的耳机发货了吗，地址是阳光花园3栋2单元501室", "您好，已经发货了。")]
GOOD = f"非常抱歉让您久等了，我已帮您催促快递，订单{ORDER_ID}的物流一有更新马上通知您。"


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeLlm:
    """What the fake server answers next, and what it was sent."""

    url: str = ""
    status: int = 200
    body: bytes = b""
    delay_s: float = 0.0
    dribble_s: float = 0.0  # pause between the body's bytes
    requests: list[Request] = field(default_factory=list)
    wake: threading.Event = field(default_factory=threading.Event)

    def answer(self, content: Any) -> None:
        choice = {"index": 0, "message": {"role": "assistant", "content": content}}
        self.body = json.dumps({"id": "x", "choices": [choice]}).encode()


def _handler(fake: FakeLlm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            fake.requests.append(Request(self.path, dict(self.headers.items()), body))
            if fake.delay_s:
                fake.wake.wait(fake.delay_s)  # teardown sets it: no thread outlives the test
            try:
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(fake.body)))
                self.end_headers()
                if not fake.dribble_s:
                    self.wfile.write(fake.body)
                for i in range(len(fake.body) if fake.dribble_s else 0):
                    self.wfile.write(fake.body[i : i + 1])
                    self.wfile.flush()
                    if fake.wake.wait(fake.dribble_s):
                        break
            except OSError:
                pass  # the client gave up (the timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def fake_llm(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLlm]:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    fake = FakeLlm()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    # A short poll interval: shutdown() waits up to one interval, and it runs after every test.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield fake
    fake.wake.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


@pytest.fixture(scope="module")
def templates() -> TemplateWriter:
    return TemplateWriter()


def write(
    fake: FakeLlm,
    policy: Policy,
    templates: TemplateWriter,
    *,
    decision: Decision = APOLOGIZE,
    api_key: str | None = "sk-test",
    timeout_s: float = 2.0,
) -> tuple[Reply, str | None]:
    async def run() -> tuple[Reply, str | None]:
        config = LlmConfig(
            base_url=fake.url, model="tiny-chat", api_key=api_key, timeout_s=timeout_s
        )
        writer = LlmWriter(config, policy, templates)
        try:
            return await writer.write(
                decision, CONTEXT, text=CUSTOMER_TEXT, history=HISTORY, variation_key="msg-1"
            )
        finally:
            await writer.aclose()

    return asyncio.run(run())


def template_reply(templates: TemplateWriter, decision: Decision = APOLOGIZE) -> Reply:
    return templates.write(decision, CONTEXT, variation_key="msg-1")


def test_a_good_reply_is_used(fake_llm: FakeLlm, policy: Policy, templates: TemplateWriter) -> None:
    fake_llm.answer(f"  {GOOD}\n")
    assert write(fake_llm, policy, templates) == (Reply(text=GOOD, source="llm"), None)


def test_the_request_carries_the_decision_and_the_key(
    fake_llm: FakeLlm, policy: Policy, templates: TemplateWriter
) -> None:
    fake_llm.answer(GOOD)
    write(fake_llm, policy, templates)
    [request] = fake_llm.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer sk-test"
    assert request.body["model"] == "tiny-chat"
    assert request.body["temperature"] == 0.3
    assert request.body["max_tokens"] == 200
    system, user = request.body["messages"]
    assert (system["role"], user["role"]) == ("system", "user")
    assert "apologize_and_solve" in system["content"]
    assert "negative" in system["content"] and "负面" in system["content"]
    assert "抱歉" in system["content"]  # the required actions
    assert "联系快递催派" in system["content"]  # the tracking_update solution
    assert ORDER_ID in system["content"] and "无线蓝牙耳机" in system["content"]
    assert "顾客：我的耳机发货了吗，地址是<ADDRESS>" in system["content"]  # redacted history
    assert "客服：您好，已经发货了。" in system["content"]
    assert user["content"] == "快递三天了还没到，急死了，电话<PHONE>"
    sent = json.dumps(request.body, ensure_ascii=False)
    assert "13812345678" not in sent and "501室" not in sent


def test_no_authorization_header_without_a_key(
    fake_llm: FakeLlm, policy: Policy, templates: TemplateWriter
) -> None:
    fake_llm.answer(GOOD)
    write(fake_llm, policy, templates, api_key=None)
    assert "Authorization" not in fake_llm.requests[0].headers


def test_an_escalation_prompt_says_a_human_takes_over(
    fake_llm: FakeLlm, policy: Policy, templates: TemplateWriter
) -> None:
    escalate = Decision(Strategy.ESCALATE_TO_HUMAN, None, None, True, ("negative_streak=3",))
    fake_llm.answer("非常抱歉，已为您转接人工专员，请稍候。")
    reply, reason = write(fake_llm, policy, templates, decision=escalate)
    assert (reply.source, reason) == ("llm", None)
    assert "已转接人工专员" in fake_llm.requests[0].body["messages"][0]["content"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("非常抱歉，麻烦提供一下您的银行卡号，我们为您退款。", "guard:denylist:payment_details"),
        ("您的快递明天就到，请耐心等待。", "guard:missing_action"),
        ("非常抱歉" + "，我们会尽快为您处理" * 20 + "。", "guard:too_long"),
        ("抱歉，快递慢是你自己的问题。", "guard:denylist:rudeness"),
        ("非常抱歉，我们保证今天到，并全额赔偿。", "guard:denylist:overpromise"),
        ("非常抱歉，请拨打13912345678联系快递员。", "guard:pii"),
        ("   \n", "guard:empty"),
    ],
)
def test_a_reply_failing_a_guard_falls_back_to_the_template(
    fake_llm: FakeLlm, policy: Policy, templates: TemplateWriter, content: str, reason: str
) -> None:
    fake_llm.answer(content)
    assert write(fake_llm, policy, templates) == (template_reply(templates), reason)


def test_a_slow_server_times_out_quickly(
    fake_llm: FakeLlm, policy: Policy, templates: TemplateWriter
) -> None:
    fake_llm.answer(GOOD)
    fake_llm.delay_s = 5.0
    started = time.monotonic()
    result = write(fake_llm, policy, templates, timeout_s=0.3)
    elapsed = time.monotonic() - started
    assert result == (template_reply(templates), "timeout")
    assert elapsed < 1.0


def test_a_server_trickling_its_answer_times_out_too(
    fake_llm: FakeLlm, policy: Policy, templates: TemplateWriter
) -> None:
    # Each byte comes within httpx's per-read timeout; only the overall deadline stops it.
    fake_llm.answer(GOOD)
    fake_llm.dribble_s = 0.1
    started = time.monotonic()
    result = write(fake_llm, policy, templates, timeout_s=0.3)
    assert result == (template_reply(templates), "timeout")
    assert time.monotonic() - started < 1.0


def test_an_http_error_falls_back(
    fake_llm: FakeLlm, policy: Policy, templates: TemplateWriter
) -> None:
    fake_llm.status = 500
    fake_llm.body = b'{"error": "overloaded"}'
    assert write(fake_llm, policy, templates) == (template_reply(templates), "http_error")


def test_a_refused_connection_falls_back(
    fake_llm: FakeLlm, policy: Policy, templates: TemplateWriter
) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fake_llm.url = f"http://127.0.0.1:{port}/v1"
    assert write(fake_llm, policy, templates) == (template_reply(templates), "http_error")


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not json</html>",
        b'{"choices": []}',
        b'{"choices": [{"message": {"role": "assistant", "content": null}}]}',
        b'{"result": "no choices"}',
    ],
)
def test_a_malformed_answer_falls_back(
    fake_llm: FakeLlm, policy: Policy, templates: TemplateWriter, body: bytes
) -> None:
    fake_llm.body = body
    assert write(fake_llm, policy, templates) == (template_reply(templates), "bad_response")


def test_a_client_passed_in_stays_open(fake_llm: FakeLlm, policy: Policy) -> None:
    async def run() -> bool:
        async with httpx.AsyncClient() as client:
            config = LlmConfig(fake_llm.url, "tiny-chat", None, 1.0)
            writer = LlmWriter(config, policy, TemplateWriter(), client=client)
            await writer.aclose()
            return client.is_closed

    assert asyncio.run(run()) is False


# --- check_reply ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "text", "reason"),
    [
        (Strategy.THANK, "", "empty"),
        (Strategy.THANK, "谢谢" * 81, "too_long"),  # 162 characters
        (Strategy.COMPENSATE, "给您一张优惠券，下次双倍赔偿。", "denylist:overpromise"),
        (Strategy.COMPENSATE, "优惠券已发放，请把CVV告诉我。", "denylist:payment_details"),
        (Strategy.COMPENSATE, "优惠券已发放，请把cvv告诉我。", "denylist:payment_details"),
        (Strategy.REASSURE, "别着急，闭嘴等着。", "denylist:rudeness"),
        (Strategy.ESCALATE_TO_HUMAN, "非常抱歉，请稍候。", "missing_action"),
        (Strategy.THANK, "谢谢，您的邮箱a.b@example.com已记录。", "pii"),
    ],
)
def test_check_reply_rejects(policy: Policy, strategy: Strategy, text: str, reason: str) -> None:
    with pytest.raises(GuardViolation) as caught:
        check_reply(policy, strategy, text)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("strategy", "text"),
    [
        (Strategy.THANK, "谢谢" * 80),  # exactly 160 characters
        (Strategy.ESCALATE_TO_HUMAN, "非常抱歉，已为您转接主管。"),
        (Strategy.ACKNOWLEDGE_AND_ANSWER, f"收到，订单{ORDER_ID}已发货。"),  # order ids are not PII
    ],
)
def test_check_reply_accepts(policy: Policy, strategy: Strategy, text: str) -> None:
    check_reply(policy, strategy, text)  # raises GuardViolation when rejected


def test_config_rejects_a_url_without_a_scheme() -> None:
    with pytest.raises(ValueError, match="http"):
        LlmConfig(base_url="127.0.0.1:8080/v1", model="m", api_key=None, timeout_s=1.0)


def test_the_service_sends_the_llm_reply_and_falls_back_on_a_violation(
    fake_llm: FakeLlm, tmp_path: Any, model_servers: Any
) -> None:
    """End to end: the LLM's reply is the answer when it passes the guards, a template when not."""
    from sqlalchemy import select

    from pipelines.registry.live import LiveRoute, write_live
    from pipelines.store.db import make_engine, session_scope
    from pipelines.store.models import Prediction
    from serving.app import create_app
    from tests.serving.conftest import prepare_var, running_app, service_settings

    settings = service_settings(tmp_path, llm_base_url=fake_llm.url, llm_model="tiny-chat")
    chat, _ = prepare_var(settings)
    write_live(settings.live_file, LiveRoute.for_server(model_servers.v1, "test"))
    fake_llm.answer(GOOD)
    with running_app(create_app(settings)) as url:

        def send(message_id: str) -> dict[str, Any]:
            response = httpx.post(
                f"{url}/v1/messages",
                json={
                    "conversation_id": message_id,
                    "message_id": message_id,
                    "text": "快递还没到，太慢了",
                },
                headers={"X-API-Key": chat},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            return dict(response.json())

        used = send("llm-1")
        fake_llm.answer("抱歉，请把您的银行卡号发给我，我们给您退款。")
        replaced = send("llm-2")
        metrics = httpx.get(f"{url}/metrics").text

    assert used["strategy"] == "apologize_and_solve" and used["reply"] == GOOD
    assert replaced["reply"] != "" and "银行卡" not in replaced["reply"]
    assert 'emoreg_llm_fallbacks_total{reason="guard"} 1.0' in metrics
    sent = fake_llm.requests[0].body
    assert sent["model"] == "tiny-chat"
    prompt = sent["messages"][0]["content"]
    assert "标签 negative" in prompt and "回复策略：apologize_and_solve" in prompt
    # The customer's text as stored and scored: normalised (NFKC makes "，" a ","), redacted.
    assert sent["messages"][-1] == {"role": "user", "content": "快递还没到,太慢了"}
    engine = make_engine(settings.database_url)
    with session_scope(engine) as session:
        sources = dict(
            session.execute(select(Prediction.message_id, Prediction.reply_source)).all()
        )
    engine.dispose()
    assert sources == {"llm-1": "llm", "llm-2": "template"}
