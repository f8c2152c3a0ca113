"""The real services some tests need (Redis, PostgreSQL), each test with its own database.

On a laptop without them such tests skip, saying what to start. ``.ci/run`` sets
``GRADIENT_REQUIRE_SERVICES=1``, which turns that skip into a failure, so CI always runs them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
REQUIRE_ENV = "GRADIENT_REQUIRE_SERVICES"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int, how_to_start: str) -> None:
    """Skip the calling test when ``host:port`` does not answer, or fail under CI."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}; start it with: {how_to_start}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{message} ({REQUIRE_ENV}=1 makes this a failure)")
    pytest.skip(message)


def require_redis() -> None:
    require_service("Redis", REDIS_HOST, REDIS_PORT, "redis-server --port 6379 --save ''")


def require_postgres() -> None:
    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT,
                    "a PostgreSQL server on 127.0.0.1:5432 with trust auth for user postgres")


def redis_url(db: int) -> str:
    """The URL of Redis database ``db``; each test module uses its own number (1-15, not 0)."""
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


@contextmanager
def redis_database(db: int) -> Iterator[str]:
    """Redis database ``db``, flushed before and after: yields its URL."""
    require_redis()
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    try:
        yield redis_url(db)
    finally:
        client.flushdb()
        client.close()


@contextmanager
def postgres_database(prefix: str = "gradient_test") -> Iterator[str]:
    """A PostgreSQL database made for the caller and dropped after: yields its SQLAlchemy URL."""
    require_postgres()
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname="test")
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql+psycopg2://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def postgres_conn_uri(url: str) -> str:
    """The Airflow connection URI (``postgres://...``) of a database :func:`postgres_database` made."""
    return "postgres://" + url.split("://", 1)[1]
