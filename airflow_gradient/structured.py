"""Structured output: ask for JSON matching a schema, then parse and validate the reply.

:class:`OutputSchema` is the one API the operators use: ``OutputSchema.of(schema)`` accepts a
pydantic model class or a JSON-schema dict, ``.response_format()`` is what the request sends and
``.parse(text)`` returns a JSON-serialisable value or raises :class:`GradientOutputError` naming
the path that failed. :func:`ask_structured` re-asks the model when the reply does not parse.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel, ValidationError

from airflow_gradient.conversation import follow_up
from airflow_gradient.exceptions import GradientOutputError, GradientRequestInvalid
from airflow_gradient.models.request import ResponseRequest
from airflow_gradient.models.result import ResponseResult

log = logging.getLogger(__name__)

SchemaLike = type[BaseModel] | dict[str, Any]
# Models often wrap JSON in a Markdown fence even when told not to; that much is forgiven.
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*)\n\s*```\s*$", re.S | re.I)


@dataclass(frozen=True, eq=False)
class OutputSchema:
    """The JSON a reply must hold: a name, its JSON schema and, for pydantic, the model class."""

    name: str
    json_schema: dict[str, Any]
    model: type[BaseModel] | None = None

    @classmethod
    def of(cls, schema: SchemaLike | OutputSchema | None) -> OutputSchema | None:
        """Build from a pydantic model class or a JSON-schema dict; ``None`` stays ``None``.

        An unusable schema raises :class:`GradientRequestInvalid` before anything is sent.
        """
        if schema is None or isinstance(schema, OutputSchema):
            return schema
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            return cls(_schema_name(schema.__name__), schema.model_json_schema(), schema)
        if isinstance(schema, dict):
            try:
                validator_for(schema).check_schema(schema)
            except SchemaError as exc:
                raise _invalid(f"not a valid JSON schema: {exc.message}") from None
            return cls(_schema_name(str(schema.get("title") or "output")), schema)
        raise _invalid(f"expected a pydantic model class or a JSON-schema dict, got {type(schema).__name__}")

    def response_format(self) -> dict[str, Any]:
        """The request's ``response_format``: JSON constrained to this schema."""
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": self.json_schema, "strict": True},
        }

    def parse(self, text: str) -> Any:
        """The reply's JSON, validated; pydantic models come back dumped as JSON-ready data."""
        fenced = _FENCE.match(text)
        try:
            data = json.loads(fenced.group(1) if fenced else text)
        except (ValueError, RecursionError) as exc:
            raise GradientOutputError(
                f"reply is not valid JSON for output schema {self.name!r}: {exc}"
            ) from None
        if self.model is not None:
            try:
                return self.model.model_validate(data).model_dump(mode="json")
            except ValidationError as exc:
                problems = [f"{_json_path(e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)]
                raise self._mismatch(problems) from None
        validator = validator_for(self.json_schema)(self.json_schema)
        errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            raise self._mismatch([f"{_json_path(e.absolute_path)}: {e.message}" for e in errors])
        return data

    def _mismatch(self, problems: list[str]) -> GradientOutputError:
        return GradientOutputError(f"reply does not match output schema {self.name!r}: " + "; ".join(problems))


def ask_structured(
    ask: Callable[[ResponseRequest], ResponseResult],
    request: ResponseRequest,
    schema: OutputSchema,
    *,
    retries: int = 0,
) -> tuple[ResponseResult, Any]:
    """Ask, parse the reply with ``schema``; on failure re-ask up to ``retries`` times, telling the
    model what was wrong. Returns the last result and the parsed value."""
    attempt = 0
    while True:
        result = ask(request)
        try:
            return result, schema.parse(result.output_text)
        except GradientOutputError as exc:
            log.warning("Structured output rejected: %s; the reply began %r", exc, result.output_text[:200])
            if attempt >= retries:
                raise
            attempt += 1
            log.warning("Asking again, with the reason (re-ask %d of %d)", attempt, retries)
            request = follow_up(request, [
                {"role": "assistant", "content": result.output_text or "(empty reply)"},
                {"role": "user", "content": f"That reply was rejected: {exc}. Reply again with only JSON "
                                            f"that matches the schema {schema.name!r}."},
            ])


def _schema_name(name: str) -> str:
    # The API wants [a-zA-Z0-9_-]{1,64} for the json_schema name.
    return re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64] or "output"


def _json_path(loc: Sequence[Any]) -> str:
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def _invalid(reason: str) -> GradientRequestInvalid:
    return GradientRequestInvalid(f"invalid request: output_schema: {reason}", [("output_schema", reason)])
