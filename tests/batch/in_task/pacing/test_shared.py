"""Shared pacing through a real Redis: one budget for several limiters, the rules applied in Redis,
the key and its expiry, Redis down at the start and lost mid-batch, and a whole batch task.

Redis databases 1-5 are this module's (see tests/support/services.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pendulum
import pytest

from airflow.sdk import DAG
from airflow_gradient import GradientBatchOperator, GradientHook, GradientRateLimitStoreError, read_results
from airflow_gradient.batch.in_task.engine import EngineSettings
from airflow_gradient.batch.in_task.pacing import AdaptiveRateLimiter, SharedRateLimiter, limiter_for
from airflow_gradient.batch.in_task.pacing.factory import async_client, redis_client_kwargs
from airflow_gradient.batch.in_task.pacing.rules import ARRIVAL_MARGIN_S, PaceState
from airflow_gradient.batch.in_task.pacing.store import (
    KEY_PREFIX,
    SHARED_ARRIVAL_MARGIN_S,
    STATE_TTL_S,
    Event,
    InFlight,
    PaceStore,
    applied,
    url_and_key_digest,
)
from airflow_gradient.batch.in_task.runner import run_batch
from airflow_gradient.batch.inputs import BatchInputs
from airflow_gradient.batch.in_task.runner import pool_hooks
from tests.conftest import TEST_KEY, conn_env, run_dag, task_states, xcom_value
from tests.support.services import REDIS_HOST, REDIS_PORT, redis_database
from tests.support.emulator_log import served_429s

QUOTA = {"x-ratelimit-limit-requests": "9000", "x-ratelimit-remaining-requests": "8000",
         "x-ratelimit-limit-tokens": "90000", "x-ratelimit-remaining-tokens": "80000"}


def redis_conn_env(conn_id: str, db: int, port: int = REDIS_PORT) -> dict[str, str]:
    """An Airflow connection of type redis, as the Redis provider reads it (db in the extra)."""
    value = {"conn_type": "redis", "host": REDIS_HOST, "port": port, "extra": {"db": db}}
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(value)}


def shared_limiter(db: int, account: str = "acct", rpm: float | None = None, tpm: float | None = None,
                   port: int = REDIS_PORT) -> SharedRateLimiter:
    kwargs = {"host": REDIS_HOST, "port": port, "db": db}
    return SharedRateLimiter(lambda: async_client(kwargs), account, rpm, tpm, store_name=f"redis db {db}")


def redis_client(db: int):
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)


# -- one budget ------------------------------------------------------------------------------------


def test_four_limiters_share_one_budget() -> None:
    """Four limiters told 1200/min send 40 requests at 1200/min between them, not 4 x 1200."""
    with redis_database(1):
        limiters = [shared_limiter(1, rpm=1200) for _ in range(4)]
        stamps: list[float] = []

        async def send(limiter: SharedRateLimiter) -> None:
            for _ in range(10):
                await limiter.acquire(5)
                stamps.append(time.monotonic())
                limiter.on_reply(200, QUOTA, 5)

        async def main() -> None:
            await asyncio.gather(*(send(limiter) for limiter in limiters))
            for limiter in limiters:
                await limiter.aclose()

        asyncio.run(main())
        stamps.sort()
        pace_per_s = 1200 * 0.98 / 60
        # Sleeping longer than asked only spreads the sends: these bounds hold on a slow machine too.
        assert stamps[-1] - stamps[0] >= (len(stamps) - 1) / pace_per_s * 0.97
        for start in stamps:
            assert sum(1 for t in stamps if start <= t < start + 1.0) <= pace_per_s + 2
        assert {limiter.pacing().source for limiter in limiters} == {"configured/headers, shared via redis db 1"}


def test_reservations_from_several_clients_never_overlap() -> None:
    """The Lua reservation, hammered by four clients at once: every slot distinct, one pace apart."""
    import redis.asyncio

    with redis_database(2):
        async def main() -> list[float]:
            stores = [PaceStore(redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=2), "slots")
                      for _ in range(4)]
            await stores[0].update(lambda state, now, in_flight: ({}, _pace(600.0)))
            results = await asyncio.gather(*(s.reserve(1, 0, horizon_s=30.0) for s in stores for _ in range(25)))
            assert all(r.reserved for r in results)
            # Beyond the default horizon nothing is reserved: the answer says when the next slot is.
            beyond = await stores[0].reserve(1, 0)
            assert not beyond.reserved
            assert beyond.starts_at == pytest.approx(max(r.requests_at for r in results) + 0.1, abs=1e-5)
            for store in stores:
                await store.client.aclose()
            return sorted(r.requests_at for r in results)

        slots = asyncio.run(main())
        assert len(slots) == 100
        gaps = [b - a for a, b in zip(slots, slots[1:])]
        assert min(gaps) == pytest.approx(0.1, abs=1e-5)


def _pace(rpm: float):
    from airflow_gradient.batch.in_task.pacing import Pace

    return Pace(requests_per_minute=rpm, tokens_per_minute=None, token_burst=0.0, pause_until=0.0,
                source="configured")


def test_four_limiters_hold_a_limit_learnt_from_the_headers_across_the_first_window(emulator) -> None:
    """No limit told: the account's limit comes from the quota headers only. The requests sent before
    it was known, plus the pace after, must not overflow the server's first sliding window: the
    budget (remaining minus in flight) holds across the four tasks, as it does in memory."""
    import httpx

    # 600/min over a 10 s window (100 per window, 10 per second): the pace alone would fill it with
    # the first burst on top. 160 items cross the first window.
    emulator.configure(rpm_limit=600, limit_window=10.0, latency=0.05)
    items = list(range(160))
    done: list[int] = []

    async def shard(limiter: SharedRateLimiter, mine: list[int]) -> None:
        async with httpx.AsyncClient(base_url=emulator.base_url, timeout=30,
                                     headers={"Authorization": f"Bearer {TEST_KEY}"}) as http:
            async def worker() -> None:
                while mine:
                    item = mine.pop()
                    status = 429
                    while status == 429:  # a 429 fails the test below; the item is sent again
                        await limiter.acquire(10)
                        reply = await http.post("/responses", json={"model": "test-model", "input": f"item {item}",
                                                                    "max_output_tokens": 10})
                        status = reply.status_code
                        limiter.on_reply(status, reply.headers, 10)
                    assert status == 200
                    done.append(item)

            await asyncio.gather(*(worker() for _ in range(8)))
            await limiter.aclose()

    with redis_database(5):
        limiters = [shared_limiter(5) for _ in range(4)]

        async def main() -> None:
            await asyncio.gather(*(shard(limiter, items[i::4]) for i, limiter in enumerate(limiters)))

        asyncio.run(main())
    replies = [r for r in emulator.log if r.path.endswith("/responses")]
    refused = [round(r.t - replies[0].t, 2) for r in replies if r.status == 429]
    assert served_429s(emulator) == 0, f"429s at {refused} s"
    assert sorted(done) == items
    assert {limiter.pacing().source for limiter in limiters} == {"headers, shared via redis db 5"}


# -- the rules, through Redis ----------------------------------------------------------------------


REPLIES = [
    (200, {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "590",
           "x-ratelimit-limit-tokens": "50000", "x-ratelimit-remaining-tokens": "40000"}),
    (200, {"x-ratelimit-limit-requests": "300", "x-ratelimit-remaining-requests": "200"}),
    (429, {"retry-after": "2", "x-ratelimit-limit-requests": "300", "x-ratelimit-remaining-requests": "0"}),
]


@pytest.mark.parametrize("configured", [(None, None), (450.0, None), (None, 20000.0), (200.0, 100000.0)])
def test_rules_applied_through_redis_agree_with_the_in_memory_limiter(configured) -> None:
    rpm, tpm = configured
    with redis_database(3):
        shared, alone = shared_limiter(3, rpm=rpm, tpm=tpm), AdaptiveRateLimiter(rpm, tpm)

        async def main() -> None:
            await shared.start()
            for status, headers in REPLIES:
                for limiter in (shared, alone):
                    await limiter.acquire(10)
                    limiter.on_reply(status, headers, 10)
            await shared.aclose()

        asyncio.run(main())
        # A fresh limiter of the same account reads the pace the replies left in Redis.
        reader = shared_limiter(3, rpm=rpm, tpm=tpm)
        asyncio.run(reader.start())
        for limiter in (shared, reader):
            assert limiter.pacing().requests_per_minute == pytest.approx(alone.pacing().requests_per_minute)
            assert limiter.pacing().tokens_per_minute == pytest.approx(alone.pacing().tokens_per_minute)
        assert reader.pacing().paused_s > 0 and alone.pacing().paused_s > 0  # the 429's pause is shared


def test_a_probed_limit_found_through_redis_is_the_one_found_in_memory() -> None:
    """A run of header-less 429s, applied by the store's update and by PaceState directly, at the
    same times: the same limit found, the same ceiling after."""
    import redis.asyncio

    from airflow_gradient.batch.in_task.pacing.rules import PaceState
    from airflow_gradient.batch.in_task.pacing.store import Event, applied, joined

    start = time.time() - 100.0  # on Redis's clock, in its past: every event keeps its own time
    events = []
    for i in range(20):
        events += [Event(True, None, {}, 10, start + i * 0.2), Event(False, 200, {}, 10, start + i * 0.2 + 0.05)]
    for i in range(5):
        events += [Event(True, None, {}, 10, start + 4.0 + i * 0.01),
                   Event(False, 429, {"retry-after": "1"}, 10, start + 4.05 + i * 0.01)]
    alone = PaceState(configured_tpm=1e6)
    for e in events:
        if e.sent:
            alone.on_send(e.tokens, e.at)
        else:
            alone.on_reply(e.status, e.headers, e.tokens, now=e.at, now_wall=e.at, rand=0.5)
    assert alone.probe_limit is not None  # the run was seen and cut the pace

    with redis_database(3):
        async def main() -> dict:
            store = PaceStore(redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=3), "probe")
            await store.update(lambda state, now, in_flight: joined(state, None, 1e6, now, in_flight))
            await store.update(lambda state, now, in_flight: applied(state, events, 0.0, now, in_flight, rand=lambda: 0.5))
            stored = json.loads(await store.client.hget(store.key, "state"))
            await store.client.aclose()
            return stored

        shared = PaceState.from_dict(asyncio.run(main()))
    later = start + 30.0
    assert shared.probe_limit == pytest.approx(alone.probe_limit)
    assert shared.ceiling(later) == alone.ceiling(later)
    assert (shared.rate_limited, shared.cuts, shared.in_flight_requests) == (alone.rate_limited, alone.cuts, 0)


def test_a_dead_task_stops_holding_the_budget(monkeypatch) -> None:
    """Requests in flight count per live task: a task that reported them and died (SIGKILL) stops
    counting after IN_FLIGHT_TTL_S, a task that ends counts none."""
    import redis.asyncio

    from airflow_gradient.batch.in_task.pacing import store as pace_store
    from airflow_gradient.batch.in_task.pacing.store import InFlight, joined

    seen: list[InFlight] = []

    def record(state, now, in_flight):
        seen.append(in_flight)
        return joined(state, 600.0, None, now, in_flight)

    with redis_database(2):
        async def main() -> None:
            store = PaceStore(redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=2), "dead")
            await store.update(record, "killed", InFlight(16, 1600.0))
            await store.update(record, "alive", InFlight(3, 300.0))
            await store.update(record, "alive", InFlight(0, 0.0))  # the live task ended
            monkeypatch.setattr(pace_store, "IN_FLIGHT_TTL_S", 0.0)
            await store.update(record)
            await store.client.aclose()

        asyncio.run(main())
    assert seen == [InFlight(16, 1600.0), InFlight(19, 1900.0), InFlight(16, 1600.0), InFlight(0, 0.0)]


def test_state_expires_and_its_key_never_holds_the_api_key() -> None:
    base_url, key = "https://inference.do-ai.run/v1", "sk-do-secret-key-9f2b"
    digest = url_and_key_digest(base_url, key)
    with redis_database(4):
        limiter = shared_limiter(4, account=digest, rpm=600)

        async def main() -> None:
            await limiter.acquire(10)
            limiter.on_reply(200, QUOTA, 10)
            await limiter.aclose()

        asyncio.run(main())
        client = redis_client(4)
        keys = sorted(k.decode() for k in client.keys("*"))
        assert keys == [f"{KEY_PREFIX}{{{digest}}}", f"{KEY_PREFIX}{{{digest}}}:gcra"]
        for name in keys:
            assert 0 < client.pttl(name) <= STATE_TTL_S * 1000
            dump = json.dumps({k.decode(): v.decode() for k, v in client.hgetall(name).items()})
            assert key not in name and key not in dump and "secret" not in dump
        assert digest == url_and_key_digest(base_url, key) != url_and_key_digest(base_url + "/", key)
        client.close()


# -- choosing the limiter --------------------------------------------------------------------------


def test_limiter_for_prefers_the_argument_then_the_store(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_GRADIENT_DEFAULT", conn_env("http://127.0.0.1:1/v1")["AIRFLOW_CONN_GRADIENT_DEFAULT"])
    settings = GradientHook().settings
    given = AdaptiveRateLimiter(100)
    assert limiter_for(given, settings) is given
    assert isinstance(limiter_for(None, settings, 100), AdaptiveRateLimiter)
    with redis_database(1):
        for name, value in redis_conn_env("redis_pace", 1).items():
            monkeypatch.setenv(name, value)
        shared = limiter_for(None, dataclasses.replace(settings, rate_limit_store="redis_pace"))
        assert isinstance(shared, SharedRateLimiter)
        assert limiter_for(given, settings) is given


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_redis_down_at_start_names_the_connection(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_GRADIENT_DEFAULT", conn_env("http://127.0.0.1:1/v1", rate_limit_store="pace_store")[
        "AIRFLOW_CONN_GRADIENT_DEFAULT"])
    for name, value in redis_conn_env("pace_store", 1, port=_closed_port()).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(GradientRateLimitStoreError, match=r"rate_limit_store='pace_store'.*unreachable"):
        limiter_for(None, GradientHook().settings)
    # The URI form's path is the database, as users write it; two different ones are refused.
    monkeypatch.setenv("AIRFLOW_CONN_PACE_STORE", "redis://127.0.0.1:6379/3")
    assert redis_client_kwargs("pace_store")["db"] == 3
    for uri in ("redis://127.0.0.1:6379/3?db=4", "redis://127.0.0.1:6379/cache"):
        monkeypatch.setenv("AIRFLOW_CONN_PACE_STORE", uri)
        with pytest.raises(GradientRateLimitStoreError, match="extra 'db'"):
            limiter_for(None, GradientHook().settings)


def test_redis_down_fails_the_task_at_once(emulator, monkeypatch) -> None:
    for name, value in {**conn_env(emulator.base_url, rate_limit_store="pace_store"),
                        **redis_conn_env("pace_store", 1, port=_closed_port())}.items():
        monkeypatch.setenv(name, value)
    with DAG("shared_pace_down", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
        GradientBatchOperator(task_id="b", inputs=["one", "two"], retries=3)
    run = run_dag(dag)
    assert task_states(run)["b"] == "failed"
    assert emulator.request_count() == 0


# -- Redis lost mid-batch ----------------------------------------------------------------------------


class TcpProxy:
    """127.0.0.1:port -> Redis, which the test can cut (every connection closed) and restore."""

    def __init__(self, port: int = 0) -> None:
        self.listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((REDIS_HOST, REDIS_PORT))
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the other thread
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


@contextmanager
def proxied_redis(db: int) -> Iterator[TcpProxy]:
    with redis_database(db):
        proxy = TcpProxy()
        try:
            yield proxy
        finally:
            proxy.cut()


def test_redis_lost_mid_batch_loses_no_row(emulator, monkeypatch, tmp_path, caplog) -> None:
    from airflow.sdk import ObjectStoragePath

    emulator.configure(latency=0.02, rpm_limit=3000)
    n = 120
    with proxied_redis(2) as proxy:
        for name, value in {**conn_env(emulator.base_url, rate_limit_store="pace_store"),
                            **redis_conn_env("pace_store", 2, port=proxy.port)}.items():
            monkeypatch.setenv(name, value)
        hooks = pool_hooks("gradient_default", 8)
        limiter = limiter_for(None, hooks[0].settings, requests_per_minute=3000)
        assert isinstance(limiter, SharedRateLimiter)

        def cut_after_a_third() -> None:
            emulator.wait_for_requests(n // 3, timeout=60)
            proxy.cut()

        cutter = threading.Thread(target=cut_after_a_third)
        cutter.start()
        with caplog.at_level(logging.WARNING, logger="airflow_gradient.batch.in_task.pacing.shared"):
            manifest = run_batch(
                hooks=hooks,
                inputs=BatchInputs(inputs=[f"item {i}" for i in range(n)], default_model="test-model"),
                limiter=limiter,
                settings=EngineSettings(max_concurrency=8, progress_interval=60),
                output_path=ObjectStoragePath(str(tmp_path / "out")),
            )
        cutter.join()
    assert manifest["counts"] == {"succeeded": n, "failed": 0, "skipped": 0}
    rows = read_results(manifest, by="index")
    assert sorted(r["index"] for r in rows) == list(range(n))
    assert manifest["requests"]["rate_limited"] == 0
    lost = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(lost) == 1 and "no item is lost" in lost[0].getMessage()
    assert limiter.losses == 1 and "alone" in manifest["pacing"]["source"]


def test_shares_again_once_redis_answers(monkeypatch, caplog) -> None:
    with redis_database(3):
        proxy = TcpProxy()
        limiter = shared_limiter(3, rpm=6000, port=proxy.port)

        async def main() -> None:
            await limiter.acquire(1)
            proxy.cut()
            for _ in range(50):  # the slots leased before the cut are used first
                await limiter.acquire(1)
                if "alone" in limiter.pacing().source:
                    break
            assert limiter.pacing().source.endswith("alone: redis db 3 unreachable")
            restored = TcpProxy(proxy.port)
            try:
                while "alone" in limiter.pacing().source:  # the reconnect loop's own backoff sets the pace
                    await limiter.acquire(1)
                    limiter.on_reply(200, QUOTA, 1)
                await limiter.acquire(1)
                assert limiter.pacing().source.endswith(", shared via redis db 3")
                await limiter.aclose()
            finally:
                restored.cut()

        with caplog.at_level(logging.WARNING, logger="airflow_gradient.batch.in_task.pacing.shared"):
            asyncio.run(main())
        assert any("answers again" in r.getMessage() for r in caplog.records)


# -- a whole task --------------------------------------------------------------------------------------


def test_batch_operator_shares_its_pace_through_the_connection_extra(emulator, monkeypatch, tmp_path) -> None:
    emulator.configure(rpm_limit=600)
    with redis_database(4):
        for name, value in {**conn_env(emulator.base_url, rate_limit_store="pace_store", max_retry_wait=5),
                            **redis_conn_env("pace_store", 4)}.items():
            monkeypatch.setenv(name, value)
        with DAG("shared_pace_batch", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
            GradientBatchOperator(task_id="b", inputs=[f"doc {i}" for i in range(12)],
                                  output_path=str(tmp_path / "out"), max_concurrency=4)
        run = run_dag(dag)
        assert task_states(run)["b"] == "success"
        manifest = xcom_value(run, "b")
        assert manifest["counts"]["succeeded"] == 12 and manifest["requests"]["rate_limited"] == 0
        assert manifest["pacing"]["source"] == "headers, shared via pace_store"
        assert manifest["pacing"]["requests_per_minute"] == 600 * 0.98
        client = redis_client(4)
        digest = url_and_key_digest(emulator.base_url, TEST_KEY)
        stored_pace = float(client.hget(f"{KEY_PREFIX}{{{digest}}}", "rpm"))
        client.close()
        assert stored_pace == pytest.approx(600 * 0.98)  # learnt from the headers, in Redis


def test_the_connection_form_offers_rate_limit_store(monkeypatch) -> None:
    """Airflow's form (from the provider info) and the hook describe the same field."""
    from airflow.providers_manager import ProvidersManager

    widgets = ProvidersManager().connection_form_widgets
    assert "extra__gradient__rate_limit_store" in widgets
    behaviour = GradientHook.get_ui_field_behaviour()
    assert behaviour["placeholders"]["rate_limit_store"] == "redis_default"
    assert ProvidersManager().field_behaviours["gradient"]["placeholders"]["extra__gradient__rate_limit_store"] == \
        "redis_default"
    monkeypatch.setenv("AIRFLOW_CONN_GRADIENT_DEFAULT", conn_env("http://127.0.0.1:1/v1", rate_limit_store=" pace ")[
        "AIRFLOW_CONN_GRADIENT_DEFAULT"])
    assert GradientHook().settings.rate_limit_store == "pace"


# -- a Redis of the test's own, to restart, kill or lock ---------------------------------------------


class OwnRedis:
    """A redis-server child process on a free port (never the shared one), to restart or stop."""

    def __init__(self, *args: str) -> None:
        self.port = _closed_port()
        self.args = args
        self.password = args[args.index("--requirepass") + 1] if "--requirepass" in args else None
        self.server: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        self.server = subprocess.Popen(["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
                                        *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host=REDIS_HOST, port=self.port, password=self.password)
        for _ in range(400):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.025)  # the child is starting: nothing to await but its port
        client.close()

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(10)
            self.server = None

    def restart(self) -> None:
        """Every key gone, as after a restart without persistence."""
        self.stop()
        self.start()


@contextmanager
def own_redis(*args: str) -> Iterator[OwnRedis]:
    server = OwnRedis(*args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_wrong_redis_password_or_a_connection_of_another_type_fails_at_start(emulator, monkeypatch) -> None:
    """Issue 18.8: the task fails before sending anything, naming the connection and what is wrong."""
    with own_redis("--requirepass", "right-password") as server:
        for name, value in conn_env(emulator.base_url, rate_limit_store="pace_store").items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AIRFLOW_CONN_PACE_STORE", json.dumps(
            {"conn_type": "redis", "host": REDIS_HOST, "port": server.port, "password": "wrong-password"}))
        with pytest.raises(GradientRateLimitStoreError, match=r"rate_limit_store='pace_store'.*password") as info:
            limiter_for(None, GradientHook().settings)
        assert "wrong-password" not in str(info.value)
        with DAG("shared_pace_bad_password", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
            GradientBatchOperator(task_id="b", inputs=["one", "two"], retries=3)
        assert task_states(run_dag(dag))["b"] == "failed"
        assert emulator.request_count() == 0
    monkeypatch.setenv("AIRFLOW_CONN_PACE_STORE", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres"}))
    with pytest.raises(GradientRateLimitStoreError, match=r"rate_limit_store='pace_store'.*'postgres'.*redis"):
        limiter_for(None, GradientHook().settings)


def test_a_redis_restarted_mid_batch_loses_no_row_and_draws_few_429s(emulator, monkeypatch, tmp_path) -> None:
    """Issue 18.6: Redis restarts (every key gone) while a shared batch runs, the limit known only
    from the headers: the task goes on, learns the limit again, at most 5 x 429, no row lost."""
    emulator.configure(rpm_limit=600, limit_window=10.0, latency=0.02)
    with own_redis() as server:
        for name, value in {**conn_env(emulator.base_url, rate_limit_store="pace_store"),
                            **redis_conn_env("pace_store", 0, port=server.port)}.items():
            monkeypatch.setenv(name, value)

        restarted_at: list[int] = []

        def restart() -> None:
            if emulator.wait_for_requests(80, timeout=120):
                server.restart()
                restarted_at.append(emulator.request_count())

        restarter = threading.Thread(target=restart, daemon=True)
        restarter.start()
        with DAG("shared_pace_restart", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
            GradientBatchOperator(task_id="b", inputs=[f"restart {i}" for i in range(250)], max_concurrency=8,
                                  max_output_tokens=10, output_path=str(tmp_path / "out"))
        run = run_dag(dag)
        restarter.join()
    manifest = xcom_value(run, "b")
    assert task_states(run)["b"] == "success" and manifest["counts"]["succeeded"] == 250
    assert restarted_at and restarted_at[0] < 200  # mid-batch
    print(f"restart after {restarted_at[0]} requests: {served_429s(emulator)} x 429")  # the figure in bench/README.md
    assert served_429s(emulator) <= 5
    assert set(emulator.generated_counts().values()) == {1}


def test_a_reservation_does_not_void_an_update_in_progress() -> None:
    """Issue 18.7: an update (WATCH, read, TIME, EXEC: four round trips, 400 ms on a Redis 100 ms
    away) was voided by every reservation in between (its PEXPIRE of the watched state key), 20
    times over: the limiter gave up on a slow Redis and paced alone. The throughput on a slow Redis
    is the bench's figure (``python -m bench --only shared_slow``)."""
    import redis.asyncio
    from redis.exceptions import WatchError

    with redis_database(4):
        async def main() -> None:
            store = PaceStore(redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=4), "watch")
            other = PaceStore(redis.asyncio.Redis(host=REDIS_HOST, port=REDIS_PORT, db=4), "watch")
            await store.update(lambda state, now, in_flight: ({}, _pace(600.0)))
            async with store.client.pipeline(transaction=True) as pipe:
                await pipe.watch(store.key)
                assert (await other.reserve(1, 0)).reserved  # another task's reservation, mid-update
                pipe.multi()
                pipe.hset(store.key, "source", "configured")
                try:
                    await pipe.execute()
                except WatchError:
                    pytest.fail("a reservation voided the update's WATCH")
            for s in (store, other):
                await s.client.aclose()

        asyncio.run(main())


def test_redis_refusing_for_10_s_paces_alone_at_a_safe_share_then_shares_again() -> None:
    """Issue 18.7: Redis refuses connections for 10 s mid-batch: the task paces alone at no more
    than half the shared pace, then shares again once Redis answers (keys gone: it joins anew)."""
    with own_redis() as server:
        limiter = shared_limiter(0, rpm=600, port=server.port)
        stamps: list[float] = []
        sources: list[str] = []

        async def main() -> None:
            async def send(until: float) -> None:
                while time.monotonic() < until:
                    await limiter.acquire(5)
                    stamps.append(time.monotonic())
                    limiter.on_reply(200, QUOTA, 5)

            async def outage() -> None:
                await asyncio.sleep(2.0)
                server.stop()
                await asyncio.sleep(10.0)  # the outage itself
                sources.append(limiter.pacing().source)
                server.start()

            end = time.monotonic() + 26.0
            await asyncio.gather(outage(), *(send(end) for _ in range(4)))
            sources.append(limiter.pacing().source)
            await limiter.aclose()

        started = time.monotonic()
        asyncio.run(main())
    assert limiter.losses == 1
    assert "alone" in sources[0] and sources[1].endswith("shared via redis db 0")
    alone = [t for t in stamps if started + 4.0 <= t < started + 12.0]
    assert len(alone) / 8.0 * 60 <= 600 * 0.98 * 0.5 * 1.05  # a safe share: at most half the pace


def test_a_spent_shared_budget_waits_the_wider_margin_past_the_reset() -> None:
    """Shared, requests held by a spent budget go SHARED_ARRIVAL_MARGIN_S after the reset (several
    tasks' sends arrive less regularly); in one task's memory, ARRIVAL_MARGIN_S."""
    now = 1_800_000_000.0
    spent = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0",
             "x-ratelimit-reset-requests": f"{now + 1:.3f}"}
    _, pace = applied(None, [Event(False, 200, spent, 1, now, now)], 0.0, now, InFlight())
    assert pace.pause_until - now == pytest.approx(1 + SHARED_ARRIVAL_MARGIN_S, abs=1e-3)
    alone = PaceState()
    alone.on_reply(200, spent, 1, now=now, now_wall=now, rand=0.0)
    assert alone.wait_s(1, now) == pytest.approx(1 + ARRIVAL_MARGIN_S, abs=1e-3)
    assert SHARED_ARRIVAL_MARGIN_S > ARRIVAL_MARGIN_S
