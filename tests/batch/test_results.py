"""Result rows, part files, resume state and reading results back."""

from __future__ import annotations

import json

import pytest

from airflow.sdk import ObjectStoragePath
from airflow_gradient import read_results
from airflow_gradient.batch.results import ResultStore
from airflow_gradient.batch.rows import failed_row, skipped_row
from airflow_gradient.exceptions import GradientServerError


def ok_row(index: int, custom_id: str, tokens: int = 3) -> dict:
    return {"index": index, "custom_id": custom_id, "status": "succeeded", "output_text": f"out {index}",
            "usage": {"total_tokens": tokens, "input_tokens": 1}, "attempts": 1}


def write_attempt(store: ResultStore, attempt: int, rows: list[dict]) -> list[str]:
    writer = store.writer(attempt)
    for row in rows:
        writer.write(row)
    writer.close()
    return writer.parts


def test_local_rows_are_on_disk_as_soon_as_written(tmp_path) -> None:
    store = ResultStore(ObjectStoragePath(str(tmp_path / "out")))
    writer = store.writer(1)
    writer.write(ok_row(0, "a"))
    # Still open: a kill now must not lose the row.
    assert [json.loads(line)["custom_id"] for line in (tmp_path / "out" / writer.parts[0]).open()] == ["a"]
    writer.close()


def test_scan_finds_succeeded_ids_and_the_next_attempt(tmp_path) -> None:
    store = ResultStore(ObjectStoragePath(str(tmp_path / "out")))
    error = failed_row(1, "b", GradientServerError("boom", status=500), attempts=3, latency_s=0.5)
    assert error["error"] == {"type": "GradientServerError", "status": 500, "message": "HTTP 500: boom"}
    (part,) = write_attempt(store, 1, [ok_row(0, "a", tokens=5), error, skipped_row(2, "c", "budget")])
    with (tmp_path / "out" / part).open("a") as handle:
        handle.write('{"index": 3, "custom_id": "d", "sta')  # cut short by a kill
    state = store.scan()
    assert state.attempt == 2
    assert state.is_done("a") and not state.is_done("b") and not state.is_done("c") and not state.is_done("d")
    assert state.usage["total_tokens"] == 5


def test_reader_merges_attempts_succeeded_first(tmp_path) -> None:
    path = ObjectStoragePath(str(tmp_path / "out"))
    store = ResultStore(path)
    boom = GradientServerError("boom", status=500)
    write_attempt(store, 1, [ok_row(2, "c"), failed_row(0, "a", boom, attempts=3, latency_s=0.1),
                                   skipped_row(1, "b", "budget")])
    write_attempt(store, 2, [ok_row(1, "b"), failed_row(2, "c", boom, attempts=1, latency_s=0.1)])
    by_id = read_results(str(path))
    assert {k: v["status"] for k, v in by_id.items()} == {"a": "failed", "b": "succeeded", "c": "succeeded"}
    assert [row["custom_id"] for row in read_results(path, by="index")] == ["a", "b", "c"]
    manifest = {"output_path": str(path), "parts": []}
    assert read_results(manifest) == by_id
    inline = {"results": [ok_row(1, "y"), ok_row(0, "x")], "output_path": None}
    assert [row["custom_id"] for row in read_results(inline, by="index")] == ["x", "y"]
    with pytest.raises(ValueError, match="by must be"):
        read_results(inline, by="name")



def test_progress_line_counts_rates_and_eta() -> None:
    import time

    from airflow_gradient.batch.progress import BatchProgress

    progress = BatchProgress(total=10, started=time.monotonic() - 4)
    for row in (ok_row(0, "a"), ok_row(1, "b"), {**ok_row(2, "c"), "attempts": 3},
                skipped_row(3, "d", "budget")):
        progress.record(row)
    progress.requests_sent, progress.rate_limited = 6, 1
    line = progress.line("118 req/min (headers)")
    assert line.startswith("batch: 4/10 done (3 succeeded, 0 failed, 1 skipped), 1.5 req/s, 9 tokens, 1 x 429")
    assert "ETA 6s" in line and line.endswith("pacing: 118 req/min (headers)")
    assert progress.retries == 2
