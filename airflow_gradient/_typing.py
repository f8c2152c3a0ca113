"""Names for annotations only: import them under ``if TYPE_CHECKING:``.

``TaskLog`` is what a task hands to the batch code as its log: ``self.log`` of an Airflow 3 operator
is the task SDK's structlog ``Logger``, while tests and library callers pass a ``logging.Logger``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TypeAlias

    from airflow.sdk.types import Logger as AirflowTaskLogger

    TaskLog: TypeAlias = logging.Logger | AirflowTaskLogger
