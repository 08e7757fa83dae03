"""A local OpenAI-compatible server for tests: scripted /v1/chat/completions SSE streams, and misbehaviour."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "fake-r1"


@dataclass
class Script:
    """What the next completions stream: delta dicts with a pause before each, and how it ends."""

    deltas: list[dict] = field(default_factory=list)
    pause: float = 0.0
    usage: dict | None = None
    # "ok", "http500", "hang" (headers then silence), "hang_before_headers", "drop" (close mid-stream),
    # "error_event" (an error object in the stream, as vLLM and llama.cpp send when generation fails)
    behaviour: str = "ok"
    drop_after: int = 0


def reasoning_script(thinking: list[str], answer: list[str], pause: float = 0.0) -> Script:
    """R1 behind a server that splits reasoning out: reasoning_content deltas, then content."""
    deltas = [{"role": "assistant", "content": None, "reasoning_content": t} for t in thinking]
    deltas += [{"content": a, "reasoning_content": None} for a in answer]
    usage = {"prompt_tokens": 11, "completion_tokens": len(deltas), "total_tokens": 11 + len(deltas)}
    return Script(deltas=deltas, pause=pause, usage=usage)


def content_script(pieces: list[str], pause: float = 0.0, usage: bool = True) -> Script:
    """Everything in content (think tags included, if any), as llama.cpp does without a reasoning parser."""
    deltas = [{"content": p} for p in pieces]
    u = {"prompt_tokens": 11, "completion_tokens": len(deltas), "total_tokens": 11 + len(deltas)}
    return Script(deltas=deltas, pause=pause, usage=u if usage else None)


class FakeModelServer:
    def __init__(self, script: Script | None = None) -> None:
        self.script = script or content_script(["Hello", " there."])
        self.requests: list[dict] = []
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length))
                fake.requests.append(request)
                script = fake.script
                if script.behaviour == "http500":
                    self._json(500, {"error": {"message": "CUDA out of memory", "type": "server_error"}})
                    return
                if script.behaviour == "hang_before_headers":
                    fake._stop.wait(30)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                if script.behaviour == "hang":
                    self.wfile.flush()
                    fake._stop.wait(30)
                    return
                if script.behaviour == "error_event":
                    self._event({"error": {"message": "context length exceeded", "code": 400}})
                    return
                created = int(time.time())
                for i, delta in enumerate(script.deltas):
                    if script.behaviour == "drop" and i == script.drop_after:
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if script.pause and fake._stop.wait(script.pause):
                        return
                    chunk = {
                        "id": "chatcmpl-test",
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": MODEL,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                    }
                    self._event(chunk)
                last = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": MODEL,
                }
                self._event(dict(last, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
                if script.usage and request.get("stream_options", {}).get("include_usage"):
                    self._event(dict(last, choices=[], usage=script.usage))
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

            def _event(self, body: dict) -> None:
                self.wfile.write(f"data: {json.dumps(body)}\n\n".encode())
                self.wfile.flush()

        return Handler


def refused_url() -> str:
    """A /v1 base URL on a port where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
