"""Pacing: how fast a batch may send, from the user's limits, the account's headers and its 429s.

One job per module, in the order a request meets them:

- :mod:`~airflow_gradient.batch.in_task.pacing.pace`: the one pace value (:class:`Pace`) and the
  :class:`RateLimiter` protocol, all the engine sees: four calls per request
- :mod:`~airflow_gradient.batch.in_task.pacing.rules`: the rules, a pure state and its transitions
  (``PaceState``: no IO, no clock)
- :mod:`~airflow_gradient.batch.in_task.pacing.memory`: :class:`AdaptiveRateLimiter`, those rules
  in one task's memory
- :mod:`~airflow_gradient.batch.in_task.pacing.store` and
  :mod:`~airflow_gradient.batch.in_task.pacing.shared`: :class:`SharedRateLimiter`, the same rules
  in Redis, shared by every task on one account
- :mod:`~airflow_gradient.batch.in_task.pacing.factory`: :func:`limiter_for`, which picks a batch's
  limiter (the ``rate_limiter=`` argument, else the shared one when the Gradient connection names a
  ``rate_limit_store``, else the in-memory one)
"""

from __future__ import annotations

from typing import Any

from airflow_gradient.batch.in_task.pacing.factory import limiter_for
from airflow_gradient.batch.in_task.pacing.memory import AdaptiveRateLimiter
from airflow_gradient.batch.in_task.pacing.pace import Pace, RateLimiter
from airflow_gradient.batch.in_task.pacing.shared import SharedRateLimiter

__all__ = ["AdaptiveRateLimiter", "Pace", "RateLimiter", "SharedRateLimiter", "limiter_for"]

def __getattr__(name: str) -> Any:
    if name == "Pacing":
        from airflow_gradient._deprecated import renamed

        return renamed("airflow_gradient.batch.in_task.pacing.Pacing", "airflow_gradient.batch.in_task.pacing.Pace",
                       Pace, why="the one pace value of every limiter")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
