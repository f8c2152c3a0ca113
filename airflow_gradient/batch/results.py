"""Results of a batch: the JSONL row of each item, the part files that hold them, resume, manifest.

``output_path`` is a directory (a prefix on object storage). Each writer (one attempt of one task)
writes its own part files, ``part-<attempt>-<writer>-<seq>.jsonl``, ``<writer>`` a random id, and
never touches another's: object stores cannot append, a part that is never rewritten cannot be lost
by a later crash, and two tasks given the same ``output_path`` at once (two map indexes, two runs
with a fixed path) cannot overwrite each other's rows. Parts are created exclusively where the
storage allows it (local disk), so a name clash fails loudly instead of truncating a part.

- Local disk: one part per attempt, flushed after every write (a row; an embeddings pack's rows
  together), so a row is on disk (in the OS page cache) as soon as its item completes; a SIGKILL
  loses nothing that completed.
- Object storage (S3, GCS, ...): a part becomes visible when it is uploaded whole, so parts are
  closed every ``rows_per_part`` rows or ``seconds_per_part`` seconds and uploaded in the
  background (:mod:`~airflow_gradient.batch.uploads`); a hard kill loses at most the rows of the
  part still open and of the parts still uploading (at most two).

A shard of a batch (``shard_index`` of ``shard_count``) keeps its parts in its own folder,
``<output_path>/shard-<index>-of-<count>/``, laid out as above: its resume reads that folder only.
Part files are named, listed and read back by :mod:`~airflow_gradient.batch.parts`, the one lister
(which knows the shard folders) and the one reader that resume, ``read_results`` and reuse share.

Resume: :meth:`ResultStore.scan` reads every earlier part; an item whose ``custom_id`` has a
``succeeded`` row is not sent again. Failed and skipped items are sent again, and their new rows
supersede the old ones when the results are read back (a ``succeeded`` row is never superseded).
A line that is not a whole row is passed over with a warning, so its item counts as not done and
is sent again.

Each row is built and encoded by :mod:`~airflow_gradient.batch.rows`, which describes its shape.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from airflow_gradient.batch.inputs import Shard, custom_id_key
from airflow_gradient.batch.parts import is_local, iter_rows, list_parts, part_attempt, part_name, shard_dir_name
from airflow_gradient.batch.rows import USAGE_KEYS, add_usage, encode_row, encode_rows
from airflow_gradient.batch.uploads import PartFiles
from airflow_gradient.pricing import COST_DECIMALS, Spend, SpendByModel

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath
    from airflow_gradient.batch.parquet import ParquetPartWriter

log = logging.getLogger(__name__)

REMOTE_ROWS_PER_PART = 1000
REMOTE_SECONDS_PER_PART = 15.0


@dataclass
class ResumeState:
    """What earlier attempts already did: ids that succeeded, with their token usage."""

    attempt: int = 1
    done: set[int] = field(default_factory=set)
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_KEYS, 0))
    # What every row earlier tries sent cost (failed ones with usage included), for max_cost_usd;
    # the rows they copied from earlier runs (reuse_results_from) are counted apart.
    spend: Spend = field(default_factory=Spend)
    reused: int = 0
    reused_usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_KEYS, 0))
    reused_spend: Spend = field(default_factory=Spend)
    # The rows earlier tries sent, by model: their cost as ``spend``, their tokens as ``usage``.
    models: SpendByModel = field(default_factory=SpendByModel)

    def is_done(self, custom_id: str) -> bool:
        return bool(self.done) and custom_id_key(custom_id) in self.done


def scan_output(output_path: ObjectStoragePath | None) -> tuple[ResultStore | None, ResumeState]:
    """The store under ``output_path`` (None: the rows go to XCom) and what earlier attempts left there."""
    store = ResultStore(output_path) if output_path is not None else None
    return store, store.scan() if store is not None else ResumeState()


class ResultStore:
    """The part files of one batch's results under ``path`` (an ``ObjectStoragePath`` directory)."""

    def __init__(
        self, path: ObjectStoragePath, *, rows_per_part: int | None = None, seconds_per_part: float | None = None
    ) -> None:
        self.path = path
        self.local = is_local(path)
        self.rows_per_part = rows_per_part or (None if self.local else REMOTE_ROWS_PER_PART)
        self.seconds_per_part = seconds_per_part or (None if self.local else REMOTE_SECONDS_PER_PART)

    def scan(self) -> ResumeState:
        """Read every earlier part: the next attempt number and the ids that succeeded."""
        state = ResumeState()
        for part in list_parts(self.path, shards=False):
            state.attempt = max(state.attempt, part_attempt(part) + 1)
            for row in iter_rows(part):
                key = custom_id_key(str(row["custom_id"]))
                if row.get("reused"):
                    if row.get("status") == "succeeded" and key not in state.done:
                        state.done.add(key)
                        state.reused += 1
                        add_usage(state.reused_usage, row)
                        state.reused_spend.add_row(row)
                    continue
                state.spend.add_row(row)
                first_success = row.get("status") == "succeeded" and key not in state.done
                state.models.add_row(row, tokens=first_success)
                if first_success:
                    state.done.add(key)
                    for name in USAGE_KEYS:
                        state.usage[name] += (row.get("usage") or {}).get(name, 0)
        return state

    def writer(self, attempt: int, part_format: str = "jsonl") -> PartWriter | ParquetPartWriter:
        """The writer of ``attempt``'s parts: JSONL, or Parquet (``part_format="parquet"``)."""
        if self.local:
            self.path.mkdir(parents=True, exist_ok=True)
        if part_format == "parquet":
            from airflow_gradient.batch.parquet import ParquetPartWriter  # needs pyarrow (the parquet extra)

            return ParquetPartWriter(self, attempt)
        return PartWriter(self, attempt)


class PartWriter:
    """Appends rows to the part files of one attempt, rotating them as :class:`ResultStore` says.

    Its parts carry a random writer id, so no other writer (a concurrent task on the same
    ``output_path``) ever opens them. It is synchronous: on object storage a part is filled in
    memory and handed to a :class:`~airflow_gradient.batch.uploads.PartUploader`, which may make a
    write wait for a free place, so ``blocking`` tells an event loop to call it from a thread.
    """

    def __init__(self, store: ResultStore, attempt: int) -> None:
        self.store = store
        self.attempt = attempt
        self.writer_id = uuid.uuid4().hex[:8]
        self.parts: list[str] = []
        self.blocking = not store.local
        self._files = PartFiles(store.path, store.local)
        self._file: IO[bytes] | None = None
        self._rows = 0
        self._opened = 0.0

    def _open(self) -> None:
        name = part_name(self.attempt, self.writer_id, len(self.parts))
        self._file = self._files.open(name)
        self.parts.append(name)
        self._rows, self._opened = 0, time.monotonic()

    def write(self, row: dict[str, Any]) -> dict[str, Any]:
        """Append ``row``; returns it as stored (see :func:`encode_row`)."""
        return self.write_rows([row])[0]

    def write_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append ``rows`` (a local part is flushed once, after them); returns them as stored."""
        limit = None if self.store.local else self.store.rows_per_part
        stored: list[dict[str, Any]] = []
        while len(stored) < len(rows):
            if self._file is None:
                self._open()
            assert self._file is not None
            start = len(stored)
            end = len(rows) if not limit else min(len(rows), start + limit - self._rows)
            written, data = encode_rows(rows[start:end])
            self._file.write(data)
            stored.extend(written)
            self._rows += end - start
            if limit and self._rows >= limit:
                self._rotate()
        if self.store.local and self._file is not None:
            self._file.flush()
        return stored

    def commit_if_stale(self) -> None:
        """Close the open part when it is older than ``seconds_per_part`` (called periodically)."""
        limit = self.store.seconds_per_part
        if self._file is not None and limit and time.monotonic() - self._opened >= limit:
            self._rotate()

    def _rotate(self) -> None:
        done, self._file = self._file, None
        if done is not None:
            self._files.close(done, self.parts[-1])

    def wait_for_uploads(self) -> None:
        """On object storage: wait until every part closed so far is uploaded, hence visible."""
        self._files.wait()

    def close(self) -> None:
        """Close the open part; on object storage, wait until every part is uploaded."""
        self._rotate()
        self._files.finish()


class MemoryWriter:
    """Keeps rows in memory, for small batches whose results go to XCom."""

    blocking = False

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.parts: list[str] = []

    def write(self, row: dict[str, Any]) -> dict[str, Any]:
        # The same encoding as a part file: what goes to XCom is what would have been stored.
        row = json.loads(encode_row(row)[1])
        self.rows.append(row)
        return row

    def write_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.write(row) for row in rows]

    def commit_if_stale(self) -> None:
        return None

    def close(self) -> None:
        return None


# -- manifest -----------------------------------------------------------------------------------


def build_manifest(
    *,
    output_path: str | None,
    parts: list[str],
    total: int,
    counts: dict[str, int],
    usage: dict[str, int],
    requests: dict[str, int],
    wall_time_s: float,
    **extra: Any,
) -> dict[str, Any]:
    """The small dict that goes to XCom; :func:`~airflow_gradient.batch.reader.read_results` reads it."""
    return {
        "output_path": output_path,
        "parts": parts,
        "total": total,
        "counts": counts,
        "usage": usage,
        "requests": requests,
        "wall_time_s": round(wall_time_s, 3),
        **extra,
    }


def merge_manifests(manifests: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One manifest for a sharded batch, from the manifests of its shards (the mapped task's XComs).

    Counts, usage, requests, ``total``, ``resumed``, ``cost_usd``, ``reused`` and ``models`` are added up (a
    dollar figure stays unknown when any shard's is); ``wall_time_s`` is the longest
    shard's; ``output_path`` is the batch's (:func:`~airflow_gradient.read_results` reads every
    shard from it); ``parts`` are relative to it; ``shards`` keeps each shard's own figures.

    Raises ``ValueError`` when the manifests are not every shard of one batch, exactly once.
    """
    shards = sorted(manifests, key=lambda manifest: (manifest.get("shard") or {}).get("index", -1))
    if not shards or any("shard" not in manifest for manifest in shards):
        raise ValueError("merge_manifests takes the manifests of a sharded batch (shard_index/shard_count), "
                         f"got {len(shards)} manifest(s) without a shard")
    count = shards[0]["shard"]["count"]
    indexes = [manifest["shard"]["index"] for manifest in shards]
    roots = {manifest.get("batch_output_path") for manifest in shards}
    if indexes != list(range(count)) or {m["shard"]["count"] for m in shards} != {count} or len(roots) != 1:
        raise ValueError(f"merge_manifests needs shards 0 to {count - 1} of one batch exactly once, got "
                         f"shards {indexes} of {sorted({m['shard']['count'] for m in shards})} "
                         f"under {sorted(map(str, roots))}")

    def added(key: str) -> dict[str, int]:
        total: dict[str, int] = {}
        for manifest in shards:
            for name, value in (manifest.get(key) or {}).items():
                total[name] = total.get(name, 0) + (value or 0)
        return total

    def dollars(values: Iterable[float | None]) -> float | None:
        """A sum of dollar figures; unknown (None) when any shard's is."""
        total = 0.0
        for value in values:
            if value is None:
                return None
            total += value
        return round(total, COST_DECIMALS)

    reused = [manifest.get("reused") or {} for manifest in shards]
    models: dict[str, dict[str, Any]] = {}
    for manifest in shards:
        for model, figures in (manifest.get("models") or {}).items():
            into = models.setdefault(model, {"total_tokens": 0, "cost_usd": 0.0})
            into["total_tokens"] += figures.get("total_tokens") or 0
            into["cost_usd"] = dollars([into["cost_usd"], figures.get("cost_usd")])
    merged = build_manifest(
        output_path=roots.pop(),
        parts=[f"{shard_dir_name(Shard(**m['shard']))}/{part}" for m in shards for part in m["parts"]],
        total=sum(manifest["total"] for manifest in shards),
        counts=added("counts"),
        usage=added("usage"),
        requests=added("requests"),
        wall_time_s=max(manifest["wall_time_s"] for manifest in shards),
        resumed=sum(manifest.get("resumed", 0) for manifest in shards),
        cost_usd=dollars(manifest.get("cost_usd") for manifest in shards),
        reused={"items": sum(r.get("items", 0) for r in reused),
                "tokens_saved": sum(r.get("tokens_saved", 0) for r in reused),
                "cost_usd_saved": dollars(r.get("cost_usd_saved", 0.0) for r in reused)},
        models=dict(sorted(models.items())),
        shard_count=count,
        shards=[{key: manifest.get(key) for key in ("shard", "output_path", "attempt", "total", "counts",
                                                     "requests", "wall_time_s", "pacing")} for manifest in shards],
    )
    if all("results" in manifest for manifest in shards):
        merged["results"] = sorted((row for m in shards for row in m["results"]), key=lambda row: row["index"])
    return merged
