"""The ``pydanticai_gradient`` connection pointed at the emulator, for common.ai's operators."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import TEST_KEY

pytest.importorskip("airflow.providers.common.ai", reason="the common-ai extra is not installed")

MODEL = "llama3.3-70b-instruct"


def pydantic_ai_conn_env(conn_id: str, base_url: str | None, key: str | None = TEST_KEY, **extra: Any) -> dict[str, str]:
    """The ``AIRFLOW_CONN_<ID>`` of a ``pydanticai_gradient`` connection, as a user would set it."""
    value: dict[str, Any] = {"conn_type": "pydanticai_gradient", "extra": {"model": MODEL, **extra}}
    if base_url is not None:
        value["host"] = base_url
    if key is not None:
        value["password"] = key
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(value)}


@pytest.fixture
def gradient_ai(emulator, monkeypatch: pytest.MonkeyPatch):
    """``gradient_ai`` (the example DAG's connection) points at the emulator, with prices; fast retries."""
    prices = {MODEL: {"input": 0.65, "cached_input": 0.3, "output": 0.65}}
    for name, value in pydantic_ai_conn_env("gradient_ai", emulator.base_url, max_retry_wait=5, prices=prices).items():
        monkeypatch.setenv(name, value)
    return emulator
