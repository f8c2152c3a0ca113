"""What the emulator remembers between requests: config, request log, fault counters, limits.

uvicorn serves from its own thread while tests read the log from theirs, so every access goes
through one lock, held only for a few dictionary operations and never across an ``await``.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from airflow_gradient.testing.emulator.config import EmulatorConfig
from airflow_gradient.testing.emulator.ratelimit import SlidingWindow, Verdict


@dataclass
class RequestRecord:
    """One request the emulator received.

    ``status`` is the HTTP status sent, or 0 when the connection was dropped or left hanging;
    ``generated`` is true once a reply with model output was sent in full (for a stream: its
    terminal frame).
    """

    t: float
    method: str
    path: str
    status: int = 0
    fault: str | None = None
    prompt_key: str | None = None
    generated: bool = False
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    request_id: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class EmulatorState:
    """The emulator's mutable state, safe to read and change from any thread."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self._lock = threading.Lock()
        # Notified whenever the log changes, so that tests can wait for requests without sleeping.
        self._changed = threading.Condition(self._lock)
        self._config = config or EmulatorConfig()
        self._log: list[RequestRecord] = []
        self._fault_hits: Counter[tuple[str, str]] = Counter()
        # Kept as records turn generated, so that no request has to scan the log.
        self._generated: Counter[str] = Counter()
        self._rng = random.Random(self._config.seed)
        self._window = SlidingWindow()
        self._sequence = 0
        # Set when the server stops, so that hanging requests and slow streams end at once.
        self.closing = threading.Event()

    # -- config -------------------------------------------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        with self._lock:
            return self._config

    def configure(self, **fields: Any) -> EmulatorConfig:
        """Change config fields (validated); a new ``seed`` restarts the random fault draws."""
        with self._lock:
            self._config = self._config.updated(**fields)
            if "seed" in fields:
                self._rng = random.Random(self._config.seed)
            return self._config

    def reset(self) -> None:
        """Forget every request: log, generations, ``xN`` fault counts, rate-limit windows; the
        random fault draws start again from the seed."""
        with self._lock:
            self._log.clear()
            self._changed.notify_all()
            self._fault_hits.clear()
            self._generated.clear()
            self._window.clear()
            self._rng = random.Random(self._config.seed)

    # -- request log --------------------------------------------------------------------------

    def open_record(self, method: str, path: str, headers: dict[str, str]) -> RequestRecord:
        """Log a request as it arrives; its outcome is filled in with :meth:`update`."""
        with self._lock:
            self._sequence += 1
            record = RequestRecord(
                t=time.monotonic(), method=method, path=path, headers=headers,
                request_id=f"req_{self._sequence:012x}",
            )
            self._log.append(record)
            self._changed.notify_all()
            return record

    def update(self, record: RequestRecord, **fields: Any) -> None:
        with self._lock:
            was_generated = record.generated
            for name, value in fields.items():
                setattr(record, name, value)
            if record.generated and not was_generated and record.prompt_key is not None:
                self._generated[record.prompt_key] += 1
            self._changed.notify_all()

    def wait_until(self, predicate: Callable[[list[RequestRecord]], bool], timeout: float) -> bool:
        """Block until ``predicate(log)`` holds (true) or ``timeout`` seconds pass (false).
        ``predicate`` sees the live log under the lock: it must only read it."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self._log), timeout)

    def log(self) -> list[RequestRecord]:
        """Copies of every record, oldest first."""
        with self._lock:
            return [dataclasses.replace(record) for record in self._log]

    def generated_counts(self) -> dict[str, int]:
        """Successful generations per prompt key."""
        with self._lock:
            return dict(self._generated)

    def generated_before(self, prompt_key: str) -> bool:
        with self._lock:
            return self._generated[prompt_key] > 0

    # -- faults and limits --------------------------------------------------------------------

    def count_fault(self, prompt_key: str, spec: str) -> int:
        """How many requests with this prompt key have carried fault ``spec``, this one included."""
        with self._lock:
            self._fault_hits[(prompt_key, spec)] += 1
            return self._fault_hits[(prompt_key, spec)]

    def draw(self) -> float:
        """The next number of the seeded fault draw, in [0, 1)."""
        with self._lock:
            return self._rng.random()

    def admit(self, tokens: int, now: float) -> Verdict:
        with self._lock:
            config = self._config
            return self._window.admit(tokens, now, config.rpm_limit, config.tpm_limit, config.limit_window)

    def quota_headers(self, now: float) -> dict[str, str]:
        with self._lock:
            config = self._config
            if config.quota_header_names == "ratelimit":
                return self._window.plain_headers(now, config.rpm_limit, config.limit_window)
            return self._window.headers(now, config.rpm_limit, config.tpm_limit, config.limit_window)
