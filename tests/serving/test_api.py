"""The HTTP API against a real `mlflow models serve` of the keyword test model.

The keyword model (tests/helpers_models.py) counts complaint words (差 坏 退款 慢 失望 垃圾 不
没 ...) against praise words (好 满意 快 喜欢 ...); a question without either is neutral. The
expected labels below are worked out from those word lists.
"""

from __future__ import annotations

import json

import httpx
import pandas as pd
import pytest
from sqlalchemy import func, select

from pipelines.data.ingest import RAW_FILE, ingest
from pipelines.partitions import Interval, partition_dir
from pipelines.store.db import make_engine, session_scope
from pipelines.store.models import Feedback, Message, Prediction
from tests.serving.conftest import Service

ANGRY = "包裹还没到，太慢了，非常失望"  # 没 慢 失望: negative
PRAISE = "质量很好，非常满意，喜欢"  # 好 满意 喜欢: positive
QUESTION = "请问可以开发票吗？"  # a question, no cue word: neutral


def counts(service: Service) -> tuple[int, int, int]:
    engine = make_engine(service.settings.database_url)
    with session_scope(engine) as session:
        found = tuple(
            session.scalar(select(func.count()).select_from(table))
            for table in (Message, Prediction, Feedback)
        )
    engine.dispose()
    return found  # type: ignore[return-value]


def test_happy_path_answers_stores_and_redacts(service: Service) -> None:
    response = service.post_message(
        {
            "conversation_id": "c-1",
            "message_id": "m-1",
            "customer_id": "u-9",
            "text": "快递三天了还没到，太慢了，失望！电话13812345678",
            "context": {"order_id": "20261203000123456", "product": "蓝牙耳机"},
        },
        headers={"X-API-Key": service.chat_key, "X-Request-ID": "req-abc"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message_id"] == "m-1" and body["conversation_id"] == "c-1"
    assert body["emotion"]["label"] == "negative"
    assert set(body["emotion"]["probabilities"]) == {"negative", "neutral", "positive"}
    assert body["emotion"]["score"] == pytest.approx(body["emotion"]["probabilities"]["negative"])
    assert body["strategy"] == "apologize_and_solve" and body["topic"] == "logistics"
    assert body["escalate"] is False and body["degraded"] is False
    assert body["model_version"] == "1"
    assert body["request_id"] == "req-abc" == response.headers["x-request-id"]
    assert "13812345678" not in body["reply"] and body["reply"]

    engine = make_engine(service.settings.database_url)
    with session_scope(engine) as session:
        message = session.get(Message, "m-1")
        assert message is not None
        assert "13812345678" not in message.text and "<PHONE>" in message.text
        assert message.context == {"order_id": "20261203000123456", "product": "蓝牙耳机"}
        (prediction,) = session.scalars(select(Prediction)).all()
        assert (prediction.label, prediction.strategy, prediction.model_version) == (
            "negative",
            "apologize_and_solve",
            "1",
        )
        assert prediction.reply == body["reply"] and prediction.degraded is False
    engine.dispose()


def test_labels_and_strategies_follow_the_emotion(service: Service) -> None:
    expected = {
        PRAISE: ("positive", "thank"),
        QUESTION: ("neutral", "acknowledge_and_answer"),
    }
    for i, (text, (label, strategy)) in enumerate(expected.items()):
        body = service.post_message({"conversation_id": f"c-{i}", "text": text}).json()
        assert (body["emotion"]["label"], body["strategy"]) == (label, strategy)
    invoice = service.post_message({"conversation_id": "c-9", "text": QUESTION}).json()
    assert invoice["topic"] == "invoice"


def test_a_retried_message_gets_the_same_answer_and_is_stored_once(service: Service) -> None:
    request = {"conversation_id": "c-r", "message_id": "m-r", "text": ANGRY}
    first = service.post_message(request)
    second = service.post_message(request)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert counts(service) == (1, 1, 0)

    other_text = service.post_message({**request, "text": PRAISE})
    other_conversation = service.post_message({**request, "conversation_id": "c-other"})
    for response in (other_text, other_conversation):
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "duplicate_message_id"
    assert counts(service) == (1, 1, 0)


def test_escalation_after_a_run_of_negative_turns_and_not_after_one(service: Service) -> None:
    single = service.post_message({"conversation_id": "calm", "text": ANGRY}).json()
    assert single["escalate"] is False and single["strategy"] != "escalate_to_human"

    answers = [
        service.post_message({"conversation_id": "angry", "text": text}).json()
        for text in ("快递还没到，太慢了", "怎么还没到？太失望了", "还是没到，垃圾，太差了")
    ]
    assert [a["emotion"]["label"] for a in answers] == ["negative"] * 3
    assert [a["escalate"] for a in answers] == [False, False, True]
    assert answers[2]["strategy"] == "escalate_to_human"

    conversation = service.conversation("angry").json()
    assert [t["turn"] for t in conversation["turns"]] == [0, 1, 2]
    assert [t["strategy"] for t in conversation["turns"]] == [a["strategy"] for a in answers]
    assert conversation["trajectory"]["negative_streak"] == 3
    assert conversation["trajectory"]["escalated"] is True
    assert conversation["trajectory"]["labels"] == ["negative"] * 3


def test_feedback_is_stored_and_picked_up_by_the_next_ingest(service: Service) -> None:
    answer = service.post_message({"conversation_id": "c-f", "message_id": "m-f", "text": ANGRY})
    assert answer.json()["emotion"]["label"] == "negative"
    stored = service.post_feedback({"message_id": "m-f", "label": "neutral", "source": "agent"})
    assert stored.status_code == 201, stored.text
    assert stored.json()["label"] == "neutral" and stored.json()["source"] == "agent"
    rating = service.post_feedback({"message_id": "m-f", "rating": 4, "source": "customer"})
    assert rating.status_code == 201 and rating.json()["rating"] == 4

    turns = service.conversation("c-f").json()["turns"]
    assert [(f["label"], f["rating"]) for f in turns[0]["feedback"]] == [
        ("neutral", None),
        (None, 4),
    ]

    created = pd.Timestamp(stored.json()["created_at"])
    day = created.normalize()
    interval = Interval.parse(str(day.date()), str((day + pd.Timedelta(days=1)).date()))
    engine = make_engine(service.settings.database_url)
    ingest(engine, interval, service.settings.partitions_dir)
    engine.dispose()
    raw = pd.read_parquet(partition_dir(service.settings.partitions_dir, interval) / RAW_FILE)
    row = raw.set_index("message_id").loc["m-f"]
    assert (row["label"], row["label_source"]) == ("neutral", "agent_correction")
    assert row["predicted_label"] == "negative"


def test_reads_need_the_read_scope_and_messages_the_messages_scope(service: Service) -> None:
    service.post_message({"conversation_id": "c-a", "text": QUESTION})
    as_chat_app = httpx.get(f"{service.url}/v1/conversations/c-a", headers=service.headers())
    as_agent = httpx.post(
        f"{service.url}/v1/messages",
        json={"conversation_id": "c-a", "text": QUESTION},
        headers=service.headers(service.agent_key),
    )
    feedback_as_chat_app = httpx.post(
        f"{service.url}/v1/feedback",
        json={"message_id": "x", "label": "neutral", "source": "agent"},
        headers=service.headers(),
    )
    for response in (as_chat_app, as_agent, feedback_as_chat_app):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "insufficient_scope"
    assert service.conversation("c-a").status_code == 200
    assert counts(service)[0] == 1


def _raw_post(service: Service, path: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{service.url}{path}",
        content=content,
        headers={"X-API-Key": service.chat_key, "Content-Type": "application/json", **headers},
        timeout=30,
    )


BAD_MESSAGES = {
    "missing text": {"conversation_id": "c"},
    "missing conversation": {"text": "你好"},
    "text not a string": {"conversation_id": "c", "text": 12},
    "conversation not a string": {"conversation_id": ["c"], "text": "你好"},
    "empty text": {"conversation_id": "c", "text": ""},
    "whitespace text": {"conversation_id": "c", "text": "  \n\t "},
    "invisible text": {"conversation_id": "c", "text": "\u200b\u200b"},
    "control character": {"conversation_id": "c", "text": "你好\x07"},
    "NUL": {"conversation_id": "c", "text": "你\x00好"},
    "lone surrogate": {"conversation_id": "c", "text": "你好\ud800"},
    "text too long": {"conversation_id": "c", "text": "好" * 2001},
    "bad id characters": {"conversation_id": "c/../x", "text": "你好"},
    "id too long": {"conversation_id": "c" * 65, "text": "你好"},
    "unknown field": {"conversation_id": "c", "text": "你好", "admin": True},
    "context not an object": {"conversation_id": "c", "text": "你好", "context": "x"},
    "unknown context field": {"conversation_id": "c", "text": "你好", "context": {"card": "1"}},
    "bad ordered_at": {"conversation_id": "c", "text": "你好", "context": {"ordered_at": "x"}},
    "body not an object": ["你好"],
}


@pytest.mark.parametrize("body", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
def test_bad_messages_are_clear_4xx_and_store_nothing(service: Service, body: object) -> None:
    response = _raw_post(service, "/v1/messages", json.dumps(body).encode())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] in {"invalid_request", "text_too_long", "empty_text"}
    assert error["message"]
    assert counts(service) == (0, 0, 0)


def test_malformed_bodies_are_4xx(service: Service) -> None:
    cases = {
        "invalid UTF-8": (b'{"conversation_id": "c", "text": "\xff\xfe"}', {}, 400),
        "not JSON": (b"conversation_id=c&text=hi", {}, 422),
        "truncated JSON": (b'{"conversation_id": "c", "text": "', {}, 422),
        "empty body": (b"", {}, 422),
        "1 MB body": (
            json.dumps({"conversation_id": "c", "text": "好" * 350_000}).encode(),
            {},
            413,
        ),
        "text/plain": (
            b'{"conversation_id": "c", "text": "hi"}',
            {"Content-Type": "text/plain"},
            422,
        ),
    }
    for name, (content, headers, status) in cases.items():
        response = _raw_post(service, "/v1/messages", content, **headers)
        assert response.status_code == status, (name, response.text)
        assert response.json()["error"]["code"], name
    assert counts(service) == (0, 0, 0)


def test_auth_errors(service: Service) -> None:
    body = {"conversation_id": "c", "text": QUESTION}
    missing = httpx.post(f"{service.url}/v1/messages", json=body)
    wrong = httpx.post(f"{service.url}/v1/messages", json=body, headers={"X-API-Key": "nope"})
    assert (missing.status_code, missing.json()["error"]["code"]) == (401, "missing_api_key")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_api_key")
    assert counts(service) == (0, 0, 0)


def test_unknown_ids_and_bad_feedback(service: Service) -> None:
    service.post_message({"conversation_id": "c-k", "message_id": "m-k", "text": QUESTION})
    cases = [
        ({"message_id": "nope", "label": "negative", "source": "agent"}, 404, "unknown_message"),
        ({"message_id": "m-k", "source": "agent"}, 422, "empty_feedback"),
        ({"message_id": "m-k", "label": "angry", "source": "agent"}, 422, "invalid_request"),
        ({"message_id": "m-k", "rating": 6, "source": "customer"}, 422, "invalid_request"),
        ({"message_id": "m-k", "rating": "5", "source": "customer"}, 422, "invalid_request"),
        ({"message_id": "m-k", "label": "neutral", "source": "bot"}, 422, "invalid_request"),
    ]
    for body, status, code in cases:
        response = service.post_feedback(body)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
    unknown = service.conversation("nobody")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_conversation")
    assert counts(service) == (1, 1, 0)


def test_health_readiness_metrics_and_docs(service: Service) -> None:
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{service.url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"store": True, "model": True, "policy": True}

    service.post_message({"conversation_id": "c-m", "text": ANGRY})
    service.post_message({"conversation_id": "c-m2", "text": PRAISE})
    metrics = httpx.get(f"{service.url}/metrics").text
    assert 'emoreg_emotions_total{label="negative"} 1.0' in metrics
    assert 'emoreg_emotions_total{label="positive"} 1.0' in metrics
    assert 'emoreg_strategies_total{strategy="thank"} 1.0' in metrics
    assert 'emoreg_live_model_info{version="1"} 1.0' in metrics
    assert 'emoreg_http_requests_total{method="POST",route="/v1/messages",status="200"} 2.0' in (
        metrics
    )
    assert "emoreg_http_request_seconds_bucket" in metrics

    schema = httpx.get(f"{service.url}/openapi.json").json()
    assert {"/v1/messages", "/v1/feedback", "/v1/conversations/{conversation_id}"} <= set(
        schema["paths"]
    )
    assert httpx.get(f"{service.url}/docs").status_code == 200


def test_readiness_fails_without_a_live_model(service: Service) -> None:
    service.settings.live_file.unlink()
    ready = httpx.get(f"{service.url}/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["model"] is False


def test_a_message_stored_before_a_crash_is_finished_by_its_retry(service: Service) -> None:
    """The message was committed, then the service died before its prediction: the retry
    answers it and stores the prediction, without a second message."""
    from datetime import datetime

    from pipelines.store.models import Conversation, Role

    engine = make_engine(service.settings.database_url)
    with session_scope(engine) as session:
        session.add(Conversation(id="c-crash", started_at=datetime(2026, 12, 3, 9)))
        session.add(
            Message(
                id="m-crash",
                conversation_id="c-crash",
                turn=0,
                role=Role.customer,
                text="质量很好,非常满意",  # as the service stores it: normalised (NFKC comma)
                created_at=datetime(2026, 12, 3, 9),
            )
        )
    engine.dispose()
    answer = service.post_message(
        {"conversation_id": "c-crash", "message_id": "m-crash", "text": "质量很好，非常满意"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["emotion"]["label"] == "positive"
    assert counts(service) == (1, 1, 0)
