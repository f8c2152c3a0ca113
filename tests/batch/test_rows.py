"""Every row a writer stores is one line of valid UTF-8 JSON, and the writer returns the row as
stored, which is what the batch counts (so a manifest never counts a row that was not kept)."""

from __future__ import annotations

import json
import math
from array import array

import pytest

from airflow.sdk import ObjectStoragePath
from airflow_gradient.batch.parts import iter_rows
from airflow_gradient.batch.results import MemoryWriter, ResultStore
from airflow_gradient.batch.rows import embedding_row


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


def _vector_row(index: int, vector: list, **fields) -> dict:
    return embedding_row(index, f"c{index}", "succeeded", embedding=vector, dimensions=len(vector), model="m",
                         usage={"input_tokens": 1, "total_tokens": 1}) | fields


@pytest.mark.parametrize("memory", [False, True], ids=["part-file", "xcom"])
def test_vector_rows_are_stored_with_the_float32_values_of_the_reply(tmp_path, memory) -> None:
    # Vectors as a base64 reply gives them: float32 values, read as Python floats.
    vector = array("f", [0.1, -1e-7, 3.4e38, 1.5e-45, 0.0, -0.0, 1 / 3]).tolist()
    writer = MemoryWriter() if memory else ResultStore(ObjectStoragePath(str(tmp_path / "o"))).writer(1)
    rows = [_vector_row(0, vector), _vector_row(1, vector[::-1], cost_usd=1.5e-08)]
    stored = writer.write_rows(rows)
    # NaN and infinities are written as json writes them (msgspec would write null), and a lone
    # surrogate is replaced, in a pack of its own or among others.
    odd = writer.write_rows([_vector_row(2, [math.nan, math.inf]), _vector_row(3, vector, model="a \ud800")])
    writer.close()
    assert stored == rows and odd[1]["model"] == "a \ufffd"
    read = writer.rows if memory else list(iter_rows(next((tmp_path / "o").glob("part-*.jsonl"))))
    assert [row["embedding"] for row in read[:2]] == [vector, vector[::-1]]
    assert all(type(x) is float for x in read[0]["embedding"])
    assert read[:2] == rows and read[3] == odd[1]
    assert math.isnan(read[2]["embedding"][0]) and read[2]["embedding"][1] == math.inf
