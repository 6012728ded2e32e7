"""OpenAI's request bodies as pydantic models: validation that names the param, and the mapping
of a valid body onto the mesh's `ChatRequest`.

The same models generate the request half of `/openapi.json`, so the document cannot drift
from what the server accepts.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clawdbot.shared.errors import InvalidArgument
from clawdbot.v1 import chat_pb2, common_pb2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageUrl(_Strict):
    url: str = Field(min_length=1, description="A data: URL (base64) or an http(s) URL")
    detail: Literal["auto", "low", "high"] = "auto"


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Strict):
    name: str
    arguments: str = "{}"


class ToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_needed(self) -> Message:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required unless an assistant message carries tool_calls")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("tool messages need tool_call_id")
        return self


class FunctionSpec(_Strict):
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(_Strict):
    name: str


class ToolChoiceFunction(_Strict):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(_Strict):
    """POST /v1/chat/completions. `session_id` and `return_token_ids` are Clawdbot's extensions."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: int = Field(default=1, ge=1, le=1)
    presence_penalty: float = Field(default=0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0, ge=-2, le=2)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceFunction | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = Field(default=None, max_length=256)
    session_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    return_token_ids: bool = False
    grounding: bool | None = None  # Clawdbot: numbers only from the prompt (unset: the server's setting)
    verify: bool | None = None  # Clawdbot: verify the reply, fall back to the extractive answer

    @model_validator(mode="after")
    def _checks(self) -> ChatCompletionRequest:
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 4:
            raise ValueError("stop: at most 4 stop sequences")
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs: logprobs must be true when top_logprobs is set")
        return self


class CompletionRequest(_Strict):
    """POST /v1/completions: a prompt as text or as token ids, no chat template, no memory."""

    model: str = Field(min_length=1)
    prompt: str | list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=16, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    n: int = Field(default=1, ge=1, le=1)
    presence_penalty: float = Field(default=0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0, ge=-2, le=2)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    user: str | None = Field(default=None, max_length=256)
    return_token_ids: bool = False


_TYPE_NAMES = {"str", "int", "float", "bool", "ToolChoiceFunction", "StreamOptions"}


def param_of(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as OpenAI names params: messages[0].content. Union-branch and
    discriminator markers that pydantic puts in the location are dropped."""
    out = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TYPE_NAMES or any(c in part for c in "[(") or part == previous:
            continue
        else:
            out += f".{part}" if out else part
        previous = part
    return out


def parse_body(model: type[_Strict], body: Any) -> Any:
    """Validate a decoded JSON body; the first problem becomes a 400 naming its param."""
    if not isinstance(body, dict):
        raise InvalidArgument("The request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        err = max(errors, key=lambda e: len(e["loc"]))  # the deepest: the branch that nearly fit
        param = param_of(tuple(err["loc"]))
        message = err["msg"].removeprefix("Value error, ")
        if not param and ": " in message:
            param, message = message.split(": ", 1)
        if err["type"] == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {param}"
        elif err["type"] == "missing":
            message = f"Missing required parameter: '{param}'"
        elif param:
            message = f"Invalid value for '{param}': {message}"
        raise InvalidArgument(message, field=param or None) from None


def _message(m: Message) -> common_pb2.ChatMessage:
    out = common_pb2.ChatMessage(role=m.role, name=m.name or "", tool_call_id=m.tool_call_id or "")
    if isinstance(m.content, str):
        out.content = m.content
    elif m.content:
        for part in m.content:
            if isinstance(part, TextPart):
                out.parts.add(text=part.text)
            else:
                out.parts.add(
                    image_url=common_pb2.ImageUrl(url=part.image_url.url, detail=part.image_url.detail)
                )
        out.content = "".join(p.text for p in m.content if isinstance(p, TextPart))
    for call in m.tool_calls or []:
        out.tool_calls.add(
            id=call.id,
            type="function",
            function=common_pb2.FunctionCall(name=call.function.name, arguments=call.function.arguments),
        )
    return out


def _tool(t: Tool) -> common_pb2.ToolSpec:
    return common_pb2.ToolSpec(
        type="function",
        function=common_pb2.FunctionSpec(
            name=t.function.name,
            description=t.function.description,
            parameters_json=json.dumps(t.function.parameters, ensure_ascii=False),
        ),
    )


def stops_of(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def to_chat_request(
    body: ChatCompletionRequest, *, tenant: str, session_id: str | None
) -> chat_pb2.ChatRequest:
    """The REST body as the mesh's ChatRequest (what gRPC Chat clients send directly)."""
    choice = body.tool_choice
    request = chat_pb2.ChatRequest(
        model=body.model,
        messages=[_message(m) for m in body.messages],
        max_tokens=body.max_completion_tokens or body.max_tokens or 0,
        stop=stops_of(body.stop),
        n=body.n,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logprobs=body.logprobs,
        top_logprobs=body.top_logprobs or 0,
        tools=[_tool(t) for t in body.tools or []],
        tool_choice=choice.function.name if isinstance(choice, ToolChoiceFunction) else (choice or ""),
        user=body.user or "",
        session_id=session_id or body.session_id or "",
        return_token_ids=body.return_token_ids,
        grounding=body.grounding,
        verify=body.verify,
        tenant=tenant,
    )
    if body.temperature is not None:
        request.temperature = body.temperature
    if body.top_p is not None:
        request.top_p = body.top_p
    if body.seed is not None:
        request.seed = body.seed
    return request
