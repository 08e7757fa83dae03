"""The Ollama-compatible API: /api/chat, /api/generate, /api/tags, /api/show, /api/version.

Enough for Page Assist and Ollama client libraries: NDJSON streaming (one JSON
object per line, the last with `done: true` and the counts and durations in
nanoseconds) or one object when `stream` is false; reasoning goes to
`message.thinking` (`thinking` for /api/generate) unless `think` is false or
the server keeps reasoning raw. /api/chat takes `tools`; the model's calls come
back as `message.tool_calls` (arguments as an object), in the line where each
call became complete when streaming.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from engine import __version__
from engine.tool_calls import ToolCall
from gateway.errors import InvalidRequestError, describe, error_responses
from gateway.generation import GenerationRun, chat_prompt, sampling_params, text_prompt
from gateway.metrics import GatewayMetrics
from gateway.model_host import ModelHost
from gateway.schemas import (
    OllamaChatRequest,
    OllamaChatResponse,
    OllamaError,
    OllamaFunctionCall,
    OllamaGenerateRequest,
    OllamaGenerateResponse,
    OllamaMessage,
    OllamaModel,
    OllamaModelDetails,
    OllamaOptions,
    OllamaReply,
    OllamaShowRequest,
    OllamaShowResponse,
    OllamaTags,
    OllamaToolCall,
    OllamaVersion,
)
from gateway.settings import GatewaySettings
from gateway.streaming import NDJSONOperation, NDJSONStream

_ERRORS = error_responses(OllamaError)

_encode = msgspec.json.Encoder().encode
# Ollama's version the API here follows (clients check it for features such as thinking).
OLLAMA_API_VERSION = "0.9.0"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _split(settings: GatewaySettings, think: bool | None) -> bool:
    return think is not False and settings.reasoning_format == "deepseek"


def _params(llm, settings: GatewaySettings, options: OllamaOptions | None, prompt_len: int):
    o = options or OllamaOptions()
    max_tokens = o.num_predict if o.num_predict and o.num_predict > 0 else None
    return sampling_params(
        llm,
        settings,
        prompt_len,
        max_tokens=max_tokens,
        temperature=o.temperature,
        top_p=o.top_p,
        top_k=o.top_k,
        min_p=o.min_p,
        stop=o.stop,
        seed=o.seed,
        presence_penalty=o.presence_penalty,
        frequency_penalty=o.frequency_penalty,
        repeat_penalty=o.repeat_penalty,
    )


def _final_counts(run: GenerationRun, started: float) -> dict:
    t = run.timings
    return {
        "done_reason": "length" if run.finish_reason == "length" else "stop",
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": run.prompt_tokens,
        "prompt_eval_duration": int(t.prompt_ms * 1e6) if t else 0,
        "eval_count": run.completion_tokens,
        "eval_duration": int(t.predicted_ms * 1e6) if t else 0,
    }


def _no_images(images: list[str] | None, where: str) -> None:
    if images:
        raise InvalidRequestError(
            f"{where} carries images, but this server's models read text only; send text alone.", param=where
        )


def _template_messages(messages: list[OllamaMessage]) -> list[dict]:
    out = []
    for i, m in enumerate(messages):
        msg: dict = {"role": m.role, "content": m.content}
        if m.tool_calls:
            msg["tool_calls"] = [
                {
                    "id": f"call_{i}_{j}",
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for j, c in enumerate(m.tool_calls)
            ]
        out.append(msg)
    return out


def _tool_calls(calls: tuple[ToolCall, ...] | list[ToolCall]) -> list[OllamaToolCall] | None:
    return [
        OllamaToolCall(function=OllamaFunctionCall(name=c.name, arguments=json.loads(c.arguments)))
        for c in calls
    ] or None


def _details(host: ModelHost) -> OllamaModelDetails:
    arch = host.llm.config.architecture if host.llm is not None else ""
    return OllamaModelDetails(
        format="gguf", family=arch, families=[arch] if arch else [], parameter_size="", quantization_level=""
    )


class OllamaController(Controller):
    path = "/api"
    tags = ["Ollama"]

    @get("/version")
    async def show_version(self) -> OllamaVersion:
        return OllamaVersion(version=OLLAMA_API_VERSION)

    @get("/tags", responses=_ERRORS)
    async def list_models(self, host: NamedDependency[ModelHost]) -> OllamaTags:
        """The served model, as Ollama lists installed models."""
        return OllamaTags(models=[_model_entry(host)])

    @get("/ps", responses=_ERRORS)
    async def running_models(self, host: NamedDependency[ModelHost]) -> OllamaTags:
        """Models loaded in memory: the served one, once ready."""
        return OllamaTags(models=[_model_entry(host)])

    @post("/show", status_code=200, responses=_ERRORS)
    async def show(
        self, data: JSONBody[OllamaShowRequest], host: NamedDependency[ModelHost]
    ) -> OllamaShowResponse:
        llm, _ = host.resolve(data.model or data.name)
        template = llm.chat_template.source
        arch = _details(host).family
        return OllamaShowResponse(
            modelfile=f"# served by moebox {__version__}\nFROM {host.name}\n",
            parameters="",
            template=template,
            details=_details(host),
            model_info={
                "general.architecture": arch,
                f"{arch or 'model'}.context_length": llm.context_length,
            },
            capabilities=["completion", "thinking", "tools"],
            modified_at=datetime.fromtimestamp(host.created, UTC).isoformat().replace("+00:00", "Z"),
        )

    @post(
        "/chat",
        status_code=200,
        operation_class=NDJSONOperation,
        responses=_ERRORS,
        description="Chat; with `stream` (the default) the answer is NDJSON, one object per line.",
    )
    async def chat(
        self,
        request: Request,
        data: JSONBody[OllamaChatRequest],
        host: NamedDependency[ModelHost],
        settings: NamedDependency[GatewaySettings],
        metrics: NamedDependency[GatewayMetrics],
    ) -> OllamaChatResponse:
        started = time.perf_counter()
        llm, scheduler = host.resolve(data.model)
        for i, m in enumerate(data.messages):
            _no_images(m.images, f"messages[{i}].images")
        if not data.messages:  # Ollama's "load the model" call
            return OllamaChatResponse(
                model=data.model,
                created_at=_now(),
                message=OllamaReply(role="assistant", content=""),
                done=True,
                done_reason="load",
            )
        tools = [msgspec.to_builtins(t) for t in data.tools] if data.tools else None
        prompt = chat_prompt(llm, _template_messages(data.messages), tools=tools)
        params = _params(llm, settings, data.options, len(prompt.ids))
        run = GenerationRun.start(
            scheduler,
            prompt,
            params,
            api="ollama.chat",
            metrics=metrics,
            split_reasoning=_split(settings, data.think),
            started=started,
        )
        model = data.model
        if data.stream:

            def line(delta_reasoning: str, delta_content: str, calls=()) -> OllamaChatResponse:
                msg = OllamaReply(
                    role="assistant",
                    content=delta_content,
                    thinking=delta_reasoning or None,
                    tool_calls=_tool_calls(calls),
                )
                return OllamaChatResponse(model=model, created_at=_now(), message=msg, done=False)

            def last() -> OllamaChatResponse:
                return OllamaChatResponse(
                    model=model,
                    created_at=_now(),
                    message=OllamaReply(role="assistant", content=""),
                    done=True,
                    **_final_counts(run, started),
                )

            return _ndjson(run, line, last, request)  # type: ignore[return-value]
        reasoning, content = await run.collect(request.receive)
        return OllamaChatResponse(
            model=model,
            created_at=_now(),
            message=OllamaReply(
                role="assistant",
                content="" if run.tool_calls and not content.strip() else content,
                thinking=reasoning or None,
                tool_calls=_tool_calls(run.tool_calls),
            ),
            done=True,
            **_final_counts(run, started),
        )

    @post(
        "/generate",
        status_code=200,
        operation_class=NDJSONOperation,
        responses=_ERRORS,
        description="Completion of one prompt (with the chat template unless `raw`); NDJSON when streaming.",
    )
    async def generate(
        self,
        request: Request,
        data: JSONBody[OllamaGenerateRequest],
        host: NamedDependency[ModelHost],
        settings: NamedDependency[GatewaySettings],
        metrics: NamedDependency[GatewayMetrics],
    ) -> OllamaGenerateResponse:
        started = time.perf_counter()
        llm, scheduler = host.resolve(data.model)
        _no_images(data.images, "images")
        if not data.prompt and not data.system:  # Ollama's "load the model" call
            return OllamaGenerateResponse(
                model=data.model, created_at=_now(), response="", done=True, done_reason="load"
            )
        if data.raw:
            prompt = text_prompt(llm, data.prompt)
        else:
            messages = ([{"role": "system", "content": data.system}] if data.system else []) + [
                {"role": "user", "content": data.prompt}
            ]
            prompt = chat_prompt(llm, messages)
        params = _params(llm, settings, data.options, len(prompt.ids))
        run = GenerationRun.start(
            scheduler,
            prompt,
            params,
            api="ollama.generate",
            metrics=metrics,
            split_reasoning=_split(settings, data.think),
            started=started,
        )
        model = data.model
        if data.stream:

            def line(delta_reasoning: str, delta_content: str, calls=()) -> OllamaGenerateResponse:
                return OllamaGenerateResponse(
                    model=model,
                    created_at=_now(),
                    response=delta_content,
                    thinking=delta_reasoning or None,
                    done=False,
                )

            def last() -> OllamaGenerateResponse:
                return OllamaGenerateResponse(
                    model=model, created_at=_now(), response="", done=True, **_final_counts(run, started)
                )

            return _ndjson(run, line, last, request)  # type: ignore[return-value]
        reasoning, content = await run.collect(request.receive)
        return OllamaGenerateResponse(
            model=model,
            created_at=_now(),
            response=content,
            thinking=reasoning or None,
            done=True,
            **_final_counts(run, started),
        )


def _ndjson(run: GenerationRun, line, last, request: Request) -> NDJSONStream:
    async def lines() -> AsyncIterator[bytes]:
        try:
            async for d in run.deltas():
                if d is not None:
                    yield _encode(line(d.reasoning, d.content, d.tool_calls)) + b"\n"
            yield _encode(last()) + b"\n"
        except Exception as exc:
            run.cancel()
            _, detail = describe(exc, request.scope.get("state", {}).get("request_id"))
            yield _encode(OllamaError(error=detail.message)) + b"\n"

    return NDJSONStream(lines())


def _model_entry(host: ModelHost) -> OllamaModel:
    llm, _ = host.require_ready()
    path = str(llm.gguf.path)
    size = _file_size(path)
    name = host.name or ""
    return OllamaModel(
        name=name,
        model=name,
        modified_at=datetime.fromtimestamp(host.created, UTC).isoformat().replace("+00:00", "Z"),
        size=size,
        digest=hashlib.sha256(f"{name}\0{path}\0{size}".encode()).hexdigest(),
        details=_details(host),
    )


@get("/", media_type="text/plain", opt={"public": True}, tags=["Ollama"], include_in_schema=True)
async def ollama_root() -> str:
    """Ollama clients (Page Assist, ollama-python) probe the base URL for this line."""
    return "Ollama is running"


def _file_size(path: str) -> int:
    import os

    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0
