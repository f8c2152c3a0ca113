"""The job ledger: which provider-side jobs this batch created, kept next to its results.

``<output_path>/batch_jobs.json`` is rewritten after every step that costs or creates something
(file uploaded, job created, results landed), so a retry, a clear or a new worker after a crash
finds the jobs an earlier try paid for and re-attaches to them instead of creating new ones.
Without an ``output_path`` nothing is kept, and re-attaching rests on the job's ``request_id``
alone, which Gradient treats as an idempotency key.

A ledger belongs to one input: ``input_digest`` covers every item's line and the job settings. A
round is one set of jobs (one per input file); it stays open until its results are landed. A
retry after landing (some items failed) opens a new round for the items without a succeeded row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

from airflow_gradient.batch.parts import is_local

LEDGER_NAME = "batch_jobs.json"
LEDGER_VERSION = 1


@dataclass
class JobRecord:
    """One job: its input file (part), idempotency key, and how far it got."""

    part: int
    request_id: str
    requests: int
    sha256: str
    file_id: str | None = None
    uploaded: bool = False
    batch_id: str | None = None
    status: str | None = None


@dataclass
class Round:
    number: int
    jobs: list[JobRecord]
    landed: bool = False

    @property
    def batch_ids(self) -> list[str]:
        return [job.batch_id for job in self.jobs if job.batch_id]


@dataclass
class JobLedger:
    input_digest: str
    task: str
    rounds: list[Round] = field(default_factory=list)

    @property
    def open_round(self) -> Round | None:
        """The last round, while its results are not landed yet."""
        return self.rounds[-1] if self.rounds and not self.rounds[-1].landed else None

    def to_json(self) -> str:
        return json.dumps({"version": LEDGER_VERSION, **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> JobLedger:
        data = json.loads(text)
        rounds = [Round(r["number"], [JobRecord(**job) for job in r["jobs"]], r["landed"]) for r in data["rounds"]]
        return cls(data["input_digest"], data["task"], rounds)


def request_id(task: str, input_digest: str, round_number: int, part: int) -> str:
    """The idempotency key of one job: the same task, input, round and part give the same key."""
    digest = hashlib.sha256(f"{task}\n{input_digest}\n{round_number}\n{part}".encode()).hexdigest()
    return f"airflow-{digest[:40]}"


class LedgerStore:
    """Where the ledger lives: ``<output_path>/batch_jobs.json``, or nowhere without a path."""

    def __init__(self, output_path: ObjectStoragePath | None) -> None:
        self.path = output_path / LEDGER_NAME if output_path is not None else None

    def load(self) -> JobLedger | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            return JobLedger.from_json(self.path.read_text(encoding="utf-8"))
        except (ValueError, KeyError, TypeError):
            # A ledger we cannot read is ignored: the request_id still prevents a second job.
            return None

    def save(self, ledger: JobLedger) -> None:
        if self.path is None:
            return
        if is_local(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(ledger.to_json(), encoding="utf-8")

    def mark_landed(self, batch_ids: list[str]) -> None:
        """Close the open round once its results (the jobs ``batch_ids``) are landed."""
        ledger = self.load()
        if ledger is None or ledger.open_round is None:
            return
        if sorted(ledger.open_round.batch_ids) == sorted(batch_ids):
            ledger.open_round.landed = True
            self.save(ledger)
