"""Part files: their names, the one lister of them and the one reader of their rows.

A batch's ``output_path`` holds the part files its writers wrote (``part-<attempt>-<writer>-<seq>.jsonl``,
see :mod:`~airflow_gradient.batch.results`) and, for a sharded batch, one folder per shard,
``shard-<index>-of-<count>/``, laid out the same way. Resume, ``read_results`` and
``reuse_results_from`` all find parts through :func:`list_parts` and read them through
:func:`iter_located_rows` (or :func:`iter_rows`), so a layout or a line rule is written once.

A line that is not a whole row (the last line of a part cut by a kill, even inside a multi-byte
character, or a damaged line) is passed over with a warning: its item has no row, so a resume
sends it again, instead of the whole output becoming unreadable.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from airflow_gradient.http.replies import decode_json

if TYPE_CHECKING:
    from pathlib import Path

    from airflow.sdk import ObjectStoragePath
    from airflow_gradient.batch.inputs import Shard

log = logging.getLogger(__name__)

# part-<attempt>-<writer>-<seq>.jsonl; parts from before writer ids (part-<attempt>-<seq>) still read.
# An embeddings batch with output_format="parquet" writes .parquet parts (batch/parquet.py).
PART_RE = re.compile(r"^part-(\d{5})-(?:([0-9a-f]{8})-)?(\d{5})\.(?:jsonl|parquet)$")
SHARD_DIR_RE = re.compile(r"^shard-(\d+)-of-(\d+)$")


def part_name(attempt: int, writer_id: str, seq: int, suffix: str = "jsonl") -> str:
    """The name of a writer's part file, as :data:`PART_RE` reads it back."""
    return f"part-{attempt:05d}-{writer_id}-{seq:05d}.{suffix}"

# Told of each line passed over: the file, its line number and byte offset, and why.
BadLine = Callable[[Any, int, int, str], None]


def is_local(path: ObjectStoragePath | Path) -> bool:
    """Whether ``path`` (an ``ObjectStoragePath`` or ``pathlib.Path``) is on local disk."""
    return (getattr(path, "protocol", "") or "file") in ("file", "local")


def as_storage_path(value: str | ObjectStoragePath | Path) -> ObjectStoragePath:
    """``value`` (a URI string, a path or an ``ObjectStoragePath``) as an ``ObjectStoragePath``."""
    from airflow.sdk import ObjectStoragePath

    return value if isinstance(value, ObjectStoragePath) else ObjectStoragePath(str(value))


def shard_dir_name(shard: Shard) -> str:
    """The folder, under the batch's ``output_path``, that holds one shard's parts."""
    return f"shard-{shard.index}-of-{shard.count}"


# -- the lister ---------------------------------------------------------------------------------


def list_parts(path: ObjectStoragePath, *, shards: bool = True) -> list[ObjectStoragePath]:
    """The part files at ``path``: ``path`` itself when it is a part file; else the parts in that
    folder, oldest attempt first, then (``shards``) those of each ``shard-i-of-K/`` folder in it,
    in shard order. A folder that does not exist has none.

    ``shards=True`` is the whole batch (reading results back, reuse); ``shards=False`` is one
    writer's folder only (a shard's or an unsharded batch's resume).
    """
    if PART_RE.match(path.name) and path.is_file():
        return [path]
    children = _children(path)
    parts = _sorted_parts(children)
    if shards:
        folders = [((int(m.group(2)), int(m.group(1))), child)
                   for child in children if (m := SHARD_DIR_RE.match(child.name))]
        for _, folder in sorted(folders, key=lambda pair: pair[0]):
            parts.extend(_sorted_parts(_children(folder)))
    return parts


def _children(path: ObjectStoragePath) -> list[ObjectStoragePath]:
    try:
        return list(path.iterdir()) if path.exists() else []
    except (FileNotFoundError, NotADirectoryError):
        return []


def _sorted_parts(children: list[ObjectStoragePath]) -> list[ObjectStoragePath]:
    parts = [((m.group(1), m.group(2) or "", m.group(3)), child)
             for child in children if (m := PART_RE.match(child.name))]
    return [child for _, child in sorted(parts, key=lambda pair: pair[0])]


def part_attempt(part: Any) -> int:
    """The attempt that wrote a part file listed by :func:`list_parts`."""
    match = PART_RE.match(part.name)
    return int(match.group(1)) if match else 0


# -- the reader ---------------------------------------------------------------------------------


def open_part(part: ObjectStoragePath | Path) -> IO[bytes]:
    """A part file opened for reading bytes. A local file is opened directly: Airflow's wrapper
    around an ``ObjectStoragePath`` file costs tens of microseconds per call, and reuse reads a
    row back with two calls (seek, readline)."""
    if is_local(part):
        return open(local_path(part), "rb")
    return part.open("rb")


def local_path(path: ObjectStoragePath | Path) -> str:
    """The file system path of a local ``path`` (see :func:`is_local`), for the builtin ``open``."""
    return str(getattr(path, "path", path))


def decode_row(line: bytes | str) -> Any:
    """One JSON line, parsed by :func:`~airflow_gradient.http.replies.decode_json` (msgspec, ten
    times faster than ``json`` on rows: a million earlier rows are read in seconds). Raises
    ``ValueError`` for a line that is not UTF-8 JSON."""
    return decode_json(line)


def _warn(what: str) -> BadLine:
    def warn(path: Any, number: int, offset: int, why: str) -> None:
        log.warning("%s %s line %d is %s; passed over", what, path, number, why)

    return warn


def iter_jsonl(
    path: ObjectStoragePath | Path,
    *,
    what: str,
    scrub: Callable[[str], str] | None = None,
    on_bad_line: BadLine | None = None,
    require: str | None = None,
) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """``(line number, byte offset, object)`` of each JSON object line of a JSONL file (an
    ``ObjectStoragePath`` or ``pathlib.Path``). Blank lines are skipped; a line that is not a
    UTF-8 JSON object (or, with ``require``, an object without that key) goes to ``on_bad_line``
    (by default a warning naming ``what``, the file and the line) and is passed over. ``scrub`` is
    applied to each line's text first (a file that came from the server: see
    :mod:`airflow_gradient.http.scrub`). One loop, kept lean: reuse reads a million rows through it."""
    bad = on_bad_line or _warn(what)
    offset = 0
    with open_part(path) as handle:
        for number, raw in enumerate(handle, start=1):
            at, offset = offset, offset + len(raw)
            if raw.isspace():
                continue
            try:
                value = decode_row(scrub(raw.decode("utf-8")) if scrub is not None else raw)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                cut = not raw.endswith(b"\n")
                bad(path, number, at, "cut short (the writer was stopped mid-line)" if cut
                    else f"not a JSON row ({exc})")
                continue
            if type(value) is not dict:
                bad(path, number, at, f"a JSON {type(value).__name__}, not an object")
            elif require is not None and require not in value:
                bad(path, number, at, f"an object without a {require}")
            else:
                yield number, at, value


def iter_located_rows(
    part: ObjectStoragePath, on_bad_line: BadLine | None = None
) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """``(line number, byte offset, row)`` of each row of one part file: the one reading of part
    files that resume, ``read_results`` and reuse share. A line without a ``custom_id`` is passed
    over like a line that is not JSON (the user's input files are read strictly instead:
    :func:`~airflow_gradient.batch.inputs.iter_input_rows`). A Parquet part is read row by row, its
    "offset" the row's number (:func:`~airflow_gradient.batch.parquet.iter_parquet_rows`)."""
    if is_parquet(part):
        from airflow_gradient.batch.parquet import iter_parquet_rows  # pyarrow, only where Parquet was written

        return ((number + 1, number, row) for number, row in iter_parquet_rows(part))
    return iter_jsonl(part, what="part file", on_bad_line=on_bad_line, require="custom_id")


def is_parquet(part: Any) -> bool:
    """Whether a part file is a Parquet one (``.parquet``), read by row number, not by line."""
    return str(getattr(part, "name", part)).endswith(".parquet")


def iter_rows(part: ObjectStoragePath) -> Iterator[dict[str, Any]]:
    """The rows of one part file (see :func:`iter_located_rows`)."""
    for _, _, row in iter_located_rows(part):
        yield row
