"""What the Gradient pages read from Airflow's metadata database: the XComs of Gradient tasks.

No table of our own: a Gradient task's ``return_value`` XCom (or ``manifest``, pushed by a batch
that failed its ``max_failed_fraction``) already holds its usage, cost, requests and 429s, and its
task instance says when it ran. :func:`load_records` reads the few figures the pages add up in one
query, extracting them in the database: a manifest's ``timeline`` (up to 500 samples) and a
single request's text are never shipped to Python for the overview. :func:`load_value` reads one
whole value, for the task-instance page.

A Gradient task is one whose operator class name holds "Gradient" (every operator of this provider,
the ``@task.gradient`` decorator's, and users' subclasses of them).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, and_, func, literal, select, true, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

# The XCom keys that hold a Gradient task's figures.
KEYS = ("return_value", "manifest")

# (name, JSON path): the figures the overview reads from each value.
FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cost_usd", ("cost_usd",)),
    ("total_tokens", ("usage", "total_tokens")),
    ("input_tokens", ("usage", "input_tokens")),
    ("output_tokens", ("usage", "output_tokens")),
    ("model", ("model",)),
    ("finish_reason", ("finish_reason",)),
    ("total", ("total",)),
    ("succeeded", ("counts", "succeeded")),
    ("failed", ("counts", "failed")),
    ("requests", ("requests", "sent")),
    ("rate_limited", ("requests", "rate_limited")),
    ("reused_items", ("reused", "items")),
    ("tokens_saved", ("reused", "tokens_saved")),
    ("cost_usd_saved", ("reused", "cost_usd_saved")),
    ("wall_time_s", ("wall_time_s",)),
    ("models", ("models",)),
)


@dataclass(slots=True)
class TaskRecord:
    """One Gradient task instance's figures, as its XCom holds them.

    ``cost_usd`` is None when a price was unknown (then ``total_tokens`` are tokens without a
    price, never $0). ``batch`` tells a batch manifest from a single request. ``models`` is a
    batch's ``{model: {items, total_tokens, cost_usd}}`` for the rows of its last attempt.
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    key: str
    start_date: datetime | None
    end_date: datetime | None
    state: str | None
    batch: bool
    cost_usd: float | None
    total_tokens: int
    input_tokens: int
    output_tokens: int
    model: str | None = None
    finish_reason: str | None = None
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    requests: int = 0
    rate_limited: int = 0
    reused_items: int = 0
    tokens_saved: int = 0
    cost_usd_saved: float | None = 0.0
    wall_time_s: float | None = None
    models: dict[str, dict[str, Any]] | None = None

    @classmethod
    def from_figures(cls, head: Sequence[Any], figures: Sequence[Any]) -> TaskRecord:
        """A record from the task instance's columns and the figures in :data:`FIELDS` order."""
        (cost, total_tokens, input_tokens, output_tokens, model, finish_reason, total, succeeded, failed, requests,
         rate_limited, reused_items, tokens_saved, cost_usd_saved, wall_time_s, models) = figures
        dag_id, run_id, task_id, map_index, key, start, end, state = head
        return cls(
            dag_id, run_id, task_id, map_index, key, start, end, state,
            total is not None, _number(cost), _count(total_tokens), _count(input_tokens), _count(output_tokens),
            model if isinstance(model, str) else None,
            finish_reason if isinstance(finish_reason, str) else None,
            _count(total), _count(succeeded), _count(failed), _count(requests), _count(rate_limited),
            _count(reused_items), _count(tokens_saved), _number(cost_usd_saved), _number(wall_time_s),
            models if isinstance(models, dict) else None,
        )


def _number(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) else None


def _utc(value: Any) -> datetime | None:
    """A timestamp column read raw: SQLite answers text (UTC, as Airflow writes it), others datetimes."""
    if value is None:
        return None
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _count(value: Any) -> int:
    return int(value) if type(value) in (int, float) else 0


def _figures(XComModel: Any, dialect: str) -> tuple[ColumnElement[Any], Any]:
    """One JSON array of every figure in :data:`FIELDS`, extracted in the database from one parse
    of each value, and what the query must also select from (None: nothing).

    SQLite and MySQL take many paths in one ``json_extract``. On PostgreSQL a manifest is stored
    out of line (TOAST), and each path operator would decompress it again: ``jsonb_to_record``
    reads the top-level keys once (ten times faster on the bench's manifests).
    """
    if dialect == "postgresql":
        from sqlalchemy import column
        from sqlalchemy.dialects.postgresql import JSONB

        tops = list(dict.fromkeys(path[0] for _, path in FIELDS))
        record = (func.jsonb_to_record(XComModel.value)
                  .table_valued(*(column(top, JSONB) for top in tops))
                  .render_derived(name="gradient_figures", with_types=True))
        parts = [record.c[path[0]] if len(path) == 1 else record.c[path[0]].op("->")(literal(path[1]))
                 for _, path in FIELDS]
        return func.jsonb_build_array(*parts), record
    return func.json_extract(XComModel.value, *("$." + ".".join(path) for _, path in FIELDS)), None


def _gradient_xcoms(dag_ids: Collection[str] | None) -> tuple[Any, Any, ColumnElement[bool]]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel

    joined = and_(
        TaskInstance.dag_id == XComModel.dag_id, TaskInstance.run_id == XComModel.run_id,
        TaskInstance.task_id == XComModel.task_id, TaskInstance.map_index == XComModel.map_index,
    )
    where = and_(XComModel.key.in_(KEYS), func.lower(TaskInstance.operator).like("%gradient%"))
    if dag_ids is not None:
        where = and_(where, XComModel.dag_id.in_(sorted(dag_ids)))
    return TaskInstance, XComModel, and_(joined, where)


def load_records(
    session: Session, *, dag_ids: Collection[str] | None, since: datetime | None = None, dag_id: str | None = None
) -> list[TaskRecord]:
    """The Gradient task instances of the readable ``dag_ids`` (None: every DAG) that started at or
    after ``since``, or of ``dag_id`` alone, oldest first. A task with both a ``return_value`` and a
    ``manifest`` (a failed try, then a successful one) counts once, by its ``return_value``."""
    TaskInstance, XComModel, where = _gradient_xcoms(dag_ids)
    if since is not None:
        where = and_(where, TaskInstance.start_date >= since)
    if dag_id is not None:
        where = and_(where, XComModel.dag_id == dag_id)
    figures, source = _figures(XComModel, session.get_bind().dialect.name)
    query = (
        select(XComModel.dag_id, XComModel.run_id, XComModel.task_id, XComModel.map_index, XComModel.key,
               # Read raw and parsed by _utc: Airflow's column type costs more per row than the query.
               type_coerce(TaskInstance.start_date, String), type_coerce(TaskInstance.end_date, String),
               TaskInstance.state, figures)
        .select_from(XComModel).join(TaskInstance, where)
        .order_by(TaskInstance.start_date, XComModel.dag_id, XComModel.run_id, XComModel.task_id,
                  XComModel.map_index, XComModel.key.desc())
    )
    if source is not None:  # a function in FROM may read the rows before it (LATERAL)
        query = query.join(source, true())
    records: dict[tuple[str, str, str, int], TaskRecord] = {}
    for row in session.execute(query):
        figures = row[-1]
        if isinstance(figures, str):  # SQLite and MySQL answer JSON as text
            figures = json.loads(figures)
        if not isinstance(figures, list):
            continue
        dag_id, run_id, task_id, map_index, key, start, end, state = row[:-1]
        record = TaskRecord.from_figures((dag_id, run_id, task_id, map_index, key, _utc(start), _utc(end), state),
                                         figures)
        # "return_value" sorts after "manifest" descending: it comes first and wins.
        records.setdefault((record.dag_id, record.run_id, record.task_id, record.map_index), record)
    return list(records.values())


def load_value(
    session: Session, *, dag_id: str, run_id: str, task_id: str, map_index: int
) -> tuple[str, dict[str, Any]] | None:
    """The whole XCom value (``return_value``, else ``manifest``) of one Gradient task instance,
    with its key; None when it has none."""
    TaskInstance, XComModel, where = _gradient_xcoms(None)
    where = and_(where, XComModel.dag_id == dag_id, XComModel.run_id == run_id,
                 XComModel.task_id == task_id, XComModel.map_index == map_index)
    query = (select(XComModel.key, XComModel.value).select_from(XComModel).join(TaskInstance, where)
             .order_by(XComModel.key.desc()))
    for key, value in session.execute(query):
        if isinstance(value, str):
            value = json.loads(value)
        if isinstance(value, dict):
            return key, value
    return None

