"""Many clients at once: none lost, mixed with another or starved; a client that leaves is cancelled."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
from sse_reader import chat_text, read_sse

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
