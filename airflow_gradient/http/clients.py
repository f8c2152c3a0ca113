"""The pooled httpx clients a hook sends through: one sync client, one async client per event loop."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from functools import cache
from typing import Any, Literal

import httpx

from airflow_gradient._version import __version__
from airflow_gradient.http.settings import GradientSettings

USER_AGENT = f"airflow-gradient/{__version__} httpx/{httpx.__version__}"
DEFAULT_MAX_CONNECTIONS = 100
AsyncTransport = Literal["httpx", "aiohttp"]


class ClientPool:
    """The clients of one hook, made on first use from settings read only then (``settings`` is
    called, so a hook that never sends never reads its connection)."""

    def __init__(
        self, settings: Callable[[], GradientSettings], max_connections: int, async_transport: AsyncTransport
    ) -> None:
        self._settings = settings
        self.max_connections = max_connections
        self.async_transport = async_transport
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None
        self._aclient_loop: asyncio.AbstractEventLoop | None = None

    def _client_kwargs(self) -> dict[str, Any]:
        s = self._settings()
        return dict(
            base_url=s.base_url,
            headers={"Authorization": f"Bearer {s.api_key}", "User-Agent": USER_AGENT},
            # httpx's read timeout is the connection's; an attempt's own limit is set per request.
            timeout=httpx.Timeout(s.read_timeout, connect=s.connect_timeout),
            verify=_tls_context(),
            limits=httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections),
        )

    def sync_client(self) -> httpx.Client:
        if self._client is None or self._client.is_closed:
            self._client = httpx.Client(**self._client_kwargs())
        return self._client

    def async_client(self) -> httpx.AsyncClient:
        """The async client of the running event loop."""
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aclient.is_closed or self._aclient_loop is not loop:
            # A client's connections belong to the loop that opened them: a new loop needs a new one.
            kwargs = self._client_kwargs()
            if self.async_transport == "aiohttp":
                from httpx_aiohttp import AiohttpTransport

                kwargs["transport"] = AiohttpTransport(verify=kwargs["verify"], limits=kwargs["limits"])
            self._aclient = httpx.AsyncClient(**kwargs)
            self._aclient_loop = loop
        return self._aclient

    def close(self) -> None:
        """Close the sync client; the async one is dropped (it is closed by :meth:`aclose`)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self._aclient = None

    async def aclose(self) -> None:
        """Close the async client of the running loop."""
        if self._aclient is not None and self._aclient_loop is asyncio.get_running_loop():
            await self._aclient.aclose()
        self._aclient = None


@cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every client: building one loads the CA bundle (~40 ms), and the batch
    engine opens a client per few workers."""
    return httpx.create_ssl_context()
