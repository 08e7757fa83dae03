"""The Anthropic-compatible API: POST /v1/messages and /v1/messages/count_tokens.

A request's system prompt, messages (text, tool_use, tool_result and thinking blocks) and tools
become chat messages for the model's template, as on the OpenAI routes. The answer is a list of
content blocks: `thinking` (the model's reasoning, with an empty signature), `text`, and
`tool_use` for each tool call. Streaming sends Anthropic's events: `message_start`, then per block
`content_block_start`, `content_block_delta` (text_delta, thinking_delta, input_json_delta) and
`content_block_stop`, then `message_delta` (stop_reason, output tokens) and `message_stop`; `ping`
while nothing arrives; an `error` event if the generation fails after the stream started. Errors
before it are Anthropic's `{"type": "error", "error": {"type", "message"}}`. The key may come as
`x-api-key` (see gateway/app.py).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response.sse import ServerSentEventMessage

from engine.tool_calls import ToolCall
from gateway.errors import InvalidRequestError, anthropic_error, describe, error_responses
from gateway.generation import GenerationRun, chat_prompt, sampling_params
from gateway.metrics import GatewayMetrics
from gateway.model_host import ModelHost
from gateway.schemas import (
    AnthropicContentOut,
    AnthropicCountTokensRequest,
    AnthropicErrorBody,
    AnthropicImageBlock,
    AnthropicMessage,
    AnthropicMessageResponse,
    AnthropicMessagesRequest,
    AnthropicTextBlock,
    AnthropicTextOut,
    AnthropicThinkingBlock,
    AnthropicThinkingOut,
    AnthropicTokenCount,
    AnthropicToolResultBlock,
    AnthropicToolUseBlock,
    AnthropicToolUseOut,
    AnthropicUsage,
)
from gateway.settings import GatewaySettings
from gateway.streaming import EventStream, SSEOperation

_ERRORS = error_responses(AnthropicErrorBody)

_encode = msgspec.json.Encoder().encode


def _text(blocks: str | list | None, where: str) -> str:
    """The text of a content that may hold only text blocks (images: 400)."""
    if blocks is None:
        return ""
    if isinstance(blocks, str):
        return blocks
    parts = []
    for block in blocks:
        if isinstance(block, AnthropicImageBlock):
            raise InvalidRequestError(
                f"{where} holds an image, but this server's models read text only; send text alone.",
                param=where,
            )
        parts.append(block.text)
    return "\n".join(parts)


def template_messages(
    system: str | list[AnthropicTextBlock] | None, messages: list[AnthropicMessage]
) -> list[dict]:
    """Chat messages for the template: tool results become `tool` messages (before the user's text),
    an assistant's thinking its reasoning_content and its tool_use blocks its tool_calls."""
    out: list[dict] = []
    if system:
        out.append({"role": "system", "content": _text(system, "system")})
    for i, m in enumerate(messages):
        where = f"messages[{i}].content"
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
            continue
        texts, thinking, calls = [], [], []
        for block in m.content:
            if isinstance(block, AnthropicTextBlock):
                texts.append(block.text)
            elif isinstance(block, AnthropicImageBlock):
                _text([block], where)
            elif isinstance(block, AnthropicToolResultBlock):
                if m.role != "user":
                    raise InvalidRequestError(
                        f"tool_result blocks belong in user messages ({where}).", param=where
                    )
                result = _text(block.content, where)
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": block.tool_use_id,
                        "content": f"Error: {result}" if block.is_error else result,
                    }
                )
            elif isinstance(block, AnthropicToolUseBlock):
                if m.role != "assistant":
                    raise InvalidRequestError(
                        f"tool_use blocks belong in assistant messages ({where}).", param=where
                    )
                arguments = json.dumps(block.input, ensure_ascii=False)
                calls.append(
                    {
                        "id": block.id,
                        "type": "function",
                        "function": {"name": block.name, "arguments": arguments},
                    }
                )
            elif isinstance(block, AnthropicThinkingBlock):
                thinking.append(block.thinking)
            # redacted_thinking: nothing this model can read
        if m.role == "user" and not texts and out and out[-1]["role"] == "tool":
            continue  # tool results alone
        msg: dict = {"role": m.role, "content": "\n".join(texts)}
        if thinking and m.role == "assistant":
            msg["reasoning_content"] = "\n".join(thinking)
        if calls:
            msg["tool_calls"] = calls
        out.append(msg)
    return out


def _tool_request(data: AnthropicCountTokensRequest) -> tuple[list[dict] | None, bool | str, bool]:
    """OpenAI-style tools for the template, whether (or which) one must be called, and whether
    parallel calls are allowed."""
    choice = data.tool_choice
    if not data.tools or (choice is not None and choice.type == "none"):
        return None, False, True
    tools = [
        {
            "type": "function",
            "function": {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "parameters": t.input_schema,
            },
        }
        for t in data.tools
    ]
    parallel = not (choice and choice.disable_parallel_tool_use)
    if choice is None or choice.type == "auto":
        return tools, False, parallel
    if choice.type == "any":
        return tools, True, parallel
    if not choice.name or choice.name not in {t.name for t in data.tools}:
        raise InvalidRequestError(
            f"tool_choice names the tool {choice.name!r}, which is not in `tools`; name one of the tools sent.",
            param="tool_choice",
        )
    return tools, choice.name, parallel


def _prompt(llm, data: AnthropicCountTokensRequest):
    tools, force_tool, parallel = _tool_request(data)
    force_think = data.thinking is not None and data.thinking.type == "enabled"
    prompt = chat_prompt(
        llm,
        template_messages(data.system, data.messages),
        force_think=force_think,
        tools=tools,
        force_tool=force_tool,
    )
    return prompt, parallel


def _stop_reason(run: GenerationRun) -> str:
    if run.finish_reason == "length":
        return "max_tokens"
    return "tool_use" if run.tool_calls else "end_turn"


def _usage(run: GenerationRun) -> AnthropicUsage:
    return AnthropicUsage(
        input_tokens=run.prompt_tokens - run.cached_tokens,
        output_tokens=run.completion_tokens,
        cache_read_input_tokens=run.cached_tokens,
    )


def _tool_use(call: ToolCall) -> AnthropicToolUseOut:
    return AnthropicToolUseOut(
        id=f"toolu_{uuid.uuid4().hex[:24]}", name=call.name, input=call.argument_object()
    )


def _event(kind: str, **fields) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=kind, data=_encode({"type": kind, **fields}).decode())


class AnthropicController(Controller):
    path = "/v1/messages"
    tags = ["Anthropic"]

    @post(
        "/",
        status_code=200,
        operation_class=SSEOperation,
        responses=_ERRORS,
        description="A message (Anthropic's Messages API); with `stream: true` the answer is "
        "`text/event-stream` of Anthropic's events, from `message_start` to `message_stop`.",
    )
    async def create_message(
        self,
        request: Request,
        data: JSONBody[AnthropicMessagesRequest],
        host: NamedDependency[ModelHost],
        settings: NamedDependency[GatewaySettings],
        metrics: NamedDependency[GatewayMetrics],
    ) -> AnthropicMessageResponse:
        started = time.perf_counter()
        llm, scheduler = host.resolve(data.model)
        prompt, parallel = _prompt(llm, data)
        params = sampling_params(
            llm,
            settings,
            len(prompt.ids),
            max_tokens=data.max_tokens,
            temperature=data.temperature,
            top_p=data.top_p,
            top_k=data.top_k,
            stop=data.stop_sequences,
        )
        run = GenerationRun.start(
            scheduler,
            prompt,
            params,
            api="anthropic.messages",
            metrics=metrics,
            split_reasoning=True,
            started=started,
        )
        mid = f"msg_{uuid.uuid4().hex[:24]}"
        max_calls = None if parallel else 1
        if data.stream:
            return EventStream(_events(run, mid, data.model, settings, request, max_calls))  # type: ignore[return-value]
        reasoning, content = await run.collect(request.receive)
        blocks: list[AnthropicContentOut] = []
        if reasoning:
            blocks.append(AnthropicThinkingOut(thinking=reasoning))
        calls = run.tool_calls[:max_calls]
        if content and not (calls and not content.strip()):
            blocks.append(AnthropicTextOut(text=content))
        blocks += [_tool_use(c) for c in calls]
        if not blocks:
            blocks.append(AnthropicTextOut(text=""))
        return AnthropicMessageResponse(
            id=mid, content=blocks, model=data.model, stop_reason=_stop_reason(run), usage=_usage(run)
        )

    @post("/count_tokens", status_code=200, responses=_ERRORS)
    async def count_tokens(
        self, data: JSONBody[AnthropicCountTokensRequest], host: NamedDependency[ModelHost]
    ) -> AnthropicTokenCount:
        """The prompt's length in tokens, as /v1/messages would send it to the model."""
        llm, _ = host.resolve(data.model)
        prompt, _ = _prompt(llm, data)
        return AnthropicTokenCount(input_tokens=len(prompt.ids))


async def _events(
    run: GenerationRun,
    mid: str,
    model: str,
    settings: GatewaySettings,
    request: Request,
    max_calls: int | None,
) -> AsyncIterator[ServerSentEventMessage]:
    index = -1  # the current content block
    open_kind: str | None = None  # "thinking" or "text" while such a block is open
    n_calls = 0

    def start(kind: str, block: dict) -> ServerSentEventMessage:
        nonlocal index, open_kind
        index += 1
        open_kind = kind
        return _event("content_block_start", index=index, content_block=block)

    def stop() -> ServerSentEventMessage:
        nonlocal open_kind
        open_kind = None
        return _event("content_block_stop", index=index)

    message = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": run.prompt_tokens, "output_tokens": 0},
    }
    try:
        yield _event("message_start", message=message)
        async for d in run.deltas(settings.keepalive_seconds):
            if d is None:
                yield _event("ping")
                continue
            for kind, text in (("thinking", d.reasoning), ("text", d.content)):
                if not text:
                    continue
                if open_kind != kind:
                    if open_kind is not None:
                        yield stop()
                    empty = (
                        {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking" else {}
                    )
                    yield start(kind, empty or {"type": "text", "text": ""})
                delta = {"type": "thinking_delta", "thinking": text} if kind == "thinking" else {}
                yield _event(
                    "content_block_delta", index=index, delta=delta or {"type": "text_delta", "text": text}
                )
            for call in d.tool_calls:
                if max_calls is not None and n_calls >= max_calls:
                    break
                if open_kind is not None:
                    yield stop()
                use = _tool_use(call)
                yield start("tool_use", {"type": "tool_use", "id": use.id, "name": use.name, "input": {}})
                yield _event(
                    "content_block_delta",
                    index=index,
                    delta={"type": "input_json_delta", "partial_json": call.arguments},
                )
                yield stop()
                n_calls += 1
        if open_kind is not None:
            yield stop()
        if index < 0:  # an empty answer is one empty text block
            yield start("text", {"type": "text", "text": ""})
            yield stop()
        usage = _usage(run)
        yield _event(
            "message_delta",
            delta={"stop_reason": _stop_reason(run), "stop_sequence": None},
            usage={
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
            },
        )
        yield _event("message_stop")
    except Exception as exc:
        run.cancel()
        status, detail = describe(exc, request.scope.get("state", {}).get("request_id"))
        body = anthropic_error(status, detail)
        yield ServerSentEventMessage(event="error", data=_encode(body).decode())
