"""One question asked over several requests (tool rounds, structured-output re-asks).

The tool loop and the structured-output re-ask both continue a request with more input items;
:class:`Conversation` counts what every request of the exchange cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from airflow_gradient.models.request import ResponseRequest
from airflow_gradient.models.result import ResponseResult, Usage

Ask = Callable[[ResponseRequest], ResponseResult]


def follow_up(request: ResponseRequest, items: Sequence[Any]) -> ResponseRequest:
    """``request`` with ``items`` appended to its input; a string input becomes a user message."""
    history = [{"role": "user", "content": request.input}] if isinstance(request.input, str) else request.input
    followed = request.model_copy()
    followed.input = [*history, *items]  # assignment validates the new items (validate_assignment)
    return followed


class Conversation:
    """Sends each request through ``send`` and keeps every result, to sum their usage."""

    def __init__(self, send: Ask) -> None:
        self._send = send
        self.results: list[ResponseResult] = []

    def ask(self, request: ResponseRequest) -> ResponseResult:
        result = self._send(request)
        self.results.append(result)
        return result

    @property
    def usage(self) -> Usage:
        return sum((result.usage or Usage() for result in self.results), Usage())

    def total(self, result: ResponseResult) -> ResponseResult:
        """``result`` carrying the usage of every request made so far (itself alone if it was the only one)."""
        if len(self.results) <= 1:
            return result
        return result.model_copy(update={"usage": self.usage})
