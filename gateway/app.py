"""The Litestar application: routes, auth, CORS, request ids, errors, health, metrics.

    app = create_app(lambda: LLM.from_gguf(path), GatewaySettings(api_key="..."))
    uvicorn.run(app)

Everything the routes need (the model host, settings, metrics) is created here
and injected; nothing is global, so tests can run several apps side by side.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import re
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from litestar import Litestar, MediaType, Request, Response, get
from litestar.config.cors import CORSConfig
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.config import OpenAPIConfig
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from engine import __version__
from gateway.anthropic import AnthropicController
from gateway.errors import AuthenticationError, InvalidRequestError, exception_to_response
from gateway.metrics import GatewayMetrics
from gateway.model_host import ModelHost
from gateway.ollama import OllamaController, ollama_root
from gateway.openai import OpenAIController
from gateway.schemas import Health
from gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from engine.llm import LLM

log = logging.getLogger("moebox.gateway")
access_log = logging.getLogger("moebox.access")

REQUEST_ID_HEADER = "x-request-id"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

# The id of the request being handled, for log lines (see RequestIdLogFilter).
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("moebox_request_id", default=None)


class RequestIdLogFilter(logging.Filter):
    """Puts `request_id` on every log record, "-" outside a request. The scheduler
    thread runs each request's steps in its submitter's context, so engine log
    lines about a request carry its id too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get() or "-"
        return True


class RequestContext:
    """Outermost ASGI layer: a request id for every request (the client's X-Request-ID
    if it sent a sane one), set for logging and sent back as a header; an access log
    line and the request counter. Runs around Litestar's router so 404s get it too."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        rid = sent if _CLIENT_ID.match(sent) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)
        status = 500
        t0 = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER.encode(), rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("path_template") or "unmatched"  # templates only: bounded label values
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            access_log.info(
                "%s %s %d %.1f ms", scope["method"], scope["path"], status, (time.perf_counter() - t0) * 1e3
            )
            request_id_var.reset(token)


class APIRequest(Request):
    """Litestar's request, whose JSON body decoding answers 400 to a body nested deeper than the
    decoder goes (msgspec raises RecursionError at Python's recursion limit, about 1,000 levels)."""

    async def json(self):
        try:
            return await super().json()
        except RecursionError:
            raise InvalidRequestError(
                "invalid request body: the JSON nests too deeply for this server; send a flatter body."
            ) from None


def _api_key_guard(api_key: str | None):
    expected = (api_key or "").encode()

    def guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        if not api_key or handler.opt.get("public") or connection.url.path.startswith("/schema"):
            return
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            token = connection.headers.get("x-api-key", "")  # Anthropic's clients
        if not token:
            raise AuthenticationError(
                "missing API key: send the header `Authorization: Bearer YOUR_KEY` (or `x-api-key: YOUR_KEY`)."
            )
        if not hmac.compare_digest(token.strip().encode(), expected):
            raise AuthenticationError("wrong API key: check the key given to `moebox serve --api-key`.")

    return guard


@get("/health", opt={"public": True}, tags=["Server"])
async def health(host: NamedDependency[ModelHost]) -> Response[Health]:
    """200 when the model is loaded and serving; 503 while it loads or if loading failed."""
    if host.state == "ready":
        return Response(Health(status="ok", model=host.name), status_code=200)
    if host.state == "loading":
        return Response(Health(status="loading", message="the model is loading"), status_code=503)
    return Response(
        Health(status="error", message=f"the model failed to load: {host.error}"), status_code=503
    )


@get("/metrics", media_type=MediaType.TEXT, tags=["Server"])
async def metrics_endpoint(
    metrics: NamedDependency[GatewayMetrics], host: NamedDependency[ModelHost]
) -> Response[bytes]:
    """Prometheus metrics."""
    metrics.loaded.set(1 if host.state == "ready" else 0)
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def create_app(model: LLM | Callable[[], LLM], settings: GatewaySettings | None = None) -> Litestar:
    """The gateway for one model: a loaded LLM, or a callable that loads it (then the
    loading runs in a background thread at startup and /health answers 503 until done)."""
    settings = settings or GatewaySettings()
    host = ModelHost(model, settings)
    metrics = GatewayMetrics(host.stats)

    @asynccontextmanager
    async def lifespan(app: Litestar):
        host.start()
        try:
            yield
        finally:
            host.close()

    app = Litestar(
        route_handlers=[
            OpenAIController,
            AnthropicController,
            OllamaController,
            ollama_root,
            health,
            metrics_endpoint,
        ],
        dependencies={
            "host": Provide(lambda: host, sync_to_thread=False, use_cache=True),
            "settings": Provide(lambda: settings, sync_to_thread=False, use_cache=True),
            "metrics": Provide(lambda: metrics, sync_to_thread=False, use_cache=True),
        },
        guards=[_api_key_guard(settings.api_key)],
        cors_config=CORSConfig(allow_origins=list(settings.cors_origins), expose_headers=[REQUEST_ID_HEADER])
        if settings.cors_origins
        else None,
        exception_handlers={Exception: exception_to_response},
        request_class=APIRequest,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(title="moebox", version=__version__, path="/schema"),
        lifespan=[lifespan],
        logging_config=None,
    )
    app.state.host = host
    app.state.metrics = metrics
    app.asgi_handler = RequestContext(app.asgi_handler, metrics)
    return app
