"""Fixtures of the regulation service tests: real `mlflow models serve` processes with a tiny
keyword model, and the service itself run by uvicorn on 127.0.0.1.

The model servers are started once for the package and stopped by PID at its end; each test gets
its own var/ (chat store, API keys, live routing file) and its own service instance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.registry.live import LiveRoute, write_live
from pipelines.registry.server import (
    ServerHandle,
    free_port,
    start_server,
    stop_all,
    stop_server,
    wait_ready,
)
from pipelines.settings import Settings

MODEL_NAME = "emo-serving-tests"


@dataclass(frozen=True)
class ModelServers:
    """Two registered versions of the keyword model, each served by its own process."""

    settings: Settings  # of the MLflow store the servers read
    v1: ServerHandle
    v2: ServerHandle

    def start_extra(self, version: str, port: int | None = None) -> ServerHandle:
        handle = start_server(self.settings, version, port=port)
        wait_ready(handle, self.settings.model_server_ready_timeout_s)
        return handle

    def stop(self, handle: ServerHandle) -> None:
        stop_server(self.settings, handle.pid, handle.start_ticks)


@pytest.fixture(scope="package")
def model_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServers]:
    import mlflow

    from pipelines.settings import get_settings
    from pipelines.tracking import configure_mlflow
    from tests.helpers_models import KeywordModel, log_pyfunc, use_embedded_stores

    root = tmp_path_factory.mktemp("serving-models")
    with pytest.MonkeyPatch.context() as mp:
        use_embedded_stores(mp, root)
        settings = get_settings().model_copy(update={"registered_model_name": MODEL_NAME})
        configure_mlflow(settings)
        run_id = log_pyfunc(KeywordModel(), run_name="keyword")
        for _ in range(2):
            mlflow.register_model(f"runs:/{run_id}/model", MODEL_NAME)
        handles = [start_server(settings, version) for version in ("1", "2")]
        try:
            for handle in handles:
                wait_ready(handle, settings.model_server_ready_timeout_s)
            yield ModelServers(settings, handles[0], handles[1])
        finally:
            stop_all(settings)
    get_settings.cache_clear()


@dataclass
class Service:
    url: str
    settings: Settings
    chat_key: str
    agent_key: str
    app: Any

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"X-API-Key": key if key is not None else self.chat_key}

    def post_message(
        self, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/messages",
            json=body,
            headers=headers if headers is not None else self.headers(),
            timeout=30,
        )

    def post_feedback(self, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/feedback", json=body, headers=self.headers(self.agent_key), timeout=30
        )

    def conversation(self, conversation_id: str) -> httpx.Response:
        return httpx.get(
            f"{self.url}/v1/conversations/{conversation_id}",
            headers=self.headers(self.agent_key),
            timeout=30,
        )

    def route_to(self, handle: ServerHandle) -> None:
        write_live(self.settings.live_file, LiveRoute.for_server(handle, "test"))


def service_settings(root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "var_dir": root / "var",
        "data_dir": root / "data",
        "service_deadline_s": 2.0,
        "service_breaker_backoff_s": 0.2,
        "service_breaker_backoff_max_s": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


def prepare_var(settings: Settings) -> tuple[str, str]:
    """A migrated chat store and two API keys (chat app, agent) under the settings' var/."""
    from pipelines.store.db import upgrade
    from serving.auth import create_key

    upgrade(settings.database_url)
    chat = create_key(settings.service_api_keys_file, "chat-app", ["messages"])
    agent = create_key(settings.service_api_keys_file, "agent-desk", ["feedback", "read"])
    return chat, agent


@contextmanager
def running_app(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on a free 127.0.0.1 port; stop it afterwards."""
    import uvicorn

    port = free_port("127.0.0.1")
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start (see the log above)")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def service(
    tmp_path: Path, model_servers: ModelServers, request: pytest.FixtureRequest
) -> Iterator[Service]:
    """The service on a fresh store, routed to model version 1 (overrides: a ``service_settings``
    marker's kwargs)."""
    from serving.app import create_app

    marker = request.node.get_closest_marker("service_settings")
    settings = service_settings(tmp_path, **(marker.kwargs if marker else {}))
    chat, agent = prepare_var(settings)
    write_live(settings.live_file, LiveRoute.for_server(model_servers.v1, "test"))
    app = create_app(settings)
    with running_app(app) as url:
        yield Service(url, settings, chat, agent, app)
