"""Chat prompts against transformers' apply_chat_template, the sandbox, errors and the fallback."""

from __future__ import annotations

import pytest

from engine.chat_template import CHATML_TEMPLATE, THINK_OPEN, ChatTemplate
from engine.errors import ChatTemplateError

CONVERSATIONS = {
    "user": [{"role": "user", "content": "What is 2+2?"}],
    "system": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name a prime number."},
    ],
    "multi-turn": [
        {"role": "system", "content": "You answer in English."},
        {"role": "user", "content": "Hi! 你好"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Write `print(1)` in Python.\n\nThanks."},
        {"role": "assistant", "content": "<think>\nEasy.\n</think>\n\n```python\nprint(1)\n```"},
        {"role": "user", "content": "And in C?"},
    ],
    "ends-with-assistant": [
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "hi"},
    ],
}


@pytest.fixture(scope="module")
def hf_tokenizer(hf_tokenizer_dir):
    from transformers import AutoTokenizer

    loaded = {}

    def get(name):
        if name not in loaded:
            loaded[name] = AutoTokenizer.from_pretrained(str(hf_tokenizer_dir(name)))
        return loaded[name]

    return get


@pytest.mark.parametrize("name", ["deepseek-r1", "qwen-3"])
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_equals_transformers(
    name, conversation, add_generation_prompt, hf_tokenizer, vocab_gguf, metadata_of
):
    """The template as written into a GGUF renders exactly as transformers renders tokenizer_config's."""
    messages = CONVERSATIONS[conversation]
    template = ChatTemplate.from_gguf_metadata(
        metadata_of(vocab_gguf(name, "qwen2" if name == "qwen-3" else "llama"))
    )
    expected = hf_tokenizer(name).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert template.render(messages, add_generation_prompt=add_generation_prompt) == expected


@pytest.mark.parametrize("enable_thinking", [True, False])
def test_template_kwargs_reach_the_template(enable_thinking, hf_tokenizer, vocab_gguf, metadata_of):
    messages = CONVERSATIONS["system"]
    template = ChatTemplate.from_gguf_metadata(metadata_of(vocab_gguf("qwen-3", "qwen2")))
    expected = hf_tokenizer("qwen-3").apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
    )
    assert template.render(messages, enable_thinking=enable_thinking) == expected


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_smollm2_template_equals_transformers(conversation, add_generation_prompt, smollm2_path, metadata_of):
    """SmolLM2's GGUF template through transformers' own Jinja renderer, with the GGUF's BOS/EOS."""
    from transformers.utils.chat_template_utils import render_jinja_template

    meta = metadata_of(smollm2_path)
    template = ChatTemplate.from_gguf_metadata(meta)
    assert not template.is_fallback and (template.bos_token, template.eos_token) == (
        "<|im_start|>",
        "<|im_end|>",
    )
    messages = CONVERSATIONS[conversation]
    rendered, _ = render_jinja_template(
        conversations=[messages],
        chat_template=meta["tokenizer.chat_template"],
        add_generation_prompt=add_generation_prompt,
        bos_token=template.bos_token,
        eos_token=template.eos_token,
    )
    assert template.render(messages, add_generation_prompt=add_generation_prompt) == rendered[0]


def test_force_think(vocab_gguf, metadata_of):
    messages = CONVERSATIONS["user"]
    r1 = ChatTemplate.from_gguf_metadata(metadata_of(vocab_gguf("deepseek-r1")))
    plain = r1.render(messages)
    assert plain.endswith("<｜Assistant｜><think>\n")  # R1's template opens the reasoning itself
    assert r1.render(messages, force_think=True) == plain
    qwen = ChatTemplate.from_gguf_metadata(metadata_of(vocab_gguf("qwen-3", "qwen2")))
    plain = qwen.render(messages)
    assert plain.endswith("<|im_start|>assistant\n")
    assert qwen.render(messages, force_think=True) == plain + THINK_OPEN
    assert qwen.render(messages, add_generation_prompt=False, force_think=True) == qwen.render(
        messages, add_generation_prompt=False
    )
    half = ChatTemplate("{{ 'x<think>' }}")
    assert half.render(messages, force_think=True) == "x" + THINK_OPEN


def test_content_parts_are_joined():
    template = ChatTemplate(None)
    parts = [{"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]}]
    assert template.render(parts) == template.render([{"role": "user", "content": "one\ntwo"}])
    with pytest.raises(ChatTemplateError, match="image_url"):
        template.render([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])


def test_fallback_is_llama_cpp_chatml():
    """No template in the file: llama.cpp's ChatML, checked against llama.cpp's own chatml formatter."""
    llama_cpp = pytest.importorskip("llama_cpp")
    messages = CONVERSATIONS["multi-turn"]
    template = ChatTemplate.from_gguf_metadata({})
    assert template.is_fallback and template.source == CHATML_TEMPLATE
    for add in (True, False):
        chat = (llama_cpp.llama_chat_message * len(messages))(
            *[llama_cpp.llama_chat_message(m["role"].encode(), m["content"].encode()) for m in messages]
        )
        buf = llama_cpp.ctypes.create_string_buffer(8192)
        n = llama_cpp.llama_chat_apply_template(b"chatml", chat, len(messages), add, buf, len(buf))
        assert template.render(messages, add_generation_prompt=add) == buf.raw[:n].decode()


def test_tojson_like_transformers():
    template = ChatTemplate("{{ tools | tojson }}|{{ tools[0] | tojson(indent=2) }}")
    tools = [{"name": "f", "description": '<ü> & "q"'}]
    from transformers.utils.chat_template_utils import render_jinja_template

    expected, _ = render_jinja_template(conversations=[[]], tools=tools, chat_template=template.source)
    assert template.render([], tools=tools) == expected[0]
    assert "<ü>" in expected[0]


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ raise_exception.__globals__ }}",
        "{{ messages.__class__.__init__.__globals__['os'] }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{% set ns = namespace(_x=1) %}",
        "{{ messages.append({'role': 'x'}) }}",
        "{{ messages[0].update({'role': 'x'}) }}",
        "{{ dict.__class__ }}{{ dict.__class__.__mro__ }}",
    ],
)
def test_sandbox_refuses(source):
    with pytest.raises(ChatTemplateError):
        ChatTemplate(source).render(CONVERSATIONS["user"])


def test_errors_carry_the_template_message():
    with pytest.raises(ChatTemplateError, match="does not parse"):
        ChatTemplate("{% for m in messages %}{{ m.content }}")
    with pytest.raises(ChatTemplateError, match="Conversation roles must alternate"):
        ChatTemplate("{{ raise_exception('Conversation roles must alternate user/assistant') }}").render([])
    with pytest.raises(ChatTemplateError, match="role"):
        ChatTemplate(None).render([{"content": "no role"}])
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{{ messages[0].content + 1 }}").render(CONVERSATIONS["user"])


def test_bos_eos_and_strftime():
    template = ChatTemplate(
        "{{ bos_token }}|{{ eos_token }}|{{ strftime_now('%Y') | length }}", bos_token="<s>"
    )
    assert template.render([]) == "<s>||4"


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": 'Weather in a city, e.g. "Zürich" <today>',
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
TOOL_CONVERSATION = [
    {"role": "system", "content": "Use tools when useful."},
    {"role": "user", "content": "Weather in Zürich?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}
        ],
    },
    {"role": "tool", "content": '{"temp": 21}'},
]


def test_tools_equal_transformers(hf_tokenizer, vocab_gguf, metadata_of):
    from engine.gguf_file import open_gguf

    with open_gguf(vocab_gguf("qwen-3", "qwen2")) as model:
        template = ChatTemplate.from_gguf(model)
    expected = hf_tokenizer("qwen-3").apply_chat_template(
        TOOL_CONVERSATION, tools=TOOLS, tokenize=False, add_generation_prompt=True
    )
    assert template.render(TOOL_CONVERSATION, tools=TOOLS) == expected
    assert '"Zürich"' in expected  # tojson keeps non-ASCII as it is
