"""The sums of :mod:`airflow_gradient.plugins.records`, done by the database, on hand-made task
instances written into Airflow's own tables: on SQLite with the figures checked one by one, and
on PostgreSQL (a database made and dropped for the test) against SQLite's from the same rows.

Each database gets Airflow's metadata tables from Airflow's SQLAlchemy models (``create_all``),
the schema Airflow itself creates on a fresh database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from airflow_gradient.plugins import pages, summary
from airflow_gradient.plugins.app import sharded_batch_html
from airflow_gradient.plugins.records import UNRECORDED_MODEL, load_shards, load_value, overview_rows, run_rows
from tests.support.services import postgres_database

TODAY = date(2026, 11, 30)
SINCE = datetime(2026, 11, 24, tzinfo=UTC)  # the 7 days ending TODAY
UNTIL = datetime(2026, 12, 1, tzinfo=UTC)


def single(cost: Any, tokens: int, model: str = "m1", **extra: Any) -> dict[str, Any]:
    return {"model": model, "usage": {"total_tokens": tokens}, "cost_usd": cost, "finish_reason": "stop",
            "output_text": "words " * 20, **extra}


def manifest(cost: float | None, tokens: int, total: int, failed: int = 0, **extra: Any) -> dict[str, Any]:
    return {"total": total, "counts": {"succeeded": total - failed, "failed": failed},
            "usage": {"total_tokens": tokens}, "cost_usd": cost, "requests": {"sent": total, "rate_limited": 0},
            "timeline": [{"t": n, "done": n} for n in range(50)], **extra}


# (dag_id, run day, task_id, map_index, operator, state, {key: value}): what the tasks pushed.
TASKS: list[tuple[str, int, str, int, str, str, dict[str, Any]]] = [
    ("a", 29, "t1", -1, "GradientResponseOperator", "success", {"return_value": single(1.5, 1000, requests={"rate_limited": 3})}),
    ("a", 29, "t2", -1, "_GradientDecoratedOperator", "success", {"return_value": single(None, 400, "m2")}),
    ("a", 29, "plain", -1, "PythonOperator", "success", {"return_value": single(5.0, 5000)}),  # not Gradient
    ("b", 30, "t1", -1, "GradientBatchOperator", "success", {"return_value": manifest(
        0.5, 200, 4, models={"m1": {"total_tokens": 150, "cost_usd": 0.4}},
        reused={"items": 2, "tokens_saved": 50, "cost_usd_saved": 0.1},
        requests={"sent": 5, "rate_limited": 1})}),
    # A failed try's manifest, then a successful return_value: counted once, by the return_value.
    ("b", 30, "t2", -1, "GradientBatchOperator", "success", {
        "manifest": manifest(9.0, 9000, 3, failed=3), "return_value": manifest(0.25, 100, 3, models={})}),
    # A batch that failed its max_failed_fraction: only its manifest.
    ("b", 28, "t3", -1, "GradientBatchOperator", "failed", {"manifest": manifest(
        None, 60, 6, failed=4,
        models={"m3": {"total_tokens": 40, "cost_usd": None}})}),
    # Mapped: two task instances of one task. A cost that is not a number is no price.
    ("c", 27, "ask", 0, "GradientResponseOperator", "success", {"return_value": single(0.01, 10)}),
    ("c", 27, "ask", 1, "GradientResponseOperator", "success", {"return_value": single("free", 20, model=7)}),
    ("c", 27, "broken", -1, "GradientResponseOperator", "failed", {"return_value": {"error": "boom", "total": None}}),
    ("c", 1, "ask", -1, "GradientResponseOperator", "success", {"return_value": single(9.0, 9000)}),  # 11-01
    # A batch in two shards (11-20, before the period), the second started a minute after the first.
    *(("s", 20, "summarise", index, "GradientBatchOperator", "success", {"return_value": manifest(
        0.25, 100, 5, shard={"index": index, "count": 2}, batch_output_path="/out", parts=[f"part-{index}"],
        wall_time_s=49.0, models={"m1": {"total_tokens": 100, "cost_usd": 0.25}})}) for index in (0, 1)),
]


def write_tasks(engine: Engine) -> None:
    """Airflow's tables, then one DAG run per (DAG, day), its task instances and their XComs."""
    from airflow.models import import_all_models
    from airflow.models.base import Base
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel

    import_all_models()
    Base.metadata.create_all(engine)
    runs: dict[tuple[str, int], int] = {}
    with engine.begin() as conn:
        for dag_id, day, task_id, map_index, operator, state, values in TASKS:
            start = datetime(2026, 11, day, 3, tzinfo=UTC) + timedelta(minutes=len(runs))
            run_id = f"scheduled__2026-11-{day:02d}"
            if (dag_id, day) not in runs:
                runs[(dag_id, day)] = len(runs) + 1
                conn.execute(insert(DagRun.__table__).values(
                    id=runs[(dag_id, day)], dag_id=dag_id, run_id=run_id, run_type="scheduled", run_after=start,
                    state="success"))
            conn.execute(insert(TaskInstance.__table__).values(
                dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, pool="default_pool",
                state=state, start_date=start, end_date=start + timedelta(seconds=90), operator=operator))
            for key, value in values.items():
                conn.execute(insert(XComModel.__table__).values(
                    dag_run_id=runs[(dag_id, day)], dag_id=dag_id, run_id=run_id, task_id=task_id,
                    map_index=map_index, key=key, timestamp=start, value=value))


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{Path(tmp_path_factory.mktemp('ui-queries')) / 'airflow.db'}")
    write_tasks(engine)
    yield engine
    engine.dispose()


def pages_of(engine: Engine) -> dict[str, Any]:
    """The nav page's and each DAG tab's figures and HTML, read from ``engine``."""
    with Session(engine) as session:
        task_days, models = overview_rows(session, dag_ids={"a", "b", "c"}, since=SINCE, until=UNTIL)
        runs = {dag_id: run_rows(session, dag_id=dag_id) for dag_id in ("a", "b", "c")}
    ov = summary.overview(task_days, models, summary.period_days(TODAY, 7))
    html = [pages.overview_page(ov, 7)] + [pages.dag_page(dag, summary.runs(rows)) for dag, rows in runs.items()]
    return {"task_days": sorted(task_days), "models": sorted(models), "runs": runs, "overview": ov,
            "html": [re.sub(r"chart-\d+", "chart-N", page) for page in html]}


def test_the_database_adds_up_per_day_dag_task_and_model(sqlite: Engine) -> None:
    ov = pages_of(sqlite)["overview"]
    assert ov.tasks == 8 and ov.dag_ids == ["a", "b", "c"]
    assert ov.total.usd == pytest.approx(2.26) and ov.total.tokens == 1790
    assert ov.total.unpriced_tokens == 400 + 60 + 20
    assert ov.per_day[date(2026, 11, 29)]["a"].usd == 1.5 and ov.per_day[date(2026, 11, 29)]["a"].unpriced_tokens == 400
    assert ov.rate_limited_per_day[date(2026, 11, 29)] == 3 and ov.rate_limited == 4
    assert ov.by_model["m1"].tokens == 1000 + 150 + 10 and ov.by_model["m1"].usd == pytest.approx(1.91)
    assert ov.by_model["m2"].unpriced_tokens == 400 and ov.by_model["m3"].unpriced_tokens == 40
    # What a batch's models do not cover: b.t1's 50 tokens ($0.10 left), b.t2's 100, b.t3's 20
    # (no price), and c's request whose model is not a string.
    rest = ov.by_model[UNRECORDED_MODEL]
    assert (rest.tokens, rest.unpriced_tokens, rest.usd) == (50 + 100 + 20 + 20, 40, pytest.approx(0.35))
    assert [d for d, _ in ov.top_dags()] == ["a", "b", "c"]
    assert ov.by_task[("c", "ask")].tokens == 30 and ov.by_task[("c", "ask")].unpriced_tokens == 20
    assert ov.reused_items == 2 and ov.tokens_saved == 50 and ov.saved.usd == 0.1
    assert pages.money_text(ov.by_dag["a"]) == "$1.50 + 400 tokens, price unknown"
    assert pages.money_text(ov.by_model["m2"]) == "400 tokens, price unknown"


def test_the_database_adds_up_a_dags_runs(sqlite: Engine) -> None:
    runs = pages_of(sqlite)["runs"]
    (b28, b30) = summary.runs(runs["b"])
    assert (b30.items, b30.failures, b30.tasks, b30.money.tokens) == (7, 0, 2, 300)
    assert (b28.items, b28.failures, b28.money.unpriced_tokens) == (6, 4, 60)
    assert b30.wall_time_s == 60 + 90  # the second task started a minute after the first
    (c1, c27) = summary.runs(runs["c"])
    assert (c27.items, c27.failures, c27.tasks) == (3, 1, 3) and c1.money.usd == 9.0


def test_a_task_instance_reads_its_return_value_before_its_manifest(sqlite: Engine) -> None:
    with Session(sqlite) as session:
        found = load_value(session, dag_id="b", run_id="scheduled__2026-11-30", task_id="t2", map_index=-1)
        failed = load_value(session, dag_id="b", run_id="scheduled__2026-11-28", task_id="t3", map_index=-1)
        plain = load_value(session, dag_id="a", run_id="scheduled__2026-11-29", task_id="plain", map_index=-1)
    assert found is not None and found[0] == "return_value" and found[1]["cost_usd"] == 0.25
    assert failed is not None and failed[0] == "manifest" and plain is None


def test_a_sharded_batch_shows_as_a_whole_with_its_shards_timelines_on_one_clock(sqlite: Engine) -> None:
    run = {"dag_id": "s", "run_id": "scheduled__2026-11-20", "task_id": "summarise"}
    with Session(sqlite) as session:
        shards = load_shards(session, **run)
        one = load_value(session, **run, map_index=1)
        assert load_shards(session, dag_id="b", run_id="scheduled__2026-11-30", task_id="t1") == []
    assert [value["shard"]["index"] for _, value in shards] == [0, 1]
    assert (shards[1][0] - shards[0][0]).total_seconds() == 60
    assert one is not None and 'href="?map_index=shards"' in pages.task_page("s", *one)
    html = sharded_batch_html("s / run / summarise", shards)
    assert "all 2 shards" in html and 'data-figure="items"' in html
    assert pages.cost_text(0.5, 200) in html  # both shards' cost and tokens
    assert "m1.total_tokens</th><td>200" in html  # the merged manifest's models
    # One clock: shard 1's samples 60 s later; 50 + 50 samples, t = 0..49 and 60..109, none shared.
    assert "100 samples" in html and '<th scope="row">109.0 s</th>' in html
    assert sharded_batch_html("s", shards[:1]).count("not every shard has finished") == 1


def test_another_database_is_refused_rather_than_shown_wrong_figures() -> None:
    from sqlalchemy import create_mock_engine

    mysql = create_mock_engine("mysql://", lambda *args, **kwargs: None)  # MySQL reads many JSON paths otherwise
    with pytest.raises(NotImplementedError, match="on SQLite and PostgreSQL metadata databases, not on mysql"):
        run_rows(Session(bind=mysql), dag_id="a")


def test_postgresql_adds_up_as_sqlite_does(sqlite: Engine) -> None:
    with postgres_database("gradient_ui_queries") as url:
        engine = create_engine(url)
        try:
            write_tasks(engine)
            on_postgres = pages_of(engine)
        finally:
            engine.dispose()
    on_sqlite = pages_of(sqlite)
    assert on_postgres["html"] == on_sqlite["html"]
    for name in ("task_days", "models", "runs"):
        assert rounded(on_postgres[name]) == rounded(on_sqlite[name]), name


def rounded(value: Any) -> Any:
    """Floats to 9 places: the two databases may add the same costs in another order."""
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {key: rounded(inner) for key, inner in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(inner) for inner in value]
    if hasattr(value, "__dataclass_fields__"):
        return rounded(vars(value))
    return value
