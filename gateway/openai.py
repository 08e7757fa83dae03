"""The OpenAI-compatible API: /v1/chat/completions, /v1/completions, /v1/models.

Streaming follows OpenAI's wire format: `chat.completion.chunk` objects with one
id, the first delta carries the role, reasoning streams as `reasoning_content`
deltas (DeepSeek's and llama-server's convention), the last choice chunk has
finish_reason, `stream_options.include_usage` adds a chunk with usage and
`choices: []`, then `data: [DONE]`. With `tools`, the model's calls come back as
`tool_calls` (finish_reason "tool_calls"); streamed, each call is a delta with
its id and name, then one with its arguments, sent once the call is complete
and its arguments parse (a malformed call is sent as content). While nothing arrives (a long prefill) an
SSE comment keeps proxies from closing the connection. An error after the
stream started is sent as a chunk holding an `error` object.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response.sse import ServerSentEventMessage

from gateway.errors import InvalidRequestError, describe, error_responses
from gateway.generation import (
    GenerationRun,
    PreparedPrompt,
    chat_prompt,
    message_text,
    sampling_params,
    text_prompt,
)
from gateway.metrics import GatewayMetrics
from gateway.model_host import ModelHost
from gateway.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatMessage,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ErrorBody,
    FunctionCall,
    FunctionCallDelta,
    ModelCard,
    ModelList,
    NamedToolChoice,
    SamplingFields,
    ToolCallBody,
    ToolCallDelta,
)
from gateway.settings import GatewaySettings
from gateway.streaming import EventStream, SSEOperation

_ERRORS = error_responses(ErrorBody)

_encode = msgspec.json.Encoder().encode


def _data(obj: msgspec.Struct) -> str:
    return _encode(obj).decode()


def _check_n(data: SamplingFields) -> None:
    if data.n != 1:
        raise InvalidRequestError("n must be 1: this server generates one choice per request.", param="n")


def _params(llm, settings: GatewaySettings, data: SamplingFields, prompt_len: int, max_tokens: int | None):
    return sampling_params(
        llm,
        settings,
        prompt_len,
        max_tokens=max_tokens,
        temperature=data.temperature,
        top_p=data.top_p,
        top_k=data.top_k,
        min_p=data.min_p,
        stop=data.stop,
        seed=data.seed,
        presence_penalty=data.presence_penalty,
        frequency_penalty=data.frequency_penalty,
        repeat_penalty=data.repeat_penalty,
    )


def _prompt_text(prompt: str | list[str | int]) -> str | None:
    """The prompt's text, or None for a list of token ids."""
    if isinstance(prompt, str):
        return prompt
    if all(isinstance(p, int) for p in prompt):
        return None
    if len(prompt) == 1:
        return prompt[0]
    raise InvalidRequestError(
        "prompt must be a string, a list of one string, or a list of token ids: this server "
        "completes one prompt per request.",
        param="prompt",
    )


def _template_messages(messages: list[ChatMessage]) -> list[dict]:
    """Messages as the chat template takes them: text content, and the tool calls and results."""
    out = []
    for i, m in enumerate(messages):
        msg: dict = {"role": m.role, "content": message_text(m.content, where=f"messages[{i}].content")}
        if m.tool_calls:
            msg["tool_calls"] = [
                {
                    "id": c.id or f"call_{i}_{j}",
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for j, c in enumerate(m.tool_calls)
            ]
        if m.tool_call_id is not None:
            msg["tool_call_id"] = m.tool_call_id
        out.append(msg)
    return out


def _tool_request(data: ChatCompletionRequest) -> tuple[list[dict] | None, bool | str]:
    """The tools to show the model and whether (or which) it must call, from tools and tool_choice."""
    if not data.tools or data.tool_choice == "none":
        return None, False
    tools = [msgspec.to_builtins(t) for t in data.tools]
    choice = data.tool_choice
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in {t.function.name for t in data.tools}:
            raise InvalidRequestError(
                f"tool_choice names the function {choice.function.name!r}, which is not in `tools`; "
                "name one of the tools sent.",
                param="tool_choice",
            )
        return tools, choice.function.name
    return tools, choice == "required"


def tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _keepalive() -> ServerSentEventMessage:
    return ServerSentEventMessage(comment="keep-alive", data=None)


class OpenAIController(Controller):
    path = "/v1"
    tags = ["OpenAI"]

    @get("/models", responses=_ERRORS)
    async def list_models(self, host: NamedDependency[ModelHost]) -> ModelList:
        host.require_ready()
        return ModelList(data=[ModelCard(id=host.name or "", created=host.created)])

    @post(
        "/chat/completions",
        status_code=200,
        operation_class=SSEOperation,
        responses=_ERRORS,
        description="Chat completion; with `stream: true` the answer is `text/event-stream` of "
        "`chat.completion.chunk` objects ending with `data: [DONE]`.",
    )
    async def chat_completions(
        self,
        request: Request,
        data: JSONBody[ChatCompletionRequest],
        host: NamedDependency[ModelHost],
        settings: NamedDependency[GatewaySettings],
        metrics: NamedDependency[GatewayMetrics],
    ) -> ChatCompletion:
        started = time.perf_counter()
        _check_n(data)
        llm, scheduler = host.resolve(data.model)
        tools, force_tool = _tool_request(data)
        prompt = chat_prompt(
            llm,
            _template_messages(data.messages),
            force_think=data.force_think,
            tools=tools,
            force_tool=force_tool,
        )
        params = _params(llm, settings, data, len(prompt.ids), data.max_completion_tokens or data.max_tokens)
        split = (data.reasoning_format or settings.reasoning_format) == "deepseek"
        run = GenerationRun.start(
            scheduler,
            prompt,
            params,
            api="openai.chat",
            metrics=metrics,
            split_reasoning=split,
            started=started,
        )
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        model = host.name or ""
        if data.stream:
            include_usage = bool(data.stream_options and data.stream_options.include_usage)
            max_calls = 1 if data.parallel_tool_calls is False else None
            events = _chat_events(run, cid, created, model, include_usage, settings, request, max_calls)
            return EventStream(events)  # type: ignore[return-value]
        reasoning, content = await run.collect(request.receive)
        calls = run.tool_calls[:1] if data.parallel_tool_calls is False else run.tool_calls
        tool_calls = [
            ToolCallBody(id=tool_call_id(), function=FunctionCall(name=c.name, arguments=c.arguments))
            for c in calls
        ]
        return ChatCompletion(
            id=cid,
            created=created,
            model=model,
            choices=[
                ChatChoice(
                    index=0,
                    message=AssistantMessage(
                        role="assistant",
                        content=None if tool_calls and not content.strip() else content,
                        reasoning_content=reasoning or None,
                        tool_calls=tool_calls or None,
                    ),
                    finish_reason=run.openai_finish_reason,
                )
            ],
            usage=run.usage(),
            timings=run.timings_body(),
        )

    @post(
        "/completions",
        status_code=200,
        operation_class=SSEOperation,
        responses=_ERRORS,
        description="Text completion of a raw prompt (no chat template); `stream: true` gives "
        "`text/event-stream` of `text_completion` chunks ending with `data: [DONE]`.",
    )
    async def completions(
        self,
        request: Request,
        data: JSONBody[CompletionRequest],
        host: NamedDependency[ModelHost],
        settings: NamedDependency[GatewaySettings],
        metrics: NamedDependency[GatewayMetrics],
    ) -> Completion:
        started = time.perf_counter()
        _check_n(data)
        llm, scheduler = host.resolve(data.model)
        text = _prompt_text(data.prompt)
        if text is not None:
            prompt = text_prompt(llm, text)
        else:
            prompt = PreparedPrompt(ids=[int(t) for t in data.prompt], think_prefix=None)
        # OpenAI's default for this endpoint is 16 tokens.
        params = _params(llm, settings, data, len(prompt.ids), data.max_tokens or 16)
        run = GenerationRun.start(
            scheduler,
            prompt,
            params,
            api="openai.completions",
            metrics=metrics,
            split_reasoning=False,
            started=started,
        )
        cid = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        model = host.name or ""
        echo = text if data.echo and text is not None else ""
        if data.stream:
            include_usage = bool(data.stream_options and data.stream_options.include_usage)
            events = _completion_events(run, cid, created, model, include_usage, echo, settings, request)
            return EventStream(events)  # type: ignore[return-value]
        _, content = await run.collect(request.receive)
        return Completion(
            id=cid,
            created=created,
            model=model,
            choices=[CompletionChoice(index=0, text=echo + content, finish_reason=run.openai_finish_reason)],
            usage=run.usage(),
            timings=run.timings_body(),
        )


async def _chat_events(
    run: GenerationRun,
    cid: str,
    created: int,
    model: str,
    include_usage: bool,
    settings: GatewaySettings,
    request: Request,
    max_calls: int | None = None,
) -> AsyncIterator[str | ServerSentEventMessage]:
    def chunk(delta: ChatDelta, finish_reason=None, **extra) -> str:
        choice = ChatChunkChoice(index=0, delta=delta, finish_reason=finish_reason)
        return _data(ChatCompletionChunk(id=cid, created=created, model=model, choices=[choice], **extra))

    n_calls = 0
    try:
        yield chunk(ChatDelta(role="assistant", content=""))
        async for d in run.deltas(settings.keepalive_seconds):
            if d is None:
                yield _keepalive()
                continue
            if d.reasoning:
                yield chunk(ChatDelta(reasoning_content=d.reasoning))
            if d.content:
                yield chunk(ChatDelta(content=d.content))
            for call in d.tool_calls:
                if max_calls is not None and n_calls >= max_calls:
                    break
                head = FunctionCallDelta(name=call.name, arguments="")
                first = ToolCallDelta(index=n_calls, id=tool_call_id(), type="function", function=head)
                yield chunk(ChatDelta(tool_calls=[first]))
                args = FunctionCallDelta(arguments=call.arguments)
                yield chunk(ChatDelta(tool_calls=[ToolCallDelta(index=n_calls, function=args)]))
                n_calls += 1
        yield chunk(ChatDelta(), run.openai_finish_reason, timings=run.timings_body())
        if include_usage:
            yield _data(
                ChatCompletionChunk(id=cid, created=created, model=model, choices=[], usage=run.usage())
            )
    except Exception as exc:
        run.cancel()
        _, detail = describe(exc, request.scope.get("state", {}).get("request_id"))
        yield _data(ErrorBody(error=detail))
    yield "[DONE]"


async def _completion_events(
    run: GenerationRun,
    cid: str,
    created: int,
    model: str,
    include_usage: bool,
    echo: str,
    settings: GatewaySettings,
    request: Request,
) -> AsyncIterator[str | ServerSentEventMessage]:
    def chunk(text: str, finish_reason=None, **extra) -> str:
        choice = CompletionChoice(index=0, text=text, finish_reason=finish_reason)
        return _data(Completion(id=cid, created=created, model=model, choices=[choice], **extra))

    try:
        if echo:
            yield chunk(echo)
        async for d in run.deltas(settings.keepalive_seconds):
            if d is None:
                yield _keepalive()
            elif d.content:
                yield chunk(d.content)
        yield chunk("", run.openai_finish_reason, timings=run.timings_body())
        if include_usage:
            yield _data(Completion(id=cid, created=created, model=model, choices=[], usage=run.usage()))
    except Exception as exc:
        run.cancel()
        _, detail = describe(exc, request.scope.get("state", {}).get("request_id"))
        yield _data(ErrorBody(error=detail))
    yield "[DONE]"
