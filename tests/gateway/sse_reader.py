"""Reading Server-Sent Events and NDJSON streams by hand, as a browser or curl sees them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import httpx


@dataclass
class SSEStream:
    events: list[dict] = field(default_factory=list)  # parsed `data:` JSON payloads, in order
    comments: list[str] = field(default_factory=list)
    done: bool = False  # saw `data: [DONE]`
    order: list[str] = field(default_factory=list)  # "data" / "comment" / "done" as they came
    names: list[str] = field(default_factory=list)  # `event:` names (Anthropic's streams), in order


def read_sse(response: httpx.Response) -> SSEStream:
    out = SSEStream()
    for line in response.iter_lines():
        if not line:
            continue
        if line.startswith(":"):
            out.comments.append(line[1:].strip())
            out.order.append("comment")
        elif line.startswith("event: "):
            out.names.append(line[len("event: ") :])
        elif line.startswith("data: "):
            payload = line[len("data: ") :]
            assert not out.done, "data after [DONE]"
            if payload == "[DONE]":
                out.done = True
                out.order.append("done")
            else:
                out.events.append(json.loads(payload))
                out.order.append("data")
        else:
            raise AssertionError(f"unexpected SSE line {line!r}")
    return out


def chat_text(events: list[dict], field: str = "content") -> str:
    return "".join(e["choices"][0]["delta"].get(field) or "" for e in events if e.get("choices"))


def read_ndjson(response: httpx.Response) -> list[dict]:
    return [json.loads(line) for line in response.iter_lines() if line]
