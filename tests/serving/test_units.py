"""Units of the service: circuit breaker, fallback lexicon, API keys, live routing reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.auth import KeysFileError, create_key, digest, find_key, load_keys
from serving.breaker import BreakerState, CircuitBreaker
from serving.fallback import LexiconError, estimate, load_lexicon
from serving.model_client import LiveRouting

LEXICON = Path(__file__).resolve().parents[2] / "serving" / "fallback_lexicon.yaml"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_backs_off_and_recovers() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, backoff_s=1.0, backoff_max_s=4.0, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.closed
    breaker.record_success()  # a success resets the count
    for _ in range(2):
        breaker.record_failure()
    assert breaker.allows_calls()
    breaker.record_failure()
    assert breaker.state is BreakerState.open and not breaker.allows_calls()

    clock.now = 1.0  # backoff over: one probe may go
    assert breaker.state is BreakerState.half_open and breaker.allows_calls()
    breaker.record_failure()  # the probe fails: open again for twice as long
    clock.now = 2.9
    assert breaker.state is BreakerState.open
    clock.now = 3.0
    assert breaker.state is BreakerState.half_open
    breaker.record_failure()  # 4 s, then capped at the maximum
    clock.now = 6.9
    assert breaker.state is BreakerState.open
    clock.now = 7.0
    breaker.record_success()
    assert breaker.state is BreakerState.closed
    # After recovering, the backoff starts small again.
    for _ in range(3):
        breaker.record_failure()
    clock.now = 8.0
    assert breaker.state is BreakerState.half_open


def test_fallback_lexicon_hand_worked_cases() -> None:
    lexicon = load_lexicon(LEXICON)
    # 垃圾 2.5 + 差 1.5 = 4 against neutral 0.6: negative dominates.
    probabilities = estimate(lexicon, "太差了，垃圾")
    assert max(probabilities, key=probabilities.__getitem__) == "negative"
    assert sum(probabilities.values()) == pytest.approx(1.0)
    # No cue: neutral 0.6 against 0 and 0 -> e^0.6 / (e^0.6 + 2) = 0.477.
    assert estimate(lexicon, "请问什么时候发货")["neutral"] == pytest.approx(0.4770, abs=1e-3)
    # 满意 2.0 + 喜欢 1.5: positive.
    praise = estimate(lexicon, "非常满意，喜欢")
    assert max(praise, key=praise.__getitem__) == "positive"
    # A negator flips: 不 before 好 makes 好 count as negative 1.0.
    flipped = estimate(lexicon, "不好")
    assert flipped["negative"] > flipped["positive"]


def test_bad_lexicon_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.yaml"
    path.write_text("negative: {差: 1}\n", encoding="utf-8")
    with pytest.raises(LexiconError, match=r"lexicon\.yaml"):
        load_lexicon(path)


def test_api_keys_are_stored_hashed_and_found(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    chat = create_key(path, "chat", ["messages"])
    agent = create_key(path, "agent", ["feedback", "read"])
    stored = path.read_text(encoding="utf-8")
    assert chat not in stored and agent not in stored
    import hashlib

    assert hashlib.sha256(chat.encode()).hexdigest() in stored
    assert digest(chat) == hashlib.sha256(chat.encode()).hexdigest()
    keys = load_keys(path)
    found = find_key(keys, agent)
    assert found is not None and found.name == "agent"
    assert found.scopes == {"feedback", "read"}
    assert find_key(keys, "guess") is None
    assert path.stat().st_mode & 0o077 == 0
    with pytest.raises(KeysFileError, match="exists"):
        create_key(path, "chat", ["messages"])
    with pytest.raises(KeysFileError, match="scopes"):
        create_key(path, "admin", ["everything"])


def test_bad_keys_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(KeysFileError, match="create-key"):
        load_keys(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"name": "x", "sha256": "ab", "scopes": ["messages"]}]))
    with pytest.raises(KeysFileError, match="64 hex"):
        load_keys(bad)
    bad.write_text("{not json")
    with pytest.raises(KeysFileError, match="malformed"):
        load_keys(bad)


def test_live_routing_is_reread_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "live.json"
    routing = LiveRouting(path)
    assert routing.current() is None

    def route(version: str, port: int) -> dict[str, object]:
        return {
            "url": f"http://127.0.0.1:{port}",
            "model_version": version,
            "model_uri": f"models:/m/{version}",
            "pid": 1,
            "start_ticks": 1,
            "port": port,
            "started_at": "2026-12-03T00:00:00+00:00",
            "switched_at": "2026-12-03T00:00:00+00:00",
            "reason": "promote",
        }

    path.write_text(json.dumps(route("1", 5001)))
    first = routing.current()
    assert first is not None and (first.model_version, first.port) == ("1", 5001)
    replacement = tmp_path / "live.tmp"
    replacement.write_text(json.dumps(route("2", 5002)))
    replacement.replace(path)
    second = routing.current()
    assert second is not None and (second.model_version, second.url) == (
        "2",
        "http://127.0.0.1:5002",
    )
    # A corrupt file keeps the last good route rather than dropping to no model.
    path.write_text("{broken")
    assert routing.current() == second


def test_key_digests_from_the_environment_need_no_keys_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from pipelines.settings import Settings

    key = "a-chat-app-key-of-enough-length-0123456789"
    entry = {
        "name": "env-chat",
        "sha256": hashlib.sha256(key.encode()).hexdigest(),
        "scopes": ["messages"],
    }
    monkeypatch.setenv("EMOREG_SERVICE_API_KEYS", json.dumps([entry]))
    settings = Settings(var_dir=tmp_path)
    keys = load_keys(settings.service_api_keys_file, settings.service_api_keys)
    found = find_key(keys, key)
    assert found is not None and (found.name, found.scopes) == ("env-chat", {"messages"})
    monkeypatch.setenv("EMOREG_SERVICE_API_KEYS", json.dumps([{**entry, "sha256": "xyz"}]))
    with pytest.raises(ValueError, match="sha256"):
        Settings(var_dir=tmp_path)
