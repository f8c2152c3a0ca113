"""One embeddings batch, from validation to manifest: :func:`run_batch` with the embeddings engine."""

from __future__ import annotations

from typing import Any

from airflow_gradient.batch.in_task.embeddings.engine import EmbeddingsEngine
from airflow_gradient.batch.in_task.embeddings.items import Packing
from airflow_gradient.batch.in_task.runner import run_batch

OUTPUT_FORMATS = ("jsonl", "parquet")


def run_embeddings_batch(*, packing: Packing, output_format: str = "jsonl", **arguments: Any) -> dict[str, Any]:
    """Run an embeddings batch and return its manifest.

    ``arguments`` are those of :func:`~airflow_gradient.batch.in_task.runner.run_batch` (hooks,
    inputs made with :func:`~airflow_gradient.batch.in_task.embeddings.items.item_builder`, limiter,
    settings, output_path...). The manifest is that of every batch, plus ``dimensions`` (of the
    vectors this attempt received; None when it received none) and ``requests.packed_inputs`` (the
    texts carried by the requests sent: with ``requests.sent``, how well they were packed).
    """
    engines: list[EmbeddingsEngine] = []

    def engine(*args: Any, **kwargs: Any) -> EmbeddingsEngine:
        made = EmbeddingsEngine(*args, packing=packing, **kwargs)
        engines.append(made)
        return made

    manifest = run_batch(engine_class=engine, part_format=output_format, **arguments)
    made = engines[0] if engines else None
    manifest["dimensions"] = made.dimensions if made is not None else None
    manifest["requests"]["packed_inputs"] = made.packed_inputs if made is not None else 0
    return manifest
