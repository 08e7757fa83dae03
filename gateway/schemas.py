"""Request and response bodies of the OpenAI-, Ollama- and Anthropic-compatible APIs.

Unknown request fields are ignored (clients send many we do not use); the
constraints here become the OpenAPI schema and are checked when a body is
decoded, so a wrong type or an out-of-range value is a 400 before any work.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

ReasoningFormat = Literal["deepseek", "none"]
Role = Literal["system", "user", "assistant", "tool", "developer"]

Temperature = Annotated[float, Meta(ge=0.0, le=100.0)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
TopK = Annotated[int, Meta(ge=0)]
MaxTokens = Annotated[int, Meta(ge=1)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
StopList = Annotated[list[str], Meta(max_length=4)]


# --- OpenAI: requests --------------------------------------------------------------------


class ContentPart(Struct, kw_only=True):
    """One part of a message's content. Only "text" parts can be read by the model."""

    type: str
    text: str | None = None
    image_url: Any = None


ToolName = Annotated[str, Meta(min_length=1, max_length=256)]


class FunctionDefinition(Struct, kw_only=True, omit_defaults=True):
    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None  # JSON Schema of the arguments object
    strict: bool | None = None


class ToolDefinition(Struct, kw_only=True, omit_defaults=True):
    """A tool the model may call (OpenAI's `tools` items; Ollama's are the same)."""

    type: Literal["function"]
    function: FunctionDefinition


class ToolChoiceFunction(Struct, kw_only=True):
    name: ToolName


class NamedToolChoice(Struct, kw_only=True):
    type: Literal["function"]
    function: ToolChoiceFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class HistoryFunctionCall(Struct, kw_only=True):
    name: ToolName
    arguments: str | dict[str, Any] = "{}"  # JSON text (OpenAI); an object is taken too


class HistoryToolCall(Struct, kw_only=True):
    """A tool call of an earlier assistant message, as the client sends it back."""

    function: HistoryFunctionCall
    id: str | None = None
    type: Literal["function"] = "function"


class ChatMessage(Struct, kw_only=True):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[HistoryToolCall] | None = None  # assistant messages
    tool_call_id: str | None = None  # tool messages: the call they answer


class StreamOptions(Struct, kw_only=True):
    include_usage: bool = False


class SamplingFields(Struct, kw_only=True):
    """Fields shared by /v1/chat/completions and /v1/completions."""

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_k: TopK | None = None
    min_p: Probability | None = None
    max_tokens: MaxTokens | None = None
    stop: str | StopList | None = None
    seed: Seed | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repeat_penalty: Annotated[float, Meta(gt=0.0, le=10.0)] | None = None
    n: Annotated[int, Meta(ge=1, le=128)] = 1
    user: str | None = None


class ChatCompletionRequest(SamplingFields, kw_only=True):
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    max_completion_tokens: MaxTokens | None = None
    reasoning_format: ReasoningFormat | None = None  # per request: "none" keeps <think> in content
    force_think: bool = False  # open the reasoning block in the prompt if the template has not
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None  # false: at most one call per answer


class CompletionRequest(SamplingFields, kw_only=True):
    # text, a one-element list of text, or token ids (n = 1: one prompt per request)
    prompt: str | Annotated[list[str | Annotated[int, Meta(ge=0)]], Meta(min_length=1)]
    echo: bool = False


# --- OpenAI: responses -------------------------------------------------------------------


class CompletionTokensDetails(Struct, kw_only=True):
    reasoning_tokens: int = 0


class PromptTokensDetails(Struct, kw_only=True):
    cached_tokens: int = 0  # prompt tokens whose keys/values came from the prefix cache


class Usage(Struct, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: CompletionTokensDetails
    prompt_tokens_details: PromptTokensDetails = msgspec.field(default_factory=PromptTokensDetails)


class TimingsBody(Struct, kw_only=True):
    """llama-server's per-request speed figures."""

    prompt_n: int
    prompt_ms: float
    prompt_per_token_ms: float
    prompt_per_second: float
    predicted_n: int
    predicted_ms: float
    predicted_per_token_ms: float
    predicted_per_second: float


class FunctionCall(Struct, kw_only=True):
    name: str
    arguments: str  # JSON text of an object


class ToolCallBody(Struct, kw_only=True):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class AssistantMessage(Struct, kw_only=True, omit_defaults=True):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = None  # present when the model reasoned
    tool_calls: list[ToolCallBody] | None = None  # present when the model called tools


ChatFinishReason = Literal["stop", "length", "tool_calls"]


class ChatChoice(Struct, kw_only=True):
    index: int
    message: AssistantMessage
    finish_reason: ChatFinishReason | None
    logprobs: None = None


class FunctionCallDelta(Struct, kw_only=True, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(Struct, kw_only=True, omit_defaults=True):
    """A streamed piece of tool call `index`: the first has id, type and name, the next arguments."""

    index: int
    function: FunctionCallDelta
    id: str | None = None
    type: Literal["function"] | None = None


class ChatCompletion(Struct, kw_only=True):
    id: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    object: Literal["chat.completion"] = "chat.completion"
    system_fingerprint: str | None = None
    timings: TimingsBody | msgspec.UnsetType = msgspec.UNSET


class ChatDelta(Struct, kw_only=True, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(Struct, kw_only=True):
    index: int
    delta: ChatDelta
    finish_reason: ChatFinishReason | None
    logprobs: None = None


class ChatCompletionChunk(Struct, kw_only=True):
    id: str
    created: int
    model: str
    choices: list[ChatChunkChoice]
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    system_fingerprint: str | None = None
    usage: Usage | None = None
    # Only the final chunk has timings; clients (Open WebUI) fail on `"timings": null`.
    timings: TimingsBody | msgspec.UnsetType = msgspec.UNSET


class CompletionChoice(Struct, kw_only=True):
    index: int
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: None = None


class Completion(Struct, kw_only=True):
    """A /v1/completions response, and (with object "text_completion" too) each streamed chunk."""

    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    object: Literal["text_completion"] = "text_completion"
    system_fingerprint: str | None = None
    usage: Usage | None = None
    timings: TimingsBody | msgspec.UnsetType = msgspec.UNSET


class ModelCard(Struct, kw_only=True):
    id: str
    created: int
    object: Literal["model"] = "model"
    owned_by: str = "moebox"


class ModelList(Struct, kw_only=True):
    data: list[ModelCard]
    object: Literal["list"] = "list"


class ErrorDetail(Struct, kw_only=True):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(Struct, kw_only=True):
    """OpenAI's error shape; also sent as an SSE chunk when a stream fails after it started."""

    error: ErrorDetail


class Health(Struct, kw_only=True):
    status: Literal["ok", "loading", "error"]
    model: str | None = None
    message: str | None = None


# --- Ollama ------------------------------------------------------------------------------


class OllamaOptions(Struct, kw_only=True):
    """The `options` object; unknown options (num_ctx, num_gpu, ...) are ignored."""

    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_k: TopK | None = None
    min_p: Probability | None = None
    num_predict: Annotated[int, Meta(ge=-2)] | None = None  # -1: until the context is full
    stop: list[str] | None = None
    seed: Seed | None = None
    repeat_penalty: Annotated[float, Meta(gt=0.0, le=10.0)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None


class OllamaFunctionCall(Struct, kw_only=True):
    name: ToolName
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)


class OllamaToolCall(Struct, kw_only=True):
    function: OllamaFunctionCall


class OllamaMessage(Struct, kw_only=True, omit_defaults=True):
    role: Role
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[OllamaToolCall] | None = None  # assistant messages
    tool_name: str | None = None  # tool messages: the tool that answered


class OllamaReply(Struct, kw_only=True, omit_defaults=True):
    """The assistant message of an /api/chat answer."""

    role: Literal["assistant"]
    content: str
    thinking: str | None = None
    tool_calls: list[OllamaToolCall] | None = None


class OllamaChatRequest(Struct, kw_only=True):
    model: str
    messages: list[OllamaMessage] = msgspec.field(default_factory=list)
    stream: bool = True
    options: OllamaOptions | None = None
    think: bool | None = None  # false: keep the think block raw in content
    tools: list[ToolDefinition] | None = None


class OllamaGenerateRequest(Struct, kw_only=True):
    model: str
    prompt: str = ""
    system: str | None = None
    raw: bool = False  # true: the prompt is sent as is, without the chat template
    stream: bool = True
    options: OllamaOptions | None = None
    think: bool | None = None
    images: list[str] | None = None


class OllamaChatResponse(Struct, kw_only=True, omit_defaults=True):
    model: str
    created_at: str
    message: OllamaReply
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class OllamaGenerateResponse(Struct, kw_only=True, omit_defaults=True):
    model: str
    created_at: str
    response: str
    done: bool
    thinking: str | None = None
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class OllamaModelDetails(Struct, kw_only=True):
    format: str
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str
    parent_model: str = ""


class OllamaModel(Struct, kw_only=True):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: OllamaModelDetails


class OllamaTags(Struct, kw_only=True):
    models: list[OllamaModel]


class OllamaShowRequest(Struct, kw_only=True):
    model: str | None = None
    name: str | None = None  # older clients


class OllamaShowResponse(Struct, kw_only=True):
    modelfile: str
    parameters: str
    template: str
    details: OllamaModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class OllamaVersion(Struct, kw_only=True):
    version: str


class OllamaError(Struct, kw_only=True):
    error: str


# --- Anthropic (Messages API) ------------------------------------------------------------


class AnthropicTextBlock(Struct, kw_only=True, tag_field="type", tag="text"):
    text: str


class AnthropicImageBlock(Struct, kw_only=True, tag_field="type", tag="image"):
    source: Any = None  # refused: this server's models read text only


class AnthropicToolUseBlock(Struct, kw_only=True, tag_field="type", tag="tool_use"):
    id: str
    name: ToolName
    input: dict[str, Any] = msgspec.field(default_factory=dict)


class AnthropicToolResultBlock(Struct, kw_only=True, tag_field="type", tag="tool_result"):
    tool_use_id: str
    content: str | list[AnthropicTextBlock | AnthropicImageBlock] | None = None
    is_error: bool = False


class AnthropicThinkingBlock(Struct, kw_only=True, tag_field="type", tag="thinking"):
    thinking: str
    signature: str | None = None


class AnthropicRedactedThinkingBlock(Struct, kw_only=True, tag_field="type", tag="redacted_thinking"):
    data: str = ""


AnthropicRequestBlock = (
    AnthropicTextBlock
    | AnthropicImageBlock
    | AnthropicToolUseBlock
    | AnthropicToolResultBlock
    | AnthropicThinkingBlock
    | AnthropicRedactedThinkingBlock
)


class AnthropicMessage(Struct, kw_only=True):
    role: Literal["user", "assistant"]
    content: str | list[AnthropicRequestBlock]


class AnthropicTool(Struct, kw_only=True):
    name: ToolName
    description: str | None = None
    input_schema: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object"})


class AnthropicToolChoice(Struct, kw_only=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None  # type "tool": the tool to call
    disable_parallel_tool_use: bool = False


class AnthropicThinking(Struct, kw_only=True):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None


class AnthropicCountTokensRequest(Struct, kw_only=True):
    model: str
    messages: Annotated[list[AnthropicMessage], Meta(min_length=1)]
    system: str | list[AnthropicTextBlock] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    thinking: AnthropicThinking | None = None


class AnthropicMessagesRequest(AnthropicCountTokensRequest, kw_only=True):
    max_tokens: MaxTokens
    stream: bool = False
    stop_sequences: list[str] | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_k: TopK | None = None


class AnthropicTextOut(Struct, kw_only=True, tag_field="type", tag="text"):
    text: str


class AnthropicThinkingOut(Struct, kw_only=True, tag_field="type", tag="thinking"):
    thinking: str
    signature: str = ""  # no signature: the reasoning is the model's own text


class AnthropicToolUseOut(Struct, kw_only=True, tag_field="type", tag="tool_use"):
    id: str
    name: str
    input: dict[str, Any]


AnthropicContentOut = AnthropicThinkingOut | AnthropicTextOut | AnthropicToolUseOut

AnthropicStopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class AnthropicUsage(Struct, kw_only=True):
    input_tokens: int  # prompt tokens computed for this request (not read from the prefix cache)
    output_tokens: int
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


class AnthropicMessageResponse(Struct, kw_only=True):
    id: str
    content: list[AnthropicContentOut]
    model: str
    stop_reason: AnthropicStopReason | None
    usage: AnthropicUsage
    stop_sequence: str | None = None
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"


class AnthropicTokenCount(Struct, kw_only=True):
    input_tokens: int


class AnthropicErrorDetail(Struct, kw_only=True):
    type: str
    message: str


class AnthropicErrorBody(Struct, kw_only=True):
    """Anthropic's error shape; also sent as an `error` event when a stream fails after it started."""

    error: AnthropicErrorDetail
    type: Literal["error"] = "error"
