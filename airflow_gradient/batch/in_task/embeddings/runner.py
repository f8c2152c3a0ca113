"""One embeddings batch, from validation to manifest: :func:`run_batch` with the embeddings engine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_gradient.batch.in_task.embeddings.engine import EmbeddingsEngine
from airflow_gradient.batch.in_task.embeddings.items import Packing
from airflow_gradient.batch.in_task.runner import run_batch
from airflow_gradient.batch.parts import iter_rows, list_parts
from airflow_gradient.batch.rows import vector_dimensions

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

OUTPUT_FORMATS = ("jsonl", "parquet")


def run_embeddings_batch(*, packing: Packing, output_format: str = "jsonl", **arguments: Any) -> dict[str, Any]:
    """Run an embeddings batch and return its manifest.

    ``arguments`` are those of :func:`~airflow_gradient.batch.in_task.runner.run_batch` (hooks,
    inputs made with :func:`~airflow_gradient.batch.in_task.embeddings.items.item_builder`, limiter,
    settings, output_path...). The manifest is that of every batch, plus ``dimensions`` (the length
    of the batch's vectors: those this attempt received, else those of the rows it reused or that
    earlier attempts stored; None when no text has a vector) and ``requests.packed_inputs`` (the
    texts carried by the requests sent: with ``requests.sent``, how well they were packed).
    """
    engines: list[EmbeddingsEngine] = []

    def engine(*args: Any, **kwargs: Any) -> EmbeddingsEngine:
        made = EmbeddingsEngine(*args, packing=packing, **kwargs)
        engines.append(made)
        return made

    manifest = run_batch(engine_class=engine, part_format=output_format, **arguments)
    made = engines[0] if engines else None
    dimensions = made.dimensions if made is not None else None
    if dimensions is None and manifest["counts"]["succeeded"]:  # every vector came from an earlier attempt
        dimensions = stored_dimensions(arguments.get("output_path"))
    manifest["dimensions"] = dimensions
    manifest["requests"]["packed_inputs"] = made.packed_inputs if made is not None else 0
    return manifest


def stored_dimensions(output_path: ObjectStoragePath | None) -> int | None:
    """The length of the vectors in the rows earlier attempts stored at ``output_path`` (the first
    succeeded row's), or None."""
    if output_path is None:
        return None
    return vector_dimensions(row for part in list_parts(output_path, shards=False) for row in iter_rows(part))
