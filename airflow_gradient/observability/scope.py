"""What a running task tells its spans and metrics: the tracing mode, whether content may be
recorded, the DAG and task, the prices, the batch span, the item being sent.

It travels in context variables, so the hook (which knows none of this) reads it at each attempt,
and the batch engine's workers inherit it: asyncio copies the context into every task it starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from airflow_gradient import arguments
from airflow_gradient.observability.attributes import TRACING_MODES

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from airflow_gradient.pricing import Costing

Tracing = Literal["items", "batch", "off"]
DEFAULT_TRACING: Tracing = "items"


def tracing_mode(name: str, value: Any) -> Tracing | None:
    """``value`` checked as a tracing mode (None: not given); ``name`` is what the error names."""
    if value is None:
        return None
    return arguments.one_of(name, value, TRACING_MODES)  # type: ignore[return-value]


@dataclass
class Telemetry:
    """One task's observability settings and state.

    :param tracing: ``"items"`` (a span per HTTP attempt, under the batch span), ``"batch"`` (the
        batch span only) or ``"off"``.
    :param capture_content: record prompts and replies on the spans (``gen_ai.input.messages``,
        ``gen_ai.output.messages``); off by default.
    """

    tracing: Tracing = DEFAULT_TRACING
    capture_content: bool = False
    dag_id: str | None = None
    task_id: str | None = None
    costing: Costing | None = None
    # The batch's limiter, asked for its pace and pause when a 429 arrives.
    limiter: Any = None
    batch_span: Span | None = None
    metric_attributes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.metric_attributes = {
            key: value for key, value in (("airflow.dag_id", self.dag_id), ("airflow.task_id", self.task_id))
            if value is not None
        }

    @property
    def item_spans(self) -> bool:
        return self.tracing == "items"


_NONE = Telemetry()
_TELEMETRY: ContextVar[Telemetry] = ContextVar("gradient_telemetry", default=_NONE)
_CUSTOM_ID: ContextVar[str | None] = ContextVar("gradient_custom_id", default=None)


def current() -> Telemetry:
    """The running task's telemetry (defaults outside a task: items traced, no content)."""
    return _TELEMETRY.get()


def custom_id() -> str | None:
    """The ``custom_id`` of the batch item being sent, if any."""
    return _CUSTOM_ID.get()


@contextmanager
def telemetry(value: Telemetry) -> Iterator[Telemetry]:
    """Make ``value`` the telemetry of the code run inside (and of the tasks it starts)."""
    token = _TELEMETRY.set(value)
    try:
        yield value
    finally:
        _TELEMETRY.reset(token)


@contextmanager
def item(custom_id: str) -> Iterator[None]:
    """The attempts made inside belong to the batch item ``custom_id``."""
    token = _CUSTOM_ID.set(custom_id)
    try:
        yield
    finally:
        _CUSTOM_ID.reset(token)
