"""The reply of ``POST /v1/responses``, in every documented shape.

Parses the Responses ``output[]`` array (``message`` items with text parts, bare ``text`` items,
``function_call`` and ``reasoning`` items) and the chat-style ``choices[]`` array; ``created`` or
``created_at``; usage with cached, reasoning and tool-output token details (chat-style
``prompt_tokens``/``completion_tokens`` too). Unknown fields are kept, never rejected.

:func:`parse_reply` is the one way from a reply body to a :class:`ResponseResult`: whatever the body
holds, it returns a result or raises :class:`~airflow_gradient.exceptions.GradientProtocolError`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from airflow_gradient.exceptions import GradientProtocolError

# Token counts are JSON integers; "5" is a malformed reply, not a count to guess at.
Count = Annotated[int, Field(strict=True)]


# The flat token counts of a reply, as every row, XCom value and manifest carries them.
USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens", "cached_tokens", "reasoning_tokens",
              "tool_output_tokens")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class InputTokensDetails(_Open):
    cached_tokens: Count = 0


class OutputTokensDetails(_Open):
    reasoning_tokens: Count = 0
    tool_output_tokens: Count = 0


class Usage(_Open):
    """Token usage of one response."""

    input_tokens: Count = 0
    output_tokens: Count = 0
    total_tokens: Count = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)

    @model_validator(mode="before")
    @classmethod
    def _accept_chat_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        data.setdefault("input_tokens", data.get("prompt_tokens") or 0)
        data.setdefault("output_tokens", data.get("completion_tokens") or 0)
        for key, chat_key in (("input_tokens_details", "prompt_tokens_details"),
                              ("output_tokens_details", "completion_tokens_details")):
            if data.get(key) is None:
                data[key] = data.get(chat_key) or {}
        counts = (data["input_tokens"] or 0, data["output_tokens"] or 0)
        if not data.get("total_tokens") and all(type(count) is int for count in counts):
            data["total_tokens"] = sum(counts)
        return data

    @property
    def cached_tokens(self) -> int:
        return self.input_tokens_details.cached_tokens or 0

    @property
    def reasoning_tokens(self) -> int:
        return self.output_tokens_details.reasoning_tokens or 0

    @property
    def tool_output_tokens(self) -> int:
        return self.output_tokens_details.tool_output_tokens or 0

    def summary(self) -> dict[str, int]:
        """Flat counts, as they go to XCom and JSONL rows (the keys of :data:`USAGE_KEYS`)."""
        return {key: getattr(self, key) for key in USAGE_KEYS}

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            input_tokens_details={"cached_tokens": self.cached_tokens + other.cached_tokens},
            output_tokens_details={
                "reasoning_tokens": self.reasoning_tokens + other.reasoning_tokens,
                "tool_output_tokens": self.tool_output_tokens + other.tool_output_tokens,
            },
        )


class ContentPart(_Open):
    type: str | None = None
    text: str | None = None


class OutputItem(_Open):
    """One item of ``output[]``; ``type`` says which fields are meaningful."""

    type: str
    id: str | None = None
    status: str | None = None
    role: str | None = None
    # message: list of parts; reasoning: list of reasoning_text parts
    content: list[ContentPart] | str | None = None
    text: str | None = None
    # function_call
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    summary: list[Any] | None = None
    encrypted_content: str | None = None


class ChoiceFunction(_Open):
    name: str | None = None
    arguments: str | None = None


class ChoiceToolCall(_Open):
    id: str | None = None
    type: str | None = "function"
    function: ChoiceFunction = Field(default_factory=ChoiceFunction)


class ChoiceMessage(_Open):
    content: str | None = None
    role: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ChoiceToolCall] | None = None


class Choice(_Open):
    index: int = 0
    finish_reason: str | None = None
    message: ChoiceMessage = Field(default_factory=ChoiceMessage)
    logprobs: Any = None


class ToolCall(BaseModel):
    """A function call the model asked for, arguments parsed from their JSON string."""

    call_id: str
    name: str
    arguments_json: str
    arguments: Any = None
    arguments_error: str | None = None

    @classmethod
    def parse(cls, call_id: str | None, name: str | None, arguments: str | None) -> ToolCall:
        raw = arguments or ""
        try:
            parsed, error = (json.loads(raw) if raw.strip() else {}), None
        except ValueError as exc:
            parsed, error = None, f"arguments of {name!r} are not valid JSON: {exc}"
        except RecursionError:
            # Valid JSON nested past what Python can read: no model writes that, a broken server might.
            raise GradientProtocolError(f"arguments of function call {name!r} are nested too deeply to read") from None
        return cls(call_id=call_id or "", name=name or "", arguments_json=raw, arguments=parsed,
                   arguments_error=error)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"call_id": self.call_id, "name": self.name, "arguments": self.arguments}
        if self.arguments_error:
            out["arguments_error"] = self.arguments_error
            out["arguments_json"] = self.arguments_json
        return out


class CallInfo(BaseModel):
    """How the call went: attempts, retries, latency and the headers of the last reply."""

    attempts: int = 1
    latency_s: float = 0.0
    request_id: str | None = None
    rate_limit_headers: dict[str, str] = Field(default_factory=dict)


class ResponseResult(_Open):
    """A parsed ``/v1/responses`` reply. Unknown fields stay available as attributes."""

    id: str | None = None
    object: str | None = None
    created: int | float | None = None
    model: str | None = None
    status: str | None = None
    output: list[OutputItem] = Field(default_factory=list)
    choices: list[Choice] | None = None
    usage: Usage | None = None
    background: bool | None = None
    error: Any = None
    incomplete_details: Any = None
    input_messages: list[Any] | None = None
    output_messages: list[Any] | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    prompt: Any = None
    reasoning: Any = None
    service_tier: str | None = None
    temperature: float | None = None
    text: Any = None
    tool_choice: Any = None
    tools: list[Any] | None = None
    top_logprobs: int | None = None
    top_p: float | None = None
    truncation: Any = None
    user: str | None = None

    _call: CallInfo = PrivateAttr(default_factory=CallInfo)

    @model_validator(mode="before")
    @classmethod
    def _created_at(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("created") is None and data.get("created_at") is not None:
            data = {**data, "created": data["created_at"]}
        return data

    @property
    def call(self) -> CallInfo:
        """Attempts, latency and rate-limit headers of the HTTP call that produced this result."""
        return self._call

    @property
    def output_text(self) -> str:
        """All assistant text: message parts and text items of ``output``, else ``choices[0]``."""
        pieces: list[str] = []
        for item in self.output:
            if item.type == "message":
                if isinstance(item.content, str):
                    pieces.append(item.content)
                else:
                    pieces.extend(p.text for p in item.content or () if p.text is not None
                                  and p.type in (None, "text", "output_text"))
            elif item.type in ("text", "output_text") and item.text is not None:
                pieces.append(item.text)
        if pieces:
            return "".join(pieces)
        if self.choices:
            return self.choices[0].message.content or ""
        return self.text if isinstance(self.text, str) else ""

    @property
    def reasoning_text(self) -> str:
        """Reasoning the model returned, from ``reasoning`` items or ``choices[0]``."""
        pieces = [
            part.text
            for item in self.output
            if item.type == "reasoning" and isinstance(item.content, list)
            for part in item.content
            if part.text
        ]
        if pieces:
            return "".join(pieces)
        if self.choices and self.choices[0].message.reasoning_content:
            return self.choices[0].message.reasoning_content
        return self.reasoning if isinstance(self.reasoning, str) else ""

    @property
    def tool_calls(self) -> list[ToolCall]:
        """Function calls, from ``function_call`` items or ``choices[0].message.tool_calls``."""
        calls = [
            ToolCall.parse(item.call_id or item.id, item.name, item.arguments)
            for item in self.output
            if item.type == "function_call"
        ]
        if not calls and self.choices:
            calls = [
                ToolCall.parse(tc.id, tc.function.name, tc.function.arguments)
                for tc in self.choices[0].message.tool_calls or ()
            ]
        return calls

    @property
    def finish_reason(self) -> str | None:
        """``stop``, ``length``, ``tool_calls`` or ``content_filter``."""
        if self.choices and self.choices[0].finish_reason:
            return self.choices[0].finish_reason
        if self.status == "incomplete":
            reason = (self.incomplete_details or {}).get("reason") if isinstance(self.incomplete_details, dict) else None
            return "content_filter" if reason == "content_filter" else "length"
        if any(item.type == "function_call" for item in self.output):
            return "tool_calls"
        if self.status in (None, "completed") and (self.output or self.choices):
            return "stop"
        return None

    def usage_summary(self) -> dict[str, int]:
        return (self.usage or Usage()).summary()

    def to_xcom(self, *, include_raw: bool = False) -> dict[str, Any]:
        """A small JSON-serialisable dict: what downstream tasks usually need."""
        out: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "status": self.status,
            "output_text": self.output_text,
            "tool_calls": [call.to_dict() for call in self.tool_calls],
            "finish_reason": self.finish_reason,
            "usage": self.usage_summary(),
        }
        if self.reasoning_text:
            out["reasoning_text"] = self.reasoning_text
        if include_raw:
            out["raw"] = self.model_dump(mode="json", exclude_none=True)
        return out


def parse_reply(
    data: Any, *, what: str = "reply", status: int | None = None, request_id: str | None = None
) -> ResponseResult:
    """``data`` (a decoded reply body) as a :class:`ResponseResult`; anything malformed, down to
    the function-call arguments, raises :class:`GradientProtocolError` naming ``what`` and where."""
    try:
        result = ResponseResult.model_validate(data)
        result.tool_calls  # read the arguments now, so that a reply fails here or never
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(map(str, first["loc"])) or "top level"
        raise GradientProtocolError(f"{what} does not match the documented shape: {first['msg']} at {where}",
                                    status=status, request_id=request_id) from None
    except GradientProtocolError as exc:
        raise GradientProtocolError(f"{what}: {exc}", status=status, request_id=request_id) from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise GradientProtocolError(f"{what} could not be read: {type(exc).__name__}: {exc}",
                                    status=status, request_id=request_id) from None
    return result
