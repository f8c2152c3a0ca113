"""Reading a batch's results back, for downstream tasks."""

from __future__ import annotations

from typing import Any, Literal

from airflow_gradient.batch.parts import as_storage_path, iter_rows, list_parts


def read_results(
    source: dict[str, Any] | str | Any, by: Literal["custom_id", "index"] = "custom_id"
) -> dict[str, dict[str, Any]] | list[dict[str, Any]]:
    """The rows of a batch, one per item, from its manifest (the operator's XCom) or its output path.

    With ``by="custom_id"``: a dict ``{custom_id: row}``; with ``by="index"``: a list in input
    order. A sharded batch's ``output_path`` (or its merged manifest, see
    :func:`~airflow_gradient.batch.results.merge_manifests`) reads every shard as one result; one
    shard's manifest reads that shard. Where several attempts wrote a row for the same item, the
    ``succeeded`` one wins, else the latest. All rows are loaded: for very large batches, read the
    part files row by row instead (:func:`airflow_gradient.batch.parts.list_parts` and
    :func:`~airflow_gradient.batch.parts.iter_rows`).
    """
    if by not in ("custom_id", "index"):
        raise ValueError(f"by must be 'custom_id' or 'index', not {by!r}")
    if isinstance(source, dict):
        rows = source.get("results")
        if rows is None:
            if not source.get("output_path"):
                raise ValueError("the manifest has neither inline results nor an output_path")
            return read_results(source["output_path"], by)
        merged = {row["custom_id"]: row for row in rows}
    else:
        merged = {}
        for part in list_parts(as_storage_path(source)):
            for row in iter_rows(part):
                earlier = merged.get(row["custom_id"])
                if earlier is None or earlier["status"] != "succeeded":
                    merged[row["custom_id"]] = row
    if by == "custom_id":
        return merged
    return sorted(merged.values(), key=lambda row: row["index"])
