"""Property-based fuzzing of the request bodies: whatever arrives, the answer is never a 5xx."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serving.conftest import Service

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
ids = st.text(min_size=0, max_size=70) | st.integers() | st.none()
message_bodies = st.fixed_dictionaries(
    {},
    optional={
        "conversation_id": ids,
        "message_id": ids,
        "text": st.text(max_size=300) | json_values,
        "customer_id": ids,
        "context": st.dictionaries(
            st.sampled_from(["order_id", "product", "order_status", "channel", "ordered_at", "x"]),
            json_values,
            max_size=4,
        )
        | json_values,
    },
)
feedback_bodies = st.fixed_dictionaries(
    {},
    optional={
        "message_id": ids,
        "label": st.sampled_from(["negative", "neutral", "positive", "angry"]) | json_values,
        "rating": st.integers(-2, 8) | json_values,
        "source": st.sampled_from(["agent", "customer", "bot"]) | json_values,
    },
)
raw_bytes = st.binary(max_size=200)

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"]["code"]


def test_fuzzed_messages_never_5xx(service: Service) -> None:
    with httpx.Client(base_url=service.url, headers=service.headers(), timeout=30) as http:

        @FUZZ
        @given(body=message_bodies)
        def messages(body: dict[str, object]) -> None:
            _check(http.post("/v1/messages", json=body))

        messages()


def test_fuzzed_feedback_and_reads_never_5xx(service: Service) -> None:
    service.post_message({"conversation_id": "c", "message_id": "m", "text": "请问有货吗？"})
    with httpx.Client(
        base_url=service.url, headers=service.headers(service.agent_key), timeout=30
    ) as http:

        @FUZZ
        @given(body=feedback_bodies, conversation=st.text(max_size=80))
        def feedback(body: dict[str, object], conversation: str) -> None:
            _check(http.post("/v1/feedback", json=body))
            _check(http.get(f"/v1/conversations/{quote(conversation, safe='')}"))

        feedback()


def test_fuzzed_raw_bytes_never_5xx(service: Service) -> None:
    with httpx.Client(base_url=service.url, headers=service.headers(), timeout=30) as http:

        @FUZZ
        @given(body=raw_bytes)
        def raw(body: bytes) -> None:
            _check(
                http.post(
                    "/v1/messages", content=body, headers={"Content-Type": "application/json"}
                )
            )
            _check(
                http.post(
                    "/v1/messages",
                    content=json.dumps({"conversation_id": "c"}).encode()[:-1] + body,
                    headers={"Content-Type": "application/json"},
                )
            )

        raw()
