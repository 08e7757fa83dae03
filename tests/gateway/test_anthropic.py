"""The Messages API (/v1/messages) with the official `anthropic` client: SmolLM2 for text, the
synthetic R1-style model for thinking blocks, and the scripted engine (tests/gateway/scripted.py)
on R1's template for tool_use blocks."""

from __future__ import annotations

import json

import anthropic
import pytest
from sse_reader import read_sse

from engine.tool_calls import DEEPSEEK_V3, ToolCall
from gateway.settings import GatewaySettings

SYSTEM = "You answer in one word."
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
MULTI_TURN = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]},
    {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
]


def client(live, key: str = "unused") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live.url, api_key=key, max_retries=0, timeout=300)


def _prompt_len(llm, messages, **kwargs) -> int:
    return len(llm.encode_chat(messages, **kwargs)[0])


def test_text_system_and_multi_turn(smol_server, smollm2):
    c = client(smol_server)
    r = c.messages.create(
        model="smollm2", system=SYSTEM, messages=QUESTION, max_tokens=6, extra_body={"temperature": 0}
    )
    assert r.type == "message" and r.role == "assistant" and r.id.startswith("msg_")
    assert [b.type for b in r.content] == ["text"] and r.content[0].text
    assert r.stop_reason in ("end_turn", "max_tokens") and r.stop_sequence is None
    assert 0 < r.usage.output_tokens <= 6
    expected = _prompt_len(smollm2, [{"role": "system", "content": SYSTEM}, *QUESTION])
    assert r.usage.input_tokens + (r.usage.cache_read_input_tokens or 0) == expected
    r = c.messages.create(model="smollm2", messages=MULTI_TURN, max_tokens=2)
    openai_style = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        MULTI_TURN[0] | {"content": "Name a colour."},
    ]
    assert r.usage.input_tokens + (r.usage.cache_read_input_tokens or 0) == _prompt_len(smollm2, openai_style)
    count = c.messages.count_tokens(model="smollm2", system=SYSTEM, messages=QUESTION)
    assert count.input_tokens == expected


def test_stream_equals_non_stream(smol_server):
    c = client(smol_server)
    body = {"model": "smollm2", "messages": QUESTION, "max_tokens": 8, "extra_body": {"temperature": 0}}
    full = c.messages.create(**body)
    with c.messages.stream(**body) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == full.content[0].text == final.content[0].text
    assert final.stop_reason == full.stop_reason and final.usage.output_tokens == full.usage.output_tokens

    with (
        smol_server.client() as http,
        http.stream("POST", "/v1/messages", json={**body, "stream": True}) as resp,
    ):
        assert resp.headers["content-type"].startswith("text/event-stream")
        s = read_sse(resp)
    kinds = [e["type"] for e in s.events]
    assert s.names == kinds  # each event's name is its type
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[1] == "content_block_start" and kinds[-3] == "content_block_stop"
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert s.events[0]["message"]["content"] == [] and s.events[0]["message"]["stop_reason"] is None


def test_thinking_blocks(r1_server):
    c = client(r1_server)
    r = c.messages.create(model="tiny-r1", messages=QUESTION, max_tokens=6, extra_body={"temperature": 0})
    # random weights never close the think: all of it is a thinking block
    assert [b.type for b in r.content] == ["thinking"] and r.content[0].thinking
    assert r.stop_reason == "max_tokens"
    with c.messages.stream(
        model="tiny-r1", messages=QUESTION, max_tokens=6, extra_body={"temperature": 0}
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].thinking == r.content[0].thinking
    assert {e.delta.type for e in events if e.type == "content_block_delta"} == {"thinking_delta"}


def test_errors_in_anthropics_shape(smollm2, serve):
    live = serve(smollm2, GatewaySettings(api_key="sekrit", model_name="smollm2"))
    with pytest.raises(anthropic.AuthenticationError) as e:
        client(live, "wrong").messages.create(model="smollm2", messages=QUESTION, max_tokens=1)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "authentication_error"
    c = client(live, "sekrit")  # sent as x-api-key
    assert c.messages.create(model="smollm2", messages=QUESTION, max_tokens=1).content
    with pytest.raises(anthropic.NotFoundError) as e:
        c.messages.create(model="claude-nope", messages=QUESTION, max_tokens=1)
    assert (
        e.value.body["error"]["type"] == "not_found_error"
        and "claude-nope" in e.value.body["error"]["message"]
    )
    with live.client(headers={"x-api-key": "sekrit"}) as http:
        for body in (
            {"model": "smollm2", "messages": QUESTION},  # no max_tokens
            {
                "model": "smollm2",
                "max_tokens": 1,
                "messages": [{"role": "user", "content": [{"type": "nope"}]}],
            },
            {
                "model": "smollm2",
                "max_tokens": 1,
                "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}],
            },
        ):
            r = http.post("/v1/messages", json=body)
            assert r.status_code == 400, r.text
            assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
            assert r.json()["error"]["message"] and "Traceback" not in r.text


# --- tool use, on a scripted engine ---------------------------------------------------------

TOOLS = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
    {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
]
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": TOOLS[0]["input_schema"],
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": TOOLS[1]["input_schema"]}},
]
CALLS = [ToolCall("get_weather", '{"city": "Paris"}'), ToolCall("get_time", "{}")]
R1_ANSWER = "Two tools.\n</think>\n\n" + DEEPSEEK_V3.write(CALLS)


def test_tool_use(scripted, r1):
    live, scheduler = scripted
    scheduler.script = R1_ANSWER
    c = client(live)
    r = c.messages.create(model="tiny-r1", messages=QUESTION, tools=TOOLS, max_tokens=100)
    assert [b.type for b in r.content] == ["thinking", "tool_use", "tool_use"]
    assert r.content[0].thinking == "Two tools.\n"
    assert [(b.name, b.input) for b in r.content[1:]] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]
    assert all(b.id.startswith("toolu_") for b in r.content[1:])
    assert r.stop_reason == "tool_use"
    assert scheduler.prompts[-1] == r1.encode_chat(QUESTION, tools=OPENAI_TOOLS)[0]

    with c.messages.stream(model="tiny-r1", messages=QUESTION, tools=TOOLS, max_tokens=100) as stream:
        final = stream.get_final_message()
    assert [(b.type, getattr(b, "name", None), getattr(b, "input", None)) for b in final.content] == [
        ("thinking", None, None),
        ("tool_use", "get_weather", {"city": "Paris"}),
        ("tool_use", "get_time", {}),
    ]
    assert final.stop_reason == "tool_use"

    one = c.messages.create(
        model="tiny-r1",
        messages=QUESTION,
        tools=TOOLS,
        max_tokens=100,
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )
    assert [b.type for b in one.content] == ["thinking", "tool_use"]


def test_tool_results_reach_the_prompt(scripted, r1):
    live, scheduler = scripted
    scheduler.script = "It is 18 C."
    history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Use the tool.", "signature": ""},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"}]},
    ]
    c = client(live)
    r = c.messages.create(model="tiny-r1", messages=history, tools=TOOLS, max_tokens=100)
    assert [b.type for b in r.content] == ["text"] and r.content[0].text == "It is 18 C."
    assert r.stop_reason == "end_turn"
    openai_history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "Use the tool.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18 C"},
    ]
    ids = r1.encode_chat(openai_history, tools=OPENAI_TOOLS)[0]
    assert scheduler.prompts[-1] == ids
    count = c.messages.count_tokens(model="tiny-r1", messages=history, tools=TOOLS)
    assert count.input_tokens == len(ids)


def test_forced_tool(scripted, r1):
    live, scheduler = scripted
    opening = DEEPSEEK_V3.opening("get_time")
    scheduler.script = DEEPSEEK_V3.write(CALLS[1:])[len(opening) :]
    r = client(live).messages.create(
        model="tiny-r1",
        messages=QUESTION,
        tools=TOOLS,
        max_tokens=100,
        tool_choice={"type": "tool", "name": "get_time"},
    )
    assert [(b.type, b.name, b.input) for b in r.content] == [("tool_use", "get_time", {})]
    assert r1.tokenizer.decode(scheduler.prompts[-1]).endswith(opening)
    with pytest.raises(anthropic.BadRequestError):
        client(live).messages.create(
            model="tiny-r1",
            messages=QUESTION,
            tools=TOOLS,
            max_tokens=1,
            tool_choice={"type": "tool", "name": "nope"},
        )


def test_malformed_tool_use_is_text(scripted):
    live, scheduler = scripted
    broken = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{oops}\n```<｜tool▁call▁end｜>"
    scheduler.script = "ok\n</think>\n\n" + broken
    r = client(live).messages.create(model="tiny-r1", messages=QUESTION, tools=TOOLS, max_tokens=100)
    assert [b.type for b in r.content] == ["thinking", "text"] and r.content[1].text == broken
    assert r.stop_reason == "end_turn"
    with (
        live.client() as http,
        http.stream(
            "POST",
            "/v1/messages",
            json={
                "model": "tiny-r1",
                "messages": QUESTION,
                "tools": TOOLS,
                "max_tokens": 100,
                "stream": True,
            },
        ) as resp,
    ):
        s = read_sse(resp)
    text = "".join(e["delta"].get("text", "") for e in s.events if e["type"] == "content_block_delta")
    assert text == broken
    assert json.dumps(s.events[-1]) == '{"type": "message_stop"}'
