"""Chat prompts from the Jinja template a GGUF carries (``tokenizer.chat_template``).

Rendered the way Hugging Face transformers' ``apply_chat_template`` renders it: jinja2's
ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, ``raise_exception``,
``strftime_now``, a ``tojson`` that does not escape HTML, ``namespace`` that refuses underscore
names, ``{% generation %}`` blocks, and the variables ``messages``, ``tools``,
``add_generation_prompt``, ``bos_token`` and ``eos_token``. A template is untrusted input (it comes
with a downloaded file): the sandbox refuses access to underscore attributes and to methods that
modify objects, so a template cannot reach Python internals. Where transformers renders such an
access as an empty value, moebox stops with ChatTemplateError.

Tools (OpenAI's ``tools`` list, ``tool_calls`` on assistant messages, ``tool`` messages) go through
the template's own tool support where it has one. What a template lacks is filled in as llama.cpp's
minja does: tool definitions it does not render are described in the system prompt with an example
call in the model's own syntax (engine/tool_calls.py), calls it does not render are written into the
assistant's text in that syntax, tool results it drops become user messages. What the template
supports is found once by rendering probe conversations (``ChatTemplate.tool_support``).

A file without a template gets llama.cpp's fallback, ChatML (``CHATML_TEMPLATE_SRC`` in
llama.cpp's common/chat.cpp)::

    <|im_start|>{role}\\n{content}<|im_end|>\\n ... <|im_start|>assistant\\n
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import ChatTemplateError
from engine.tool_calls import GENERIC, ToolCall, ToolCallFormat, detect_format

# llama.cpp's CHATML_TEMPLATE_SRC, used there when the model file has no template.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}\n"
    "  {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "  {{- '<|im_start|>assistant\n' -}}\n"
    "{%- endif -%}"
)

THINK_OPEN = "<think>\n"
THINK_CLOSE = "</think>\n\n"

# Names a message's reasoning may come under; templates read the first (as in transformers).
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}``: marks assistant text for training masks; renders its body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return caller()


class _TemplateDict:
    """``dict(...)`` for templates, without exposing the dict type itself."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """jinja2's namespace, refusing underscore-prefixed names (as transformers does)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - jinja2's signature trick
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"templates cannot set underscore names on a namespace ({name!r})"
            )


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # Jinja's own tojson escapes HTML characters; chat templates expect plain JSON.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _StrictSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox, failing at the first unsafe attribute instead of yielding an
    empty undefined value, so a template probing Python internals stops with an error."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise jinja2.exceptions.SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is not allowed"
        )


def _environment() -> ImmutableSandboxedEnvironment:
    env = _StrictSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


def _plain(value: Any) -> Any:
    """JSON-like copy of template input, so that no caller object with methods reaches the template."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    raise ChatTemplateError(f"chat messages may hold only JSON values; got a {type(value).__name__}.")


def _message_for_template(message: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(message, Mapping) or "role" not in message:
        raise ChatTemplateError(f"each chat message needs a 'role' (and usually 'content'); got {message!r}.")
    out = _plain(message)
    content = out.get("content")
    if isinstance(content, list):
        # OpenAI-style content parts: moebox serves text models, so the text parts are joined.
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ChatTemplateError(
                    f"message content part of type {kind!r} is not supported; send text parts only."
                )
            texts.append(str(part.get("text", "")))
        out["content"] = "\n".join(texts)
    reasoning = next((out[k] for k in _REASONING_FIELDS if out.get(k) is not None), None)
    if reasoning is not None:
        out = {"thinking": reasoning, **out, "reasoning_content": reasoning}
    return out


@dataclass(frozen=True)
class ToolSupport:
    """What a chat template does with tools, found by rendering probe conversations."""

    format: ToolCallFormat  # the syntax the model writes calls in (GENERIC: the one moebox asks for)
    renders_tools: bool  # writes the tool definitions (the `tools` variable) itself
    renders_calls: bool  # writes an assistant message's `tool_calls`
    renders_results: bool  # writes `tool` messages
    object_arguments: bool  # reads a call's arguments as an object (`| tojson`), not as JSON text
    empty_call_content: str | None = None  # the content of a message of calls alone: None or ""


_PROBE_NAME = "moebox_probe_function"
_PROBE_ARGS = {"moebox_probe_argument": 7}
_PROBE_RESULT = "moebox probe result"
_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": _PROBE_NAME,
        "description": "probe",
        "parameters": {"type": "object", "properties": {"moebox_probe_argument": {"type": "integer"}}},
    },
}


def _probe_call(arguments: Any, content: str | None = None) -> dict:
    call = {"id": "call_probe", "type": "function", "function": {"name": _PROBE_NAME, "arguments": arguments}}
    return {"role": "assistant", "content": content, "tool_calls": [call]}


def tool_instructions(tools: Sequence[Mapping[str, Any]] | None, fmt: ToolCallFormat) -> str:
    """System prompt text that tells a model how to call tools: the tools themselves (for a template
    that does not describe them) and the syntax to answer in, with an example."""
    example = fmt.write([ToolCall("tool_name", '{"argument_name": "value"}')])
    listed = (
        "You can call the following tools (JSON Schema of each one's parameters):\n"
        + json.dumps(list(tools), ensure_ascii=False, indent=2)
        + "\n\n"
        if tools
        else ""
    )
    return (
        listed + "To call a tool, answer with exactly this, with the tool's name and its arguments as a JSON "
        "object, and nothing after it:\n"
        + example
        + ("" if fmt.anchored else "\n\nSeveral calls may follow one another.")
    )


def _forced_tool_text(force_tool: bool | str) -> str:
    if isinstance(force_tool, str):
        return f"In this answer you must call the tool `{force_tool}`."
    return "In this answer you must call at least one of the tools."


class ChatTemplate:
    """A model's chat template, ready to turn messages into the prompt text."""

    def __init__(
        self, source: str | None, *, bos_token: str | None = None, eos_token: str | None = None
    ) -> None:
        """source: the Jinja template; None or "" means llama.cpp's ChatML fallback."""
        self.is_fallback = not source
        self.source = source or CHATML_TEMPLATE
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self._template = _environment().from_string(self.source)
        except jinja2.TemplateSyntaxError as e:
            raise ChatTemplateError(
                f"the model's chat template does not parse (line {e.lineno}): {e.message}. "
                "Pass a working template instead of the one in the file."
            ) from None

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping[str, Any]) -> ChatTemplate:
        """Template and BOS/EOS token texts from GGUF metadata (strings as str, arrays as lists)."""
        source = meta.get("tokenizer.chat_template") or meta.get("tokenizer.chat_template.tool_use")
        tokens = meta.get("tokenizer.ggml.tokens") or []

        def token_text(key: str) -> str | None:
            token_id = meta.get(key)
            return tokens[token_id] if isinstance(token_id, int) and 0 <= token_id < len(tokens) else None

        return cls(
            source,
            bos_token=token_text("tokenizer.ggml.bos_token_id"),
            eos_token=token_text("tokenizer.ggml.eos_token_id"),
        )

    @classmethod
    def from_gguf(cls, model: Any) -> ChatTemplate:
        """From an opened GGUF (``engine.gguf_file.GGUFModel``)."""
        return cls.from_gguf_metadata(model.metadata)

    def _render_probe(
        self, messages: list[dict], tools: list | None = None, add_generation_prompt=False
    ) -> str:
        try:
            return self._template.render(
                messages=messages,
                tools=tools,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "",
                eos_token=self.eos_token or "",
            )
        except Exception:  # a template that refuses the probe does not support what it probes
            return ""

    @cached_property
    def tool_support(self) -> ToolSupport:
        """What this template does with tools (found once, by rendering probe conversations)."""
        user = {"role": "user", "content": "probe question"}
        renders_tools = _PROBE_NAME in self._render_probe([user], [_PROBE_TOOL])
        renders_tools = renders_tools and _PROBE_NAME not in self._render_probe([user])
        args_text = json.dumps(_PROBE_ARGS)
        result = {"role": "tool", "tool_call_id": "call_probe", "name": _PROBE_NAME, "content": _PROBE_RESULT}
        # DeepSeek-V3's template writes calls only when content is None, QwQ's fails on None before a
        # tool result; some read arguments as text, others as an object. Take the first way that works
        # with a tool result after the call, else the first that works without.
        found: list[tuple[str, bool, str | None, bool]] = []
        without_result: list[tuple[str, bool, str | None, bool]] = []
        for empty in (None, ""):
            for arguments in (args_text, dict(_PROBE_ARGS)):
                with_result = self._render_probe([user, _probe_call(arguments, empty), result])
                alone = self._render_probe([user, _probe_call(arguments, empty)])
                obj = not isinstance(arguments, str)
                if args_text in with_result:
                    found.append((with_result, obj, empty, _PROBE_RESULT in with_result))
                elif args_text in alone:
                    without_result.append((alone, obj, empty, False))
        found += without_result
        rendered, object_arguments, empty, renders_results = found[0] if found else ("", False, None, False)
        fmt = detect_format(rendered, _PROBE_NAME) if rendered else None
        if not rendered:
            renders_results = _PROBE_RESULT in self._render_probe([user, result])
        if fmt is None:  # a syntax moebox cannot read back: it asks for GENERIC's
            return ToolSupport(GENERIC, renders_tools, False, renders_results, False)
        return ToolSupport(fmt, renders_tools, True, renders_results, object_arguments, empty)

    @property
    def tool_format(self) -> ToolCallFormat:
        """The syntax in which the model writes tool calls (see engine/tool_calls.py)."""
        return self.tool_support.format

    def _with_tools(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        force_tool: bool | str,
    ) -> tuple[list[dict[str, Any]], list | None]:
        """Messages and tools as this template can take them (see the module's docstring)."""
        support = self.tool_support
        fmt = support.format
        out: list[dict[str, Any]] = []
        for m in messages:
            m = dict(m)
            calls = m.pop("tool_calls", None) or []
            if m.get("role") == "assistant" and calls:
                if support.renders_calls:
                    m["tool_calls"] = [_call_for_template(c, support.object_arguments) for c in calls]
                    m["content"] = m.get("content") or support.empty_call_content
                else:
                    written = fmt.write([_tool_call(c) for c in calls])
                    m["content"] = (_text(m.get("content")) + "\n\n" + written).lstrip("\n")
            elif m.get("role") == "tool" and not support.renders_results:
                m = {
                    "role": "user",
                    "content": f"<tool_response>\n{_text(m.get('content'))}\n</tool_response>",
                }
            out.append(m)
        instructions = []
        if tools and not support.renders_tools:
            instructions.append(tool_instructions(tools, fmt))
        elif tools and fmt is GENERIC:  # the template lists the tools, in a syntax moebox cannot read
            instructions.append(tool_instructions(None, fmt))
        if tools and force_tool:
            instructions.append(_forced_tool_text(force_tool))
        if instructions:
            text = "\n\n".join(instructions)
            if out and out[0].get("role") == "system":
                out[0] = {**out[0], "content": _text(out[0].get("content")) + "\n\n" + text}
            else:
                out.insert(0, {"role": "system", "content": text})
        return out, (list(tools) if tools and support.renders_tools else None)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        force_think: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        force_tool: bool | str = False,
        **template_kwargs: Any,
    ) -> str:
        """The prompt text for ``messages`` (dicts with role and content).

        content may be a string or a list of ``{"type": "text", "text": ...}`` parts (joined with
        newlines). force_think makes the prompt end with ``<think>\\n`` so a reasoning model starts
        inside its reasoning; templates that already end the generation prompt that way (DeepSeek-R1)
        are left as they are. template_kwargs reach the template as extra variables
        (e.g. ``enable_thinking=False`` for Qwen3).

        tools: OpenAI-style tool definitions (``{"type": "function", "function": {...}}``); assistant
        messages may carry OpenAI-style ``tool_calls`` and ``tool`` messages the results. force_tool
        (True, or a tool's name) makes the prompt end with the opening of a call in the model's syntax
        (``tool_format.opening``), closing an open reasoning block first, and says so in the system
        prompt: the model's next tokens are then a tool call.

        Templates write BOS themselves where the model wants it, so the prompt is tokenized with
        ``Tokenizer.encode(prompt, add_special=False)``, as transformers does.
        """
        force_tool = force_tool if tools else False
        if tools or any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
            messages, tools = self._with_tools(messages, tools, force_tool)
        variables: dict[str, Any] = {k: _plain(v) for k, v in template_kwargs.items()}
        if self.bos_token is not None:
            variables["bos_token"] = self.bos_token
        if self.eos_token is not None:
            variables["eos_token"] = self.eos_token
        try:
            prompt = self._template.render(
                messages=[_message_for_template(m) for m in messages],
                tools=_plain(tools),
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **variables,
            )
        except ChatTemplateError:
            raise
        except jinja2.TemplateError as e:
            raise ChatTemplateError(
                f"the chat template refused the messages: {e.message or type(e).__name__}"
            ) from None
        except Exception as e:  # a template is code: any failure in it is the template's
            raise ChatTemplateError(f"the chat template failed: {type(e).__name__}: {e}") from None
        if force_think and add_generation_prompt and not prompt.endswith(THINK_OPEN):
            prompt += "\n" if prompt.endswith(THINK_OPEN.rstrip("\n")) else THINK_OPEN
        if force_tool and add_generation_prompt:
            if prompt.endswith(THINK_OPEN):  # a forced call comes without reasoning
                prompt += THINK_CLOSE
            prompt += self.tool_format.opening(force_tool if isinstance(force_tool, str) else None)
        return prompt


def _text(content: Any) -> str:
    """A message content as text (None: empty; text parts: joined as the template would get them)."""
    if content is None:
        return ""
    if isinstance(content, list):
        return _message_for_template({"role": "user", "content": content})["content"]
    return str(content)


def _tool_call(call: Mapping[str, Any]) -> ToolCall:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    text = arguments if isinstance(arguments, str) else json.dumps(arguments or {}, ensure_ascii=False)
    return ToolCall(str(function.get("name", "")), text)


def _call_for_template(call: Mapping[str, Any], object_arguments: bool) -> dict[str, Any]:
    """An OpenAI tool call as templates read it: type "function", arguments as text or as an object."""
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if object_arguments and isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # not JSON: the template gets the text as it came
            function["arguments"] = json.loads(arguments)
    elif not object_arguments and not isinstance(arguments, str):
        function["arguments"] = json.dumps(arguments or {}, ensure_ascii=False)
    return {**call, "type": call.get("type") or "function", "function": function}
