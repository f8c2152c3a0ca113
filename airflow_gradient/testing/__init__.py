"""The Gradient emulator for tests: a context manager and a pytest fixture.

::

    from airflow_gradient.testing import GradientEmulator

    with GradientEmulator(api_key="k", rate_500=0.2) as emu:
        os.environ.update(emu.connection_env())      # gradient_default -> the emulator
        ...                                          # run the code under test
        assert emu.request_count() == 3
        emu.configure(stream_framing="chunk")        # change behaviour while it runs

In a ``conftest.py``, ``from airflow_gradient.testing import gradient_emulator`` provides the
``gradient_emulator`` fixture (config fields via indirect parametrisation, if wanted).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from airflow_gradient.testing.emulator import EmulatorConfig, EmulatorServer, EmulatorState, RequestRecord

__all__ = ["EmulatorConfig", "GradientEmulator", "RequestRecord", "connection_env", "gradient_emulator"]


class GradientEmulator:
    """The emulator on ``127.0.0.1`` and a free port, served by uvicorn in a background thread.

    :param config: the starting configuration (default: all defaults).
    :param fields: :class:`EmulatorConfig` fields overriding ``config``, e.g. ``api_key="k"``.
    :param host: interface to listen on.
    :param port: port to listen on; 0 picks a free one.
    """

    def __init__(
        self, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, **fields: Any
    ) -> None:
        self.state = EmulatorState((config or EmulatorConfig()).updated(**fields))
        self._host = host
        self._port = port
        self._server: EmulatorServer | None = None

    def __enter__(self) -> GradientEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> GradientEmulator:
        """Start serving; returns once the emulator accepts connections."""
        if self._server is None:
            self._server = EmulatorServer(self.state, self._host, self._port)
            self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving; pending hangs and streams end at once."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the server root."""
        if self._server is None:
            raise RuntimeError("the emulator is not running: use it as a context manager or call start()")
        return self._server.url

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the API base URL, as an Airflow connection's host."""
        return f"{self.url}/v1"

    @property
    def config(self) -> EmulatorConfig:
        return self.state.config

    def configure(self, **fields: Any) -> EmulatorConfig:
        """Change :class:`EmulatorConfig` fields while running (faults, latency, limits, framing...)."""
        return self.state.configure(**fields)

    def reset(self) -> None:
        """Forget the request log, generations, ``xN`` fault counts and rate-limit windows."""
        self.state.reset()

    @property
    def log(self) -> list[RequestRecord]:
        """Every request received, oldest first (copies: safe to keep)."""
        return self.state.log()

    def request_count(self, path: str | None = "/v1/responses") -> int:
        """How many requests arrived at ``path`` (any outcome); ``None`` counts every path."""
        return sum(1 for record in self.log if path is None or record.path == path)

    def wait_for_requests(self, count: int, path: str | None = "/v1/responses", timeout: float = 10.0) -> bool:
        """Block until at least ``count`` requests reached ``path`` (``None``: any path); false if
        ``timeout`` seconds pass first. For code that sends from another thread or process."""
        return self.state.wait_until(
            lambda log: sum(1 for r in log if path is None or r.path == path) >= count, timeout
        )

    def generated_counts(self) -> dict[str, int]:
        """Successful generations per prompt key (see
        :func:`airflow_gradient.testing.emulator.prompt_key`)."""
        return self.state.generated_counts()

    def connection_env(
        self, conn_id: str = "gradient_default", model: str = "test-model", **extra: Any
    ) -> dict[str, str]:
        """The ``AIRFLOW_CONN_<ID>`` variable of an Airflow connection to this emulator, to put in
        ``os.environ``; ``extra`` adds connection extras such as ``max_retries``."""
        return connection_env(self.base_url, self.config.api_key or "emulator-key", conn_id=conn_id,
                              model=model, **extra)


def connection_env(
    base_url: str, key: str, *, conn_id: str = "gradient_default", model: str = "test-model", **extra: Any
) -> dict[str, str]:
    """The ``AIRFLOW_CONN_<ID>`` variable (JSON form) of a Gradient connection to ``base_url``."""
    value = {"conn_type": "gradient", "host": base_url, "password": key, "extra": {"model": model, **extra}}
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(value)}


try:
    import pytest
except ImportError:  # pragma: no cover - the context manager works without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def gradient_emulator(request: pytest.FixtureRequest) -> Iterator[GradientEmulator]:
        """A running :class:`GradientEmulator` accepting any key; parametrize it indirectly with a
        dict of :class:`EmulatorConfig` fields to change its configuration."""
        fields = getattr(request, "param", None) or {}
        with GradientEmulator(**fields) as emulator:
            yield emulator
