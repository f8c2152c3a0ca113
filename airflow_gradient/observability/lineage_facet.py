"""The ``gradient`` run facet, as an OpenLineage facet class. Imported only when the OpenLineage
provider (and so the OpenLineage client) is installed: :mod:`.lineage` imports it lazily."""

from __future__ import annotations

from typing import Any

from attrs import define
from openlineage.client.facet_v2 import RunFacet

from airflow_gradient._version import __version__

# Where the facet's JSON schema is published; the same file ships in this package
# (airflow_gradient/observability/schemas/GradientRunFacet.json).
SCHEMA_URL = (
    "https://raw.githubusercontent.com/airflow-gradient/airflow-gradient/main/"
    "airflow_gradient/observability/schemas/GradientRunFacet.json#/$defs/GradientRunFacet"
)
PRODUCER = f"https://github.com/airflow-gradient/airflow-gradient/tree/v{__version__}"


@define
class GradientRunFacet(RunFacet):
    """What a Gradient task sent and what it cost (see ``docs/observability.md``)."""

    mode: str
    model: str | None = None
    counts: dict[str, int] | None = None
    usage: dict[str, int] | None = None
    cost_usd: float | None = None
    requests: dict[str, int] | None = None
    rate_limited: int | None = None
    reused: dict[str, Any] | None = None
    pacing: dict[str, Any] | None = None
    batch_job_ids: list[str] | None = None

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA_URL
