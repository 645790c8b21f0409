"""Response bodies and error objects of the model APIs (OpenAI Chat Completions,
models, embeddings, Responses; Anthropic Messages), as the gateway writes them.

Request bodies are not here: the document uses the models that validate them
(`corral.gateway.openai_format.ChatCompletionIn` and the like). Response models
forbid extra fields, so a field a handler adds without adding it here fails the
contract test instead of going undocumented."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Out(BaseModel):
    """A response body: every field it may carry is declared."""

    model_config = ConfigDict(extra="forbid")


# ---- errors ------------------------------------------------------------------


class OpenAIErrorDetail(Out):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, permission_error, "
                                  "rate_limit_error, server_error")
    param: str | None
    code: str | None


class OpenAIError(Out):
    """Every error outside `/v1/messages`."""

    error: OpenAIErrorDetail


class AnthropicErrorDetail(Out):
    type: Literal["invalid_request_error", "authentication_error", "permission_error", "not_found_error",
                  "request_too_large", "rate_limit_error", "api_error", "overloaded_error", "timeout_error"]
    message: str


class AnthropicError(Out):
    """Every error under `/v1/messages`."""

    type: Literal["error"]
    error: AnthropicErrorDetail


# ---- OpenAI Chat Completions --------------------------------------------------


class FunctionCallOut(Out):
    name: str
    arguments: str


class ToolCallOut(Out):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessageOut(Out):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallOut] | None = None
    reasoning_content: str | None = Field(default=None, description="the upstream's reasoning text, when it has one")


class ChoiceOut(Out):
    index: int
    message: AssistantMessageOut
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"]
    logprobs: None


class PromptTokensDetails(Out):
    cached_tokens: int


class CompletionTokensDetails(Out):
    reasoning_tokens: int


class ChatUsage(Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails


class ChatCompletion(Out):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChoiceOut]
    usage: ChatUsage
    system_fingerprint: None


class ToolCallDeltaOut(Out):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, str]


class DeltaOut(Out):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDeltaOut] | None = None


class ChunkChoiceOut(Out):
    index: int
    delta: DeltaOut
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"] | None
    logprobs: None


class ChatCompletionChunk(Out):
    """One `data:` line of a `stream: true` answer; the stream ends with `data: [DONE]`."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: None
    choices: list[ChunkChoiceOut]
    usage: ChatUsage | None = Field(default=None, description="only with stream_options.include_usage")


# ---- models and embeddings ----------------------------------------------------


class ModelOut(Out):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(Out):
    object: Literal["list"]
    data: list[ModelOut]


class EmbeddingOut(Out):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32")


class EmbeddingUsage(Out):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(Out):
    object: Literal["list"]
    data: list[EmbeddingOut]
    model: str
    usage: EmbeddingUsage


# ---- Anthropic Messages -------------------------------------------------------


class TextBlockOut(Out):
    type: Literal["text"]
    text: str


class ThinkingBlockOut(Out):
    type: Literal["thinking"]
    thinking: str
    signature: str


class ToolUseBlockOut(Out):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class AnthropicUsage(Out):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int


class AnthropicMessage(Out):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[ThinkingBlockOut | TextBlockOut | ToolUseBlockOut]
    stop_reason: Literal["end_turn", "max_tokens", "tool_use", "refusal"] | None
    stop_sequence: None
    usage: AnthropicUsage


class AnthropicStreamEvent(Out):
    """`event: <type>` + `data:` of a `stream: true` answer: `message_start`, `ping`,
    `content_block_start`, `content_block_delta`, `content_block_stop`, `message_delta`,
    `message_stop` (or `error`)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["message_start", "ping", "content_block_start", "content_block_delta", "content_block_stop",
                  "message_delta", "message_stop", "error"]


class TokenCount(Out):
    input_tokens: int = Field(description="an estimate (about four characters a token)")


# ---- OpenAI Responses -----------------------------------------------------------


class OutputText(Out):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]
    logprobs: list[Any]


class MessageItem(Out):
    type: Literal["message"]
    id: str
    role: Literal["assistant"]
    status: Literal["in_progress", "completed"]
    content: list[OutputText]


class FunctionCallItem(Out):
    type: Literal["function_call"]
    id: str
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed"]


class InputTokensDetails(Out):
    cached_tokens: int


class OutputTokensDetails(Out):
    reasoning_tokens: int


class ResponsesUsage(Out):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseError(Out):
    code: str
    message: str


class IncompleteDetails(Out):
    reason: Literal["max_output_tokens"]


class ResponseReasoning(Out):
    effort: Literal["minimal", "low", "medium", "high"] | None
    summary: Literal["auto", "concise", "detailed"] | None


class ResponseObject(Out):
    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "in_progress", "failed"]
    model: str
    output: list[MessageItem | FunctionCallItem]
    error: ResponseError | None
    incomplete_details: IncompleteDetails | None
    instructions: str | None
    metadata: dict[str, str]
    parallel_tool_calls: bool
    temperature: float | None
    top_p: float | None
    max_output_tokens: int | None
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    previous_response_id: None
    reasoning: ResponseReasoning | None
    store: bool
    text: dict[str, Any]
    truncation: Literal["disabled"]
    user: str | None
    usage: ResponsesUsage | None


class ResponseStreamEvent(Out):
    """`event: <type>` + `data:` of a `stream: true` answer, numbered by `sequence_number`."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="response.created, response.in_progress, response.output_item.added, "
                                  "response.output_text.delta, ..., response.completed")
    sequence_number: int
