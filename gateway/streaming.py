"""Streaming responses returned by handlers whose documented body is JSON.

A handler that answers JSON or a stream (`stream: true`) declares its JSON
type for the OpenAPI schema; Litestar would then label the stream with that
handler's media type. These keep the stream's own.
"""

from __future__ import annotations

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
