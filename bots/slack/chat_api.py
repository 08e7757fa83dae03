"""Streaming client of an OpenAI-compatible /v1/chat/completions endpoint (the moebox gateway or any other)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
from httpx_sse import SSEError, connect_sse

from bots.slack.errors import ModelServerRejected, ModelServerTimeout, ModelServerUnreachable


@dataclass
class Delta:
    """One streamed piece of the completion."""

    content: str | None = None
    reasoning: str | None = None


@dataclass
class Usage:
    """What the server reports at the end of a stream (`stream_options.include_usage`)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class Finish:
    """Why the model stopped (`finish_reason`: "stop", "length", ...)."""

    reason: str


class ChatAPI:
    """Talks HTTP to the model server; never imports the engine."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        read_timeout: float = 600.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._read_timeout = read_timeout
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            # A fresh connection per request, so abort() knows every socket a stream reads from.
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self._sockets_lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._model_lock = threading.Lock()
        self._discovered_model: str | None = None

    def close(self) -> None:
        self.abort()
        self._client.close()

    def abort(self) -> None:
        """Break every open request now, even one blocked waiting on a silent server.

        Closing a socket does not wake a thread blocked reading it; shutting it down does.
        """
        with self._sockets_lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def default_model(self) -> str:
        """The first model the server lists (GET /models), remembered once found."""
        with self._model_lock:
            if self._discovered_model is None:
                with self._errors_as_model_server_errors():
                    response = self._client.get("/models", timeout=httpx.Timeout(30.0))
                    self._raise_for_status(response)
                    models = [m.get("id") for m in response.json().get("data", []) if m.get("id")]
                if not models:
                    raise ModelServerRejected(
                        f"The model server at {self.base_url} lists no models. Start it with a model, "
                        "or set MOEBOX_MODEL."
                    )
                self._discovered_model = models[0]
            return self._discovered_model

    def stream_chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[Delta | Finish | Usage]:
        """Yield Delta pieces as they arrive, Finish when the model stops, then Usage if the server sends it.

        A stream that ends before the model finished (no finish_reason, no [DONE]) raises
        ModelServerUnreachable: the connection broke.

        Setting `cancel` ends the stream at the next event and closes the connection, which
        tells the server to stop generating.
        """
        body: dict = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if max_tokens:
            body["max_tokens"] = max_tokens
        with (
            self._errors_as_model_server_errors(),
            self._tracking_sockets() as trace,
            connect_sse(
                self._client, "POST", "/chat/completions", json=body, extensions={"trace": trace}
            ) as source,
        ):
            self._raise_for_status(source.response)
            finished = False
            for event in source.iter_sse():
                if cancel is not None and cancel.is_set():
                    return
                if event.data.strip() == "[DONE]":
                    return
                try:
                    chunk = json.loads(event.data)
                except json.JSONDecodeError:
                    raise ModelServerRejected(
                        f"The model server at {self.base_url} sent a stream event that is not JSON: "
                        f"{event.data[:200]!r}"
                    ) from None
                if "error" in chunk:
                    raise ModelServerRejected(f"The model server stopped with an error: {_error_text(chunk)}")
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                    if delta.get("content") or reasoning:
                        yield Delta(content=delta.get("content"), reasoning=reasoning)
                    if choice.get("finish_reason"):
                        finished = True
                        yield Finish(choice["finish_reason"])
                usage = chunk.get("usage")
                if usage:
                    yield Usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))
            if not finished:
                raise ModelServerUnreachable(
                    f"The connection to the model server at {self.base_url} ended before the model "
                    "finished. Try again; if it keeps happening, check the engine's log."
                )

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        response.read()
        try:
            detail = _error_text(response.json())
        except (json.JSONDecodeError, AttributeError):
            detail = response.text[:300].strip() or response.reason_phrase
        hint = {
            401: " Check MOEBOX_API_KEY.",
            403: " Check MOEBOX_API_KEY.",
            404: " Check MOEBOX_API_BASE (it should end in /v1) and MOEBOX_MODEL.",
            503: " The server is busy or still loading the model; try again in a minute.",
        }.get(response.status_code, "")
        raise ModelServerRejected(
            f"The model server answered HTTP {response.status_code}: {detail.rstrip('.')}.{hint}"
        )

    @contextlib.contextmanager
    def _tracking_sockets(self) -> Iterator[Callable[[str, dict], None]]:
        """An httpcore trace hook that registers each new connection's socket for abort()."""
        opened: list[socket.socket] = []

        def trace(event: str, info: dict) -> None:
            if event == "connection.connect_tcp.complete" and info.get("return_value") is not None:
                sock = info["return_value"].get_extra_info("socket")
                if sock is not None:
                    opened.append(sock)
                    with self._sockets_lock:
                        self._sockets.add(sock)

        try:
            yield trace
        finally:
            with self._sockets_lock:
                self._sockets.difference_update(opened)

    @contextlib.contextmanager
    def _errors_as_model_server_errors(self) -> Iterator[None]:
        """Turn httpx and SSE failures into ModelServerError with a message for the user."""
        try:
            yield
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise ModelServerUnreachable(
                f"Could not reach the model server at {self.base_url} ({_reason(error)}). "
                "Is the engine running? Check MOEBOX_API_BASE."
            ) from error
        except httpx.ReadTimeout as error:
            raise ModelServerTimeout(
                f"The model server at {self.base_url} sent nothing for {self._read_timeout:g} s. It may be "
                "overloaded or stuck; try again later (MOEBOX_TIMEOUT sets how long to wait)."
            ) from error
        except httpx.TransportError as error:
            raise ModelServerUnreachable(
                f"The connection to the model server at {self.base_url} broke ({_reason(error)}). "
                "Try again; if it keeps happening, check the engine's log."
            ) from error
        except SSEError as error:
            raise ModelServerRejected(
                f"The model server at {self.base_url} did not answer with an event stream ({error}). "
                "Check that MOEBOX_API_BASE points at an OpenAI-compatible /v1 endpoint."
            ) from error


def _reason(error: Exception) -> str:
    return str(error) or type(error).__name__


def _error_text(body: object) -> str:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or error)
        return str(error if error != body else body.get("detail") or body)
    return str(body)
