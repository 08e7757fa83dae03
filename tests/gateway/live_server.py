"""A real uvicorn server in a thread on a free port, as `moebox serve` runs the app."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx
import uvicorn

from engine.scheduler import SchedulerStats
from gateway.app import create_app
from gateway.model_host import ModelHost
from gateway.settings import GatewaySettings


@dataclass
class LiveServer:
    url: str
    host: ModelHost
    server: uvicorn.Server
    thread: threading.Thread

    def stats(self) -> SchedulerStats:
        stats = self.host.stats()
        assert stats is not None
        return stats

    def wait_idle(self, timeout: float = 60.0) -> SchedulerStats:
        """Wait until no request is waiting or running (cancelled ones are freed by then)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.stats()
            if s.waiting == 0 and s.running == 0:
                return s
            time.sleep(0.05)
        raise AssertionError(f"the engine did not go idle: {self.stats()}")

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=300, **kwargs)


def start_server(model, settings: GatewaySettings | None = None, *, wait_ready: bool = True) -> LiveServer:
    app = create_app(model, settings or GatewaySettings())
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    live = LiveServer(f"http://127.0.0.1:{port}", app.state.host, server, thread)
    if wait_ready:
        live.host.ready_event.wait(120)
    return live


def stop_server(live: LiveServer) -> None:
    live.server.should_exit = True
    live.thread.join(30)
