"""Chat prompts from the Jinja template a GGUF carries (``tokenizer.chat_template``).

Rendered the way Hugging Face transformers' ``apply_chat_template`` renders it: jinja2's
ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, ``raise_exception``,
``strftime_now``, a ``tojson`` that does not escape HTML, ``namespace`` that refuses underscore
names, ``{% generation %}`` blocks, and the variables ``messages``, ``tools``,
``add_generation_prompt``, ``bos_token`` and ``eos_token``. A template is untrusted input (it comes
with a downloaded file): the sandbox refuses access to underscore attributes and to methods that
modify objects, so a template cannot reach Python internals. Where transformers renders such an
access as an empty value, moebox stops with ChatTemplateError.

A file without a template gets llama.cpp's fallback, ChatML (``CHATML_TEMPLATE_SRC`` in
llama.cpp's common/chat.cpp)::

    <|im_start|>{role}\\n{content}<|im_end|>\\n ... <|im_start|>assistant\\n
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import ChatTemplateError

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

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        force_think: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **template_kwargs: Any,
    ) -> str:
        """The prompt text for ``messages`` (dicts with role and content).

        content may be a string or a list of ``{"type": "text", "text": ...}`` parts (joined with
        newlines). force_think makes the prompt end with ``<think>\\n`` so a reasoning model starts
        inside its reasoning; templates that already end the generation prompt that way (DeepSeek-R1)
        are left as they are. template_kwargs reach the template as extra variables
        (e.g. ``enable_thinking=False`` for Qwen3).

        Templates write BOS themselves where the model wants it, so the prompt is tokenized with
        ``Tokenizer.encode(prompt, add_special=False)``, as transformers does.
        """
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
        return prompt
