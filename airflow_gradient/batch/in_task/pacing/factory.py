"""Which limiter a batch uses (:func:`limiter_for`), and the Redis connection a shared one reads."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from airflow_gradient.batch.in_task.pacing.memory import AdaptiveRateLimiter
from airflow_gradient.batch.in_task.pacing.pace import RateLimiter
from airflow_gradient.batch.in_task.pacing.shared import SharedRateLimiter
from airflow_gradient.batch.in_task.pacing.store import url_and_key_digest
from airflow_gradient.exceptions import GradientRateLimitStoreError

if TYPE_CHECKING:
    import redis.asyncio

    from airflow_gradient.hooks.gradient import GradientSettings

# Short: a Redis that stops answering must be noticed within a request or two, not after minutes.
SOCKET_TIMEOUT_S = 2.0


def limiter_for(
    rate_limiter: RateLimiter | None,
    settings: GradientSettings,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
) -> RateLimiter:
    """The limiter of a batch: ``rate_limiter`` when given, else one shared through the Gradient
    connection's ``rate_limit_store`` (a Redis connection id) when it names one, else the
    in-memory :class:`AdaptiveRateLimiter`.

    Raises :class:`~airflow_gradient.exceptions.GradientRateLimitStoreError`, naming the Redis
    connection, when that store cannot be read or reached now.
    """
    if rate_limiter is not None:
        return rate_limiter
    store = settings.rate_limit_store
    if not store:
        return AdaptiveRateLimiter(requests_per_minute, tokens_per_minute)
    kwargs = redis_client_kwargs(store)
    check_reachable(store, kwargs)
    return SharedRateLimiter(lambda: async_client(kwargs), url_and_key_digest(settings.base_url, settings.api_key),
                             requests_per_minute, tokens_per_minute, store_name=store)


def redis_client_kwargs(redis_conn_id: str) -> dict[str, Any]:
    """``redis.asyncio.Redis`` arguments for an Airflow connection of type ``redis``, read as the
    Redis provider reads it (host, port, login, password, extras ``db`` and ``ssl*``).

    Raises :class:`GradientRateLimitStoreError` naming the connection when it cannot be used.
    """
    try:
        from airflow.providers.redis.hooks.redis import RedisHook
        import redis.asyncio
        from redis.connection import SSLConnection
    except ImportError as exc:
        raise GradientRateLimitStoreError(
            f"rate_limit_store={redis_conn_id!r} needs the Redis provider: pip install "
            f"'airflow-gradient[cluster]' ({exc})"
        ) from None
    hook = RedisHook(redis_conn_id)
    try:
        conn = hook.get_connection(redis_conn_id)
        sync = hook.get_conn()
    except Exception as exc:  # a missing connection, a bad extra: say which connection
        raise GradientRateLimitStoreError(
            f"rate_limit_store={redis_conn_id!r}: cannot read that Redis connection: {type(exc).__name__}: {exc}"
        ) from None
    if conn.conn_type != "redis":
        # Read as Redis, another service's host and port fail late and say nothing useful.
        raise GradientRateLimitStoreError(
            f"rate_limit_store={redis_conn_id!r}: that connection is of type {conn.conn_type!r}; "
            "allowed: a connection of type 'redis'"
        )
    schema = (conn.schema or "").strip("/")
    extra_db = conn.extra_dejson.get("db")
    path_db: int | None = None
    if schema:
        # The Redis provider reads the database only from the extra 'db', but users write the URI
        # form redis://host:6379/3: honour its path rather than silently share database 0.
        if not schema.isdigit() or (extra_db not in (None, "") and str(extra_db) != schema):
            raise GradientRateLimitStoreError(
                f"rate_limit_store={redis_conn_id!r}: the connection's path/schema {schema!r} is not the "
                f"Redis database its extra 'db' names ({extra_db!r}); allowed: a database number in the path "
                f"(redis://host:6379/3) or in the extra 'db', not two different ones"
            )
        path_db = int(schema)
    if not hasattr(sync, "connection_pool"):
        raise GradientRateLimitStoreError(
            f"rate_limit_store={redis_conn_id!r}: Redis in cluster mode is not supported; use a single "
            "Redis for the rate-limit store"
        )
    pool = sync.connection_pool
    accepted = set(inspect.signature(redis.asyncio.Redis.__init__).parameters) - {"self", "connection_pool", "retry"}
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in accepted and not k.startswith("socket_")}
    if issubclass(pool.connection_class, SSLConnection):
        kwargs["ssl"] = True
    if path_db is not None:
        kwargs["db"] = path_db
    sync.close()
    kwargs.update(socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S,
                  socket_keepalive=True, decode_responses=False)
    return kwargs


def async_client(kwargs: dict[str, Any]) -> redis.asyncio.Redis:
    """A ``redis.asyncio.Redis`` for :func:`redis_client_kwargs`, made in the loop that uses it.

    One immediate retry (a pooled connection Redis closed), no backoff: a lost Redis must reach the
    limiter's fallback within a request, not after redis-py's seconds of backoff.
    """
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return redis.asyncio.Redis(**kwargs, retry=Retry(NoBackoff(), 1))


def check_reachable(redis_conn_id: str, kwargs: dict[str, Any]) -> None:
    """``PING`` the store once, now: raises :class:`GradientRateLimitStoreError` naming the
    connection when it does not answer (a batch must not start without the pace it shares)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(**kwargs, retry=Retry(NoBackoff(), 0))
    host = f"{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db') or 0}"
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise GradientRateLimitStoreError(
            f"rate_limit_store={redis_conn_id!r}: Redis at {host} refused that connection's login or password "
            f"({type(exc).__name__}: {exc}); fix them in that connection"
        ) from None
    except redis.RedisError as exc:
        raise GradientRateLimitStoreError(
            f"rate_limit_store={redis_conn_id!r}: Redis at {host} is unreachable ({type(exc).__name__}: {exc}); "
            "start it or fix that connection, or remove rate_limit_store from the Gradient connection to "
            "pace this task alone"
        ) from None
    finally:
        client.close()
