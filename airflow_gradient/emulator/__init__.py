"""An offline emulator of DigitalOcean Gradient serverless inference, for tests and local DAG runs.

It answers ``GET /v1/models`` and ``POST /v1/responses`` (plain, or streamed in any of three SSE
framings) with deterministic output (:mod:`airflow_gradient.emulator.generate`), enforces rate
limits, and fails on request (:mod:`airflow_gradient.emulator.faults`). Run it with
``python -m airflow_gradient.emulator --port 8000``, or in-process with
:class:`airflow_gradient.testing.GradientEmulator`.
"""

from airflow_gradient.emulator.app import MODELS, create_app
from airflow_gradient.emulator.config import EmulatorConfig
from airflow_gradient.emulator.faults import FAULT_NAMES, FRAMINGS
from airflow_gradient.emulator.generate import count_tokens, plan_reply, prompt_key, reply_text
from airflow_gradient.emulator.server import EmulatorServer
from airflow_gradient.emulator.state import EmulatorState, RequestRecord

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
