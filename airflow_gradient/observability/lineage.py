"""OpenLineage for the Gradient operators: the datasets a task read and wrote, and the ``gradient``
run facet (model, counts, usage, cost, requests, 429s, reuse, pace, Batch Inference job ids).

Operators return :func:`operator_lineage` from ``get_openlineage_facets_on_complete`` and
``..._on_failure``, as the common-sql and amazon providers do; the OpenLineage provider's listener
calls them. Its classes are imported only then: without the provider, nothing here is imported.

Datasets are named as the OpenLineage naming spec says: a local file is namespace ``file`` and
its absolute path; object storage is ``{scheme}://{bucket}`` and the key (``s3://bucket``,
``path/to/part``), which is also ``ObjectStoragePath.namespace`` and ``.key``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import ObjectStoragePath
    from openlineage.client.facet_v2 import RunFacet

    from airflow_gradient.observability.lineage_facet import GradientRunFacet

    # What the operators' get_openlineage_facets_on_* return.
    GradientLineage = OperatorLineage[Dataset, RunFacet]

log = logging.getLogger(__name__)
FACET_NAME = "gradient"


@dataclass
class LineageRecord:
    """What an operator knows of its run, for lineage.

    :param mode: ``"request"``, ``"in_task"`` or ``"batch_job"``.
    :param outcome: the manifest of a batch, or the XCom of a single request (None: the task failed
        before it had one).
    """

    mode: str
    model: str | None = None
    inputs: Sequence[Any] = ()
    outputs: Sequence[Any] = ()
    outcome: Mapping[str, Any] | None = None
    batch_job_ids: list[str] | None = None
    reuse_results_from: Any = field(default=None)


def dataset_name(location: Any) -> tuple[str, str]:
    """``(namespace, name)`` of a path or URI, by the OpenLineage naming spec."""
    path = _storage_path(location)
    if path.protocol in ("", "file", "local"):
        return "file", path.path.rstrip("/") or "/"
    return path.namespace, path.key.rstrip("/")


def operator_lineage(record: LineageRecord) -> GradientLineage:
    """The task's :class:`OperatorLineage`: its datasets and the ``gradient`` run facet."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    inputs = [*record.inputs, *_reused_parts(record.reuse_results_from)]
    return OperatorLineage(
        inputs=[_dataset(location) for location in inputs],
        outputs=[_dataset(location) for location in record.outputs],
        run_facets={FACET_NAME: run_facet(record)},
    )


def run_facet(record: LineageRecord) -> GradientRunFacet:
    """The ``gradient`` run facet of ``record``."""
    from airflow_gradient.observability.lineage_facet import PRODUCER, GradientRunFacet

    outcome = record.outcome or {}
    requests = outcome.get("requests")
    if record.mode == "request" and outcome:
        attempts = int(outcome.get("attempts") or 1)
        requests = {"sent": attempts, "retries": attempts - 1}
    counts = outcome.get("counts")
    return GradientRunFacet(
        mode=record.mode,
        model=record.model or outcome.get("model"),
        counts={"total": outcome["total"], **counts} if counts is not None and "total" in outcome else counts,
        usage=outcome.get("usage"),
        cost_usd=outcome.get("cost_usd"),
        requests=requests,
        rate_limited=(requests or {}).get("rate_limited"),
        reused=outcome.get("reused"),
        pacing=outcome.get("pacing"),
        batch_job_ids=record.batch_job_ids,
        producer=PRODUCER,
    )


def _dataset(location: Any) -> Dataset:
    from airflow.providers.common.compat.openlineage.facet import Dataset

    namespace, name = dataset_name(location)
    return Dataset(namespace=namespace, name=name)


def _storage_path(location: Any) -> ObjectStoragePath:
    from airflow.sdk import ObjectStoragePath

    return location if isinstance(location, ObjectStoragePath) else ObjectStoragePath(str(location))


def _reused_parts(reuse_results_from: Any) -> list[Any]:
    if reuse_results_from is None:
        return []
    from airflow_gradient.batch.reuse import parts_to_reuse

    try:
        return list(parts_to_reuse(reuse_results_from))
    except Exception:  # lineage must never fail the task: a location gone since is left out
        log.warning("reuse_results_from could not be listed for lineage", exc_info=True)
        return []
