"""The README's examples, run as a user would type them against a plain `moebox serve`.

An example is the fenced block right after a line `<!-- example -->`: ```sh blocks run
in bash, ```python blocks in this interpreter. The server is `python -m moebox serve`
on the embedded model, as the README's quick start starts it, on a free port; the only
change made to an example is that port (localhost:8080 -> localhost:PORT). Each example
must exit 0 and print a non-empty answer from the model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE = re.compile(r"^<!-- example -->\n```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
README_PORT = "localhost:8080"


def readme_examples() -> list[tuple[str, str]]:
    """(language, code) of every marked example, in README order."""
    return EXAMPLE.findall(README.read_text(encoding="utf-8"))


EXAMPLES = readme_examples()


def _example_id(example: tuple[str, str]) -> str:
    lang, code = example
    return f"{lang}:{code.split()[0]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MOEBOX_API_KEY", None)  # a plain `moebox serve`: no key
    # localhost must not go through a proxy the machine may have configured
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "localhost", "127.0.0.1"]))
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


@pytest.fixture(scope="module")
def server_port(tmp_path_factory) -> int:
    port = free_port()
    log = tmp_path_factory.mktemp("readme") / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moebox", "serve", "--port", str(port), "--ctx-size", "512"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_environment(),
        )
    try:
        deadline = time.monotonic() + 180
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code
            except httpx.TransportError:
                status = None
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, log.read_text()
        yield port
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def _sse_answer(output: str) -> str:
    events = [line[len("data:") :].strip() for line in output.splitlines() if line.startswith("data:")]
    assert events and events[-1] == "[DONE]", output
    text = []
    for event in events[:-1]:
        chunk = json.loads(event)
        assert "error" not in chunk, chunk
        for choice in chunk["choices"]:
            delta = choice.get("delta", {})
            text.append(delta.get("reasoning_content") or delta.get("content") or choice.get("text") or "")
    return "".join(text)


def _json_answer(body: dict) -> str:
    assert "error" not in body, body
    if "choices" in body:  # OpenAI
        choice = body["choices"][0]
        message = choice.get("message") or {}
        return message.get("content") or message.get("reasoning_content") or choice.get("text") or ""
    if "message" in body:  # Ollama /api/chat
        return body["message"].get("content") or body["message"].get("thinking") or ""
    return body.get("response") or body.get("thinking") or ""  # Ollama /api/generate


def answer_text(output: str) -> str:
    """The model's words in an example's output: an SSE stream, JSON or NDJSON, or plain text."""
    output = output.strip()
    if output.startswith("data:"):
        return _sse_answer(output)
    if output.startswith("{"):
        return "".join(_json_answer(json.loads(line)) for line in output.splitlines() if line.strip())
    return output


def test_readme_has_the_examples():
    languages = [lang for lang, _ in EXAMPLES]
    assert languages.count("sh") >= 3 and "python" in languages, languages
    for lang, code in EXAMPLES:
        assert lang in ("sh", "python"), lang
        assert README_PORT in code, code  # the test can point every example at its server


@pytest.mark.parametrize("example", EXAMPLES, ids=_example_id)
def test_readme_example(example, server_port, tmp_path):
    lang, code = example
    code = code.replace(README_PORT, f"localhost:{server_port}")
    if lang == "sh":
        if code.lstrip().startswith("curl") and shutil.which("curl") is None:
            pytest.skip("curl is not installed")
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        script = tmp_path / "example.py"
        script.write_text(code)
        command = [sys.executable, str(script)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=_environment())
    assert done.returncode == 0, (
        f"exit {done.returncode}\n{code}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    )
    assert answer_text(done.stdout).strip(), f"no answer\n{code}\nstdout:\n{done.stdout}"
