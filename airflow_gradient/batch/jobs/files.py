"""The JSONL input files of provider-side batch jobs, split to fit Gradient's per-file limits.

One line per item, in the provider's format (``docs/api-notes.md#files-and-endpoints``):

- ``openai``: ``{"custom_id", "method": "POST", "url": "/v1/responses", "body": {...}}``
- ``anthropic``: ``{"custom_id", "params": {...}}``

A file holds at most :data:`MAX_REQUESTS_PER_FILE` lines and :data:`MAX_BYTES_PER_FILE` bytes; a
larger batch becomes several files, hence several jobs. Files are written to local disk line by
line, so a batch never sits in memory. The digest of every line, written or skipped, decides
whether a retry may re-attach to the jobs an earlier try created.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from airflow_gradient import arguments
from airflow_gradient.batch.inputs import BatchItem
from airflow_gradient.exceptions import GradientRequestInvalid

MAX_REQUESTS_PER_FILE = 50_000
MAX_BYTES_PER_FILE = 200 * 1024 * 1024

Provider = Literal["openai", "anthropic"]
PROVIDERS: tuple[Provider, ...] = ("openai", "anthropic")


@dataclass(frozen=True)
class FileLimits:
    """How much one job's input file may hold; lower them in tests to see splitting."""

    max_requests: int = MAX_REQUESTS_PER_FILE
    max_bytes: int = MAX_BYTES_PER_FILE

    def __post_init__(self) -> None:
        # Named as the operator's arguments: that is where a user sets them.
        arguments.int_between("max_requests_per_file", self.max_requests, 1, MAX_REQUESTS_PER_FILE)
        arguments.int_between("max_bytes_per_file", self.max_bytes, 1, MAX_BYTES_PER_FILE)


@dataclass(frozen=True)
class InputFile:
    """One written input file: the input of one job."""

    part: int
    path: Path
    requests: int
    size: int
    sha256: str


def input_line(item: BatchItem, provider: Provider, endpoint: str) -> bytes:
    """The JSONL line of one item, newline included."""
    body = item.request.to_wire()
    line: dict[str, Any] = (
        {"custom_id": item.custom_id, "method": "POST", "url": endpoint, "body": body}
        if provider == "openai"
        else {"custom_id": item.custom_id, "params": body}
    )
    return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


class _Part:
    def __init__(self, part: int, path: Path) -> None:
        self.part, self.path = part, path
        self.handle: BinaryIO = path.open("wb")
        self.digest = hashlib.sha256()
        self.requests = self.size = 0

    def add(self, line: bytes) -> None:
        self.handle.write(line)
        self.digest.update(line)
        self.requests += 1
        self.size += len(line)

    def close(self) -> InputFile:
        self.handle.close()
        return InputFile(self.part, self.path, self.requests, self.size, self.digest.hexdigest())


@dataclass(frozen=True)
class InputFiles:
    """The files to upload, and the digest of every item's line (those skipped included)."""

    files: list[InputFile]
    items: int
    digest: str

    @property
    def requests(self) -> int:
        return sum(file.requests for file in self.files)


def write_input_files(
    items: Iterable[BatchItem],
    directory: Path,
    *,
    provider: Provider = "openai",
    endpoint: str = "/v1/responses",
    limits: FileLimits = FileLimits(),
    skip: Callable[[BatchItem], bool] | None = None,
) -> InputFiles:
    """Write ``items`` as JSONL files under ``directory``, a new file whenever the next line would
    pass ``limits``; items for which ``skip`` is true are digested but not written. An item whose
    line alone is larger than a file may be is invalid."""
    files: list[InputFile] = []
    digest = hashlib.sha256(f"{provider} {endpoint}\n".encode())
    count = 0
    current: _Part | None = None
    try:
        for item in items:
            line = input_line(item, provider, endpoint)
            digest.update(line)
            count += 1
            if len(line) > limits.max_bytes:
                raise GradientRequestInvalid(
                    f"invalid request in item {item.index} (custom_id {item.custom_id!r}): its batch line is "
                    f"{len(line)} bytes, more than the {limits.max_bytes} a batch input file may hold",
                    [(f"item[{item.index}]", "too large for a batch file")],
                )
            if skip is not None and skip(item):
                continue
            if current is not None and (
                current.requests >= limits.max_requests or current.size + len(line) > limits.max_bytes
            ):
                files.append(current.close())
                current = None
            if current is None:
                current = _Part(len(files), directory / f"batch-input-{len(files):04d}.jsonl")
            current.add(line)
    finally:
        if current is not None:
            files.append(current.close())
    return InputFiles(files, count, digest.hexdigest())
