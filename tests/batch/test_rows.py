"""Every row a writer stores is one line of valid UTF-8 JSON, and the writer returns the row as
stored, which is what the batch counts (so a manifest never counts a row that was not kept)."""

from __future__ import annotations

import json

import pytest

from airflow.sdk import ObjectStoragePath
from airflow_gradient.batch.results import MemoryWriter, ResultStore


def _deeply_nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def _row(**fields) -> dict:
    return {"index": 3, "custom_id": "c", "status": "succeeded", "output_text": "x", "attempts": 1,
            "latency_s": 0.5, "error": None, **fields}


@pytest.mark.parametrize("memory", [False, True], ids=["part-file", "xcom"])
def test_stored_rows_are_utf8_json_and_returned_as_stored(tmp_path, memory) -> None:
    writer = MemoryWriter() if memory else ResultStore(ObjectStoragePath(str(tmp_path / "o"))).writer(1)
    surrogate = writer.write(_row(output_text="a \ud800 b"))
    too_deep = writer.write(_row(custom_id="d", tool_calls=[{"arguments": _deeply_nested(100_000)}]))
    writer.close()
    assert surrogate["output_text"] == "a \ufffd b" and surrogate["status"] == "succeeded"
    # Stored, and counted, as the failed row it was written as.
    assert (too_deep["custom_id"], too_deep["index"], too_deep["status"]) == ("d", 3, "failed")
    assert too_deep["error"]["type"] == "GradientProtocolError" and "could not be written" in too_deep["error"]["message"]
    if memory:
        stored = writer.rows
    else:
        (part,) = (tmp_path / "o").glob("part-*.jsonl")
        stored = [json.loads(line.decode("utf-8")) for line in part.read_bytes().splitlines()]
    assert stored == [surrogate, too_deep]
