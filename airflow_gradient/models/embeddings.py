"""``POST /v1/embeddings``: the request (with its documented limits) and the reply, read once.

The wire (DigitalOcean's public API specification, see ``docs/embeddings.md``)::

    request  {"model", "input": str | [str, ...] (1 to 2048), "encoding_format": "float" | "base64",
              "user"}                            unknown fields are rejected; no streaming
    reply    {"object": "list", "model", "data": [{"index", "object": "embedding",
              "embedding": [floats] | "<base64>"}], "usage": {"prompt_tokens", "total_tokens"}}

Base64 is the vector's little-endian float32 bytes, as in OpenAI's API: a quarter of the bytes of
the JSON floats, and nothing to parse. A reply is read whichever encoding it uses, whatever was
asked. A reply whose ``data`` does not cover every index of the request exactly once, or whose
vectors differ in length, is a :class:`~airflow_gradient.exceptions.GradientProtocolError`: rows
matched to the wrong text would be worse than no rows.

Vectors are kept as ``array`` values (``'f'`` from base64, ``'d'`` from JSON floats) until someone
asks for lists: a batch writes them to storage without making a Python float per number.
"""

from __future__ import annotations

import binascii
import sys
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from airflow_gradient.exceptions import GradientProtocolError, GradientRequestInvalid

MAX_INPUTS = 2048
EncodingFormat = Literal["float", "base64"]
ENCODINGS: tuple[str, ...] = ("float", "base64")
FIELD_RULES = {
    "model": "an embedding model id",
    "input": f"a non-empty string, or a list of 1 to {MAX_INPUTS:,} non-empty strings",
    "encoding_format": "'float' or 'base64'",
    "user": "a string",
}


class EmbeddingsRequest(BaseModel):
    """One ``POST /v1/embeddings`` request, validated against the documented limits.

    :param model: the embedding model id.
    :param input: one text, or 1 to 2048 texts; none may be empty.
    :param encoding_format: ``"base64"`` (default: little-endian float32, a quarter of the bytes) or
        ``"float"``.
    :param user: an end-user id, for abuse monitoring.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: EncodingFormat = "base64"
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, (list, tuple)):
            raise ValueError(f"must be a string or a list of 1 to {MAX_INPUTS} strings, got {type(value).__name__}")
        if not 1 <= len(texts) <= MAX_INPUTS:
            raise ValueError(f"must hold 1 to {MAX_INPUTS} strings, got {len(texts)}")
        for index, text in enumerate(texts):
            problem = text_problem(text)
            if problem is not None:
                where = "" if isinstance(value, str) else f"input[{index}] "
                raise ValueError(f"{where}{problem}")
        return list(value) if isinstance(value, tuple) else value

    @property
    def texts(self) -> list[str]:
        """The input as a list, one text per vector of the reply."""
        return [self.input] if isinstance(self.input, str) else self.input

    def to_wire(self) -> dict[str, Any]:
        """The JSON body: only the fields that are set."""
        return self.model_dump(exclude_none=True)

    @classmethod
    def build(cls, **fields: Any) -> EmbeddingsRequest:
        """The request, or :class:`GradientRequestInvalid` naming the field and what it allows."""
        try:
            return cls(**fields)
        except ValidationError as exc:
            problems = []
            for error in exc.errors(include_url=False):
                name = ".".join(str(part) for part in error["loc"]) or "request"
                message = error["msg"].removeprefix("Value error, ")
                if error["type"] == "extra_forbidden":
                    message = "not a parameter of /v1/embeddings"
                rule = FIELD_RULES.get(name)
                problems.append((name, f"{message}{'; allowed: ' + rule if rule else ''}"))
            raise GradientRequestInvalid("invalid request to /v1/embeddings: " + "; ".join(
                f"{name}: {problem}" for name, problem in problems), problems) from None


def text_problem(text: Any) -> str | None:
    """Why ``text`` cannot be one input of an embeddings request (None: it can). The one rule for
    an input text, used by the request model and by the batch's item checks."""
    if not isinstance(text, str):
        return f"must be a string, got {type(text).__name__}"
    if not text.strip():
        return "must not be empty (the service refuses an empty string)"
    return None


# -- the reply --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingsUsage:
    """Tokens a request used: embeddings have input only, so ``total_tokens`` is normally the same."""

    input_tokens: int = 0
    total_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "total_tokens": self.total_tokens}


@dataclass(frozen=True, eq=False)
class EmbeddingsResult:
    """A reply to ``POST /v1/embeddings``.

    ``vectors`` is a list of float lists in input order, ``dimensions`` their length, ``usage`` the
    request's tokens; ``request_id``, ``attempts`` and ``latency_s`` describe the call.
    """

    model: str
    dimensions: int
    usage: EmbeddingsUsage
    arrays: Sequence[array[float]] = field(repr=False)
    request_id: str | None = None
    attempts: int = 1
    latency_s: float = 0.0

    @cached_property
    def vectors(self) -> list[list[float]]:
        """The vectors as float lists, in input order."""
        return [vector.tolist() for vector in self.arrays]

    def __len__(self) -> int:
        return len(self.arrays)

    def to_xcom(self) -> dict[str, Any]:
        """``{model, dimensions, vectors, usage}``, JSON-serialisable."""
        return {"model": self.model, "dimensions": self.dimensions, "vectors": self.vectors,
                "usage": self.usage.as_dict()}


def parse_embeddings(data: Mapping[str, Any], count: int, *, model: str, status: int | None = None,
                     request_id: str | None = None) -> EmbeddingsResult:
    """The reply body ``data`` to a request of ``count`` texts for ``model`` (used when the reply
    names none). Raises :class:`GradientProtocolError` for any other shape."""
    rows = data.get("data")
    if not isinstance(rows, list):
        raise _bad(status, request_id)("'data' is not a list" if "data" in data else "no 'data' list")
    pairs = [(row.get("index", position), row.get("embedding")) if isinstance(row, dict) else (None, None)
             for position, row in enumerate(rows)]
    return _result(pairs, count, data.get("model"), data.get("usage"), model=model, status=status,
                   request_id=request_id)


class _WireVector(msgspec.Struct):
    index: int | msgspec.UnsetType = msgspec.UNSET  # absent: its position; null is refused, as by parse_embeddings
    embedding: bytes | list[float] | None = None  # base64 text, decoded by msgspec


class _WireReply(msgspec.Struct):
    data: list[_WireVector]
    model: Any = None
    usage: Any = None


_REPLY_DECODER = msgspec.json.Decoder(_WireReply)


def decode_embeddings(content: bytes, count: int, *, model: str, status: int | None = None,
                      request_id: str | None = None) -> EmbeddingsResult | None:
    """The JSON reply ``content`` read as :func:`parse_embeddings` reads it, by one typed msgspec
    decode: no dict per vector and no base64 text kept (three times faster on 2,048 vectors). None
    when that decode refuses the body (a wrong type, a bad base64 text, ``NaN``...): then
    :func:`parse_embeddings`, on the JSON object, says what is wrong."""
    try:
        reply = _REPLY_DECODER.decode(content)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    pairs = [(position if row.index is msgspec.UNSET else row.index, row.embedding)
             for position, row in enumerate(reply.data)]
    return _result(pairs, count, reply.model, reply.usage, model=model, status=status, request_id=request_id)


def _bad(status: int | None, request_id: str | None) -> Callable[[str], GradientProtocolError]:
    def bad(message: str) -> GradientProtocolError:
        return GradientProtocolError(f"embeddings reply: {message}", status=status, request_id=request_id)

    return bad


def _result(pairs: list[tuple[Any, Any]], count: int, reply_model: Any, usage: Any, *, model: str,
            status: int | None, request_id: str | None) -> EmbeddingsResult:
    """The result of a reply's ``(index, embedding)`` pairs, once every rule of the reply holds."""
    bad = _bad(status, request_id)
    if len(pairs) != count:
        raise bad(f"{len(pairs)} vectors for {count} inputs")
    arrays: list[array[float] | None] = [None] * count
    for position, (index, embedding) in enumerate(pairs):
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise bad(f"data[{position}] has no valid 'index' (0 to {count - 1})")
        if arrays[index] is not None:
            raise bad(f"index {index} appears twice")
        arrays[index] = _vector(embedding, index, bad)
    vectors: list[array[float]] = [vector for vector in arrays if vector is not None]
    dimensions = {len(vector) for vector in vectors}
    if len(dimensions) != 1 or 0 in dimensions:
        raise bad(f"vectors of different or zero lengths: {sorted(dimensions)[:5]}")
    return EmbeddingsResult(
        model=str(reply_model or model),
        dimensions=dimensions.pop(),
        usage=_usage(usage, bad),
        arrays=vectors,
        request_id=request_id,
    )


def _vector(value: Any, index: int, bad: Any) -> array[float]:
    if isinstance(value, (str, bytes)):  # base64 text, or its bytes (decode_embeddings)
        try:
            raw = binascii.a2b_base64(value, strict_mode=True) if isinstance(value, str) else value
        except (binascii.Error, ValueError):
            raise bad(f"the vector of index {index} is not base64") from None
        if len(raw) % 4:
            raise bad(f"the vector of index {index} is {len(raw)} bytes, not float32s")
        vector = array("f")
        vector.frombytes(raw)
        if sys.byteorder == "big":  # the wire is little-endian
            vector.byteswap()
        return vector
    if isinstance(value, list):
        try:
            if any(isinstance(number, bool) for number in value):
                raise TypeError("a boolean")
            return array("d", value)
        except (TypeError, OverflowError) as exc:
            raise bad(f"the vector of index {index} is not a list of numbers ({exc})") from None
    raise bad(f"the vector of index {index} is a {type(value).__name__}, not a float list or base64")


def _usage(value: Any, bad: Any) -> EmbeddingsUsage:
    """``usage``: ``prompt_tokens`` (or ``input_tokens``) and ``total_tokens``; absent: zeros (the
    vectors are kept: the request was served and may be billed)."""
    if value is None:
        return EmbeddingsUsage()
    if not isinstance(value, dict):
        raise bad(f"'usage' is a {type(value).__name__}, not an object")
    counts: list[int] = []
    tokens = value.get("prompt_tokens", value.get("input_tokens", 0))
    for name, number in (("prompt_tokens", tokens), ("total_tokens", value.get("total_tokens", tokens))):
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise bad(f"usage.{name} is {number!r}, not a token count")
        counts.append(number)
    return EmbeddingsUsage(input_tokens=counts[0], total_tokens=counts[1])


def with_call_stats(result: EmbeddingsResult, attempts: int, started: float) -> EmbeddingsResult:
    """``result`` with the call's attempts and its latency since ``started`` (``time.monotonic()``)."""
    return EmbeddingsResult(result.model, result.dimensions, result.usage, result.arrays,
                            request_id=result.request_id, attempts=attempts,
                            latency_s=time.monotonic() - started)
