"""Many clients at once: none lost, mixed with another or starved; a client that leaves is cancelled."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
from conftest import BLOCK_CHUNKS
from sse_reader import chat_text, read_sse

from gateway.settings import GatewaySettings

TOPICS = [
    "the sea", "mountains", "bread", "cats", "rain", "music", "trains", "gardens",
    "the moon", "chess", "coffee", "rivers", "winter", "bees", "libraries", "bicycles",
]  # fmt: skip


def body(topic: str, stream: bool) -> dict:
    return {
        "messages": [{"role": "user", "content": f"Write one sentence about {topic}."}],
        "max_tokens": 6,
        "temperature": 0,
        "stream": stream,
    }


def test_16_concurrent_streams_each_get_their_own_text(smol_server):
    with smol_server.client() as http:
        alone = {
            t: http.post("/v1/chat/completions", json=body(t, False)).json()["choices"][0]["message"][
                "content"
            ]
            for t in TOPICS
        }
    assert len(set(alone.values())) > 8  # the prompts really lead to different texts

    def stream(topic: str) -> tuple[str, set[str], bool]:
        with (
            httpx.Client(base_url=smol_server.url, timeout=600) as http,
            http.stream("POST", "/v1/chat/completions", json=body(topic, True)) as r,
        ):
            s = read_sse(r)
        return chat_text(s.events), {e["id"] for e in s.events}, s.done

    with ThreadPoolExecutor(len(TOPICS)) as pool:
        results = dict(zip(TOPICS, pool.map(stream, TOPICS), strict=True))
    ids = set()
    for topic, (text, chunk_ids, done) in results.items():
        assert done, topic
        assert text == alone[topic], topic
        assert len(chunk_ids) == 1
        ids |= chunk_ids
    assert len(ids) == len(TOPICS)
    s = smol_server.wait_idle()
    assert s.kv_cache_bytes == 0


def test_disconnect_cancels_and_frees(smol_server):
    before = smol_server.wait_idle()
    req = {
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 400,
        "stream": True,
    }
    with smol_server.client() as http, http.stream("POST", "/v1/chat/completions", json=req) as r:
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                seen += 1
                if seen == 3:
                    break
        assert smol_server.stats().running == 1
        assert smol_server.stats().kv_cache_bytes > 0
    # The connection is closed: the engine must see the cancel and free the sequence.
    after = smol_server.wait_idle(timeout=30)
    assert after.cancelled == before.cancelled + 1
    assert after.finished == before.finished
    assert after.running == 0 and after.kv_cache_bytes == 0 and after.kv_cache_tokens == 0


def test_ollama_disconnect_cancels(smol_server):
    before = smol_server.wait_idle()
    req = {"model": "smollm2", "prompt": "Tell me a long story.", "options": {"num_predict": 400}}
    with smol_server.client() as http, http.stream("POST", "/api/generate", json=req) as r:
        for n, _ in enumerate(r.iter_lines()):
            if n == 2:
                break
    after = smol_server.wait_idle(timeout=30)
    assert after.cancelled == before.cancelled + 1 and after.finished == before.finished
    assert after.kv_cache_bytes == 0


def test_non_streamed_request_is_cancelled_when_the_client_leaves(smol_server):
    before = smol_server.wait_idle()
    # Greedy: this prompt then always runs to max_tokens (several seconds). Sampled at the
    # default temperature, some replies end after ~50 tokens, within the 0.5 s.
    req = {
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 400,
        "temperature": 0,
    }
    with httpx.Client(base_url=smol_server.url, timeout=httpx.Timeout(300, read=0.5)) as http:
        try:
            http.post("/v1/chat/completions", json=req)
        except httpx.ReadTimeout:
            pass  # the client gives up after 0.5 s and closes the connection
        else:
            raise AssertionError("400 tokens came back within 0.5 s; the test needs a slower request")
    after = smol_server.wait_idle(timeout=30)
    assert after.cancelled == before.cancelled + 1 and after.finished == before.finished
    assert after.kv_cache_bytes == 0


def test_32_clients_x_10_requests_none_lost_mixed_or_starved(smollm2, serve):
    """32 clients, each sending 10 streamed requests one after the other: every answer arrives
    whole, with one id, and is the text its prompt gives alone (prompt chunks of one block keep
    it independent of prefix-cache hits and of the batch, see conftest.BLOCK_CHUNKS)."""
    live = serve(smollm2, GatewaySettings(max_running=32, max_waiting=64, **BLOCK_CHUNKS))
    with live.client() as http:
        alone = {
            t: http.post("/v1/chat/completions", json=body(t, False)).json()["choices"][0]["message"][
                "content"
            ]
            for t in TOPICS
        }

    def client(i: int) -> list[tuple[str, str, set[str], bool, str | None]]:
        out = []
        with httpx.Client(base_url=live.url, timeout=600) as http:
            for j in range(10):
                topic = TOPICS[(i + j) % len(TOPICS)]
                with http.stream("POST", "/v1/chat/completions", json=body(topic, True)) as r:
                    s = read_sse(r)
                finish = next(
                    (
                        e["choices"][0]["finish_reason"]
                        for e in s.events
                        if e["choices"][0].get("finish_reason")
                    ),
                    None,
                )
                out.append((topic, chat_text(s.events), {e["id"] for e in s.events}, s.done, finish))
        return out

    with ThreadPoolExecutor(32) as pool:
        results = [r for rs in pool.map(client, range(32)) for r in rs]
    assert len(results) == 320
    ids = set()
    for topic, text, chunk_ids, done, finish in results:
        assert done and finish in ("stop", "length"), topic
        assert text == alone[topic], topic
        assert len(chunk_ids) == 1
        ids |= chunk_ids
    assert len(ids) == 320
    s = live.wait_idle()
    assert s.kv_cache_bytes == 0 and s.kv_blocks_used == 0 and s.finished == 320 + len(TOPICS)
    assert s.steps < s.step_tokens  # steps batched several requests


def test_queue_bound_answers_429_with_retry_after(smollm2, serve):
    live = serve(smollm2, GatewaySettings(max_running=1, max_waiting=1))
    long = {
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 300,
        "temperature": 0,  # greedy, this prompt runs to max_tokens (a sampled reply may end early)
        "stream": True,
    }
    with live.client() as http, http.stream("POST", "/v1/chat/completions", json=long) as running:
        lines = running.iter_lines()  # kept: a dropped generator may close the response (a cancel)
        for line in lines:  # until its first token: it is running now
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                break
        with live.client() as http2, http2.stream("POST", "/v1/chat/completions", json=long):
            assert live.stats().waiting == 1
            r = http.post("/v1/chat/completions", json=body("bees", False))
            assert r.status_code == 429
            assert r.headers["Retry-After"] == "1"
            assert r.json()["error"]["code"] == "queue_full"
    s = live.wait_idle()
    assert s.kv_blocks_used == 0


def test_prefix_cache_serves_the_next_turn_of_a_chat(smollm2, serve):
    live = serve(smollm2, GatewaySettings(**BLOCK_CHUNKS))
    turn = [
        {"role": "system", "content": "You are terse. " * 8},
        {"role": "user", "content": "Name a colour."},
    ]
    with live.client() as http:
        first = http.post(
            "/v1/chat/completions", json={"messages": turn, "max_tokens": 8, "temperature": 0}
        ).json()
        turn += [first["choices"][0]["message"], {"role": "user", "content": "And a fruit?"}]
        second = http.post(
            "/v1/chat/completions", json={"messages": turn, "max_tokens": 8, "temperature": 0}
        ).json()
        metrics = http.get("/metrics").text
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    # at least every full block of the first prompt (the system prompt alone is > 32 tokens)
    assert cached >= first["usage"]["prompt_tokens"] // 16 * 16 > 0 and cached % 16 == 0
    assert cached < second["usage"]["prompt_tokens"]
    ratio = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("moebox_prefix_cache_hit_ratio ")
    )
    assert ratio > 0
