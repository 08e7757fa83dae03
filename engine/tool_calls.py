"""How a model writes tool calls, and reading them back out of its output as it streams.

Each model family has its own syntax, the one its chat template writes for the tool calls in a
conversation's history:

- DeepSeek-V3/R1: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\n
  ARGS\\n```<｜tool▁call▁end｜>`` (more calls joined by a newline) ``<｜tool▁calls▁end｜>``
- DeepSeek-V3.1: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>ARGS<｜tool▁call▁end｜>
  <｜tool▁calls▁end｜>``
- Hermes (Qwen2.5, Qwen3, QwQ): ``<tool_call>\\n{"name": NAME, "arguments": ARGS}\\n</tool_call>`` per call;
  moebox also asks models whose template knows no tools to answer this way (``GENERIC``).
- Llama 3.x (JSON tool calling): the whole answer is ``{"name": NAME, "parameters": ARGS}``, possibly
  after ``<|python_tag|>``.

`ToolCallParser` splits a model's answer into plain content and `ToolCall`s piece by piece, the way
`ThinkSplitter` splits reasoning: text that may be the start of a call is held back until it is
decided, a call is given out only once it is complete and its arguments parse as a JSON object, and
text that opened a call but does not make one is given back as content, unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str  # the arguments as JSON text of an object

    def argument_object(self) -> dict:
        return json.loads(self.arguments)


def _json_object_text(value: object) -> str | None:
    """JSON text of an arguments object given as an object or as JSON text; None if it is neither."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if not isinstance(value, dict):
        return None
    return json.dumps(value, ensure_ascii=False)


def _arguments_text(text: str) -> str | None:
    """The model's own arguments text, if it is a JSON object (kept as written, stripped)."""
    text = text.strip()
    try:
        return text if isinstance(json.loads(text), dict) else None
    except ValueError:
        return None


_NAME_HOLE = "\x00name\x00"
_ARGS_HOLE = "\x00args\x00"


@dataclass(frozen=True)
class ToolCallFormat:
    """One family's tool call syntax: markers around the calls, and what sits between them."""

    name: str
    call_open: str
    call_close: str
    section_open: str = ""  # around all the calls of one answer (DeepSeek)
    section_close: str = ""
    separator: str = ""  # between two calls of one section
    anchored: bool = False  # calls only where the answer starts (Llama 3's JSON)
    body: Literal["deepseek", "deepseek-v3.1", "json"] = "json"

    @property
    def start(self) -> str:
        """The text that opens the model's tool calls."""
        return self.section_open or self.call_open

    def write_call(self, call: ToolCall) -> str:
        if self.body == "deepseek":
            inner = f"function<｜tool▁sep｜>{call.name}\n```json\n{call.arguments}\n```"
        elif self.body == "deepseek-v3.1":
            inner = f"{call.name}<｜tool▁sep｜>{call.arguments}"
        else:
            key = "parameters" if self.anchored else "arguments"
            inner = f'{{"name": "{call.name}", "{key}": {call.arguments}}}'
            if not self.anchored:
                inner = f"\n{inner}\n"
        return self.call_open + inner + self.call_close

    def write(self, calls: Sequence[ToolCall]) -> str:
        """The text the model writes for these calls."""
        return self.section_open + self.separator.join(map(self.write_call, calls)) + self.section_close

    def opening(self, name: str | None = None) -> str:
        """How an answer that calls a tool begins (the function `name`, when given, up to its arguments):
        a prompt that ends with this makes the model's next tokens a tool call."""
        text = self.write([ToolCall(name or _NAME_HOLE, _ARGS_HOLE)])
        return text[: text.index(_ARGS_HOLE)] if name else text[: text.index(_NAME_HOLE)]

    def parse_call(self, inner: str) -> ToolCall | None:
        """One call from the text between call_open and call_close; None if it is malformed."""
        if self.body == "deepseek":
            _type, sep, rest = inner.partition("<｜tool▁sep｜>")
            name, newline, args = rest.partition("\n")
            if not sep or not newline:
                return None
            args = args.strip()
            if args.startswith("```"):  # the arguments sit in a ```json fence
                args = args[3:].removeprefix("json")
            return _call(name, _arguments_text(args.strip().removesuffix("```")))
        if self.body == "deepseek-v3.1":
            name, sep, args = inner.partition("<｜tool▁sep｜>")
            return _call(name, _arguments_text(args)) if sep else None
        try:
            obj = json.loads(inner)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        args = obj.get("parameters", obj.get("arguments")) if self.anchored else obj.get("arguments")
        return _call(obj.get("name"), _json_object_text(args if args is not None else {}))


def _call(name: object, arguments: str | None) -> ToolCall | None:
    if not isinstance(name, str) or not name.strip() or arguments is None:
        return None
    return ToolCall(name.strip(), arguments)


DEEPSEEK_V3 = ToolCallFormat(
    "deepseek-v3",
    call_open="<｜tool▁call▁begin｜>",
    call_close="<｜tool▁call▁end｜>",
    section_open="<｜tool▁calls▁begin｜>",
    section_close="<｜tool▁calls▁end｜>",
    separator="\n",
    body="deepseek",
)
DEEPSEEK_V31 = ToolCallFormat(
    "deepseek-v3.1",
    call_open="<｜tool▁call▁begin｜>",
    call_close="<｜tool▁call▁end｜>",
    section_open="<｜tool▁calls▁begin｜>",
    section_close="<｜tool▁calls▁end｜>",
    body="deepseek-v3.1",
)
HERMES = ToolCallFormat("hermes", call_open="<tool_call>", call_close="</tool_call>", separator="\n")
LLAMA3_JSON = ToolCallFormat("llama3-json", call_open="", call_close="", anchored=True)
# For templates that know no tools: the instructions in the system prompt ask for Hermes' syntax,
# the most widely trained one.
GENERIC = ToolCallFormat("generic", call_open="<tool_call>", call_close="</tool_call>", separator="\n")

FORMATS = (DEEPSEEK_V3, DEEPSEEK_V31, HERMES, LLAMA3_JSON)

PYTHON_TAG = "<|python_tag|>"


def detect_format(rendered_call: str, name: str) -> ToolCallFormat | None:
    """The format of a tool call to function `name` as a chat template rendered it, if known."""
    if f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}" in rendered_call:
        return DEEPSEEK_V3
    if f"<｜tool▁call▁begin｜>{name}<｜tool▁sep｜>" in rendered_call:
        return DEEPSEEK_V31
    if "<tool_call>" in rendered_call and f'"name": "{name}"' in rendered_call:
        return HERMES
    if f'"name": "{name}"' in rendered_call and '"parameters": ' in rendered_call:
        return LLAMA3_JSON
    return None


def _held_prefix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0


@dataclass(slots=True)
class ParsedDelta:
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


class ToolCallParser:
    """Feed the answer's text with `feed`, then call `finish` once; each returns the content that
    became certain and the tool calls that became complete."""

    def __init__(self, fmt: ToolCallFormat, names: frozenset[str] | None = None):
        """names: the tools the model was given; a call to any other is malformed (None: any name)."""
        self.fmt = fmt
        self._names = names
        self._state: Literal["content", "section", "raw"] = "content"
        self._buf = ""
        self._seen_text = False  # anchored formats: the answer's start was seen and decided
        self._opened = False  # a section's opening marker was taken with its first call
        self._after_call = False  # drop the whitespace a model puts between two calls
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> ParsedDelta:
        self._buf += text
        return self._run(final=False)

    def finish(self) -> ParsedDelta:
        return self._run(final=True)

    def _run(self, final: bool) -> ParsedDelta:
        out = ParsedDelta()
        content: list[str] = []
        calls: list[ToolCall] = []
        while self._buf:
            if self._state == "raw":
                content.append(self._buf)
                self._buf = ""
            elif self._state == "content":
                if not self._scan_content(content, final):
                    break
            elif not self._scan_section(calls, final):
                break
        self.calls += calls
        out.content = "".join(content)
        out.tool_calls = tuple(calls)
        return out

    def _known(self, call: ToolCall | None) -> ToolCall | None:
        return call if call is None or self._names is None or call.name in self._names else None

    def _scan_content(self, content: list[str], final: bool) -> bool:
        """Move text to content up to a call's start; False when it must wait for more text."""
        fmt = self.fmt
        if fmt.anchored:
            if self._seen_text:
                self._state = "raw"
                return True
            lead = self._buf.lstrip()
            if not lead:
                if final:
                    content.append(self._buf)
                    self._buf = ""
                return False
            if lead.startswith(PYTHON_TAG):
                lead = lead[len(PYTHON_TAG) :].lstrip()
                if not lead:
                    return self._wait_or_give_back(content, final)
            elif PYTHON_TAG.startswith(lead):
                return self._wait_or_give_back(content, final)
            self._seen_text = True
            self._state = "section" if lead.startswith("{") else "raw"
            return True
        if self._after_call:
            self._buf = self._buf.lstrip()
            if not self._buf:
                return False
            self._after_call = False
        at = self._buf.find(fmt.start)
        if at < 0:
            keep = 0 if final else _held_prefix(self._buf, fmt.start)
            content.append(self._buf[: len(self._buf) - keep])
            self._buf = self._buf[len(self._buf) - keep :]
            return False
        content.append(self._buf[:at])
        self._buf = self._buf[at:]
        self._state = "section"
        return True

    def _wait_or_give_back(self, content: list[str], final: bool) -> bool:
        if final:
            content.append(self._buf)
            self._buf = ""
        return False

    def _scan_section(self, calls: list[ToolCall], final: bool) -> bool:
        """Take one call (or the section's end) from the start of the buffer; False when it must wait
        for more text. The buffer keeps the raw text of what is not taken, to give it back as content."""
        fmt = self.fmt
        if fmt.anchored:
            return self._scan_json_answer(calls, final)
        buf = self._buf
        pos = len(fmt.section_open) if fmt.section_open and not self._opened else 0
        rest = buf[pos:].lstrip()
        if rest.startswith(fmt.call_open):
            # The first closing marker after which the call parses: arguments may hold the marker's text.
            end = rest.find(fmt.call_close, len(fmt.call_open))
            call = None
            while end >= 0:
                call = self._known(fmt.parse_call(rest[len(fmt.call_open) : end]))
                if call is not None:
                    break
                end = rest.find(fmt.call_close, end + 1)
            if call is None:
                if not final:
                    return False
                self._state = "raw"  # a malformed call (or one cut short), and all after it, is content
                return True
            calls.append(call)
            self._buf = rest[end + len(fmt.call_close) :]
            if fmt.section_open:
                self._opened = True
            else:
                self._state = "content"
                self._after_call = True
            return True
        if self._opened and rest.startswith(fmt.section_close):
            self._buf = rest[len(fmt.section_close) :]
            self._opened = False
            self._state = "content"
            self._after_call = True
            return True
        could_be = fmt.call_open.startswith(rest) or (self._opened and fmt.section_close.startswith(rest))
        if could_be and not final:
            return False
        if not rest and final and self._opened:
            self._buf = ""  # the answer ended after a complete call, without the closing marker
            return False
        self._state = "raw"
        return True

    def _scan_json_answer(self, calls: list[ToolCall], final: bool) -> bool:
        """Llama 3: the whole answer is one JSON call (or several joined by ';'), decided at the end."""
        if not final:
            return False
        text = self._buf.strip().removeprefix(PYTHON_TAG).strip()
        found = []
        for part in _split_top_level(text, ";"):
            call = self._known(self.fmt.parse_call(part))
            if call is None:
                self._state = "raw"
                return True
            found.append(call)
        calls.extend(found)
        self._buf = ""
        return False


def _split_top_level(text: str, sep: str) -> list[str]:
    """Split JSON objects joined by `sep`, ignoring `sep` inside strings and brackets."""
    parts, depth, in_str, escape, start = [], 0, False, False, 0
    for i, ch in enumerate(text):
        if in_str:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]
