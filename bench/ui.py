"""The Gradient nav page's server time over a month of records (issue 21: under 1 s).

``ui``: a throwaway Airflow metadata database (Airflow's own schema; SQLite, and PostgreSQL when
one answers on 127.0.0.1:5432, in a database made and dropped for it) is filled with 30 days
x 50 DAGs x 20 runs a day of Gradient task records (30,000 task instances, each with its XCom:
half batch manifests with a 60-sample timeline and a per-model breakdown, half single requests;
one DAG in ten without a price). The nav page's HTML for 30 days over the 50 DAGs is then built
(:func:`airflow_gradient.plugins.app.overview_html`: the query, the sums, the SVG) five times;
the median is the figure. The auth manager's check is left out: it is Airflow's, per DAG, not per
record. Beside it, the bare query of the same rows and figures. Each database is benched in a
child process, whose AIRFLOW_HOME is its own.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DAYS, DAGS, RUNS_PER_DAY = 30, 50, 20


def _manifest(rng: random.Random, priced: bool) -> dict[str, Any]:
    total = rng.randint(50, 500)
    tokens = total * rng.randint(200, 900)
    cost = round(tokens * 0.65e-6, 6) if priced else None
    limited = rng.randint(0, 20)
    timeline = [{"t": n * 10.0, "done": total * n // 59, "requests": (total + limited) * n // 59,
                 "rate_limited": limited * n // 59, "requests_per_minute": 600.0, "tokens_per_minute": 400000.0,
                 "source": "headers", "paused_s": 0.0} for n in range(60)]
    return {"output_path": "s3://bucket/out/run", "parts": ["part-00001-0a1b2c3d-00000.jsonl"], "total": total,
            "counts": {"succeeded": total - 1, "failed": 1, "skipped": 0},
            "usage": {"input_tokens": tokens // 2, "output_tokens": tokens - tokens // 2, "total_tokens": tokens,
                      "cached_tokens": 0, "reasoning_tokens": 0},
            "requests": {"sent": total + limited, "retries": limited, "rate_limited": limited},
            "wall_time_s": 590.0, "resumed": 0, "attempt": 1, "cost_usd": cost,
            "reused": {"items": 3, "tokens_saved": 900, "cost_usd_saved": 0.0006 if priced else None},
            "models": {"llama3.3-70b-instruct": {"total_tokens": tokens, "cost_usd": cost}},
            "pacing": {"requests_per_minute": 600.0, "tokens_per_minute": 400000.0, "source": "headers",
                       "description": "600 req/min (headers)"},
            "timeline": timeline}


def _single(rng: random.Random, priced: bool) -> dict[str, Any]:
    tokens = rng.randint(200, 3000)
    return {"id": f"resp_{rng.getrandbits(64):016x}", "model": "llama3.3-70b-instruct", "status": "completed",
            "output_text": "A two sentence summary of the day's notes. " * 4, "tool_calls": [],
            "finish_reason": "stop", "usage": {"input_tokens": tokens // 2, "output_tokens": tokens - tokens // 2,
                                               "total_tokens": tokens},
            "cost_usd": round(tokens * 0.65e-6, 6) if priced else None, "try_number": 1}


def fill(db: Path | None, today: datetime) -> int:
    """Write the records straight into Airflow's tables; returns how many task instances."""
    rng = random.Random(21)
    runs, tis, xcoms = [], [], []
    run_pk = 0
    for day in range(DAYS):
        for dag in range(DAGS):
            dag_id = f"gradient_dag_{dag:02d}"
            for n in range(RUNS_PER_DAY):
                run_pk += 1
                start = today - timedelta(days=day, minutes=n * 60 + dag)
                stamp = start.strftime("%Y-%m-%d %H:%M:%S.%f")
                run_id = f"scheduled__{start.isoformat()}"
                batch = n % 2 == 0
                value = (_manifest if batch else _single)(rng, priced=dag % 10 != 0)
                runs.append((run_pk, dag_id, run_id, "scheduled", stamp, "success"))
                task_id, operator = ("summarise", "GradientBatchOperator") if batch else \
                    ("ask", "GradientResponseOperator")
                tis.append((uuid.uuid4().hex, task_id, dag_id, run_id, -1, 1, "default_pool", 1, "success", stamp,
                            (start + timedelta(minutes=10)).strftime("%Y-%m-%d %H:%M:%S.%f"), operator))
                xcoms.append((run_pk, task_id, -1, "return_value", dag_id, run_id, stamp, json.dumps(value)))
    inserts = [
        ("dag_run (id, dag_id, run_id, run_type, run_after, state)", runs),
        ("task_instance (id, task_id, dag_id, run_id, map_index, try_number, pool, pool_slots, state, start_date, "
         "end_date, operator)", tis),
        ("xcom (dag_run_id, task_id, map_index, key, dag_id, run_id, timestamp, value)", xcoms),
    ]
    if db is None:  # PostgreSQL, the URL in Airflow's configuration
        import psycopg2
        from psycopg2.extras import execute_values

        from airflow.settings import engine

        with psycopg2.connect(engine.url.render_as_string(hide_password=False).replace("+psycopg2", "")) as conn:
            with conn.cursor() as cursor:
                for table, rows in inserts:
                    execute_values(cursor, f"INSERT INTO {table} VALUES %s", rows, page_size=2000)
        return len(tis)
    with sqlite3.connect(db) as conn:
        for table, rows in inserts:
            conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
    return len(tis)


def child(out: str) -> None:
    """Runs in the child process, AIRFLOW_HOME already set."""
    from airflow.settings import Session
    from airflow.utils import db as airflow_db
    from airflow_gradient.plugins.app import overview_html

    airflow_db.initdb()
    today = datetime.now(UTC).replace(hour=23, minute=0, second=0, microsecond=0)
    sqlite = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite")
    db = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db" if sqlite else None
    count = fill(db, today)
    dag_ids = {f"gradient_dag_{dag:02d}" for dag in range(DAGS)}
    times, floors, size = [], [], 0
    for _ in range(5):
        with Session() as session:
            started = time.perf_counter()
            html = overview_html(session, dag_ids, 30, today=today)
            times.append(time.perf_counter() - started)
        size = len(html)
        floors.append(_bare_query(db))
    Path(out).write_text(json.dumps({
        "task_instances": count, "median_s": statistics.median(times), "best_s": min(times),
        "worst_s": max(times), "bare_query_median_s": statistics.median(floors),
        "page_over_bare_query": statistics.median(times) / statistics.median(floors), "html_bytes": size}))


def _bare_query(db: Path | None) -> float:
    """The floor, timed beside the page: the same rows and figures fetched with sqlite3 alone (the
    JSON of every value parsed once in SQLite, nothing added up, no HTML); the same on PostgreSQL."""
    from airflow_gradient.plugins.records import FIELDS

    if db is None:
        import psycopg2

        from airflow.settings import engine

        tops = list(dict.fromkeys(path[0] for _, path, _ in FIELDS))
        figures = ("jsonb_build_array(" + ", ".join(f"r.{path[0]}" + (f" -> '{path[1]}'" if len(path) > 1 else "")
                                                    for _, path, _ in FIELDS) + ")")
        lateral = f", jsonb_to_record(x.value) AS r({', '.join(f'{top} jsonb' for top in tops)})"
        connect: Any = lambda: psycopg2.connect(  # noqa: E731
            engine.url.render_as_string(hide_password=False).replace("+psycopg2", ""))
    else:
        figures = "json_extract(x.value, " + ", ".join("'$." + ".".join(path) + "'" for _, path, _ in FIELDS) + ")"
        lateral = ""
        connect = lambda: sqlite3.connect(db)  # noqa: E731
    query = (f"SELECT x.dag_id, x.run_id, x.task_id, ti.start_date, {figures} FROM xcom x "
             "JOIN task_instance ti ON ti.dag_id = x.dag_id AND ti.run_id = x.run_id AND ti.task_id = x.task_id "
             f"AND ti.map_index = x.map_index{lateral} WHERE x.key IN ('return_value', 'manifest') "
             "AND lower(ti.operator) LIKE '%%gradient%%' ORDER BY ti.start_date")
    conn = connect()
    try:
        cursor = conn.cursor()
        started = time.perf_counter()
        cursor.execute(query if db is None else query.replace("%%", "%"))
        cursor.fetchall()
        return time.perf_counter() - started
    finally:
        conn.close()


def bench_ui() -> dict[str, Any]:
    """The nav page on SQLite and, when it answers on 127.0.0.1:5432, on PostgreSQL."""
    results = {"sqlite": _bench_on(None)}
    try:
        from tests.support.services import postgres_database
    except ImportError:
        return results
    try:
        with postgres_database("gradient_bench_ui") as url:
            results["postgresql"] = _bench_on(url)
    except Exception as exc:
        results["postgresql"] = {"skipped": str(exc)[:200]}
    return results


def _bench_on(url: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gradient-bench-ui-") as home:
        env = {name: value for name, value in os.environ.items() if not name.startswith("AIRFLOW")}
        env.update({"AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url or f"sqlite:///{home}/airflow.db",
                    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"})
        out = Path(home) / "result.json"
        subprocess.run([sys.executable, "-m", "bench.ui", str(out)], env=env, cwd=ROOT, check=True)
        result: dict[str, Any] = json.loads(out.read_text())
    result["goal_s"] = 1.0
    result["ok"] = result["median_s"] < 1.0
    return result


if __name__ == "__main__":
    child(sys.argv[1])
