"""Old public names kept working under their new ones, each warning once per process.

The one owner of "a renamed name still works": modules, classes and arguments all call
:func:`renamed`, so every old name warns the same way, in the category Airflow reports for providers.
"""

from __future__ import annotations

import warnings
from typing import TypeVar

try:  # the category Airflow filters and reports for providers
    from airflow.exceptions import AirflowProviderDeprecationWarning as _Category
except ImportError:  # pragma: no cover - task SDK without airflow-core
    _Category = DeprecationWarning  # type: ignore[assignment,misc]

T = TypeVar("T")

_warned: set[str] = set()


def renamed(old: str, new: str, value: T, *, why: str = "", stacklevel: int = 3) -> T:
    """``value`` (now called ``new``), reached under its old name ``old``: warns the first time.

    ``why`` says in a few words what the new name makes clear; ``stacklevel`` points the warning at
    the user's line (3: the caller of the function that called this one).
    """
    if old not in _warned:
        _warned.add(old)
        reason = f" ({why})" if why else ""
        warnings.warn(f"{old} is renamed {new}{reason}: use {new}, the same thing under its new name",
                      _Category, stacklevel=stacklevel)
    return value
