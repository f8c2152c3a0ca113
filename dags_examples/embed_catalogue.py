"""Embed a product catalogue, load the vectors into PostgreSQL, and answer "products like X".

``embed`` sends the catalogue (a CSV file here; an ``s3://`` or ``gs://`` URI works the same) to
``POST /v1/embeddings`` with ``GradientBatchEmbeddingOperator``: the products are packed into a few
requests (up to 2,048 texts each), paced under the account's limits, one row per product written to
``output_path`` as it arrives. ``load`` reads the rows back (``read_results``) and loads them into a
table of a PostgreSQL database of its own, through ``PostgresHook`` (the
``apache-airflow-providers-postgres`` package): a ``vector`` column where the server has the
pgvector extension, else ``real[]``. ``products_like`` embeds the question of the ``query``
parameter and logs the products closest to it by cosine similarity, computed in the database.

Against the bundled emulator (its vectors are deterministic but not semantic: only identical texts
are close; a real embedding model ranks "kettle for green tea" near the kettle and the teapot)::

    python -m airflow_gradient.testing.emulator --port 8000 &
    export AIRFLOW_CONN_GRADIENT_DEFAULT='{"conn_type": "gradient", "password": "any-key",
        "host": "http://127.0.0.1:8000/v1", "extra": {"model": "emulated-embedding-model"}}'
    createdb catalogue
    export AIRFLOW_CONN_CATALOGUE_DB='postgres://postgres@127.0.0.1:5432/catalogue'
    airflow dags test embed_catalogue -c '{"query": "a kettle for green tea"}'
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pendulum

from airflow.sdk import DAG, Param, task
from airflow_gradient import GradientBatchEmbeddingOperator, GradientHook, read_results

CATALOGUE = os.environ.get("GRADIENT_EXAMPLE_CATALOGUE", str(Path(__file__).parent / "data" / "catalogue.csv"))
OUTPUT_ROOT = os.environ.get("GRADIENT_EXAMPLE_OUTPUT", "/tmp/gradient-examples")
POSTGRES_CONN_ID = "catalogue_db"
TEXT = "{{ name }}: {{ description }}"
TOP = 3
log = logging.getLogger(__name__)

with DAG(
    "embed_catalogue",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    params={"query": Param("a kettle for green tea", type="string", description="what to find products like")},
    tags=["gradient", "embeddings"],
) as dag:
    embed = GradientBatchEmbeddingOperator(
        task_id="embed",
        rows_path=CATALOGUE,
        text_template=TEXT,
        output_path=f"{OUTPUT_ROOT}/embed_catalogue/{{{{ run_id }}}}/",
        max_inputs_per_request=2048,
        retries=2,
    )

    @task
    def load(manifest: dict) -> dict:
        """Create the table (``vector`` with pgvector, else ``real[]``) and upsert one row per product."""
        import csv

        from airflow.providers.postgres.hooks.postgres import PostgresHook

        hook = PostgresHook(postgres_conn_id=POSTGRES_CONN_ID)
        rows = read_results(manifest)
        names = {row["custom_id"]: row["name"] for row in csv.DictReader(open(CATALOGUE, encoding="utf-8"))}
        pgvector = bool(hook.get_first("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"))
        if pgvector:
            hook.run("CREATE EXTENSION IF NOT EXISTS vector")
        column = f"vector({manifest['dimensions']})" if pgvector else "real[]"
        hook.run(f"CREATE TABLE IF NOT EXISTS products (sku text PRIMARY KEY, name text, embedding {column})")
        cast = "::vector" if pgvector else "::real[]"
        values = [(sku, names[sku], str(row["embedding"]) if pgvector else row["embedding"])
                  for sku, row in rows.items() if row["status"] == "succeeded"]
        with hook.get_conn() as conn, conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO products (sku, name, embedding) VALUES (%s, %s, %s{cast}) "
                "ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, embedding = EXCLUDED.embedding",
                values,
            )
            conn.commit()
        return {"rows": len(values), "column": column}

    @task
    def products_like(loaded: dict, params: dict | None = None) -> list[dict]:
        """Embed the query and log the products closest to it (cosine similarity, in SQL)."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        query = (params or {})["query"]
        gradient = GradientHook()
        try:
            vector = gradient.create_embeddings(query).vectors[0]
        finally:
            gradient.close()
        hook = PostgresHook(postgres_conn_id=POSTGRES_CONN_ID)
        if loaded["column"].startswith("vector"):
            sql = ("SELECT sku, name, 1 - (embedding <=> %s::vector) AS cosine FROM products "
                   "ORDER BY embedding <=> %s::vector LIMIT %s")
            parameters: tuple = (str(vector), str(vector), TOP)
        else:
            sql = ("SELECT sku, name, (SELECT sum(a * b) / sqrt(sum(a * a) * sum(b * b)) "
                   "FROM unnest(embedding, %s::real[]) AS pair(a, b)) AS cosine "
                   "FROM products ORDER BY cosine DESC LIMIT %s")
            parameters = (vector, TOP)
        matches = [{"sku": sku, "name": name, "cosine": round(float(cosine), 4)}
                   for sku, name, cosine in hook.get_records(sql, parameters=parameters)]
        for rank, match in enumerate(matches, start=1):
            log.info("%d. %s (%s): cosine %s", rank, match["name"], match["sku"], match["cosine"])
        return matches

    products_like(load(embed.output))
