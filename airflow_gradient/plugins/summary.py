"""The figures the pages show, put together from the sums of
:mod:`~airflow_gradient.plugins.records` (the database adds up the task instances).

Pure: no database, no HTML. Money is kept as :class:`Money`, dollars of what had a price plus the
tokens of what had none, so a page says "price unknown" for those tokens and never shows them as $0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from airflow_gradient.plugins.records import ModelShare, RunRow, Sums, TaskDay


@dataclass
class Money:
    """What some task instances cost: ``usd`` of those with a price, ``unpriced_tokens`` of those without."""

    usd: float = 0.0
    tokens: int = 0
    unpriced_tokens: int = 0

    def add(self, cost_usd: float | None, tokens: int) -> None:
        self.tokens += tokens
        if cost_usd is None:
            self.unpriced_tokens += tokens
        else:
            self.usd += cost_usd

    def add_sums(self, sums: Sums) -> None:
        self.usd += sums.usd
        self.tokens += sums.tokens
        self.unpriced_tokens += sums.unpriced_tokens

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


def overview(task_days: Iterable[TaskDay], models: Iterable[ModelShare], days: list[date]) -> Overview:
    """Put the sums per task and day and per model together over ``days`` (other days are left out)."""
    out = Overview(days=days, dag_ids=[])
    out.per_day = {day: {} for day in days}
    out.rate_limited_per_day = dict.fromkeys(days, 0)
    for day, dag_id, task_id, sums in task_days:
        if day not in out.per_day:
            continue
        out.tasks += sums.tasks
        out.per_day[day].setdefault(dag_id, Money()).add_sums(sums)
        out.by_dag.setdefault(dag_id, Money()).add_sums(sums)
        out.by_task.setdefault((dag_id, task_id), Money()).add_sums(sums)
        out.total.add_sums(sums)
        out.rate_limited_per_day[day] += sums.rate_limited
        out.reused_items += sums.reused_items
        out.tokens_saved += sums.tokens_saved
        out.saved.add_sums(Sums(sums.saved_usd, sums.tokens_saved, sums.saved_unpriced_tokens))
    for _dag_id, model, sums in models:
        out.by_model.setdefault(model, Money()).add_sums(sums)
    out.dag_ids = sorted(out.by_dag, key=lambda dag: _spend_order((dag, out.by_dag[dag])))
    return out


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


def runs(rows: Iterable[RunRow]) -> list[RunFigures]:
    """Per DAG run, in the order given: cost, tokens, items, failed items, 429s and wall time."""
    out = []
    for row in rows:
        run = RunFigures(row.run_id, row.started, row.ended, Money(row.sums.usd, row.sums.tokens,
                                                                   row.sums.unpriced_tokens),
                         row.items, row.failures, row.sums.rate_limited, row.sums.tasks)
        out.append(run)
    return out


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
