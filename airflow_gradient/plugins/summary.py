"""The figures the pages show, added up from :class:`~airflow_gradient.plugins.records.TaskRecord`.

Pure: no database, no HTML. Money is kept as :class:`Money`, dollars of what had a price plus the
tokens of what had none, so a page says "price unknown" for those tokens and never shows them as $0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from airflow_gradient.plugins.records import TaskRecord

# A batch's tokens that its manifest's ``models`` does not cover (earlier attempts, older manifests).
UNRECORDED_MODEL = "(model not recorded)"


@dataclass
class Money:
    """What some records cost: ``usd`` of those with a price, ``unpriced_tokens`` of those without."""

    usd: float = 0.0
    tokens: int = 0
    unpriced_tokens: int = 0

    def add(self, cost_usd: float | None, tokens: int) -> None:
        self.tokens += tokens
        if cost_usd is None:
            self.unpriced_tokens += tokens
        else:
            self.usd += cost_usd

    @property
    def known(self) -> bool:
        """Whether every token here had a price."""
        return self.unpriced_tokens == 0


@dataclass
class Overview:
    """The nav page: one period, every readable DAG."""

    days: list[date]
    dag_ids: list[str]
    # day -> dag_id -> money
    per_day: dict[date, dict[str, Money]] = field(default_factory=dict)
    rate_limited_per_day: dict[date, int] = field(default_factory=dict)
    by_model: dict[str, Money] = field(default_factory=dict)
    by_dag: dict[str, Money] = field(default_factory=dict)
    by_task: dict[tuple[str, str], Money] = field(default_factory=dict)
    total: Money = field(default_factory=Money)
    reused_items: int = 0
    tokens_saved: int = 0
    saved: Money = field(default_factory=Money)
    tasks: int = 0

    def top_dags(self, count: int = 10) -> list[tuple[str, Money]]:
        return sorted(self.by_dag.items(), key=_spend_order)[:count]

    def top_tasks(self, count: int = 10) -> list[tuple[tuple[str, str], Money]]:
        return sorted(self.by_task.items(), key=_spend_order)[:count]

    @property
    def rate_limited(self) -> int:
        return sum(self.rate_limited_per_day.values())


def _spend_order(item: tuple[object, Money]) -> tuple[float, int, str]:
    return (-item[1].usd, -item[1].tokens, str(item[0]))


def period_days(today: date, days: int) -> list[date]:
    """The ``days`` days ending with ``today``, oldest first."""
    return [today - timedelta(days=days - 1 - n) for n in range(days)]


def overview(records: Iterable[TaskRecord], days: list[date]) -> Overview:
    """Add up ``records`` over ``days`` (records of other days are left out)."""
    first, last = days[0], days[-1]
    out = Overview(days=days, dag_ids=[])
    out.per_day = {day: {} for day in days}
    out.rate_limited_per_day = dict.fromkeys(days, 0)
    dags: set[str] = set()
    for record in records:
        if record.start_date is None or not first <= record.start_date.date() <= last:
            continue
        day = record.start_date.date()
        dags.add(record.dag_id)
        out.tasks += 1
        out.per_day[day].setdefault(record.dag_id, Money()).add(record.cost_usd, record.total_tokens)
        out.by_dag.setdefault(record.dag_id, Money()).add(record.cost_usd, record.total_tokens)
        out.by_task.setdefault((record.dag_id, record.task_id), Money()).add(record.cost_usd, record.total_tokens)
        out.total.add(record.cost_usd, record.total_tokens)
        out.rate_limited_per_day[day] += record.rate_limited
        for model, cost, tokens in _model_shares(record):
            out.by_model.setdefault(model, Money()).add(cost, tokens)
        out.reused_items += record.reused_items
        out.tokens_saved += record.tokens_saved
        out.saved.add(record.cost_usd_saved, record.tokens_saved)
    out.dag_ids = sorted(dags, key=lambda dag: _spend_order((dag, out.by_dag[dag])))
    return out


def _model_shares(record: TaskRecord) -> list[tuple[str, float | None, int]]:
    """``(model, cost, tokens)`` of a record: a single request's model, or a batch's ``models``
    with what they do not cover (earlier attempts' rows) under :data:`UNRECORDED_MODEL`."""
    if not record.batch:
        return [(record.model or UNRECORDED_MODEL, record.cost_usd, record.total_tokens)]
    shares: list[tuple[str, float | None, int]] = []
    covered, covered_usd = 0, 0.0
    for model, figures in sorted((record.models or {}).items()):
        tokens = int(figures.get("total_tokens") or 0)
        cost = figures.get("cost_usd")
        shares.append((model, cost if isinstance(cost, int | float) else None, tokens))
        covered += tokens
        covered_usd += cost if isinstance(cost, int | float) else 0.0
    if record.total_tokens > covered:
        rest = record.cost_usd - covered_usd if record.cost_usd is not None else None
        shares.append((UNRECORDED_MODEL, max(rest, 0.0) if rest is not None else None, record.total_tokens - covered))
    return shares


@dataclass
class RunFigures:
    """One DAG run's Gradient tasks, added up (the DAG tab's rows)."""

    run_id: str
    started: datetime | None = None
    ended: datetime | None = None
    money: Money = field(default_factory=Money)
    items: int = 0
    failures: int = 0
    rate_limited: int = 0
    tasks: int = 0

    @property
    def wall_time_s(self) -> float | None:
        """From the first Gradient task's start to the last one's end."""
        if self.started is None or self.ended is None:
            return None
        return (self.ended - self.started).total_seconds()


def runs(records: Iterable[TaskRecord]) -> list[RunFigures]:
    """Per DAG run, oldest first: cost, tokens, items (a single request is one), failed items (a
    failed task instance counts as one when its batch counted none), 429s and wall time."""
    out: dict[str, RunFigures] = {}
    for record in records:
        run = out.setdefault(record.run_id, RunFigures(record.run_id))
        run.tasks += 1
        run.money.add(record.cost_usd, record.total_tokens)
        run.items += record.total if record.batch else 1
        run.failures += record.failed or (1 if record.state == "failed" else 0)
        run.rate_limited += record.rate_limited
        if record.start_date is not None:
            run.started = min(run.started or record.start_date, record.start_date)
        if record.end_date is not None:
            run.ended = max(run.ended or record.end_date, record.end_date)
    return sorted(out.values(), key=lambda run: (run.started.timestamp() if run.started else 0.0, run.run_id))


def achieved_per_minute(samples: list[dict[str, Any]]) -> list[float | None]:
    """Requests per minute achieved between each timeline sample and the one before (None for the
    first): the counters are cumulative, so this holds whichever samples were kept."""
    out: list[float | None] = [None] * min(len(samples), 1)
    for before, after in zip(samples, samples[1:]):
        span = float(after.get("t", 0.0)) - float(before.get("t", 0.0))
        sent = int(after.get("requests") or 0) - int(before.get("requests") or 0)
        out.append(round(sent * 60.0 / span, 1) if span > 0 else None)
    return out


def timeline_events(samples: list[dict[str, Any]]) -> list[tuple[float, str, str]]:
    """``(t, kind, label)`` of each sample that saw new 429s (kind ``429``) or a pause (``pause``)."""
    events: list[tuple[float, str, str]] = []
    before = 0
    for sample in samples:
        t = float(sample.get("t", 0.0))
        limited = int(sample.get("rate_limited") or 0)
        if limited > before:
            events.append((t, "429", f"{limited - before} x 429 (total {limited})"))
        before = max(before, limited)
        paused = float(sample.get("paused_s") or 0.0)
        if paused > 0:
            events.append((t, "pause", f"paused {paused:.1f} s"))
    return events
