"""`moebox serve` end to end: a real process with the embedded default model."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_default_model(tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moebox", "serve", "--port", str(port), "--api-key", "k",
             "--model-name", "default", "--ctx-size", "512"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(url + "/health", timeout=5).status_code
            except httpx.TransportError:
                status = None
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, log.read_text()
        r = httpx.post(
            url + "/v1/chat/completions",
            headers={"Authorization": "Bearer k"},
            json={"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
            timeout=120,
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
        rid = r.headers["x-request-id"]
        assert httpx.get(url + "/v1/models", timeout=10).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    lines = [line for line in log.read_text().splitlines() if f"[{rid}]" in line]
    assert any("moebox.access" in line and "/v1/chat/completions 200" in line for line in lines), lines
    assert any("moebox.generate" in line for line in lines), (
        lines
    )  # the engine thread's line for this request


def test_serve_refuses_a_bad_model_before_opening_the_port(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 100)
    for model, message in ((tmp_path / "missing.gguf", "no such file or directory"), (broken, "version 0")):
        done = subprocess.run(
            [sys.executable, "-m", "moebox", "serve", str(model), "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert message in done.stderr and "Traceback" not in done.stderr
        assert "Uvicorn running" not in done.stderr
