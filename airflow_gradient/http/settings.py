"""A Gradient connection's settings, as a value: the one reading of an Airflow connection.

Two different limits carry "timeout" in their names, and they are not the same thing:

- the connection extra ``timeout`` is the **read timeout** (:attr:`GradientSettings.read_timeout`):
  how long one read from the socket may wait;
- a call's ``request_timeout`` (the ``timeout`` argument of the hook's per-call methods) is an
  **attempt's time limit**: sending, the status and the whole body, end to end. A call that gives
  none is limited by the read timeout (:meth:`GradientSettings.attempt_limit`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from airflow_gradient import arguments
from airflow_gradient.exceptions import GradientArgumentError, GradientConfigError
from airflow_gradient.get_provider_info import CONN_FIELDS
from airflow_gradient.observability.scope import Tracing, tracing_mode

if TYPE_CHECKING:
    from airflow.sdk import Connection

DEFAULT_BASE_URL = "https://inference.do-ai.run/v1"
DEFAULT_CONNECT_TIMEOUT_S = 10.0
# Long generations routinely pass the 60 s that SDKs default to.
DEFAULT_READ_TIMEOUT_S = 600.0
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_RETRY_WAIT_S = 60.0
# The extras a Gradient connection may hold: the connection form's fields are their one owner.
KNOWN_EXTRAS: tuple[str, ...] = tuple(CONN_FIELDS)
# An example of the shape, for error messages.
_EXTRAS_EXAMPLE = '{"model": "llama3.3-70b-instruct", "timeout": 600}'
T = TypeVar("T")


@dataclass(frozen=True)
class GradientSettings:
    """A Gradient connection's settings, as a value (:meth:`from_connection`); a hook takes them or
    reads them itself. The key never shows in ``repr``.

    ``read_timeout`` is the connection's ``timeout`` extra (one read from the socket);
    ``extra_warnings`` holds a warning for each extra the connection has that nothing reads.
    """

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    default_model: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout: float = DEFAULT_READ_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT_S
    # The ``prices`` extra as stored; validated where it is used (:mod:`airflow_gradient.pricing`).
    prices: Any = None
    rate_limit_store: str | None = None
    # The ``tracing`` extra: what the operators trace when their own ``tracing`` is not given.
    tracing: Tracing | None = None
    extra_warnings: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_connection(
        cls, conn_id: str, conn: Connection, *, read_timeout: float | None = None, max_retries: int | None = None
    ) -> GradientSettings:
        """The settings of Airflow connection ``conn`` (named ``conn_id``), its key registered with
        the secrets masker; ``read_timeout`` and ``max_retries``, when given, win over its extras.

        Raises :class:`GradientConfigError` naming the connection when it has no key, a bad URL or
        an invalid extra.
        """
        key = (conn.password or "").strip()
        if not key:
            raise GradientConfigError(
                f"Airflow connection {conn_id!r} has no model access key: put it in the connection's password field"
            )
        _mask(key)
        extra = _extras_of(conn_id, conn)
        try:
            settings = cls(
                conn_id=conn_id,
                base_url=_base_url_of(conn.host, conn.port, conn.schema),
                api_key=key,
                default_model=arguments.optional(arguments.text, "model", extra.get("model") or None),
                connect_timeout=_extra_number(extra, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_S,
                                              arguments.positive_number),
                read_timeout=_extra_number(extra, "timeout", DEFAULT_READ_TIMEOUT_S, arguments.positive_number),
                max_retries=_extra_number(extra, "max_retries", DEFAULT_MAX_RETRIES, arguments.non_negative_int),
                max_retry_wait=_extra_number(extra, "max_retry_wait", DEFAULT_MAX_RETRY_WAIT_S,
                                             arguments.non_negative_number),
                prices=extra.get("prices"),
                rate_limit_store=str(extra.get("rate_limit_store") or "").strip() or None,
                tracing=tracing_mode("tracing", extra.get("tracing") or None),
                extra_warnings=unknown_extra_warnings(conn_id, extra),
            )
        except GradientArgumentError as exc:
            # The value is quoted to help; a key pasted into the wrong field is not.
            reason = exc.reason.replace(key, "***")
            raise GradientConfigError(
                f"Airflow connection {conn_id!r} has an invalid extra: {exc.argument}: {reason}; allowed: {exc.allowed}"
            ) from None
        except ValueError as exc:  # the host is not a URL
            raise GradientConfigError(f"Airflow connection {conn_id!r}: {exc}") from None
        return settings.overridden(read_timeout=read_timeout, max_retries=max_retries)

    def overridden(self, *, read_timeout: float | None = None, max_retries: int | None = None) -> GradientSettings:
        """These settings with a task's own ``read_timeout`` / ``max_retries`` where given: a task's
        arguments win over the connection's extras."""
        if read_timeout is None and max_retries is None:
            return self
        return dataclasses.replace(
            self,
            read_timeout=self.read_timeout if read_timeout is None else read_timeout,
            max_retries=self.max_retries if max_retries is None else max_retries,
        )

    def attempt_limit(self, request_timeout: float | None) -> float:
        """An attempt's time limit: the call's ``request_timeout``, else the read timeout."""
        return self.read_timeout if request_timeout is None else request_timeout


def settings_of_connection(
    conn_id: str,
    get_connection: Callable[[str], Connection],
    *,
    read_timeout: float | None = None,
    max_retries: int | None = None,
) -> GradientSettings:
    """:meth:`GradientSettings.from_connection` of the connection ``get_connection`` finds for
    ``conn_id``. A connection that does not exist is a :class:`GradientConfigError` naming it:
    Airflow's own ``AirflowNotFoundException`` would be retried, and would find it missing again."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = get_connection(conn_id)
    except AirflowNotFoundException:
        raise GradientConfigError(
            f"Airflow connection {conn_id!r} does not exist: create it (type 'gradient', the model access key "
            "in its password) or name another with gradient_conn_id"
        ) from None
    return GradientSettings.from_connection(conn_id, conn, read_timeout=read_timeout, max_retries=max_retries)


def unknown_extra_warnings(conn_id: str, extra: dict[str, Any]) -> tuple[str, ...]:
    """A warning for each extra of connection ``conn_id`` that is not a known one (a typo such as
    ``timout`` is otherwise ignored without a word), naming the closest known extra."""
    warnings = []
    for name in extra:
        if name in KNOWN_EXTRAS:
            continue
        closest = difflib.get_close_matches(str(name), KNOWN_EXTRAS, n=1)
        hint = f"did you mean {closest[0]!r}?" if closest else f"known extras: {', '.join(KNOWN_EXTRAS)}"
        warnings.append(f"Airflow connection {conn_id!r} has an unknown extra {name!r}, which is ignored: {hint}")
    return tuple(warnings)


def _extras_of(conn_id: str, conn: Any) -> dict[str, Any]:
    """The connection's extras as a dict; extras that are not a JSON object are refused, where
    Airflow would log the error and carry on with none."""
    raw = conn.extra
    if raw in (None, ""):
        return {}
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        # Not the text itself: a half-typed extra may hold a secret.
        raise GradientConfigError(
            f"Airflow connection {conn_id!r} has extras that are not valid JSON ({exc.msg} at line {exc.lineno} "
            f"column {exc.colno}); allowed: a JSON object such as {_EXTRAS_EXAMPLE}"
        ) from None
    if not isinstance(parsed, dict):
        raise GradientConfigError(
            f"Airflow connection {conn_id!r} has extras that are a JSON {type(parsed).__name__}; allowed: "
            f"a JSON object such as {_EXTRAS_EXAMPLE}"
        )
    # extra_dejson registers the extras' secret-looking values with the masker.
    return conn.extra_dejson if isinstance(raw, str) else parsed


def _extra_number(extra: dict[str, Any], name: str, default: float, check: Callable[[str, Any], T]) -> T:
    """An extra holding a number (the connection form may store it as text); absent or null: the default."""
    value = extra.get(name)
    return check(name, default) if value is None or value == "" else arguments.number_text(name, value, check)


def _base_url_of(host: str | None, port: int | None, schema: str | None) -> str:
    if not host:
        return DEFAULT_BASE_URL
    url = host if "://" in host else f"https://{host}"
    parsed = httpx.URL(url)
    if port and parsed.port is None:
        parsed = parsed.copy_with(port=port)
    path = parsed.path.rstrip("/")
    if schema and not path:
        path = "/" + schema.strip("/")
    # The documented base is https://inference.do-ai.run; the API lives under /v1.
    return str(parsed.copy_with(path=path or "/v1")).rstrip("/")


def _mask(secret: str) -> None:
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # pragma: no cover - older task SDKs
        return
    mask_secret(secret)
