"""The model contract: one async method, typed requests and responses, and the "provider:name" resolver.

Every tier talks to its model through `Model.request`. Structured output is uniform across providers: the
final answer comes back as JSON in `ModelResponse.text` (Anthropic's forced final tool, OpenAI's
`response_format`, a local model's JSON-only prompt all end up there), and the agent loop parses it.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from protege.errors import UserError

Role = Literal["system", "user", "assistant", "tool"]

FINAL_TOOL = "final_answer"
"""Name of the forced tool whose input is the structured answer (Anthropic) — never shown to users."""


class ToolCall(BaseModel):
    """One call of a tool the model asked for."""

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    arguments_error: str | None = None
    """Why the model's arguments could not be read (not JSON, not an object), where they could not: `arguments` is
    then empty, and the call is answered with this error instead of being run, so the model can send it again."""


class Message(BaseModel):
    """One turn of a transcript. `cache=True` marks a system block for prompt caching where supported."""

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    cache: bool = False


class ToolSpec(BaseModel):
    """A tool offered to the model: name, description, JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ModelRequest(BaseModel):
    """What a model is asked: the transcript, offered tools, the answer's JSON schema, and the task context.

    `task_name` and `task_input` are structured copies of what the prompt says, so a test double or an oracle
    (FunctionModel, ReferenceModel) can answer without parsing prompts. `fixed_output` holds top-level output
    fields whose values are already decided (by a verified program): a model that decodes under a grammar writes
    them as given and chooses only the rest; the cascade puts them into any other model's answer.
    """

    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    output_schema: dict[str, Any] | None = None
    task_name: str | None = None
    task_input: dict[str, Any] | None = None
    max_tokens: int = 2048
    temperature: float = 0.0
    fixed_output: dict[str, Any] | None = None


class Usage(BaseModel):
    """Token counts of one model response; cache tokens are the provider's prompt-cache reads and writes.

    `compute_s` is the machine time a model that runs on our own hardware (a local student, a self-hosted server)
    spent on the response; the price table charges it at the machine's hourly price.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    compute_s: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            compute_s=self.compute_s + other.compute_s,
        )


# An allow-list: a provider may add stop reasons (Anthropic's refusal, pause_turn and model_context_window_exceeded
# came later), and an answer stopped for a reason protege does not know must not pass as a finished one.
# TGI before v2.3 ended answers with "eos_token"; some OpenAI-compatible servers say "eos"
FINISHED = ("end_turn", "tool_use", "stop_sequence", "stop", "tool_calls", "eos_token", "eos")
"""Stop reasons of an answer that ended on its own: Anthropic's end_turn/tool_use/stop_sequence, OpenAI's
stop/tool_calls (local models report Anthropic's names)."""
TOKEN_LIMIT = ("max_tokens", "length")  # stopped at the request's max_tokens (Anthropic's name, OpenAI's)
UNREADABLE = "unreadable"
"""Stop reason of a response standing for an answer the provider billed but that could not be read (ModelError.usage
holds what it cost)."""


class ModelResponse(BaseModel):
    """A model's answer: final text (JSON for structured output) or tool calls, usage and the raw payload.

    `confidence` is the mean token probability of the answer where the model can tell (local models), used by
    the student's confidence gate; `None` elsewhere. `field_confidences` maps each top-level output field the
    model chose to the probability of its least-sure token there (fields it was given are absent).
    """

    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    raw: Any = None
    model: str = ""
    stop_reason: str | None = None
    confidence: float | None = None
    field_confidences: dict[str, float] | None = None

    @property
    def cut_short(self) -> bool:
        """Did not finish: stopped at its token limit ("max_tokens", "length"), at a bound learned from the traces
        ("bound"), or for any reason outside FINISHED (a refusal, a content filter, a full context window): whatever
        it wrote, it is not an answer to serve, score as right, or calibrate a gate on. `None` (a model that does
        not say, such as a test double) counts as finished."""
        return self.stop_reason is not None and self.stop_reason not in FINISHED


@runtime_checkable
class Model(Protocol):
    """Anything that answers a `ModelRequest`.

    `name` is the "provider:model" spec it was made from; `price_as` names the model whose prices its calls are
    charged at (a ReferenceModel standing in for Claude Opus prices as Opus); `None` means use `name`.
    """

    name: str
    price_as: str | None

    async def request(self, req: ModelRequest) -> ModelResponse: ...


# provider prefix -> "module:factory"; the factory takes (model_name, **options) and returns a Model.
PROVIDERS: dict[str, str] = {
    "anthropic": "protege.agents.models.anthropic:AnthropicModel",
    "openai": "protege.agents.models.openai:OpenAIModel",
    "local": "protege.agents.models.local:LocalModel",
}


def split_spec(spec: str) -> tuple[str, str]:
    """'anthropic:claude-haiku-4-5' -> ('anthropic', 'claude-haiku-4-5'), with a clear error on bad specs."""
    provider, sep, name = spec.partition(":")
    if not sep or not provider or not name:
        raise UserError(
            f"model spec {spec!r} is not 'provider:model'; use e.g. 'anthropic:claude-haiku-4-5', "
            f"'openai:gpt-4o-mini' or 'local:<path>'"
        )
    if provider not in PROVIDERS:
        known = ", ".join(sorted(PROVIDERS))
        raise UserError(f"unknown model provider {provider!r} in {spec!r}; known providers: {known}")
    return provider, name


def resolve_model(spec: str | Model, **options: Any) -> Model:
    """Turn a spec string into a Model (importing the provider lazily); pass Model objects through."""
    if not isinstance(spec, str):
        if not isinstance(spec, Model):
            raise UserError(f"{spec!r} is neither a model spec string nor a Model (needs .name and async .request)")
        return spec
    provider, name = split_spec(spec)
    module_name, _, attr = PROVIDERS[provider].partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(name, **options)
