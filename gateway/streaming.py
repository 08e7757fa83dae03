"""Streaming responses returned by handlers whose documented body is JSON.

A handler that answers JSON or a stream (`stream: true`) declares its JSON
type for the OpenAPI schema; Litestar would then label the stream with that
handler's media type. These keep the stream's own.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Reference, Schema
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


def _stream_schema(operation: Operation, media_type: str, item: Schema | Reference) -> None:
    ok = (operation.responses or {}).get("200")
    if isinstance(ok, OpenAPIResponse) and ok.content is not None:
        ok.content[media_type] = OpenAPIMediaType(schema=item)


@dataclass
class SSEOperation(Operation):
    """OpenAPI operation whose 200 answer is JSON, or `text/event-stream` when `stream` is true."""

    def __post_init__(self) -> None:
        event = Schema(
            type=OpenAPIType.OBJECT,
            description="one event: `data` holds a JSON chunk (or an `error` object), the last one `[DONE]`",
            properties={"data": Schema(type=OpenAPIType.STRING), "event": Schema(type=OpenAPIType.STRING)},
            required=["data"],
        )
        _stream_schema(self, "text/event-stream", event)


@dataclass
class NDJSONOperation(Operation):
    """OpenAPI operation whose 200 answer is JSON, or NDJSON (one such object per line) when streaming."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if not isinstance(ok, OpenAPIResponse) or not ok.content or "application/json" not in ok.content:
            return
        line = ok.content["application/json"].schema
        error = Reference(ref="#/components/schemas/OllamaError")
        _stream_schema(self, "application/x-ndjson", Schema(one_of=[line, error]))
