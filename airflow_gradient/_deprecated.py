"""Old public names kept working under their new ones, each warning once per process."""

from __future__ import annotations

import warnings
from typing import Any

try:  # the category Airflow filters and reports for providers
    from airflow.exceptions import AirflowProviderDeprecationWarning as _Category
except ImportError:  # pragma: no cover - task SDK without airflow-core
    _Category = DeprecationWarning  # type: ignore[assignment,misc]

_warned: set[str] = set()


def renamed(old: str, new: str, value: Any) -> Any:
    """``value`` (now called ``new``), looked up under its old name ``old``: warns the first time."""
    if old not in _warned:
        _warned.add(old)
        warnings.warn(f"{old} is deprecated: use {new}, the same thing under its new name",
                      _Category, stacklevel=3)
    return value
