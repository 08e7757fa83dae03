"""The SSE wire format itself, read with httpx: framing, ids, keep-alives, usage, errors."""

from __future__ import annotations

import threading

from sse_reader import chat_text, read_sse

from gateway.settings import GatewaySettings

QUESTION = [{"role": "user", "content": "Name three colours."}]


def test_chunks_on_the_wire(smol_server):
    body = {
        "model": "smollm2",
        "messages": QUESTION,
        "max_tokens": 5,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with smol_server.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-request-id"]
        s = read_sse(r)
    assert s.done and s.order[-1] == "done"
    assert len({e["id"] for e in s.events}) == 1 and s.events[0]["id"].startswith("chatcmpl-")
    assert all(e["object"] == "chat.completion.chunk" for e in s.events)
    assert s.events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in e["choices"][0]["delta"] for e in s.events[1:] if e["choices"])
    final = [e for e in s.events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert len(final) == 1 and final[0]["choices"][0]["finish_reason"] == "length"
    assert set(final[0]["timings"]) >= {
        "prompt_n",
        "prompt_ms",
        "prompt_per_second",
        "predicted_n",
        "predicted_ms",
        "predicted_per_second",
    }
    usage = s.events[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
    assert usage["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}
    assert chat_text(s.events)


def test_keepalive_comments_while_waiting(smollm2, serve):
    # A keep-alive interval far below one forward pass: comments must show up between events.
    live = serve(smollm2, GatewaySettings(keepalive_seconds=0.001))
    body = {
        "messages": [{"role": "user", "content": "Tell me about the sea. " * 20}],
        "max_tokens": 2,
        "stream": True,
    }
    with live.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        s = read_sse(r)
    assert s.comments and set(s.comments) == {"keep-alive"}
    first_content = next(i for i, kind in enumerate(s.order) if kind == "data" and i > 0)
    assert "comment" in s.order[1:first_content]  # while the prompt was being processed
    assert s.done


def test_error_after_stream_started_is_an_error_chunk(smollm2, serve):
    live = serve(smollm2)
    body = {"messages": QUESTION, "max_tokens": 500, "stream": True}
    with live.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")  # the role chunk: the stream has started
        threading.Thread(target=live.host.scheduler.close).start()  # the engine goes away mid-stream
        rest = list(lines)
    payloads = [line[len("data: ") :] for line in rest if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    import json

    error = json.loads(payloads[-2])["error"]
    assert error["code"] == "engine_stopped" and error["type"] == "server_error" and error["message"]
