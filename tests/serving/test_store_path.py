"""The message path through the chat store: WAL mode, the order of commit and model call, the
one-query read of a conversation's state, concurrency, and the WAL checkpoint."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from pipelines.registry.live import LiveRoute, write_live
from pipelines.store.db import make_engine, upgrade
from pipelines.store.models import Conversation, Message, Prediction, Role
from serving import repository as repo
from tests.serving.conftest import Service
from tests.store.store_rows import add_message, add_prediction
from tests.store.test_postgres import postgres_url  # noqa: F401  (fixture)

ANGRY = "包裹还没到，太慢了，非常失望"


def store_file(service: Service) -> Path:
    return service.settings.var_dir / "chats.db"


def stored(database: Path, column: str) -> list[Any]:
    """``table.column`` of every row, read with a connection of its own."""
    table, name = column.split(".")
    connection = sqlite3.connect(database)
    try:
        return [row[0] for row in connection.execute(f"SELECT {name} FROM {table}")]
    finally:
        connection.close()


# --- SQLite pragmas ------------------------------------------------------------------------------


def test_the_sqlite_store_is_in_wal_mode_and_messages_are_committed_durably(
    service: Service,
) -> None:
    assert service.post_message({"conversation_id": "w", "text": ANGRY}).status_code == 200
    regulator = service.app.state.services.regulator
    with regulator.engine.connect() as connection:  # messages
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    # Answers: synced by the next message's commit or the checkpoint, not each on its own.
    assert regulator.answer_engine is not regulator.engine
    with regulator.answer_engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    # A property of the file: any other connection finds it in WAL mode too.
    other = sqlite3.connect(store_file(service))
    try:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        other.close()


def test_other_engines_keep_the_default_journal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'chats.db'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "delete"
    engine.dispose()


def test_the_chat_store_file_itself_catches_up_with_the_commits(service: Service) -> None:
    """Committed rows sit in chats.db-wal first; the service checkpoints them into chats.db
    within about a second, so a copy of chats.db alone (a backup, DVC's hash) holds them."""
    answer = service.post_message({"conversation_id": "cp", "message_id": "m-cp", "text": ANGRY})
    assert answer.status_code == 200
    copy = service.settings.var_dir / "copy.db"
    found: list[Any] = []
    for _ in range(50):
        shutil.copyfile(store_file(service), copy)  # the main file, without its -wal
        found = stored(copy, "predictions.message_id")
        if found:
            break
        threading.Event().wait(0.1)
    assert found == ["m-cp"]
    assert stored(copy, "messages.id") == ["m-cp"]


# --- commit before the model call ----------------------------------------------------------------


@contextmanager
def recording_endpoint(database: Path, statuses: list[int]) -> Iterator[tuple[str, list[Any]]]:
    """An /invocations endpoint that records, per call, the message texts the chat store held
    when the call arrived, then answers with the next status of ``statuses`` (200: a negative
    prediction per text)."""
    seen: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            texts = [row[0] for row in body["dataframe_split"]["data"]]
            in_store = set(stored(database, "messages.text"))
            seen.append((texts, in_store))
            status = statuses.pop(0) if statuses else 200
            record = {"label": "negative", "score": 0.9}
            record |= {"p_negative": 0.9, "p_neutral": 0.05, "p_positive": 0.05}
            payload = json.dumps({"predictions": [record] * len(texts)}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def route_to_url(service: Service, url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    now = datetime.now().isoformat(timespec="seconds")
    route = LiveRoute(url, "7", "models:/stub/7", 0, 0, port, now, now, "test")
    write_live(service.settings.live_file, route)


def test_the_message_is_committed_before_the_model_is_called(service: Service) -> None:
    with recording_endpoint(store_file(service), [200, 500]) as (url, seen):
        route_to_url(service, url)
        ok = service.post_message({"conversation_id": "o", "message_id": "o-1", "text": ANGRY})
        failed = service.post_message(
            {"conversation_id": "o", "message_id": "o-2", "text": "还是没到，太失望了"}
        )
    assert ok.status_code == failed.status_code == 200
    assert ok.json()["degraded"] is False and ok.json()["model_version"] == "7"
    # The endpoint failed: the fallback answered, and nothing was lost.
    assert failed.json()["degraded"] is True
    assert failed.json()["model_version"] == "fallback-lexicon"
    assert len(seen) == 2
    for texts, in_store in seen:
        assert set(texts) <= in_store  # each text was in the store when the model was asked
    conversation = service.conversation("o").json()
    assert [t["message_id"] for t in conversation["turns"]] == ["o-1", "o-2"]
    assert [t["degraded"] for t in conversation["turns"]] == [False, True]


# --- concurrency ---------------------------------------------------------------------------------


def test_concurrent_messages_keep_their_turns_and_are_stored_once(service: Service) -> None:
    """Messages of several conversations at once: each conversation's turns are 0..n-1 in the
    order its messages were answered; a concurrent retry of all of them stores nothing more."""
    requests = [
        {"conversation_id": f"cc{c}", "message_id": f"cc{c}-{i}", "text": f"{ANGRY}{i}"}
        for i in range(6)
        for c in range(4)
    ]
    with httpx.Client(timeout=30, headers=service.headers()) as http:

        def post(body: dict[str, Any]) -> httpx.Response:
            return http.post(f"{service.url}/v1/messages", json=body)

        with ThreadPoolExecutor(12) as pool:
            first = list(pool.map(post, requests))
            again = list(pool.map(post, requests))
    assert all(r.status_code == 200 for r in first + again)
    assert [r.json() for r in first] == [r.json() for r in again]
    for c in range(4):
        turns = service.conversation(f"cc{c}").json()["turns"]
        assert [t["turn"] for t in turns] == list(range(6))
        assert sorted(t["message_id"] for t in turns) == sorted(f"cc{c}-{i}" for i in range(6))
        assert all(t["strategy"] for t in turns)
    database = store_file(service)
    assert len(stored(database, "messages.id")) == len(stored(database, "predictions.id")) == 24


# --- the one query: repository.open_customer_message ---------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'chats.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def open_message(engine: Engine, message_id: str, conversation_id: str) -> repo.OpenedMessage:
    with engine.begin() as connection:
        return repo.open_customer_message(
            connection,
            message_id=message_id,
            conversation_id=conversation_id,
            customer_id="u-1",
            channel=None,
            text="又坏了",
            context={"product": "耳机"},
            now=datetime(2026, 12, 3, 12),
        )


def test_a_new_conversation_is_opened_with_the_first_message(store: Engine) -> None:
    opened = open_message(store, "n-1", "new")
    assert opened.created and opened.message.turn == 0
    assert opened.history == [] and opened.answer is None
    with store.connect() as connection:
        conversation = connection.execute(select(Conversation)).one()
        message = connection.execute(select(Message)).one()
    assert (conversation.id, conversation.customer_id, conversation.channel) == (
        "new",
        "u-1",
        "chat",
    )
    assert (message.id, message.turn, message.role, message.text) == (
        "n-1",
        0,
        "customer",
        "又坏了",
    )
    assert message.context == {"product": "耳机"}


def test_a_conversation_without_messages_is_not_opened_twice(store: Engine) -> None:
    with store.begin() as connection:
        connection.execute(
            Conversation.__table__.insert(),
            {
                "id": "empty",
                "customer_id": "u-0",
                "channel": "app",
                "started_at": datetime(2026, 12, 1),
            },
        )
    opened = open_message(store, "e-1", "empty")
    assert opened.created and opened.message.turn == 0
    with store.connect() as connection:
        rows = connection.execute(select(Conversation.customer_id, Conversation.channel)).all()
    assert rows == [("u-0", "app")]  # the existing conversation, untouched


def test_the_history_holds_earlier_customer_turns_with_their_latest_prediction(
    store: Engine,
) -> None:
    add_message(store, "h-0", "客服在吗", datetime(2026, 12, 3, 9), conversation_id="h", turn=0)
    add_prediction(store, "h-0", "neutral", datetime(2026, 12, 3, 9))
    add_message(
        store,
        "h-1",
        "您好",
        datetime(2026, 12, 3, 9, 1),
        conversation_id="h",
        turn=1,
        role=Role.agent,
    )
    add_message(store, "h-2", "太慢了", datetime(2026, 12, 3, 9, 2), conversation_id="h", turn=2)
    add_prediction(store, "h-2", "neutral", datetime(2026, 12, 3, 9, 2))
    add_prediction(store, "h-2", "negative", datetime(2026, 12, 3, 9, 3))  # a later model's
    add_message(store, "h-3", "在吗", datetime(2026, 12, 3, 9, 4), conversation_id="h", turn=3)
    add_message(store, "x-0", "别的会话", datetime(2026, 12, 3, 9), conversation_id="x", turn=0)
    add_prediction(store, "x-0", "positive", datetime(2026, 12, 3, 9))

    opened = open_message(store, "h-4", "h")
    assert opened.created and opened.message.turn == 4  # after every turn, the agent's too
    # Customer turns only, each with its latest prediction; h-3 has none yet; not x-0.
    assert [(t.text, t.label) for t in opened.history] == [
        ("客服在吗", "neutral"),
        ("太慢了", "negative"),
    ]
    assert opened.history[1].p_negative == pytest.approx(0.8)


def test_a_stored_message_is_found_with_its_answer(store: Engine) -> None:
    add_message(store, "r-0", "太慢了", datetime(2026, 12, 3, 9), conversation_id="r", turn=0)
    add_prediction(store, "r-0", "negative", datetime(2026, 12, 3, 9))
    first = open_message(store, "r-1", "r")
    assert first.created and first.message.turn == 1

    # Stored, not answered (a crash before the prediction): found, with the history before it.
    retry = open_message(store, "r-1", "r")
    assert not retry.created and retry.answer is None and retry.message.turn == 1
    assert [t.text for t in retry.history] == ["太慢了"]

    values = {
        "id": repo.prediction_id("r-1"),
        "message_id": "r-1",
        "model_version": "3",
        "label": "negative",
        "score": 0.9,
        "probabilities": {"negative": 0.9, "neutral": 0.05, "positive": 0.05},
        "strategy": "compensate",
        "topic": "logistics",
        "escalate": False,
        "reply": "抱歉",
        "reply_source": "template",
        "request_id": "req-1",
        "degraded": False,
        "created_at": datetime(2026, 12, 3, 12, 1),
    }
    with store.begin() as connection:
        repo.add_service_prediction(connection, values)
    answered = open_message(store, "r-1", "r")
    assert not answered.created and answered.answer is not None
    assert answered.answer.prediction_id == values["id"]
    assert (answered.answer.message_id, answered.answer.strategy, answered.answer.reply) == (
        "r-1",
        "compensate",
        "抱歉",
    )
    assert answered.answer.probabilities == values["probabilities"]
    with store.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Message)) == 2
        assert connection.scalar(select(func.count()).select_from(Prediction)) == 2
