"""uvicorn serving the emulator from a background thread, on a socket bound before it starts."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from airflow_gradient.testing.emulator.app import create_app
from airflow_gradient.testing.emulator.state import EmulatorState

STARTUP_TIMEOUT_S = 15.0


class EmulatorServer:
    """Runs the emulator app of ``state`` on ``host:port`` (port 0: a free one) in a daemon thread.

    The socket is bound in the constructor, so :attr:`port` is known at once and no other process
    can take it between choosing and serving.
    """

    def __init__(self, state: EmulatorState, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(
            create_app(state), log_level="warning", lifespan="off", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name=f"gradient-emulator-{self.port}",
            daemon=True,
        )

    @property
    def url(self) -> str:
        """``http://host:port``, without the ``/v1`` of the API."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Start serving; returns once uvicorn accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the Gradient emulator failed to start on {self.url}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Gradient emulator did not start on {self.url} in {STARTUP_TIMEOUT_S:g} s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving: hanging requests and streams end at once, then uvicorn shuts down."""
        self.state.closing.set()
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=STARTUP_TIMEOUT_S)
        self._socket.close()
