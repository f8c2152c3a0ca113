"""The request of ``POST /v1/responses``: every documented parameter, with its documented range.

Both reference documents are covered: DigitalOcean's ``ResponseCreateParams`` and the gateway's
extra keys (``top_k``, ``logprobs``, ``top_logprobs``, ``max_tool_calls``,
``max_output_tokens_per_message``, ``response_format``, ``service_tier``, ``store``, ``reasoning``,
``usage``, ``meta``). Validation happens when the model is built, so a bad request never leaves the
machine; :func:`build_request` turns pydantic's error into :class:`GradientRequestInvalid` naming
each field and its rule.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from airflow_gradient.arguments import JSON_RULE, TOOL_NAME_PATTERN, json_problems
from airflow_gradient.exceptions import GradientRequestInvalid
from airflow_gradient.models.parameters import REQUEST_PARAMETERS

ToolName = Annotated[str, Field(pattern=f"^{TOOL_NAME_PATTERN}$")]
NonEmptyStr = Annotated[str, Field(min_length=1)]


class _Item(BaseModel):
    # Items keep keys we do not model: the API documents open records inside messages.
    model_config = ConfigDict(extra="allow")


class InputTextPart(_Item):
    """A text part of a message's content (``input_text``; ``output_text``/``text`` are accepted)."""

    type: Literal["input_text", "output_text", "text"]
    text: str


def _content_part_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "text" if kind in ("input_text", "output_text", "text") else "other"


ContentPart = Annotated[
    Annotated[InputTextPart, Tag("text")] | Annotated[dict[str, Any], Tag("other")],
    Discriminator(_content_part_tag),
]


class ToolCallFunction(_Item):
    name: str
    arguments: str


class MessageToolCall(_Item):
    """A tool call made by an assistant message, in chat-completions form."""

    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class MessageItem(_Item):
    """A conversation message: ``{"role": "user", "content": "..."}``."""

    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "tool", "developer"] | None = None
    content: str | list[ContentPart]
    tool_call_id: str | None = None
    tool_calls: list[MessageToolCall] | None = None

    @model_validator(mode="after")
    def _tool_role_needs_call_id(self) -> MessageItem:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("tool_call_id is required when role is 'tool'")
        return self


class FunctionCallItem(_Item):
    """A function call the model made earlier in the conversation."""

    type: Literal["function_call"]
    call_id: NonEmptyStr
    name: ToolName
    arguments: str
    id: str | None = None
    status: str | None = None

    @field_validator("arguments")
    @classmethod
    def _arguments_are_json(cls, value: str) -> str:
        try:
            json.loads(value)
        except ValueError as exc:
            raise ValueError(f"must be a JSON string ({exc})") from None
        return value


class FunctionCallOutputItem(_Item):
    """The result of running a function call, sent back to the model."""

    type: Literal["function_call_output"]
    call_id: NonEmptyStr
    output: str


class ReasoningContent(_Item):
    text: str
    type: Literal["reasoning_text"] = "reasoning_text"


class ReasoningItem(_Item):
    """A reasoning item returned earlier by the model, passed back as context."""

    type: Literal["reasoning"]
    id: str | None = None
    content: list[ReasoningContent] | None = None
    summary: list[Any] | None = None
    encrypted_content: str | None = None
    status: str | None = None


def _input_item_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("function_call", "function_call_output", "reasoning") else "message"


InputItem = Annotated[
    (
        Annotated[MessageItem, Tag("message")]
        | Annotated[FunctionCallItem, Tag("function_call")]
        | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
        | Annotated[ReasoningItem, Tag("reasoning")]
    ),
    Discriminator(_input_item_tag),
]


class Tool(_Item):
    """A tool definition: a function (name, description, JSON-schema parameters) or web search."""

    type: Literal["function", "web_search", "web_search_2025_08_26"]
    name: ToolName | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _function_needs_name(self) -> Tool:
        if self.type == "function" and not self.name:
            raise ValueError("a function tool needs a name matching [a-zA-Z0-9_-]{1,64}")
        return self


class NamedFunction(BaseModel):
    name: ToolName


class NamedToolChoice(BaseModel):
    """Forces one function: ``{"type": "function", "function": {"name": "..."}}``."""

    type: Literal["function"]
    function: NamedFunction


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: StrictBool | None = None


class ResponseFormat(_Item):
    """``{"type": "text" | "json_object" | "json_schema", ...}`` (``json`` is accepted as an alias)."""

    type: Literal["text", "json", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and not self.json_schema:
            raise ValueError("type 'json_schema' needs a json_schema object")
        return self


class Reasoning(_Item):
    """Reasoning hints, such as ``{"effort": "low"}``."""

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: str | None = None


MetadataKey = Annotated[str, Field(max_length=64)]
MetadataValue = Annotated[str, Field(max_length=512)]


class ResponseRequest(BaseModel):
    """One ``POST /v1/responses`` request. Unknown keys are rejected (use ``extra_body``).

    Each field has its row in :data:`airflow_gradient.models.parameters.REQUEST_PARAMETERS`: how an
    operator takes it, what it means, its range in words.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_assignment=True)

    input: Annotated[str, Field(min_length=1)] | Annotated[list[InputItem], Field(min_length=1)]
    model: NonEmptyStr | None = None
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    max_output_tokens_per_message: Annotated[int, Field(ge=1)] | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=16)] | None = None
    modalities: list[Literal["text"]] | None = None
    parallel_tool_calls: StrictBool | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    max_tool_calls: Annotated[int, Field(ge=0)] | None = None
    # The gateway document writes it "json/text": the bare strings are accepted and sent as given.
    response_format: ResponseFormat | Literal["text", "json", "json_object"] | None = None
    service_tier: str | None = None
    store: StrictBool | None = None
    reasoning: Reasoning | None = None
    usage: StrictBool | None = None
    meta: StrictBool | None = None
    extra_body: dict[str, Any] | None = Field(
        default=None, description="Keys sent as they are, for parameters this model does not know."
    )

    @field_validator("temperature", "top_p", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return value

    @field_validator("max_output_tokens", "max_tokens", "max_output_tokens_per_message", "top_k",
                     "top_logprobs", "max_tool_calls", mode="before")
    @classmethod
    def _no_bool_ints(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be an integer, not a boolean")
        return value

    # Rules that tie two fields; each runs on the later field, so the error names it.
    @field_validator("stream_options")
    @classmethod
    def _options_need_stream(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("stream") is not True:
            raise ValueError("stream_options is only allowed when stream is true")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_need_logprobs(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("logprobs") is False:
            raise ValueError("top_logprobs needs logprobs to be true")
        return value

    def to_wire(self) -> dict[str, Any]:
        """The JSON body to send: only the fields that were set, ``extra_body`` merged in."""
        body = self.model_dump(mode="json", exclude_unset=True, exclude_none=True, exclude={"extra_body"})
        if self.extra_body:
            body.update(self.extra_body)
        return body


# What a user reads when a rule is broken: the documented range, not pydantic's internals.
FIELD_RULES: dict[str, str] = {parameter.name: parameter.allowed for parameter in REQUEST_PARAMETERS}


_TYPE_MISMATCH = {
    "string_type", "list_type", "dict_type", "int_type", "float_type", "bool_type", "model_type",
    "model_attributes_type", "int_parsing", "float_parsing", "bool_parsing", "none_required",
    "union_tag_invalid",
}
_TYPE_LABELS = {"str", "int", "float", "bool", "dict", "list", "none"}


def _is_union_label(part: str) -> bool:
    # pydantic puts the tried union branch into loc ("constrained-str", "list[...]", "Tool")
    return "[" in part or "-" in part or part in _TYPE_LABELS or part[:1].isupper()


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            path += " (the key)"
        elif _is_union_label(part) or (path.endswith("]") and part in _ITEM_TAGS):
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "request"


_ITEM_TAGS = {"text", "other", "message", "function_call", "function_call_output", "reasoning"}


def describe_validation_error(exc: ValidationError, where: str = "") -> GradientRequestInvalid:
    """Turn a pydantic error into one that names each field, its rule and the value given."""
    raw = [(_loc_to_path(tuple(e["loc"])), e) for e in exc.errors(include_url=False)]
    # Of a union's branches, keep the error of the branch that matched the value's type.
    specific = {path.split(".")[0].split("[")[0] for path, e in raw if e["type"] not in _TYPE_MISMATCH}
    errors: list[tuple[str, str]] = []
    lines: list[str] = []
    ruled: set[str] = set()
    for path, err in raw:
        top = path.split(".")[0].split("[")[0]
        if err["type"] in _TYPE_MISMATCH and top in specific:
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown parameter (put it in extra_body to send it anyway)"
        if (path, msg) in errors:
            continue
        shown = "" if err["type"] in ("missing",) else f" (got {_short(err.get('input'))})"
        line = f"{path}: {msg}{shown}"
        rule = FIELD_RULES.get(top)
        if rule and err["type"] != "extra_forbidden" and top not in ruled:
            line += f"; allowed: {rule}"
            ruled.add(top)
        lines.append(line)
        errors.append((path, msg))
    prefix = f"invalid request{' ' + where if where else ''}"
    return GradientRequestInvalid(f"{prefix}: " + "; ".join(lines), errors)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_request(data: ResponseRequest | dict[str, Any], *, where: str = "") -> ResponseRequest:
    """Validate ``data`` into a :class:`ResponseRequest`, or raise :class:`GradientRequestInvalid`."""
    if isinstance(data, ResponseRequest):
        # Built and validated already; only extra_body is sent without pydantic's serialisation.
        _refuse_non_json(json_problems(data.extra_body, "extra_body"), where)
        return data
    if not isinstance(data, dict):
        raise GradientRequestInvalid(
            f"invalid request{' ' + where if where else ''}: expected a mapping of parameters, "
            f"got {type(data).__name__}",
            [("request", "not a mapping")],
        )
    try:
        request = ResponseRequest.model_validate(data)
    except ValidationError as exc:
        raise describe_validation_error(exc, where) from None
    # pydantic would send NaN as null in open fields and leave extra_body's NaN to crash the JSON
    # encoder mid-batch: refuse both here, naming the path.
    for key, value in data.items():
        _refuse_non_json(json_problems(value, key, strict=key == "extra_body"), where)
    return request


def require_model(
    request: ResponseRequest,
    default_model: str | None,
    *,
    where: str = "",
    field: str = "model",
    defaults_from: str = "the connection's extras",
) -> ResponseRequest:
    """``request`` with ``default_model`` when it names no model; the one place a request without
    any model is refused (:class:`GradientRequestInvalid` naming ``field``), before anything is sent.

    :param where: which request, for the message (``"in item 3"``).
    :param defaults_from: where a default model could have come from, for the message.
    """
    if request.model is not None:
        return request
    if default_model:
        return request.model_copy(update={"model": default_model})
    raise GradientRequestInvalid(
        f"invalid request{' ' + where if where else ''}: model: missing; allowed: a model id, "
        f"or a default 'model' in {defaults_from}",
        [(field, "missing")],
    )


def _refuse_non_json(problems: Iterator[tuple[str, str]], where: str) -> None:
    for path, problem in problems:
        raise GradientRequestInvalid(
            f"invalid request{' ' + where if where else ''}: {path}: {problem}; allowed: {JSON_RULE}",
            [(path, problem)],
        )
