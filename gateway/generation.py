"""From an API request to engine chunks and back: prompt, sampling, one running generation.

Both API surfaces (OpenAI, Ollama) build a `PreparedPrompt`, turn their fields
into SamplingParams with `sampling_params`, and read the output through a
`GenerationRun`, which splits reasoning from the answer, counts tokens and
feeds the metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
from litestar.types import Receive

from engine.llm import LLM
from engine.outputs import Timings
from engine.sampling_params import SamplingParams, sampling_with_defaults
from engine.scheduler import RequestStream, Scheduler
from engine.tool_calls import ToolCall, ToolCallFormat, ToolCallParser
from gateway.errors import ClientDisconnectedError, InvalidRequestError
from gateway.metrics import GatewayMetrics
from gateway.reasoning import THINK_OPEN, SplitDelta, ThinkSplitter, prompt_opens_think
from gateway.schemas import CompletionTokensDetails, PromptTokensDetails, TimingsBody, Usage
from gateway.settings import GatewaySettings


@dataclass(frozen=True, slots=True)
class PreparedPrompt:
    ids: list[int]
    think_prefix: str | None  # the prompt's tail from an unclosed "<think>" on, if it ended inside one
    tool_format: ToolCallFormat | None = None  # read tool calls out of the answer in this syntax
    tool_prefix: str = ""  # the opening of a tool call the prompt ends with (a forced call)
    tool_names: frozenset[str] = frozenset()  # the tools given: a call to another is not a call


def chat_prompt(
    llm: LLM,
    messages: list[dict],
    *,
    force_think: bool = False,
    tools: list[dict] | None = None,
    force_tool: bool | str = False,
) -> PreparedPrompt:
    """Chat messages (and tools) through the model's template, encoded as the engine encodes them
    (one BOS). With tools, the answer is read for tool calls in the template's syntax; force_tool
    (True or a tool's name) ends the prompt with the opening of a call."""
    ids, text = llm.encode_chat(messages, force_think=force_think, tools=tools, force_tool=force_tool)
    fmt = llm.chat_template.tool_format if tools else None
    prefix = fmt.opening(force_tool if isinstance(force_tool, str) else None) if fmt and force_tool else ""
    names = frozenset(t["function"]["name"] for t in tools or ())
    return PreparedPrompt(ids, _think_prefix(text), fmt, prefix, names)


def _think_prefix(text: str) -> str | None:
    return text[text.rindex(THINK_OPEN) :] if prompt_opens_think(text) else None


def text_prompt(llm: LLM, text: str) -> PreparedPrompt:
    """Encode text as is (no template)."""
    return PreparedPrompt(llm.encode_prompt(text), _think_prefix(text))


def sampling_params(
    llm: LLM,
    settings: GatewaySettings,
    prompt_len: int,
    *,
    max_tokens: int | None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    stop: str | list[str] | None = None,
    seed: int | None = None,
    presence_penalty: float | None = None,
    frequency_penalty: float | None = None,
    repeat_penalty: float | None = None,
) -> SamplingParams:
    """SamplingParams for a request. What it does not name comes from the server flags, else the
    GGUF's recommendation, else llama-server's defaults. max_tokens defaults to --n-predict and is
    cut at what the context has room for after the prompt and at --max-tokens-limit."""
    room = max(llm.context_length - prompt_len, 1)
    limit = min(room, settings.max_tokens_limit or room)
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    server = {
        "temperature": settings.temperature,
        "top_k": settings.top_k,
        "top_p": settings.top_p,
        "min_p": settings.min_p,
        "repetition_penalty": settings.repeat_penalty,
    }
    defaults = {**llm.sampling_defaults, **{k: v for k, v in server.items() if v is not None}}
    return sampling_with_defaults(
        defaults,
        max_tokens=min(max_tokens or settings.n_predict, limit),
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        repetition_penalty=repeat_penalty,
        stop=tuple(s for s in stops if s),
        seed=seed,
        presence_penalty=presence_penalty or 0.0,
        frequency_penalty=frequency_penalty or 0.0,
    )


def message_text(content: object, *, where: str) -> str:
    """The text of a message content: a string, or an array of text parts (images: 400)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:  # list[ContentPart]
        if part.type != "text":
            raise InvalidRequestError(
                f"content part of type {part.type!r} in {where} is not supported: this server's models read "
                "text only; send the text parts alone.",
                param=where,
            )
        parts.append(part.text or "")
    return "".join(parts)


async def _until_disconnect(receive: Receive) -> None:
    """Returns when the client has gone (the request body was read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class GenerationRun:
    """One request's output as reasoning/answer deltas, with its counts and timings."""

    def __init__(
        self,
        stream: RequestStream,
        *,
        api: str,
        metrics: GatewayMetrics,
        split_reasoning: bool,
        think_prefix: str | None,
        started: float,
        tool_format: ToolCallFormat | None = None,
        tool_prefix: str = "",
        tool_names: frozenset[str] = frozenset(),
    ):
        self._stream = stream
        self._api = api
        self._metrics = metrics
        self._splitter = ThinkSplitter(started_in_think=think_prefix is not None) if split_reasoning else None
        # Raw mode when the prompt opened the think: show the opening tag, so the content
        # reads as the model's complete output.
        self._raw_prefix = think_prefix if not split_reasoning and think_prefix else ""
        self._started = started
        self._tools = ToolCallParser(tool_format, tool_names) if tool_format is not None else None
        if self._tools is not None:
            self._tools.feed(tool_prefix)  # the call's opening is in the prompt; its rest comes out
        self.tool_calls: list[ToolCall] = []
        self.prompt_tokens = stream.prompt_tokens
        self.completion_tokens = 0
        self.cached_tokens = 0  # prompt tokens the prefix cache supplied
        self.reasoning_tokens = 0
        self.finish_reason: str | None = None
        self.timings: Timings | None = None
        self.first_token_at: float | None = None

    @classmethod
    def start(
        cls,
        scheduler: Scheduler,
        prompt: PreparedPrompt,
        params: SamplingParams,
        *,
        api: str,
        metrics: GatewayMetrics,
        split_reasoning: bool,
        started: float,
    ) -> GenerationRun:
        """Queue the request (raises PromptError / QueueFullError before anything is sent)."""
        stream = scheduler.submit(prompt.ids, params)
        return cls(
            stream,
            api=api,
            metrics=metrics,
            split_reasoning=split_reasoning,
            think_prefix=prompt.think_prefix,
            started=started,
            tool_format=prompt.tool_format,
            tool_prefix=prompt.tool_prefix,
            tool_names=prompt.tool_names,
        )

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    async def deltas(self, keepalive: float | None = None) -> AsyncIterator[SplitDelta | None]:
        """Reasoning/answer deltas as tokens arrive; None each `keepalive` seconds without any."""
        if self._raw_prefix:
            yield SplitDelta(content=self._raw_prefix)
        it = aiter(self._stream)
        pending: asyncio.Future | None = None
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(it))
                done, _ = await asyncio.wait({pending}, timeout=keepalive)
                if not done:
                    yield None
                    continue
                fut, pending = pending, None
                try:
                    chunk = fut.result()
                except StopAsyncIteration:
                    return
                except Exception:
                    self._finish("error", None)  # the engine failed this request; the caller reports it
                    raise
                if chunk.token_ids and self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                    self._metrics.ttft.observe(self.first_token_at - self._started)
                self.completion_tokens = max(self.completion_tokens, chunk.completion_tokens)
                self.cached_tokens = chunk.cached_tokens
                delta = self._split(chunk.text, len(chunk.token_ids))
                if chunk.finish_reason is not None:
                    tail = self._splitter.finish() if self._splitter else SplitDelta()
                    delta = SplitDelta(delta.reasoning + tail.reasoning, delta.content + tail.content)
                    self._finish(chunk.finish_reason, chunk.timings)
                delta = self._read_tool_calls(delta, final=chunk.finish_reason is not None)
                if delta:
                    yield delta
                if chunk.finish_reason is not None:
                    return
        finally:
            if pending is not None:
                pending.cancel()
            if not self.done:
                self.cancel()

    def _split(self, text: str, n_tokens: int) -> SplitDelta:
        if self._splitter is None:
            return SplitDelta(content=text)
        was_thinking = self._splitter.in_think
        delta = self._splitter.feed(text)
        if was_thinking or self._splitter.in_think:
            self.reasoning_tokens += n_tokens
        return delta

    def _read_tool_calls(self, delta: SplitDelta, *, final: bool) -> SplitDelta:
        """Tool calls out of the answer's text (malformed ones stay text)."""
        if self._tools is None:
            return delta
        parsed = self._tools.feed(delta.content)
        content, calls = parsed.content, parsed.tool_calls
        if final:
            tail = self._tools.finish()
            content, calls = content + tail.content, calls + tail.tool_calls
        self.tool_calls += calls
        return SplitDelta(delta.reasoning, content, calls)

    def _finish(self, reason: str, timings: Timings | None) -> None:
        self.finish_reason = reason
        self.timings = timings
        self._metrics.observe_generation(
            self._api, reason, self.prompt_tokens, self.completion_tokens, self.reasoning_tokens, timings
        )

    def cancel(self) -> None:
        """Stop generating (client gone, or an error while sending); frees the KV cache."""
        if not self.done:
            self.finish_reason = "cancelled"
            self._stream.cancel()
            self._metrics.observe_generation(
                self._api,
                "cancelled",
                self.prompt_tokens,
                self.completion_tokens,
                self.reasoning_tokens,
                None,
            )

    async def collect(self, receive: Receive | None = None) -> tuple[str, str]:
        """Run to the end; (reasoning, content). With the request's ASGI `receive`,
        a client that disconnects meanwhile cancels the generation."""
        work = asyncio.ensure_future(self._collect())
        if receive is None:
            return await work
        watcher = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        if not work.done():
            work.cancel()
            self.cancel()
            raise ClientDisconnectedError("the client closed the connection before the answer was ready.")
        return work.result()

    async def _collect(self) -> tuple[str, str]:
        reasoning, content = [], []
        async for delta in self.deltas():
            if delta is not None:
                reasoning.append(delta.reasoning)
                content.append(delta.content)
        return "".join(reasoning), "".join(content)

    @property
    def openai_finish_reason(self) -> str:
        if self.finish_reason == "length":
            return "length"
        return "tool_calls" if self.tool_calls else "stop"

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
            completion_tokens_details=CompletionTokensDetails(reasoning_tokens=self.reasoning_tokens),
            prompt_tokens_details=PromptTokensDetails(cached_tokens=self.cached_tokens),
        )

    def timings_body(self) -> TimingsBody | msgspec.UnsetType:
        t = self.timings
        if t is None:
            return msgspec.UNSET
        return TimingsBody(
            prompt_n=t.prompt_n,
            prompt_ms=t.prompt_ms,
            prompt_per_token_ms=t.prompt_ms / t.prompt_n if t.prompt_n else 0.0,
            prompt_per_second=t.prompt_per_second,
            predicted_n=t.predicted_n,
            predicted_ms=t.predicted_ms,
            predicted_per_token_ms=t.predicted_ms / t.predicted_n if t.predicted_n else 0.0,
            predicted_per_second=t.predicted_per_second,
        )
