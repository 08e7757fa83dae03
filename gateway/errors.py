"""Every error the gateway answers, mapped once to a status code and OpenAI's error shape
(Ollama's on /api, Anthropic's on /v1/messages).

Our own HTTP-level errors are `APIError` subclasses; engine errors (engine.errors)
and Litestar's own (validation, 404, 405, 413) are mapped here too. Anything
else is a bug: it is logged with its traceback and the client gets a 500 with
the request id and no traceback.
"""

from __future__ import annotations

import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec

from engine.errors import (
    ChatTemplateError,
    ContextLengthError,
    EngineStoppedError,
    MoeboxError,
    PromptError,
    QueueFullError,
)
from gateway.schemas import AnthropicErrorBody, AnthropicErrorDetail, ErrorBody, ErrorDetail, OllamaError

log = logging.getLogger("moebox.gateway")


class APIError(Exception):
    """An error answered to the client as is."""

    status_code = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequestError(APIError):
    """A body that decodes but asks for something we cannot do (n > 1, images, ...)."""


class ModelNotFoundError(APIError):
    status_code = 404
    code = "model_not_found"


class AuthenticationError(APIError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelLoadingError(APIError):
    status_code = 503
    type = "server_error"
    code = "model_loading"


class ModelUnavailableError(APIError):
    status_code = 503
    type = "server_error"
    code = "model_unavailable"


class ClientDisconnectedError(APIError):
    """The client left before a non-streamed answer was ready (nobody reads this answer)."""

    status_code = 499
    type = "invalid_request_error"
    code = "client_closed_request"


_HTTP_TYPES = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


def describe(exc: BaseException, request_id: str | None = None) -> tuple[int, ErrorDetail]:
    """The status code and OpenAI error object for any exception."""
    if isinstance(exc, APIError):
        return exc.status_code, ErrorDetail(
            message=exc.message, type=exc.type, param=exc.param, code=exc.code
        )
    if isinstance(exc, ContextLengthError):
        return 400, ErrorDetail(
            message=str(exc), type="invalid_request_error", param="messages", code="context_length_exceeded"
        )
    if isinstance(exc, PromptError | ChatTemplateError):
        return 400, ErrorDetail(message=str(exc), type="invalid_request_error", param=None, code=None)
    if isinstance(exc, QueueFullError):
        return 429, ErrorDetail(message=str(exc), type="rate_limit_error", param=None, code="queue_full")
    if isinstance(exc, EngineStoppedError):
        return 503, ErrorDetail(message=str(exc), type="server_error", param=None, code="engine_stopped")
    if isinstance(exc, MoeboxError):
        return 500, ErrorDetail(message=str(exc), type="server_error", param=None, code=None)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        if status >= 500:
            log.error("internal error: %s", exc.detail)
            return status, _internal(request_id)
        message = exc.detail
        if isinstance(exc, ValidationException) and exc.extra:
            message = "invalid request body: " + "; ".join(_validation_items(exc.extra))
        type_, code = _HTTP_TYPES.get(status, ("invalid_request_error", None))
        if status == 404 and message == "Not Found":
            message = "no such route; the API lives under /v1 (OpenAI, Anthropic) and /api (Ollama)."
        if status == 413:
            message = "the request body is too large for this server; send a shorter one."
        return status, ErrorDetail(message=message, type=type_, param=None, code=code)
    log.error("internal error", exc_info=exc)
    return 500, _internal(request_id)


def _internal(request_id: str | None) -> ErrorDetail:
    return ErrorDetail(
        message=f"internal server error (request id {request_id}); the server log has the details.",
        type="server_error",
        param=None,
        code=None,
    )


def _validation_items(extra: object) -> list[str]:
    items = extra if isinstance(extra, list) else [extra]
    out = []
    for item in items:
        if isinstance(item, dict):
            key = item.get("key")
            msg = item.get("message", "")
            out.append(f"{msg} at `{key}`" if key else str(msg))
        else:
            out.append(str(item))
    return out


def is_ollama_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def is_anthropic_path(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    499: "invalid_request_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, detail: ErrorDetail) -> AnthropicErrorBody:
    """Anthropic's error object for a status and our error detail."""
    kind = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return AnthropicErrorBody(error=AnthropicErrorDetail(type=kind, message=detail.message))


def exception_to_response(request: Request, exc: Exception) -> Response:
    """Litestar exception handler: one mapping for every route (Ollama routes get Ollama's shape)."""
    request_id = request.scope.get("state", {}).get("request_id")
    status, detail = describe(exc, request_id)
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status == 429:
        headers["Retry-After"] = "1"
    content: ErrorBody | OllamaError | AnthropicErrorBody
    if is_ollama_path(request.url.path):
        content = OllamaError(error=detail.message)
    elif is_anthropic_path(request.url.path):
        content = anthropic_error(status, detail)
    else:
        content = ErrorBody(error=detail)
    return Response(content=content, status_code=status, headers=headers)


# Error statuses every API route documents in the OpenAPI schema.
ERROR_STATUSES = {
    400: "Invalid body or parameter, or a prompt longer than the context.",
    401: "Missing or wrong API key.",
    404: "Unknown model.",
    413: "Body too large.",
    429: "Too many requests waiting.",
    503: "The model is still loading.",
}


def error_responses(body: type) -> dict[int, ResponseSpec]:
    """OpenAPI response specs for ERROR_STATUSES with the API's own error body type."""
    return {
        code: ResponseSpec(data_container=body, description=desc) for code, desc in ERROR_STATUSES.items()
    }
