"""What the Gradient pages read from Airflow's metadata database: the XComs of Gradient tasks.

No table of our own: a Gradient task's ``return_value`` XCom (or ``manifest``, pushed by a batch
that failed its ``max_failed_fraction``) already holds its usage, cost, requests and 429s, and its
task instance says when it ran. This module owns which rows count and how each figure is read from
a value; the database does the adding up (``GROUP BY``), so a month of 30,000 task instances comes
back as a few thousand sums, and a manifest's ``timeline`` (up to 500 samples) or a single
request's text never reaches Python for the overview or a DAG's runs:

- :func:`overview_rows`: sums per day, DAG and task, and per DAG and model (the nav page);
- :func:`run_rows`: sums per run of one DAG (the DAG tab);
- :func:`load_value`: one whole value, for the task-instance tab.

A Gradient task is one whose operator class name holds "Gradient" (every operator of this provider,
the ``@task.gradient`` decorator's, and users' subclasses of them). A task instance with both a
``return_value`` and a ``manifest`` (a failed try, then a successful one) counts once, by its
``return_value``. A figure that is not a JSON number counts as 0 (a count) or as no price (a cost:
its tokens are "price unknown", never $0).

The SQL dialects differ only in how a JSON value is taken apart: :class:`_SQLite` and
:class:`_PostgreSQL` hold every difference (other databases are refused, see :func:`_dialect`).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    String,
    and_,
    case,
    cast,
    column,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    true,
    type_coerce,
    union_all,
)
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement

# The XCom keys that hold a Gradient task's figures.
KEYS = ("return_value", "manifest")

# A batch's tokens that its manifest's ``models`` does not cover (earlier attempts, older manifests).
UNRECORDED_MODEL = "(model not recorded)"

# (name, JSON path, kind): the figures read from each value. ``count``: an integer, 0 when not a
# number; ``number``: a float, NULL when not a number (a cost: unknown); ``text``: a string or NULL;
# ``object``: a JSON object or NULL; ``present``: 1 when the path holds anything but null.
FIELDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("cost", ("cost_usd",), "number"),
    ("tokens", ("usage", "total_tokens"), "count"),
    ("model", ("model",), "text"),
    ("batch", ("total",), "present"),  # a batch manifest has a total; a single request has not
    ("total", ("total",), "count"),
    ("failed", ("counts", "failed"), "count"),
    ("rate_limited", ("requests", "rate_limited"), "count"),
    ("reused_items", ("reused", "items"), "count"),
    ("tokens_saved", ("reused", "tokens_saved"), "count"),
    ("cost_saved", ("reused", "cost_usd_saved"), "number"),
    ("models", ("models",), "object"),
)


class Sums(NamedTuple):
    """Money and counts added up over some task instances: ``usd`` of those with a price,
    ``unpriced_tokens`` of those without (part of ``tokens``)."""

    usd: float
    tokens: int
    unpriced_tokens: int
    rate_limited: int = 0
    reused_items: int = 0
    tokens_saved: int = 0
    saved_usd: float = 0.0
    saved_unpriced_tokens: int = 0
    tasks: int = 0


class TaskDay(NamedTuple):
    """The sums of one task of one DAG on one day (UTC, by task start)."""

    day: date
    dag_id: str
    task_id: str
    sums: Sums


class ModelShare(NamedTuple):
    """The tokens and cost one DAG spent on one model (:data:`UNRECORDED_MODEL`: not recorded)."""

    dag_id: str
    model: str
    sums: Sums


@dataclass
class RunRow:
    """One DAG run's Gradient task instances, added up."""

    run_id: str
    started: datetime | None
    ended: datetime | None
    sums: Sums
    items: int  # a batch's total, 1 per single request
    failures: int  # a batch's failed items; 1 per failed task instance that counted none


class _SQLite:
    """SQLite: one ``json_extract`` of every path per value, kept in a
    ``MATERIALIZED`` CTE so the whole value is parsed once (SQLite before 3.45 caches no parse);
    the figures are then read from that small array."""

    @staticmethod
    def figures(XComModel: Any) -> tuple[list[ColumnElement[Any]], Any, list[Any]]:
        """The CTE's extra columns, what the query also selects from (None), and each field's node."""
        extracted = func.json_extract(XComModel.value, *("$." + ".".join(path) for _, path, _ in FIELDS))
        return [extracted.label("figures")], None, [("figures", f"$[{n}]") for n in range(len(FIELDS))]

    @staticmethod
    def node(row: Any, ref: Any) -> Any:
        return (row.c[ref[0]], ref[1])

    @staticmethod
    def read(node: Any, kind: str) -> ColumnElement[Any]:
        doc, path = node
        value, json_type = func.json_extract(doc, path), func.json_type(doc, path)
        if kind == "present":
            return case((value.is_(None), 0), else_=1)
        if kind == "text":
            return case((json_type == "text", value))
        if kind == "object":
            return case((json_type == "object", value))
        number = case((json_type.in_(("integer", "real")), value))
        return func.coalesce(cast(number, Integer), 0) if kind == "count" else cast(number, Float)

    @staticmethod
    def each(doc: ColumnElement[Any]) -> tuple[Any, Any, Any]:
        """The members of a JSON object: (from, key, value node maker)."""
        members = func.json_each(doc).table_valued("key", "value", name="gradient_model")
        return members, members.c.key, lambda key: (members.c.value, f"$.{key}")

    @staticmethod
    def day(start: ColumnElement[Any]) -> ColumnElement[str]:
        return func.date(start)


class _PostgreSQL:
    """PostgreSQL: a manifest is stored out of line (TOAST), and each path operator would
    decompress it again; ``jsonb_to_record`` reads the top-level keys once (ten times faster on
    the bench's manifests), and the nested figures come from those small values."""

    @staticmethod
    def figures(XComModel: Any) -> tuple[list[ColumnElement[Any]], Any, list[Any]]:
        from sqlalchemy.dialects.postgresql import JSONB

        tops = list(dict.fromkeys(path[0] for _, path, _ in FIELDS))
        record = (func.jsonb_to_record(XComModel.value)
                  .table_valued(*(column(top, JSONB) for top in tops))
                  .render_derived(name="gradient_figures", with_types=True))
        columns: list[ColumnElement[Any]] = [record.c[top].label(f"f_{top}") for top in tops]
        return columns, record, [(f"f_{path[0]}", path[1:]) for _, path, _ in FIELDS]

    @staticmethod
    def node(row: Any, ref: Any) -> Any:
        node = row.c[ref[0]]
        for key in ref[1]:
            node = node.op("->")(literal(key))
        return node

    @staticmethod
    def read(node: Any, kind: str) -> ColumnElement[Any]:
        json_type = func.jsonb_typeof(node)
        scalar = node.op("#>>")(literal("{}", String))
        if kind == "present":
            return case((or_(node.is_(None), json_type == "null"), 0), else_=1)
        if kind == "text":
            return case((json_type == "string", scalar))
        if kind == "object":
            return case((json_type == "object", node))
        number = case((json_type == "number", cast(scalar, Float)))
        return func.coalesce(cast(func.trunc(number), BigInteger), 0) if kind == "count" else number

    @staticmethod
    def each(doc: ColumnElement[Any]) -> tuple[Any, Any, Any]:
        members = func.jsonb_each(doc).table_valued("key", "value", name="gradient_model")
        return members, members.c.key, lambda key: members.c.value.op("->")(literal(key))

    @staticmethod
    def day(start: ColumnElement[Any]) -> ColumnElement[str]:
        return func.to_char(func.timezone("UTC", start), "YYYY-MM-DD")


def _dialect(session: Session) -> type[_SQLite] | type[_PostgreSQL]:
    """The dialect's JSON reading; another database (MySQL reads many paths differently) is refused
    rather than shown wrong figures."""
    name = session.get_bind().dialect.name
    if name in ("sqlite", "postgresql"):
        return _PostgreSQL if name == "postgresql" else _SQLite
    raise NotImplementedError(f"the Gradient pages add up figures on SQLite and PostgreSQL metadata databases, "
                              f"not on {name}")


def _gradient_xcoms(dag_ids: Collection[str] | None) -> tuple[Any, Any, ColumnElement[bool]]:
    """Task instance, XCom, and the rule of which XCom rows count (see the module's docstring)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel

    joined = and_(
        TaskInstance.dag_id == XComModel.dag_id, TaskInstance.run_id == XComModel.run_id,
        TaskInstance.task_id == XComModel.task_id, TaskInstance.map_index == XComModel.map_index,
    )
    later = aliased(XComModel)  # the task instance's return_value, when a manifest has one beside it
    counted = or_(XComModel.key == "return_value", and_(XComModel.key == "manifest", ~exists().where(
        later.dag_run_id == XComModel.dag_run_id, later.task_id == XComModel.task_id,
        later.map_index == XComModel.map_index, later.key == "return_value")))
    where = and_(counted, func.lower(TaskInstance.operator).like("%gradient%"))
    if dag_ids is not None:
        where = and_(where, XComModel.dag_id.in_(sorted(dag_ids)))
    return TaskInstance, XComModel, and_(joined, where)


def _counted(session: Session, dag_ids: Collection[str] | None, *, since: datetime | None = None,
             until: datetime | None = None, dag_id: str | None = None) -> tuple[Any, Any]:
    """A CTE of one row per counted task instance with its figures (:data:`FIELDS`) read, and the
    dialect. ``since``/``until``: task start at or after / before."""
    dialect = _dialect(session)
    TaskInstance, XComModel, where = _gradient_xcoms(dag_ids)
    if since is not None:
        where = and_(where, TaskInstance.start_date >= since)
    if until is not None:
        where = and_(where, TaskInstance.start_date < until)
    if dag_id is not None:
        where = and_(where, XComModel.dag_id == dag_id)
    extra, source, refs = dialect.figures(XComModel)
    raw = (select(XComModel.dag_id, XComModel.run_id, XComModel.task_id, XComModel.map_index,
                  TaskInstance.start_date, TaskInstance.end_date, TaskInstance.state, *extra)
           .select_from(XComModel).join(TaskInstance, where))
    if source is not None:  # a function in FROM may read the rows before it (LATERAL)
        raw = raw.join(source, true())
    # Computed once however often the sums read it (SQLite and PostgreSQL 12+ say MATERIALIZED).
    raw_cte = raw.cte("gradient_raw").prefix_with("MATERIALIZED", dialect="sqlite").prefix_with(
        "MATERIALIZED", dialect="postgresql")
    figures = [dialect.read(dialect.node(raw_cte, ref), kind).label(name) for (name, _, kind), ref in zip(FIELDS, refs)]
    counted = select(raw_cte.c.dag_id, raw_cte.c.run_id, raw_cte.c.task_id, raw_cte.c.map_index,
                     raw_cte.c.start_date, raw_cte.c.end_date, raw_cte.c.state,
                     dialect.day(raw_cte.c.start_date).label("day"), *figures).cte("gradient_counted")
    return counted, dialect


def _unpriced(cost: ColumnElement[Any], tokens: ColumnElement[Any]) -> ColumnElement[Any]:
    return case((cost.is_(None), tokens), else_=0)


def _money(cost: ColumnElement[Any], tokens: ColumnElement[Any]) -> list[ColumnElement[Any]]:
    """``usd``, ``tokens``, ``unpriced_tokens`` summed: the rule that a missing cost is no price."""
    return [func.coalesce(func.sum(cost), 0.0), func.coalesce(func.sum(tokens), 0),
            func.coalesce(func.sum(_unpriced(cost, tokens)), 0)]


def _sums(row: Any, at: int) -> Sums:
    """A :class:`Sums` from the nine columns at ``at`` (PostgreSQL sums integers as numeric)."""
    usd, tokens, unpriced, limited, reused, saved_tokens, saved_usd, saved_unpriced, tasks = row[at:at + 9]
    return Sums(float(usd), int(tokens), int(unpriced), int(limited), int(reused), int(saved_tokens),
                float(saved_usd), int(saved_unpriced), int(tasks))


def overview_rows(session: Session, *, dag_ids: Collection[str] | None, since: datetime,
                  until: datetime) -> tuple[list[TaskDay], list[ModelShare]]:
    """The sums per day, DAG and task, and per DAG and model, of the Gradient task instances of
    the readable ``dag_ids`` (None: every DAG) started in ``[since, until)``: one query.

    A batch's tokens go to the models of its manifest's ``models``, and what those do not cover
    (earlier attempts' rows, older manifests) to :data:`UNRECORDED_MODEL`, with the cost left over.
    """
    c, dialect = _counted(session, dag_ids, since=since, until=until)
    zero, none_day = literal(0), cast(null(), String)
    per_task = select(
        literal("task"), c.c.day, c.c.dag_id, c.c.task_id, *_money(c.c.cost, c.c.tokens),
        func.sum(c.c.rate_limited), func.sum(c.c.reused_items), func.sum(c.c.tokens_saved),
        func.coalesce(func.sum(c.c.cost_saved), 0.0), func.sum(_unpriced(c.c.cost_saved, c.c.tokens_saved)),
        func.count(),
    ).group_by(c.c.day, c.c.dag_id, c.c.task_id)

    members, model, member = dialect.each(c.c.models)
    model_cost, model_tokens = dialect.read(member("cost_usd"), "number"), dialect.read(member("total_tokens"), "count")
    singles = select(c.c.dag_id, func.coalesce(c.c.model, UNRECORDED_MODEL).label("model"),
                     c.c.cost.label("cost"), c.c.tokens.label("tokens")).where(c.c.batch == 0)
    listed = (select(c.c.dag_id, model, model_cost, model_tokens)
              .select_from(c).join(members, true()).where(c.c.batch == 1))
    covered = (select(c.c.dag_id, c.c.cost, c.c.tokens,
                      func.coalesce(func.sum(model_tokens), 0).label("tokens_covered"),
                      func.coalesce(func.sum(func.coalesce(model_cost, 0.0)), 0.0).label("usd_covered"))
               .select_from(c).outerjoin(members, true()).where(c.c.batch == 1)
               .group_by(c.c.dag_id, c.c.run_id, c.c.task_id, c.c.map_index, c.c.cost, c.c.tokens).subquery())
    left_usd = covered.c.cost - covered.c.usd_covered
    rest = (select(covered.c.dag_id, literal(UNRECORDED_MODEL),
                   case((covered.c.cost.is_(None), null()), (left_usd > 0, left_usd), else_=0.0),
                   covered.c.tokens - covered.c.tokens_covered)
            .where(covered.c.tokens > covered.c.tokens_covered))
    shares = union_all(singles, listed, rest).subquery()
    per_model = select(
        literal("model"), none_day, shares.c.dag_id, shares.c.model, *_money(shares.c.cost, shares.c.tokens),
        zero, zero, zero, literal(0.0), zero, zero,
    ).group_by(shares.c.dag_id, shares.c.model)

    days: list[TaskDay] = []
    models: list[ModelShare] = []
    for row in session.execute(union_all(per_task, per_model)):
        if row[0] == "task":
            days.append(TaskDay(_day(row[1]), row[2], row[3], _sums(row, 4)))
        else:
            models.append(ModelShare(row[2], row[3], _sums(row, 4)))
    return days, models


def run_rows(session: Session, *, dag_id: str) -> list[RunRow]:
    """Per run of ``dag_id``, oldest first: the sums of its Gradient task instances, items (a
    batch's total, a single request is one) and failed items (a failed task instance counts as
    one when its batch counted none)."""
    c, _ = _counted(session, None, dag_id=dag_id)
    failures = case((c.c.failed > 0, c.c.failed), (c.c.state == "failed", 1), else_=0)
    query = select(
        c.c.run_id,
        # Read raw and parsed by _utc: SQLite answers text (UTC, as Airflow writes it).
        type_coerce(func.min(c.c.start_date), String), type_coerce(func.max(c.c.end_date), String),
        *_money(c.c.cost, c.c.tokens), func.sum(c.c.rate_limited), literal(0), literal(0), literal(0.0),
        literal(0), func.count(), func.sum(case((c.c.batch == 1, c.c.total), else_=1)), func.sum(failures),
    ).group_by(c.c.run_id)
    out = [RunRow(row[0], _utc(row[1]), _utc(row[2]), _sums(row, 3), int(row[12]), int(row[13]))
           for row in session.execute(query)]
    return sorted(out, key=lambda run: (run.started.timestamp() if run.started else 0.0, run.run_id))


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _utc(value: Any) -> datetime | None:
    """A timestamp read raw: SQLite answers text (UTC, as Airflow writes it), others datetimes."""
    if value is None:
        return None
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def load_value(
    session: Session, *, dag_id: str, run_id: str, task_id: str, map_index: int
) -> tuple[str, dict[str, Any]] | None:
    """The whole XCom value (``return_value``, else ``manifest``) of one Gradient task instance,
    with its key; None when it has none."""
    TaskInstance, XComModel, where = _gradient_xcoms(None)
    where = and_(where, XComModel.dag_id == dag_id, XComModel.run_id == run_id,
                 XComModel.task_id == task_id, XComModel.map_index == map_index)
    query = select(XComModel.key, XComModel.value).select_from(XComModel).join(TaskInstance, where)
    for key, value in session.execute(query):
        if isinstance(value, str):
            value = json.loads(value)
        if isinstance(value, dict):
            return key, value
    return None


def load_shards(session: Session, *, dag_id: str, run_id: str, task_id: str) -> list[tuple[datetime, dict[str, Any]]]:
    """The manifests of a sharded batch (the mapped task instances of ``task_id`` whose value has a
    ``shard``), each with its task instance's start, by map index."""
    TaskInstance, XComModel, where = _gradient_xcoms(None)
    where = and_(where, XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.task_id == task_id,
                 XComModel.map_index >= 0)
    query = (select(type_coerce(TaskInstance.start_date, String), XComModel.value).select_from(XComModel)
             .join(TaskInstance, where).order_by(XComModel.map_index))
    shards = []
    for start, value in session.execute(query):
        if isinstance(value, str):
            value = json.loads(value)
        started = _utc(start)
        if isinstance(value, dict) and "shard" in value and started is not None:
            shards.append((started, value))
    return shards
