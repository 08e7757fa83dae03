"""Reasoning split on a synthetic DeepSeek-R1-style model whose template opens <think>.

The model has random weights, so its output never closes the think: the whole
output is reasoning, which is the "template opened the think" and "stopped
inside the think (max_tokens)" cases at once. The closing-tag cases are unit
tests in test_reasoning.py.
"""

from __future__ import annotations

import openai
from sse_reader import chat_text, read_ndjson, read_sse

from gateway.settings import GatewaySettings

MESSAGES = [{"role": "user", "content": "What is 7 * 6?"}]


def client(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0, timeout=300)


def test_output_starts_inside_reasoning(r1_server):
    c = client(r1_server)
    r = c.chat.completions.create(model="tiny-r1", messages=MESSAGES, max_tokens=8, temperature=0)
    msg = r.choices[0].message
    reasoning = msg.model_extra["reasoning_content"]
    assert reasoning and msg.content == ""
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8
    assert r.usage.completion_tokens_details.reasoning_tokens == 8

    body = {
        "messages": MESSAGES,
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with r1_server.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as resp:
        s = read_sse(resp)
    assert chat_text(s.events, "reasoning_content") == reasoning
    assert chat_text(s.events, "content") == ""
    assert s.events[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 8

    # Raw per request: the think stays in content, opened as the prompt opened it.
    raw = c.chat.completions.create(
        model="tiny-r1",
        messages=MESSAGES,
        max_tokens=8,
        temperature=0,
        extra_body={"reasoning_format": "none"},
    )
    content = raw.choices[0].message.content
    assert content.startswith("<think>\n")
    assert content[len("<think>\n") :].lstrip() == reasoning
    assert raw.choices[0].message.model_extra.get("reasoning_content") is None


def test_server_flag_keeps_reasoning_raw(r1, serve):
    live = serve(r1, GatewaySettings(reasoning_format="none"))
    r = client(live).chat.completions.create(model="", messages=MESSAGES, max_tokens=4, temperature=0)
    assert r.choices[0].message.content.startswith("<think>\n")
    assert r.choices[0].message.model_extra.get("reasoning_content") is None
    assert r.usage.completion_tokens_details.reasoning_tokens == 0


def test_ollama_thinking(r1_server):
    with r1_server.client() as http:
        body = {"model": "tiny-r1", "messages": MESSAGES, "options": {"temperature": 0, "num_predict": 6}}
        full = http.post("/api/chat", json={**body, "stream": False}).json()
        assert full["message"]["thinking"] and full["message"]["content"] == ""
        with http.stream("POST", "/api/chat", json=body) as r:
            lines = read_ndjson(r)
        assert "".join(ln["message"].get("thinking", "") for ln in lines) == full["message"]["thinking"]
        raw = http.post("/api/chat", json={**body, "stream": False, "think": False}).json()
        assert raw["message"]["content"].startswith("<think>") and "thinking" not in raw["message"]


def test_force_think_on_a_template_without_it(smol_server):
    r = client(smol_server).chat.completions.create(
        model="smollm2", messages=MESSAGES, max_tokens=4, temperature=0, extra_body={"force_think": True}
    )
    assert r.choices[0].message.model_extra["reasoning_content"]
    assert r.choices[0].message.content == ""
    assert r.usage.completion_tokens_details.reasoning_tokens == r.usage.completion_tokens


def test_chat_prompt_has_exactly_one_bos(r1, r1_server):
    """The template writes the BOS text itself; the HTTP routes must not add a second one."""
    bos = r1.tokenizer.bos_id
    ids, text = r1.encode_chat(MESSAGES)
    assert bos is not None and ids[0] == bos and ids.count(bos) == 1
    one_bos = len(r1.tokenizer.encode(text, add_special=False))
    assert len(ids) == one_bos
    r = client(r1_server).chat.completions.create(
        model="tiny-r1", messages=MESSAGES, max_tokens=1, temperature=0
    )
    assert r.usage.prompt_tokens == one_bos
    with r1_server.client() as http:
        body = {"model": "tiny-r1", "messages": MESSAGES, "stream": False, "options": {"num_predict": 1}}
        ollama = http.post("/api/chat", json=body).json()
    assert ollama["prompt_eval_count"] == one_bos
