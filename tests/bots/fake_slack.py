"""A local Slack for tests: the Web API methods the bot calls, and a Socket Mode WebSocket server.

Envelopes and payloads have the shape Slack sends (events_api envelopes with retry_attempt and
retry_reason, event_callback payloads with authorizations); the real slack-bolt app connects to
it through slack_sdk's WebClient(base_url=...) and the built-in Socket Mode client.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlparse

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import serve

TEAM_ID = "T0TEST"
APP_ID = "A0TEST"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
BOT_TOKEN = "xoxb-test-token"
APP_TOKEN = "xapp-test-token"


@dataclass
class Call:
    """One Web API call as the fake received it."""

    method: str
    params: dict
    at: float = field(default_factory=time.monotonic)
    result: dict = field(default_factory=dict)


class FakeSlack:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: dict[str, list[dict]] = {}  # channel → messages, oldest first
        self.acks: set[str] = set()
        self.connections: list = []
        self.updates_by_ts: dict[str, list[Call]] = {}
        self._counter = 0
        self.refuse: dict[str, str] = {}  # Web API method → error it answers with
        self._changed = threading.Condition()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._http.daemon_threads = True
        self._ws = serve(self._socket_mode, "127.0.0.1", 0)
        self.api_url = f"http://127.0.0.1:{self._http.server_address[1]}/api/"
        self.ws_url = f"ws://127.0.0.1:{self._ws.socket.getsockname()[1]}/link/?ticket=test"
        self._threads = [
            threading.Thread(target=self._http.serve_forever, daemon=True),
            threading.Thread(target=self._ws.serve_forever, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._ws.shutdown()

    # -- what tests do -----------------------------------------------------------------------

    def user_says(
        self, text: str, channel: str = "C0GENERAL", thread_ts: str | None = None, user: str = "U0ALICE"
    ) -> dict:
        """Store a user's message and return the event Slack would send for it."""
        im = channel.startswith("D")
        message = {
            "type": "message",
            "user": user,
            "text": text,
            "ts": self._next_ts(),
            "client_msg_id": str(uuid.uuid4()),
            "team": TEAM_ID,
        }
        if thread_ts:
            message["thread_ts"] = thread_ts
        self._store(channel, message)
        event = dict(message, channel=channel, event_ts=message["ts"])
        if im:
            event["channel_type"] = "im"
        else:
            event["type"] = "app_mention"
        return event

    def bot_said(self, text: str, channel: str, thread_ts: str) -> dict:
        """Store a message as if the bot had posted it earlier."""
        message = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "text": text,
            "ts": self._next_ts(),
        }
        message["thread_ts"] = thread_ts
        self._store(channel, message)
        return message

    def send_event(
        self, event: dict, event_id: str | None = None, retry_attempt: int = 0, retry_reason: str = ""
    ) -> tuple[str, str]:
        """Deliver an events_api envelope over Socket Mode; returns (envelope_id, event_id)."""
        event_id = event_id or "Ev" + uuid.uuid4().hex[:10].upper()
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
            "payload": {
                "token": "verification-token",
                "team_id": TEAM_ID,
                "context_team_id": TEAM_ID,
                "api_app_id": APP_ID,
                "event": event,
                "type": "event_callback",
                "event_id": event_id,
                "event_time": int(time.time()),
                "authorizations": [
                    {
                        "enterprise_id": None,
                        "team_id": TEAM_ID,
                        "user_id": BOT_USER_ID,
                        "is_bot": True,
                        "is_enterprise_install": False,
                    }
                ],
                "is_ext_shared_channel": False,
                "event_context": "4-" + uuid.uuid4().hex,
            },
        }
        self.wait_for(lambda: self.connections, what="a Socket Mode connection")
        self.connections[-1].send(json.dumps(envelope))
        return envelope_id, event_id

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "the condition"):
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout} s waiting for {what}; calls: {self.summary()}"
                    )
                self._changed.wait(min(left, 0.05))

    def summary(self) -> list[str]:
        return [f"{c.method} {c.params.get('text', '')[:60]!r}" for c in self.calls]

    def posts(self) -> list[Call]:
        return [c for c in self.calls if c.method == "chat.postMessage"]

    def thread(self, channel: str, thread_ts: str) -> list[dict]:
        """Current messages of a thread, parent first."""
        return [
            m
            for m in self.messages.get(channel, [])
            if m["ts"] == thread_ts or m.get("thread_ts") == thread_ts
        ]

    # -- internals ---------------------------------------------------------------------------

    def _next_ts(self) -> str:
        self._counter += 1
        return f"{1700000000 + self._counter}.{self._counter:06d}"

    def _store(self, channel: str, message: dict) -> None:
        with self._changed:
            self.messages.setdefault(channel, []).append(message)
            self._changed.notify_all()

    def _record(self, call: Call) -> None:
        with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    def _web_api(self, method: str, params: dict, token: str | None) -> dict:
        expected = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if token != expected:
            return {"ok": False, "error": "invalid_auth"}
        if method in self.refuse:
            return {"ok": False, "error": self.refuse[method]}
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://moebox-test.slack.com/",
                "team": "moebox test",
                "user": "moebox",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": BOT_ID,
                "is_enterprise_install": False,
            }
        if method == "apps.connections.open":
            return {"ok": True, "url": self.ws_url}
        if method == "chat.postMessage":
            message = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "text": params["text"]}
            message["ts"] = self._next_ts()
            if params.get("thread_ts"):
                message["thread_ts"] = params["thread_ts"]
            self._store(params["channel"], message)
            return {"ok": True, "channel": params["channel"], "ts": message["ts"], "message": message}
        if method == "chat.update":
            for message in self.messages.get(params["channel"], []):
                if message["ts"] == params["ts"]:
                    message["text"] = params["text"]
                    return {
                        "ok": True,
                        "channel": params["channel"],
                        "ts": params["ts"],
                        "text": params["text"],
                    }
            return {"ok": False, "error": "message_not_found"}
        if method == "conversations.replies":
            return {"ok": True, "messages": self.thread(params["channel"], params["ts"]), "has_more": False}
        return {"ok": False, "error": "unknown_method"}

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _serve(self) -> None:
                url = urlparse(self.path)
                method = url.path.removeprefix("/api/")
                params = dict(parse_qsl(url.query))
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                if raw and "json" in (self.headers.get("Content-Type") or ""):
                    params.update(json.loads(raw))
                elif raw:
                    params.update(parse_qsl(raw))
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ") or params.get(
                    "token"
                )
                call = Call(method, params)
                if method == "chat.update":
                    fake.updates_by_ts.setdefault(params.get("ts"), []).append(call)
                call.result = body = fake._web_api(method, params, token)
                fake._record(call)
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _serve
            do_POST = _serve

        return Handler

    def _socket_mode(self, connection) -> None:
        connection.send(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "debug_info": {"host": "applink-test", "approximate_connection_time": 18060},
                    "connection_info": {"app_id": APP_ID},
                }
            )
        )
        with self._changed:
            self.connections.append(connection)
            self._changed.notify_all()
        try:
            for raw in connection:
                message = json.loads(raw)
                if "envelope_id" in message:
                    with self._changed:
                        self.acks.add(message["envelope_id"])
                        self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            with self._changed:
                self.connections.remove(connection)
                self._changed.notify_all()
