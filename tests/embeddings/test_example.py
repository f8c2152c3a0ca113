"""The example DAG embed_catalogue, run with dag.test() against the emulator and a PostgreSQL
database made for the test and dropped after it."""

from __future__ import annotations

import csv

import pytest

from tests.conftest import EXAMPLES, example_dag, run_dag, task_states, xcom_value
from tests.support.services import postgres_conn_uri, postgres_database


@pytest.fixture
def catalogue_db(monkeypatch: pytest.MonkeyPatch):
    with postgres_database("embed_catalogue") as url:
        monkeypatch.setenv("AIRFLOW_CONN_CATALOGUE_DB", postgres_conn_uri(url))
        yield url


def test_catalogue_is_embedded_loaded_and_queried(gradient_conn, catalogue_db) -> None:
    import psycopg2

    with open(EXAMPLES / "data" / "catalogue.csv", encoding="utf-8") as handle:
        products = list(csv.DictReader(handle))
    kettle = products[0]
    query = f"{kettle['name']}: {kettle['description']}"  # the emulator's vectors match identical texts only
    dag_run = run_dag(example_dag("embed_catalogue"), conf={"query": query})
    assert set(task_states(dag_run).values()) == {"success"}
    manifest = xcom_value(dag_run, "embed")
    assert manifest["counts"]["succeeded"] == len(products) and manifest["requests"]["sent"] == 1
    loaded = xcom_value(dag_run, "load")
    assert loaded["rows"] == len(products)
    assert loaded["column"] in ("real[]", f"vector({manifest['dimensions']})")
    matches = xcom_value(dag_run, "products_like")
    assert matches[0]["sku"] == kettle["custom_id"] and matches[0]["cosine"] == pytest.approx(1.0, abs=1e-4)
    assert len(matches) == 3 and matches[1]["cosine"] < 0.5

    with psycopg2.connect(catalogue_db.replace("postgresql+psycopg2", "postgresql")) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM products")
        assert cur.fetchone()[0] == len(products)
        if loaded["column"] == "real[]":
            cur.execute("SELECT min(array_length(embedding, 1)) FROM products")
            assert cur.fetchone()[0] == manifest["dimensions"]
