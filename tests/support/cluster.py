"""A real Airflow for tests: API server, scheduler, DAG processor, triggerer and Celery workers.

Each component is an ``airflow ...`` process of its own, started in its own session;
:meth:`AirflowCluster.stop` ends it and every process under it, whatever happened;
:meth:`AirflowCluster.kill_worker` kills one worker the way a lost machine goes: SIGKILL to the
worker and every process under it, task processes included (the task SDK puts those in groups of
their own). Readiness is polled on the REST API and the logs, always against a deadline.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

AIRFLOW = str(Path(sys.executable).parent / "airflow")
ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"success", "failed"}
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(what: str, check: Callable[[], T | None], timeout: float, every: float = 0.5) -> T:
    """Poll ``check`` until it returns a value that is not None; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class AirflowCluster:
    """The processes of one Airflow deployment with the CeleryExecutor, on loopback.

    :param home: the ``AIRFLOW_HOME`` (logs land under ``home/logs``).
    :param dags_folder: the DAGs folder every component reads.
    :param database_url: the metadata database (SQLAlchemy URL).
    :param broker_url: the Celery broker (``redis://...``).
    :param result_backend: the Celery result backend (``db+postgresql://...``).
    :param env: more variables for every process (connections, example settings).
    """

    def __init__(self, home: Path, *, dags_folder: Path, database_url: str, broker_url: str,
                 result_backend: str, env: dict[str, str], workers: int = 2, worker_concurrency: int = 2) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.worker_concurrency = worker_concurrency
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_", "AIRFLOW_HOME"))}
        self.env = {
            **inherited,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER":
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
            # A worker lost with its machine: its tasks fail over within seconds, not the default 5 min.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "10",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            **env,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.http = httpx.Client(base_url=f"{self.url}/api/v2", timeout=30)

    # -- processes ---------------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.home / f"{name}.out"

    def _spawn(self, name: str, *args: str) -> None:
        with self.log_path(name).open("wb") as out:
            self.procs[name] = subprocess.Popen([AIRFLOW, *args], env=self.env, stdout=out,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def start(self, timeout: float = 180) -> AirflowCluster:
        """Migrate the database, start every component, return once the REST API reports every one
        healthy and each Celery worker is ready."""
        started = time.monotonic()
        done = subprocess.run([AIRFLOW, "db", "migrate"], env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        self._spawn("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1")
        self._spawn("scheduler", "scheduler", "--skip-serve-logs")
        self._spawn("dag-processor", "dag-processor")
        self._spawn("triggerer", "triggerer", "--skip-serve-logs")
        for n in range(self.workers):
            self._spawn(f"worker-{n}", "celery", "worker", "--celery-hostname", f"worker{n}@%h",
                        "--concurrency", str(self.worker_concurrency), "--skip-serve-logs",
                        "--without-mingle", "--without-gossip")
        remaining = lambda: max(10.0, timeout - (time.monotonic() - started))  # noqa: E731
        wait_for("every component healthy on /api/v2/monitor/health", self._healthy, remaining())
        for n in range(self.workers):
            wait_for(f"celery worker {n} ready", lambda n=n: self._worker_ready(n), remaining())
        return self

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None and not name.startswith("worker-killed"):
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")

    def _healthy(self) -> bool | None:
        self._check_alive()
        try:
            health = self.http.get("/monitor/health").json()
        except (httpx.HTTPError, ValueError):
            return None
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return True if all((health.get(p) or {}).get("status") == "healthy" for p in parts) else None

    def _worker_ready(self, n: int) -> bool | None:
        self._check_alive()
        return True if b" ready." in self.log_path(f"worker-{n}").read_bytes() else None

    def tail(self, name: str, chars: int = 3000) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def worker_running(self, pid: int) -> int | None:
        """The worker whose process tree holds ``pid`` (a task's process), if any."""
        for n in range(self.workers):
            proc = self.procs.get(f"worker-{n}")
            if proc is None or proc.poll() is not None:
                continue
            try:
                tree = {child.pid for child in psutil.Process(proc.pid).children(recursive=True)}
            except psutil.NoSuchProcess:
                continue
            if pid in tree or pid == proc.pid:
                return n
        return None

    def kill_worker(self, n: int) -> None:
        """SIGKILL worker ``n`` and every process under it at once, as when its machine is lost."""
        proc = self.procs.pop(f"worker-{n}")
        _kill_tree(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        self.procs[f"worker-killed-{n}"] = proc

    def stop(self) -> None:
        """End every process started, and their children, even those in groups of their own."""
        self.http.close()
        family = [member for proc in self.procs.values() if proc.poll() is None for member in _tree(proc.pid)]
        for member in family:
            _signal(member, signal.SIGTERM)
        _, alive = psutil.wait_procs(family, timeout=15)
        # What is left, and anything forked while stopping, goes at once.
        for member in {m.pid: m for m in [*alive, *(c for m in alive for c in _tree(m.pid))]}.values():
            _signal(member, signal.SIGKILL)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    # -- REST API ----------------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = self.http.request(method, path, **kwargs)
        if reply.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {reply.status_code} {reply.text[:2000]}")
        return reply.json()

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 120) -> None:
        """Until the DAG processor has parsed every one of ``dag_ids`` (import errors fail at once)."""
        wanted = set(dag_ids)

        def parsed() -> bool | None:
            self._check_alive()
            errors = self.api("GET", "/importErrors")["import_errors"]
            if errors:
                raise RuntimeError(f"DAG import errors: {errors}")
            known = {dag["dag_id"] for dag in self.api("GET", "/dags", params={"limit": 1000})["dags"]}
            return True if wanted <= known else None

        wait_for(f"DAGs {sorted(wanted)} parsed", parsed, timeout)

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def pause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": True})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """A run as the UI's Trigger button makes it: no logical date. Returns its run id."""
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def wait_for_runs(self, runs: Iterable[tuple[str, str]], timeout: float) -> dict[tuple[str, str], str]:
        """Until every ``(dag_id, run_id)`` has finished; returns their states."""
        runs = list(runs)

        def finished() -> dict[tuple[str, str], str] | None:
            self._check_alive()
            states = {run: self.run_state(*run) for run in runs}
            return states if set(states.values()) <= TERMINAL else None

        return wait_for(f"runs {runs} to finish", finished, timeout, every=1.0)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                             params={"limit": 1000})["task_instances"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
                        params={"map_index": map_index, "deserialize": True})["value"]

    def task_logs(self, dag_id: str, run_id: str, states: Iterable[str] = ("failed", "upstream_failed")) -> str:
        """The log files of every try of the run's tasks in ``states``, for an assertion message."""
        wanted = {(ti["task_id"], ti["map_index"]) for ti in self.task_instances(dag_id, run_id)
                  if ti["state"] in set(states)}
        texts = []
        for task_id, map_index in sorted(wanted):
            folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
            if map_index >= 0:
                folder = folder / f"map_index={map_index}"
            for log in sorted(folder.glob("attempt=*.log")):
                texts.append(f"--- {task_id}[{map_index}] {log.name}\n{log.read_text(errors='replace')[-4000:]}")
        return "\n".join(texts) or f"(no task log of {dag_id}/{run_id} in states {sorted(states)})"


def _tree(pid: int) -> list[psutil.Process]:
    """``pid`` and all its descendants (psutil handles: a signal never reaches a recycled pid)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _signal(member: psutil.Process, sig: signal.Signals) -> None:
    try:
        member.send_signal(sig)
    except psutil.NoSuchProcess:
        pass


def _kill_tree(pid: int, sig: signal.Signals) -> None:
    """Signal ``pid`` and all its descendants at once (listed first, then signalled)."""
    for member in _tree(pid):
        _signal(member, sig)
