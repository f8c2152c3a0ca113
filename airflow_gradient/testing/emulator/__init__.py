"""An offline emulator of DigitalOcean Gradient serverless inference, for tests and local DAG runs.

It answers ``GET /v1/models`` and ``POST /v1/responses`` (plain, or streamed in any of three SSE
framings) with deterministic output (:mod:`airflow_gradient.testing.emulator.generate`), enforces rate
limits, and fails on request (:mod:`airflow_gradient.testing.emulator.faults`). Run it with
``python -m airflow_gradient.testing.emulator --port 8000``, or in-process with
:class:`airflow_gradient.testing.GradientEmulator`.
"""

from airflow_gradient.testing.emulator.app import MODELS, create_app
from airflow_gradient.testing.emulator.config import EmulatorConfig
from airflow_gradient.testing.emulator.faults import FAULT_NAMES, FRAMINGS
from airflow_gradient.testing.emulator.generate import count_tokens, plan_reply, prompt_key, reply_text
from airflow_gradient.testing.emulator.server import EmulatorServer
from airflow_gradient.testing.emulator.state import EmulatorState, RequestRecord

__all__ = [
    "FAULT_NAMES",
    "FRAMINGS",
    "MODELS",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "RequestRecord",
    "count_tokens",
    "create_app",
    "plan_reply",
    "prompt_key",
    "reply_text",
]
