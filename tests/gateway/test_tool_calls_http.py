"""Tool calls over HTTP: the official `openai` client and Ollama's API on the synthetic DeepSeek-R1
model (its real template and tokenizer).

Random weights never call a tool, so two kinds of test:
- the real engine: tools, tool_choice and tool history reach the prompt exactly as
  `LLM.encode_chat` renders them (the count of prompt tokens), and whatever the model writes
  after a forced call's opening comes back without an error;
- a scripted engine (this file only): the real gateway and template, with the model's output
  replaced by a script in DeepSeek's tool call syntax, so the parsing, the response and stream
  shapes and finish_reason are checked on known text.
"""

from __future__ import annotations

import json

import openai
import pytest
from sse_reader import read_ndjson

from engine.tool_calls import DEEPSEEK_V3, ToolCall

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    },
]
QUESTION = [{"role": "user", "content": "Weather in Paris, and the time?"}]
HISTORY = [
    *QUESTION,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_a", "content": "18 C"},
    {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
]
CALLS = [ToolCall("get_weather", '{"city": "Paris"}'), ToolCall("get_time", "{}")]


def client(live) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.url + "/v1", api_key="x", max_retries=0, timeout=300)


# --- the real engine ---------------------------------------------------------------------


def test_tools_and_history_reach_the_prompt(r1_server, r1):
    c = client(r1_server)
    for messages, tools in ((QUESTION, TOOLS), (HISTORY, TOOLS), (HISTORY, None)):
        extra = {"tools": tools} if tools else {}
        r = c.chat.completions.create(model="tiny-r1", messages=messages, max_tokens=2, **extra)
        ids, text = r1.encode_chat(messages, tools=tools)
        assert r.usage.prompt_tokens == len(ids)
        if tools:
            assert '"get_weather"' in text and "<｜tool▁calls▁begin｜>" in text
    none = c.chat.completions.create(
        model="tiny-r1", messages=QUESTION, max_tokens=2, tools=TOOLS, tool_choice="none"
    )
    assert none.usage.prompt_tokens == len(r1.encode_chat(QUESTION)[0])


@pytest.mark.parametrize("stream", [False, True])
def test_forced_call_on_random_weights_never_fails(r1_server, r1, stream):
    """The prompt ends with the opening of a get_weather call; random tokens after it do not make
    one, and come back as content."""
    choice = {"type": "function", "function": {"name": "get_weather"}}
    body = {"model": "tiny-r1", "messages": QUESTION, "tools": TOOLS, "tool_choice": choice, "max_tokens": 6}
    ids, text = r1.encode_chat(QUESTION, tools=TOOLS, force_tool="get_weather")
    assert text.endswith(DEEPSEEK_V3.opening("get_weather"))
    c = client(r1_server)
    if not stream:
        r = c.chat.completions.create(**body)
        assert r.usage.prompt_tokens == len(ids)
        assert r.choices[0].finish_reason in ("length", "stop", "tool_calls")
        return
    chunks = list(c.chat.completions.create(**body, stream=True))
    assert chunks[-1].choices[0].finish_reason in ("length", "stop", "tool_calls")


def test_unknown_tool_choice_is_400(r1_server):
    with r1_server.client() as http:
        r = http.post(
            "/v1/chat/completions",
            json={
                "messages": QUESTION,
                "tools": TOOLS,
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
            },
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice"
        bad_tools = {"messages": QUESTION, "tools": [{"type": "function", "function": {"description": "x"}}]}
        assert http.post("/v1/chat/completions", json=bad_tools).status_code == 400


def test_ollama_tools_reach_the_prompt(r1_server, r1):
    history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "18 C", "tool_name": "get_weather"},
    ]
    with r1_server.client() as http:
        r = http.post(
            "/api/chat",
            json={
                "model": "tiny-r1",
                "messages": history,
                "tools": TOOLS,
                "stream": False,
                "options": {"num_predict": 2},
            },
        )
        assert r.status_code == 200, r.text
        assert "tools" in http.post("/api/show", json={"model": "tiny-r1"}).json()["capabilities"]
    openai_history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ],
        },
        {"role": "tool", "content": "18 C"},
    ]
    assert r.json()["prompt_eval_count"] == len(r1.encode_chat(openai_history, tools=TOOLS)[0])


# --- a scripted engine -------------------------------------------------------------------


R1_ANSWER = "I need the weather and the time.\n</think>\n\n" + DEEPSEEK_V3.write(CALLS)


def _calls(message_calls) -> list[tuple[str, dict]]:
    return [(c.function.name, json.loads(c.function.arguments)) for c in message_calls]


def test_tool_calls_answer(scripted):
    live, scheduler = scripted
    scheduler.script = R1_ANSWER
    r = client(live).chat.completions.create(model="tiny-r1", messages=QUESTION, tools=TOOLS)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.model_extra["reasoning_content"] == "I need the weather and the time.\n"
    assert _calls(choice.message.tool_calls) == [("get_weather", {"city": "Paris"}), ("get_time", {})]
    ids = [c.id for c in choice.message.tool_calls]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)
    assert all(c.type == "function" for c in choice.message.tool_calls)


def test_tool_calls_stream(scripted):
    live, scheduler = scripted
    scheduler.script = R1_ANSWER
    chunks = list(
        client(live).chat.completions.create(model="tiny-r1", messages=QUESTION, tools=TOOLS, stream=True)
    )
    deltas = [d for ch in chunks for d in (ch.choices[0].delta.tool_calls or [])]
    # per call: one delta with id, type and name (arguments ""), then one with the arguments
    assert [(d.index, d.id is not None, d.function.name) for d in deltas] == [
        (0, True, "get_weather"),
        (0, False, None),
        (1, True, "get_time"),
        (1, False, None),
    ]
    args = {}
    for d in deltas:
        args[d.index] = args.get(d.index, "") + (d.function.arguments or "")
    assert [json.loads(args[i]) for i in (0, 1)] == [{"city": "Paris"}, {}]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == ""


def test_parallel_tool_calls_false_keeps_the_first(scripted):
    live, scheduler = scripted
    scheduler.script = R1_ANSWER
    c = client(live)
    r = c.chat.completions.create(model="tiny-r1", messages=QUESTION, tools=TOOLS, parallel_tool_calls=False)
    assert _calls(r.choices[0].message.tool_calls) == [("get_weather", {"city": "Paris"})]
    chunks = list(
        c.chat.completions.create(
            model="tiny-r1", messages=QUESTION, tools=TOOLS, parallel_tool_calls=False, stream=True
        )
    )
    assert {d.index for ch in chunks for d in (ch.choices[0].delta.tool_calls or [])} == {0}


@pytest.mark.parametrize(
    "answer",
    [
        "done.\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{city: Paris}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        'done.\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city"',
    ],
)
def test_malformed_call_is_content(scripted, answer):
    live, scheduler = scripted
    scheduler.script = answer
    c = client(live)
    r = c.chat.completions.create(model="tiny-r1", messages=QUESTION, tools=TOOLS)
    raw = answer.split("</think>\n\n", 1)[1]
    assert r.choices[0].message.content == raw and r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason == "stop"
    chunks = list(c.chat.completions.create(model="tiny-r1", messages=QUESTION, tools=TOOLS, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == raw


def test_without_tools_calls_are_not_read(scripted):
    live, scheduler = scripted
    scheduler.script = R1_ANSWER
    r = client(live).chat.completions.create(model="tiny-r1", messages=QUESTION)
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == DEEPSEEK_V3.write(CALLS)


def test_forced_call_reads_the_prompts_opening(scripted, r1):
    """The prompt holds the call's opening; the model writes the rest, which completes one call."""
    live, scheduler = scripted
    opening = DEEPSEEK_V3.opening("get_weather")
    scheduler.script = DEEPSEEK_V3.write(CALLS[:1])[len(opening) :]
    choice = {"type": "function", "function": {"name": "get_weather"}}
    r = client(live).chat.completions.create(
        model="tiny-r1", messages=QUESTION, tools=TOOLS, tool_choice=choice
    )
    assert _calls(r.choices[0].message.tool_calls) == [("get_weather", {"city": "Paris"})]
    assert r.choices[0].message.content is None
    assert r1.tokenizer.decode(scheduler.prompts[-1]).endswith("</think>\n\n" + opening)


def test_ollama_tool_calls(scripted):
    live, scheduler = scripted
    scheduler.script = R1_ANSWER
    body = {"model": "tiny-r1", "messages": QUESTION, "tools": TOOLS}
    with live.client() as http:
        r = http.post("/api/chat", json={**body, "stream": False}).json()
        assert r["message"]["tool_calls"] == [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"function": {"name": "get_time", "arguments": {}}},
        ]
        assert r["message"]["content"] == "" and r["done_reason"] == "stop"
        with http.stream("POST", "/api/chat", json=body) as resp:
            lines = read_ndjson(resp)
    streamed = [c for line in lines for c in line["message"].get("tool_calls", [])]
    assert streamed == r["message"]["tool_calls"]
    assert lines[-1]["done"] is True
