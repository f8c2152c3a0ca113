"""Shared pieces of the cost and reuse tests: a connection with prices."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_gradient.testing import GradientEmulator
from tests.conftest import conn_env

MODEL = "test-model"


def use_prices(monkeypatch: pytest.MonkeyPatch, emulator: GradientEmulator, prices: dict[str, Any]) -> None:
    """``gradient_default`` points at the emulator with ``prices`` in its extra."""
    for name, value in conn_env(emulator.base_url, max_retry_wait=5, prices=prices).items():
        monkeypatch.setenv(name, value)
