"""Reuse across runs: an item whose request succeeded in an earlier run is not paid for again.

``reuse_results_from`` names earlier output locations (directories of part files, as
:mod:`~airflow_gradient.batch.results` writes them; a glob such as ``.../summaries/*/`` names
several). They are read once, before anything is sent, into a :class:`DigestTable`: the first
8 bytes of each succeeded row's ``request_digest`` (see
:func:`~airflow_gradient.batch.inputs.reuse_digest`) mapped to where the row is (which part file,
which byte). Two 64-bit integers per row: 1 million earlier rows take about 32 MB, whatever the
rows hold. When an item of this run has the digest of an earlier row, that row is read back from
its place, checked against the item's full digest, and copied into this run's output with
``"reused": true`` and ``"reused_from"`` (the part file it came from); the item is not sent.

Rows written before rows carried ``request_digest`` cannot be matched (their request is not in
the row) and are counted, not reused. A row that is not JSON, or whose ``request_digest`` is not a
digest, is passed over with a warning: its item is sent again.
"""

from __future__ import annotations

import logging
import re
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import IO, TYPE_CHECKING, Any

from airflow_gradient.batch.inputs import DIGEST_BYTES, BatchItem
from airflow_gradient.batch.parts import (
    as_storage_path,
    decode_row,
    is_parquet,
    iter_located_rows,
    list_parts,
    open_part,
)
from airflow_gradient.exceptions import GradientRequestInvalid

if TYPE_CHECKING:

    from airflow.sdk import ObjectStoragePath
    from airflow_gradient._typing import TaskLog
_DIGEST_RE = re.compile(rf"^[0-9a-f]{{{2 * DIGEST_BYTES}}}$")
_GLOB_CHARS = re.compile(r"[*?\[]")
OFFSET_BITS = 40  # byte offsets up to 1 TB in a part file
MAX_WARNINGS = 5
OPEN_PARTS = 8
_EMPTY = 0


def reuse_table_key(digest: str) -> int:
    """The :class:`DigestTable` key of a row's ``request_digest``: its first 8 bytes, never 0 (0
    marks an empty slot)."""
    return int(digest[:16], 16) or 1


class DigestTable:
    """An open-addressing hash table of 64-bit keys to 64-bit values in two ``array('Q')``:
    16 bytes a slot, at most 70 % full, where a ``dict`` of ints costs about 100 bytes an entry."""

    def __init__(self, capacity: int = 1024) -> None:
        size = 1 << max(10, (capacity * 2 - 1).bit_length())
        self._keys = array("Q", bytes(8 * size))
        self._values = array("Q", bytes(8 * size))
        self._mask = size - 1
        self.count = 0

    def _slot(self, key: int) -> int:
        # Keys are hash digests already: their low bits are as good as any.
        slot, keys, mask = key & self._mask, self._keys, self._mask
        while keys[slot] != _EMPTY and keys[slot] != key:
            slot = (slot + 1) & mask
        return slot

    def add(self, key: int, value: int) -> None:
        """Keep ``value`` for ``key`` unless the key is there already (the first row wins)."""
        slot = self._slot(key)
        if self._keys[slot] == key:
            return
        self._keys[slot], self._values[slot] = key, value
        self.count += 1
        if self.count * 10 > len(self._keys) * 7:
            self._grow()

    def get(self, key: int) -> int | None:
        slot = self._slot(key)
        return self._values[slot] if self._keys[slot] == key else None

    def _grow(self) -> None:
        keys, values = self._keys, self._values
        size = len(keys) * 2
        self._keys, self._values, self._mask = array("Q", bytes(8 * size)), array("Q", bytes(8 * size)), size - 1
        for key, value in zip(keys, values):
            if key != _EMPTY:
                slot = self._slot(key)
                self._keys[slot], self._values[slot] = key, value

    def __len__(self) -> int:
        return self.count


def parts_to_reuse(reuse_results_from: Any) -> list[ObjectStoragePath]:
    """The part files ``reuse_results_from`` names (what the batch reads, and its lineage inputs)."""
    return [part for location in _locations(reuse_results_from) for part in _expand(location)]


def _locations(value: Any) -> list[Any]:
    """``reuse_results_from`` as a list: one location, or several."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, set)):
        return [item for item in value if item not in (None, "")]
    return [value] if value != "" else []


def _expand(location: Any) -> list[Any]:
    """The part files of one location: a batch's ``output_path`` (its shards' folders included),
    one part file, or a glob of either.

    A location that does not exist is an error; a glob that matches nothing is not (the first run
    of a schedule has no earlier runs)."""
    text = str(location)
    if _GLOB_CHARS.search(text):
        pieces = text.rstrip("/").split("/")
        first = next(n for n, piece in enumerate(pieces) if _GLOB_CHARS.search(piece))
        base = as_storage_path("/".join(pieces[:first]) or "/")
        matches = sorted(base.glob("/".join(pieces[first:]))) if base.exists() else []
        return [part for match in matches for part in list_parts(match)]
    path = as_storage_path(location)
    if not path.exists():
        raise GradientRequestInvalid(
            f"invalid batch: reuse_results_from: {text} does not exist (an earlier run's output_path, "
            "or a glob of several, was expected)",
            [("reuse_results_from", "does not exist")],
        )
    return list_parts(path)


@dataclass
class ReuseSummary:
    """What the scan found: reusable rows, older rows without a digest, corrupt rows."""

    parts: int = 0
    reusable: int = 0
    without_digest: int = 0
    corrupt: int = 0


class ReuseIndex:
    """The succeeded rows of earlier runs, by request digest; :meth:`attach` marks the items they
    answer. Build it with :meth:`scan`."""

    def __init__(self, parts: list[ObjectStoragePath], table: DigestTable, summary: ReuseSummary,
                 log: TaskLog) -> None:
        self.parts = parts
        self.table = table
        self.summary = summary
        self.log = log
        self._open: dict[int, IO[bytes]] = {}

    @classmethod
    def scan(cls, reuse_results_from: Any, log: TaskLog | None = None) -> ReuseIndex | None:
        """Read every earlier row once (None when ``reuse_results_from`` is empty).

        Raises :class:`GradientRequestInvalid` naming ``reuse_results_from`` when a location that
        is not a glob does not exist: before anything is sent.
        """
        log = log or logging.getLogger(__name__)
        if not _locations(reuse_results_from):
            return None
        parts = parts_to_reuse(reuse_results_from)
        table, summary = DigestTable(), ReuseSummary(parts=len(parts))

        def corrupt(part: Any, number: int, offset: int, why: str) -> None:
            _corrupt(summary, log, part, offset, why)

        for number, part in enumerate(parts):
            for _, offset, row in iter_located_rows(part, on_bad_line=corrupt):
                digest = _succeeded_digest(row, part, offset, summary, log)
                if digest is not None:
                    table.add(reuse_table_key(digest), number << OFFSET_BITS | offset)
        summary.reusable = len(table)
        log.info("reuse_results_from: %d reusable rows in %d part file(s)%s%s", summary.reusable, len(parts),
                 f"; {summary.without_digest} older rows carry no request_digest and cannot be reused"
                 if summary.without_digest else "",
                 f"; {summary.corrupt} corrupt rows passed over" if summary.corrupt else "")
        return cls(parts, table, summary, log)

    def row_for(self, index: int, custom_id: str, digest: str) -> dict[str, Any] | None:
        """The earlier row answering the request of digest ``digest``, re-labelled as this run's
        item ``index``/``custom_id``; None: the item is to be sent."""
        where = self.table.get(reuse_table_key(digest)) if digest else None
        if where is None:
            return None
        number, offset = where >> OFFSET_BITS, where & ((1 << OFFSET_BITS) - 1)
        try:
            if is_parquet(self.parts[number]):  # located by row number, not byte offset
                from airflow_gradient.batch.parquet import read_parquet_row

                row = read_parquet_row(self.parts[number], offset)
            else:
                handle = self._handle(number)
                handle.seek(offset)
                row = decode_row(handle.readline())
        except (OSError, ValueError) as exc:
            self.log.warning("reuse_results_from: cannot read back the row at byte %d of %s (%s): the item "
                             "is sent", offset, self.parts[number], exc)
            return None
        if not isinstance(row, dict) or row.get("request_digest") != digest or row.get("status") != "succeeded":
            return None  # another request sharing the first 8 bytes, or the file changed since the scan
        return {**row, "index": index, "custom_id": custom_id, "reused": True, "reused_from": str(self.parts[number])}

    def attach(self, items: Iterable[BatchItem]) -> Iterator[BatchItem]:
        """``items``, each with the earlier row that answers it when there is one."""
        for item in items:
            row = self.row_for(item.index, item.custom_id, item.digest)
            yield item if row is None else replace(item, reused=row)

    def _handle(self, number: int) -> IO[bytes]:
        handle = self._open.get(number)
        if handle is None:
            if len(self._open) >= OPEN_PARTS:
                self._open.pop(next(iter(self._open))).close()
            handle = self._open[number] = open_part(self.parts[number])
        return handle

    def close(self) -> None:
        for handle in self._open.values():
            handle.close()
        self._open.clear()


def _succeeded_digest(
    row: dict[str, Any], part: ObjectStoragePath, offset: int, summary: ReuseSummary, log: TaskLog
) -> str | None:
    """The ``request_digest`` of a succeeded row; None for other rows, with a warning for a bad digest."""
    if row.get("status") != "succeeded":
        return None
    digest = row.get("request_digest")
    if digest is None:
        summary.without_digest += 1
        return None
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        _corrupt(summary, log, part, offset, f"request_digest {digest!r} is not a digest")
        return None
    return digest


def _corrupt(summary: ReuseSummary, log: TaskLog, part: ObjectStoragePath, offset: int, why: str) -> None:
    summary.corrupt += 1
    if summary.corrupt <= MAX_WARNINGS:
        log.warning("reuse_results_from: the row at byte %d of %s is passed over (%s); its item is sent "
                    "if this run has it", offset, part, why)
