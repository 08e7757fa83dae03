"""Streaming responses returned by handlers whose documented body is JSON.

A handler that answers JSON or a stream (`stream: true`) declares its JSON
type for the OpenAPI schema; Litestar would then label the stream with that
handler's media type. These keep the stream's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.response import ServerSentEvent, Stream


class EventStream(ServerSentEvent):
    """Litestar's Server-Sent Events response, always `text/event-stream`."""

    def to_asgi_response(self, *args, media_type=None, **kwargs):
        return super().to_asgi_response(*args, media_type=self.media_type, **kwargs)


class NDJSONStream(Stream):
    """One JSON object per line (Ollama's streaming format)."""

    def __init__(self, content, **kwargs):
        super().__init__(content, media_type="application/x-ndjson", **kwargs)

    def to_asgi_response(self, *args, media_type=None, **kwargs):
        return super().to_asgi_response(*args, media_type=self.media_type, **kwargs)


def _add_stream_media_type(operation: Operation, media_type: str, description: str) -> None:
    ok = (operation.responses or {}).get("200")
    if isinstance(ok, OpenAPIResponse) and ok.content is not None:
        ok.content[media_type] = OpenAPIMediaType(
            schema=Schema(type=OpenAPIType.STRING, description=description)
        )


@dataclass
class SSEOperation(Operation):
    """OpenAPI operation whose 200 answer is JSON, or `text/event-stream` when `stream` is true."""

    def __post_init__(self) -> None:
        _add_stream_media_type(self, "text/event-stream", "`data: {chunk}` events, then `data: [DONE]`")


@dataclass
class NDJSONOperation(Operation):
    """OpenAPI operation whose 200 answer is JSON, or NDJSON when `stream` is true."""

    def __post_init__(self) -> None:
        _add_stream_media_type(
            self, "application/x-ndjson", "one JSON object per line; the last has done: true"
        )
