"""Parquet part files: the rows of an embeddings batch with ``output_format="parquet"``.

Needs ``pyarrow`` (the ``parquet`` extra: ``pip install 'airflow-gradient[parquet]'``); nothing
imports this module without it. A part is ``part-<attempt>-<writer>-<seq>.parquet`` beside (or
instead of) the JSONL parts, with the row fields of :func:`~airflow_gradient.batch.rows.embedding_row`
as columns and ``embedding`` a fixed-size list of float32 (a variable list in a part that holds no
vector at all). ``usage`` and ``error`` are structs; reused rows add ``reused`` and ``reused_from``.

Vectors go to storage as they arrive: rows are buffered for one row group (:data:`ROWS_PER_GROUP`),
written, and dropped, so memory holds a row group and the packs in flight, never the batch. A
Parquet file is readable only once closed (its footer is written last), so a part is closed every
:data:`ROWS_PER_PART` rows or :data:`SECONDS_PER_PART` seconds, on local disk as on object storage:
a hard kill loses at most the rows of the part still open (and on object storage of the parts
still uploading), which the next attempt sends again. A part cut short is passed over, with a
warning, by resume, ``read_results`` and reuse. Parts reach storage as JSONL parts do, through
:class:`~airflow_gradient.batch.uploads.PartFiles` (on object storage: uploaded in the background).
"""

from __future__ import annotations

import logging
import time
import uuid
from array import array
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_gradient.batch.parts import part_name
from airflow_gradient.batch.rows import embedding_row
from airflow_gradient.batch.uploads import PartFiles

if TYPE_CHECKING:
    from airflow_gradient.batch.results import ResultStore

log = logging.getLogger(__name__)

ROWS_PER_GROUP = 4096
ROWS_PER_PART = 50_000
SECONDS_PER_PART = 15.0
# On object storage a part is held in memory until uploaded (with up to two more in flight): its
# vectors' bytes; 8,192 rows at 1,024 dimensions.
REMOTE_PART_BYTES = 32 * 2**20
READ_BATCH_ROWS = 1024

_USAGE = pa.struct([("input_tokens", pa.int64()), ("total_tokens", pa.int64())])
_ERROR = pa.struct([("type", pa.string()), ("status", pa.int64()), ("message", pa.string())])
_COLUMNS = ("index", "custom_id", "status", "embedding", "dimensions", "model", "usage", "error",
            "request_digest", "cost_usd", "reused", "reused_from")


def schema(dimensions: int | None) -> pa.Schema:
    """The columns of a part whose vectors have ``dimensions`` components (None: none known)."""
    vector = pa.list_(pa.float32(), dimensions) if dimensions else pa.list_(pa.float32())
    return pa.schema([
        ("index", pa.int64()), ("custom_id", pa.string()), ("status", pa.string()), ("embedding", vector),
        ("dimensions", pa.int32()), ("model", pa.string()), ("usage", _USAGE), ("error", _ERROR),
        ("request_digest", pa.string()), ("cost_usd", pa.float64()), ("reused", pa.bool_()),
        ("reused_from", pa.string()),
    ])


def _float32(vector: Any) -> bytes:
    if isinstance(vector, array) and vector.typecode == "f":
        return vector.tobytes()
    return array("f", vector).tobytes()


class ParquetPartWriter:
    """Writes rows to the Parquet parts of one attempt (the :class:`Writer` protocol of the engine).

    ``takes_arrays``: the engine hands the vectors as the float32 arrays the reply held. Parts go
    where the JSONL parts go, through :class:`~airflow_gradient.batch.uploads.PartFiles`: on object
    storage a part is held in memory until uploaded, so it is closed at :data:`REMOTE_PART_BYTES`
    of vectors too. ``rows_per_part`` replaces that rule (tests).
    """

    takes_arrays = True

    def __init__(self, store: ResultStore, attempt: int, *, rows_per_part: int | None = None) -> None:
        self.store = store
        self.attempt = attempt
        self.writer_id = uuid.uuid4().hex[:8]
        self.parts: list[str] = []
        self.blocking = not store.local
        self._files = PartFiles(store.path, store.local)
        self._rows_per_part = rows_per_part
        self._rows: list[dict[str, Any]] = []
        self._file: IO[bytes] | None = None
        self._writer: pq.ParquetWriter | None = None
        self._dimensions: int | None = None
        self._in_part = 0
        self._opened = 0.0

    def write(self, row: dict[str, Any]) -> dict[str, Any]:
        """Buffer ``row``; a full row group goes to the open part. Returns the row."""
        if not self._rows and self._writer is None:
            self._opened = time.monotonic()  # the part's first row: its age counts from here
        self._rows.append(row)
        if self._dimensions is None and row.get("embedding") is not None:
            self._dimensions = len(row["embedding"])
        if len(self._rows) >= min(ROWS_PER_GROUP, self._part_rows()):
            self._flush()
        return row

    def write_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """:meth:`write` each of ``rows``; returns them."""
        return [self.write(row) for row in rows]

    def commit_if_stale(self) -> None:
        """Close the open part when it is older than :data:`SECONDS_PER_PART` (called periodically)."""
        if (self._rows or self._writer is not None) and time.monotonic() - self._opened >= SECONDS_PER_PART:
            self._flush()
            self._rotate()

    def wait_for_uploads(self) -> None:
        """On object storage: wait until every part closed so far is uploaded, hence visible."""
        self._files.wait()

    def close(self) -> None:
        """Close the open part; on object storage, wait until every part is uploaded."""
        self._flush()
        self._rotate()
        self._files.finish()

    def _part_rows(self) -> int:
        if self._rows_per_part is not None:
            return self._rows_per_part
        if self.store.local or not self._dimensions:
            return ROWS_PER_PART
        return max(1, min(ROWS_PER_PART, REMOTE_PART_BYTES // (4 * self._dimensions)))

    def _flush(self) -> None:
        if not self._rows:
            return
        if self._writer is None:
            self._open()
        assert self._writer is not None
        self._writer.write_table(self._table(self._rows))
        self._in_part += len(self._rows)
        self._rows = []
        if self._in_part >= self._part_rows():
            self._rotate()

    def _open(self) -> None:
        name = part_name(self.attempt, self.writer_id, len(self.parts), "parquet")
        self._file = self._files.open(name)
        self._writer = pq.ParquetWriter(self._file, schema(self._dimensions))
        self.parts.append(name)
        self._in_part = 0

    def _rotate(self) -> None:
        if self._writer is not None and self._file is not None:
            self._writer.close()  # writes the footer; the file stays open
            self._files.close(self._file, self.parts[-1])
            self._writer = self._file = None

    def _table(self, rows: list[dict[str, Any]]) -> pa.Table:
        part_schema = self._writer.schema if self._writer is not None else schema(self._dimensions)
        vector_type = part_schema.field("embedding").type
        size = getattr(vector_type, "list_size", None)
        columns: dict[str, Any] = {name: [row.get(name) for row in rows] for name in _COLUMNS if name != "embedding"}
        columns["dimensions"] = [row.get("dimensions") for row in rows]
        if size:
            blank = bytes(4 * size)
            values = pa.py_buffer(b"".join(_float32(row["embedding"]) if row.get("embedding") is not None
                                           else blank for row in rows))
            mask = pa.array([row.get("embedding") is None for row in rows])
            embedding: pa.Array = pa.FixedSizeListArray.from_arrays(
                pa.Array.from_buffers(pa.float32(), len(rows) * size, [None, values]), size, mask=mask)
        else:
            embedding = pa.array([None for _ in rows], type=vector_type)
        columns["embedding"] = embedding
        return pa.table({name: columns[name] for name in _COLUMNS}, schema=part_schema)


def iter_parquet_rows(part: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row number, row)`` of each row of a Parquet part; a part that cannot be read (cut short by
    a kill before its footer) is passed over with a warning, so its items are sent again."""
    try:
        with part.open("rb") as handle:
            reader = pq.ParquetFile(handle)
            number = 0
            for batch in reader.iter_batches(batch_size=READ_BATCH_ROWS):
                for row in batch.to_pylist():
                    yield number, _cleaned(row)
                    number += 1
    except (pa.ArrowException, OSError) as exc:
        log.warning("part file %s cannot be read as Parquet (%s); passed over", part, exc)


def read_parquet_row(part: Any, number: int) -> dict[str, Any] | None:
    """Row ``number`` of a Parquet part, or None."""
    with part.open("rb") as handle:
        reader = pq.ParquetFile(handle)
        for group in range(reader.num_row_groups):
            rows = reader.metadata.row_group(group).num_rows
            if number < rows:
                return _cleaned(reader.read_row_group(group).slice(number, 1).to_pylist()[0])
            number -= rows
    return None


def _cleaned(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON rows have it: absent optional fields are left out, not null."""
    out = embedding_row(row["index"], row["custom_id"], row["status"], embedding=row.get("embedding"),
                        dimensions=row.get("dimensions"), model=row.get("model"), usage=row.get("usage"))
    out["error"] = row.get("error")
    for name in ("request_digest", "cost_usd", "reused", "reused_from"):
        if row.get(name) is not None:
            out[name] = row[name]
    return out
