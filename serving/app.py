"""The regulation service's FastAPI app: wiring, routes (thin), errors, health and metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.settings import Settings, get_settings
from pipelines.store.db import StoreError, assert_migrated, make_engine
from serving import auth
from serving.breaker import BreakerState, CircuitBreaker
from serving.errors import ApiError, error_body
from serving.fallback import load_lexicon
from serving.metrics import ServiceMetrics
from serving.middleware import RequestContextMiddleware
from serving.model_client import EmotionClient, LiveRouting
from serving.policy import load_policy
from serving.regulation import Regulator
from serving.replies import TemplateWriter
from serving.schemas import ConversationOut, FeedbackIn, FeedbackOut, MessageIn, MessageOut

log = logging.getLogger(__name__)
READY_PING_TIMEOUT_S = 1.0


@dataclass
class Services:
    settings: Settings
    keys: list[auth.ApiKey]
    regulator: Regulator
    metrics: ServiceMetrics


def build_services(settings: Settings, metrics: ServiceMetrics) -> Services:
    """Load and validate everything the service needs; a bad file fails start-up clearly."""
    policy = load_policy(settings.service_policy_path)
    templates = TemplateWriter(settings.service_templates_path)
    templates.check_policy(policy)  # every template carries its strategy's required action
    lexicon = load_lexicon(settings.service_fallback_lexicon_path)
    keys = auth.load_keys(settings.service_api_keys_file, settings.service_api_keys)
    engine = make_engine(settings.database_url, sqlite_wal=True)
    assert_migrated(engine)
    answer_engine = _answer_engine(settings.database_url, engine)
    client = EmotionClient(
        routing=LiveRouting(settings.live_file),
        breaker=CircuitBreaker(
            settings.service_breaker_failures,
            settings.service_breaker_backoff_s,
            settings.service_breaker_backoff_max_s,
        ),
        lexicon=lexicon,
        deadline_s=settings.service_deadline_s,
        batch_max_size=settings.service_batch_max_size,
        batch_max_wait_ms=settings.service_batch_max_wait_ms,
        batch_max_inflight=settings.service_batch_max_inflight,
        on_batch=metrics.observe_batch,
    )
    llm = None
    if settings.llm_base_url:
        from serving.llm import LlmConfig, LlmWriter

        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        llm = LlmWriter(
            LlmConfig(settings.llm_base_url, settings.llm_model, key, settings.llm_timeout_s),
            policy,
            templates,
        )
    regulator = Regulator(
        engine=engine,
        answer_engine=answer_engine,
        client=client,
        policy=policy,
        templates=templates,
        llm=llm,
        metrics=metrics,
        max_text_chars=settings.service_max_text_chars,
    )
    return Services(settings, keys, regulator, metrics)


def _answer_engine(database_url: str, engine: Engine) -> Engine:
    """Where the service stores its answers (prediction, strategy, reply).

    On a SQLite store, an engine whose connections use ``synchronous=NORMAL``: the message is
    committed with ``FULL`` (fsynced before the model is asked: no message is ever lost, not even
    to a power cut), its answer without an fsync of its own (0.3 ms less per message). The answer
    becomes power-safe with the next message's commit or the checkpoint a second later; a power
    cut before that loses the answer only, and the chat app's retry computes it again from the
    stored message (the path that finishes a message stored before a crash). Elsewhere (Postgres)
    the one engine."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return engine
    return make_engine(database_url, sqlite_wal=True, sqlite_synchronous="NORMAL")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, metrics)
        app.state.services = services
        await services.regulator.start()
        await services.regulator.client.start()
        log.info("regulation service ready", extra={"live_file": str(settings.live_file)})
        try:
            yield
        finally:
            await services.regulator.client.stop()
            if services.regulator.llm is not None:
                await services.regulator.llm.aclose()
            await services.regulator.aclose()

    app = FastAPI(
        title="Emotion regulation service",
        version="1",
        description=(
            "Recognises a customer's emotion with the served champion model and answers with a "
            "regulation strategy and a reply. Authenticate with the `X-API-Key` header."
        ),
        lifespan=lifespan,
    )
    app.add_middleware(
        RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.service_max_body_bytes
    )
    _add_error_handlers(app)
    _add_routes(app)
    return app


# ---------------------------------------------------------------------- dependencies

_key_header = APIKeyHeader(name=auth.API_KEY_HEADER, auto_error=False)


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in the thread pool, a hop per request.
    return request.app.state.services


def require_scope(scope: str) -> Callable[..., Coroutine[Any, Any, auth.ApiKey]]:
    async def check(
        presented: Annotated[str | None, Depends(_key_header)],
        svc: Annotated[Services, Depends(services)],
    ) -> auth.ApiKey:
        if not presented:
            raise ApiError(401, "missing_api_key", f"send an API key in {auth.API_KEY_HEADER}")
        key = auth.find_key(svc.keys, presented)
        if key is None:
            raise ApiError(401, "invalid_api_key", "the API key is not known")
        if scope not in key.scopes:
            raise ApiError(403, "insufficient_scope", f"key {key.name!r} lacks the scope {scope!r}")
        return key

    return check


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


# ---------------------------------------------------------------------- routes


def _add_routes(app: FastAPI) -> None:
    error_responses: dict[int | str, dict[str, Any]] = {
        code: {"description": description}
        for code, description in (
            (401, "missing or unknown API key"),
            (403, "the key lacks the route's scope"),
            (413, "body too large"),
            (422, "invalid input"),
        )
    }

    @app.post(
        "/v1/messages",
        response_model=MessageOut,
        responses={**error_responses, 409: {"description": "message_id reused for another text"}},
        dependencies=[Depends(require_scope("messages"))],
        tags=["chat apps"],
    )
    async def post_message(
        body: MessageIn, request: Request, svc: Annotated[Services, Depends(services)]
    ) -> Response:
        """A customer's message: its emotion, the regulation strategy and the reply to send."""
        answer = await svc.regulator.handle_message(body, request_id(request))
        # Serialised here (the model was validated when built): FastAPI would validate the
        # returned model against ``response_model`` again and then encode it in two more passes.
        return Response(answer.model_dump_json(), media_type="application/json")

    @app.post(
        "/v1/feedback",
        response_model=FeedbackOut,
        status_code=201,
        responses={**error_responses, 404: {"description": "unknown message"}},
        dependencies=[Depends(require_scope("feedback"))],
        tags=["agents"],
    )
    async def post_feedback(
        body: FeedbackIn, svc: Annotated[Services, Depends(services)]
    ) -> FeedbackOut:
        """An agent's correction of a message's emotion, or a customer's rating of the reply."""
        return await svc.regulator.add_feedback(body)

    @app.get(
        "/v1/conversations/{conversation_id}",
        response_model=ConversationOut,
        responses={**error_responses, 404: {"description": "unknown conversation"}},
        dependencies=[Depends(require_scope("read"))],
        tags=["agents"],
    )
    async def get_conversation(
        conversation_id: Annotated[str, Path(max_length=64)],
        svc: Annotated[Services, Depends(services)],
    ) -> ConversationOut:
        """Every turn with its emotion, strategy and reply, and the emotional trajectory."""
        return await svc.regulator.conversation(conversation_id)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz(svc: Annotated[Services, Depends(services)]) -> JSONResponse:
        """Store reachable, model endpoint answering, policy loaded."""
        checks = {
            "store": await run_in_threadpool(_store_ok, svc),
            "model": await _model_ok(svc),
            "policy": svc.regulator.policy is not None,
        }
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics_route(svc: Annotated[Services, Depends(services)]) -> Response:
        """Prometheus metrics."""
        client = svc.regulator.client
        route = client.routing.current()
        svc.metrics.set_live_version(route.model_version if route else None)
        svc.metrics.breaker_open.set(client.breaker.state is BreakerState.open)
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _store_ok(svc: Services) -> bool:
    try:
        with svc.regulator.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        log.warning("readiness: store unreachable: %s", exc)
        return False
    return True


async def _model_ok(svc: Services) -> bool:
    route = svc.regulator.client.routing.current()
    if route is None:
        return False
    try:
        async with httpx.AsyncClient(timeout=READY_PING_TIMEOUT_S, trust_env=False) as client:
            response = await client.get(f"{route.url}/ping")
    except httpx.HTTPError:
        return False
    return response.status_code == 200


# ---------------------------------------------------------------------- errors


def _add_error_handlers(app: FastAPI) -> None:
    def respond(
        request: Request, status: int, code: str, message: str, details: Any = None
    ) -> JSONResponse:
        return JSONResponse(
            error_body(code, message, request_id(request), details), status_code=status
        )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return respond(request, exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Only where and what: the offending input is not echoed (it may be personal data).
        details = [
            {"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg"))}
            for error in exc.errors()
        ]
        return respond(request, 422, "invalid_request", "the request is invalid", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return respond(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(StoreError)
    async def store_down(request: Request, exc: StoreError) -> JSONResponse:
        log.error("chat store error: %s", exc)
        return respond(
            request, 503, "store_unavailable", "the chat store is unavailable; retry the request"
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        from sqlalchemy.exc import OperationalError

        if isinstance(exc, OperationalError | asyncio.TimeoutError):
            log.error("chat store error: %s", exc)
            return respond(
                request, 503, "store_unavailable", "the chat store is unavailable; retry"
            )
        log.exception("unexpected error")
        return respond(request, 500, "internal_error", "unexpected error")
