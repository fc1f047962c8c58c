"""Routing switches, degraded mode and micro-batching, against real model server processes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from pipelines.registry.live import LiveRoute, write_live
from serving.breaker import CircuitBreaker
from serving.fallback import load_lexicon
from serving.model_client import EmotionClient, EmotionEstimate, LiveRouting
from tests.serving.conftest import ModelServers, Service

ANGRY = "包裹还没到，太慢了，非常失望"
LEXICON = Path(__file__).resolve().parents[2] / "serving" / "fallback_lexicon.yaml"


def metric(service: Service, name: str) -> float:
    text = httpx.get(f"{service.url}/metrics").text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_routing_file_switched_mid_stream_fails_no_request(
    service: Service, model_servers: ModelServers
) -> None:
    results: list[tuple[int, str, bool]] = []
    stop = threading.Event()

    def client(worker: int) -> None:
        i = 0
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                response = http.post(
                    f"{service.url}/v1/messages",
                    json={"conversation_id": f"w{worker}-{i}", "text": ANGRY},
                    headers=service.headers(),
                )
                body = response.json()
                results.append((response.status_code, body.get("model_version"), body["degraded"]))
                i += 1

    threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    service.route_to(model_servers.v2)
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    assert results and all(status == 200 for status, _, _ in results)
    assert not any(degraded for _, _, degraded in results)
    versions = [version for _, version, _ in results]
    assert versions[0] == "1" and versions[-1] == "2"
    assert set(versions) == {"1", "2"}


@pytest.mark.service_settings(service_breaker_backoff_s=1.0, service_breaker_backoff_max_s=2.0)
def test_degraded_when_the_endpoint_stops_and_recovery_when_it_returns(
    service: Service, model_servers: ModelServers
) -> None:
    server = model_servers.start_extra("1")
    service.route_to(server)
    assert (
        service.post_message({"conversation_id": "d0", "text": ANGRY}).json()["degraded"] is False
    )

    model_servers.stop(server)
    down = [
        service.post_message({"conversation_id": f"d{i}", "message_id": f"down-{i}", "text": ANGRY})
        for i in range(1, 6)
    ]
    assert all(r.status_code == 200 for r in down)
    bodies = [r.json() for r in down]
    assert all(b["degraded"] and b["model_version"] == "fallback-lexicon" for b in bodies)
    # The fallback lexicon reads 没 慢 失望 as a complaint: the policy still apologises.
    assert all(b["emotion"]["label"] == "negative" for b in bodies)
    assert all(b["strategy"] == "apologize_and_solve" and b["reply"] for b in bodies)
    assert metric(service, "emoreg_circuit_open") == 1.0
    reasons = httpx.get(f"{service.url}/metrics").text
    assert 'emoreg_degraded_answers_total{reason="circuit_open"}' in reasons
    # Every message was stored, with its degraded prediction.
    conversation = service.conversation("d3").json()
    assert conversation["turns"][0]["degraded"] is True

    restarted = model_servers.start_extra("1", port=server.port)
    try:
        recovered = None
        for i in range(100):
            body = service.post_message({"conversation_id": f"r{i}", "text": ANGRY}).json()
            if not body["degraded"]:
                recovered = body
                break
            time.sleep(0.1)
        assert recovered is not None, "the service did not recover within 10 s"
        assert recovered["model_version"] == "1"
        assert metric(service, "emoreg_circuit_open") == 0.0
    finally:
        model_servers.stop(restarted)


@pytest.mark.service_settings(service_deadline_s=0.5)
def test_a_hung_endpoint_answers_degraded_within_the_deadline(
    service: Service, model_servers: ModelServers
) -> None:
    server = model_servers.start_extra("1")
    service.route_to(server)
    assert (
        service.post_message({"conversation_id": "h0", "text": ANGRY}).json()["degraded"] is False
    )
    os.killpg(server.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        body = service.post_message({"conversation_id": "h1", "text": ANGRY}).json()
        waited = time.monotonic() - started
        assert body["degraded"] is True
        # Answered at the deadline, not after the server's own 30 s timeout.
        assert waited < 10
    finally:
        os.killpg(server.pid, signal.SIGCONT)
        model_servers.stop(server)


def test_concurrent_estimates_are_coalesced_and_each_gets_its_own_answer(
    tmp_path: Path, model_servers: ModelServers
) -> None:
    """32 messages at once leave in far fewer /invocations calls, answers in the right order."""
    texts = [ANGRY, "质量很好，非常满意", "请问有现货吗？"] * 11
    expected = ["negative", "positive", "neutral"] * 11
    live_file = tmp_path / "live.json"
    write_live(live_file, LiveRoute.for_server(model_servers.v1, "test"))
    batches: list[int] = []

    async def scenario() -> list[EmotionEstimate]:
        client = EmotionClient(
            routing=LiveRouting(live_file),
            breaker=CircuitBreaker(3, 0.5, 1.0),
            lexicon=load_lexicon(LEXICON),
            deadline_s=10.0,
            batch_max_size=16,
            batch_max_wait_ms=5.0,
            batch_max_inflight=2,
            on_batch=lambda size, seconds, ok: batches.append(size),
        )
        await client.start()
        try:
            return await asyncio.gather(*(client.estimate(text) for text in texts))
        finally:
            await client.stop()

    answers = asyncio.run(scenario())
    assert [a.label for a in answers] == expected
    assert not any(a.degraded for a in answers)
    assert sum(batches) == len(texts)
    assert max(batches) <= 16  # bounded
    assert len(batches) <= 4  # 33 messages in 3 full-or-nearly batches, not 33 calls
