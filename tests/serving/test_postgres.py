"""The service on the production store: PostgreSQL on 127.0.0.1:5432 (a private schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from pipelines.registry.live import LiveRoute, write_live
from pipelines.store.db import make_engine, session_scope
from pipelines.store.models import Message, Prediction
from tests.serving.conftest import ModelServers, prepare_var, running_app, service_settings
from tests.store.test_postgres import postgres_url  # noqa: F401  (fixture)

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_service(
    tmp_path: Path,
    model_servers: ModelServers,
    postgres_url: str,  # noqa: F811
) -> Iterator[tuple[str, str, str, str]]:
    from serving.app import create_app

    settings = service_settings(tmp_path, database_url=postgres_url)
    chat, agent = prepare_var(settings)  # migrates the Postgres schema, creates the keys
    write_live(settings.live_file, LiveRoute.for_server(model_servers.v1, "test"))
    with running_app(create_app(settings)) as url:
        yield url, chat, agent, postgres_url


def test_service_stores_and_reads_on_postgres(pg_service: tuple[str, str, str, str]) -> None:
    url, chat, agent, database_url = pg_service
    texts = ["快递还没到，太慢了", "还是没到，太失望了"]
    answers = [
        httpx.post(
            f"{url}/v1/messages",
            json={"conversation_id": "pg-1", "message_id": f"pg-m{i}", "text": text},
            headers={"X-API-Key": chat},
            timeout=30,
        )
        for i, text in enumerate(texts)
    ]
    assert [a.status_code for a in answers] == [200, 200]
    feedback = httpx.post(
        f"{url}/v1/feedback",
        json={"message_id": "pg-m0", "label": "negative", "source": "agent"},
        headers={"X-API-Key": agent},
        timeout=30,
    )
    assert feedback.status_code == 201

    conversation = httpx.get(
        f"{url}/v1/conversations/pg-1", headers={"X-API-Key": agent}, timeout=30
    ).json()
    assert [t["message_id"] for t in conversation["turns"]] == ["pg-m0", "pg-m1"]
    assert [t["strategy"] for t in conversation["turns"]] == [a.json()["strategy"] for a in answers]
    assert conversation["turns"][0]["feedback"][0]["label"] == "negative"

    engine = make_engine(database_url)
    assert engine.dialect.name == "postgresql"
    with session_scope(engine) as session:
        stored = session.scalars(select(Message.id).order_by(Message.turn)).all()
        predictions = session.scalars(select(Prediction.message_id)).all()
    engine.dispose()
    assert stored == ["pg-m0", "pg-m1"] and sorted(predictions) == ["pg-m0", "pg-m1"]
