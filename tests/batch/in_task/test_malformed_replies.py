"""Malformed and refused replies inside a batch: each fails its own item with a typed error in its
row (type, status, message), and the rest of the batch goes on.

The batch sends plain requests only (``stream`` is dropped from its items), so broken streams are
covered by the hook's tests (``tests/http/test_streaming.py``), not here.
"""

from __future__ import annotations

import httpx
import pytest

from airflow_gradient import read_results
from airflow_gradient.models.result import ContentPart, ResponseResult
from airflow_gradient.testing.emulator.generate import reply_text
from tests.conftest import TEST_KEY, conn_env
from tests.support.batch_task import run_batch_task

# fault: (error type in the row, its status, words of its message, requests sent for the item)
BAD_REPLIES = {
    "malformed": ("GradientProtocolError", 200, "not valid JSON", 1),
    "error-200": ("GradientProtocolError", 200, "carried an error body", 1),
    "missing-fields": ("GradientProtocolError", 200, "neither 'output' nor 'choices'", 1),
    "wrong-content-type": ("GradientProtocolError", 200, "'text/plain", 1),
    # A proxy's HTML error page: a server error, retried, its <title> as the message.
    "502-html": ("GradientServerError", 502, "HTTP 502: 502 Bad Gateway", 2),
    # Refusals of the account, not of the item: never retried, and they name the connection.
    "401": ("GradientAuthError", 401, "password of Airflow connection 'gradient_default'", 1),
    "402": ("GradientPaymentError", 402, "set up billing on the DigitalOcean account of connection 'gradient_default'",
            1),
}


# A refused account stops the batch: the items not yet sent fail with that first refusal. Each
# refusal therefore runs in a batch of its own, or which of the two came first would be a race.
BATCHES = [[fault for fault in BAD_REPLIES if fault != "402"], ["402"]]


@pytest.mark.parametrize("faults", BATCHES, ids=["replies", "payment"])
def test_each_bad_reply_fails_only_its_item_with_a_typed_error(gradient_conn, tmp_path, faults) -> None:
    good = [f"good document {i}" for i in range(6)]
    bad = {fault: f"[[fault:{fault}]] bad document" for fault in faults}
    inputs = [{"input": prompt, "custom_id": f"good-{i}"} for i, prompt in enumerate(good)]
    inputs += [{"input": prompt, "custom_id": fault} for fault, prompt in bad.items()]
    _, state, manifest = run_batch_task("batch_bad_replies", inputs=inputs, output_path=str(tmp_path / "out"),
                                        # Every item in flight at once: the 401 and the 402 are both
                                        # sent before either stops the batch.
                                        max_retries=1, max_failed_fraction=1.0, max_concurrency=16)
    assert state == "success"
    assert manifest["counts"] == {"succeeded": len(good), "failed": len(bad), "skipped": 0}
    rows = read_results(manifest)
    assert [rows[f"good-{i}"]["output_text"] for i in range(len(good))] == [reply_text(p) for p in good]

    sent = {prompt: 0 for prompt in bad.values()}
    for record in gradient_conn.log:
        if record.prompt_key in sent:
            sent[record.prompt_key] += 1
    for fault in faults:
        kind, status, words, attempts = BAD_REPLIES[fault]
        row = rows[fault]
        assert row["status"] == "failed" and row["output_text"] is None, fault
        assert (row["error"]["type"], row["error"]["status"]) == (kind, status), fault
        assert words in row["error"]["message"] and "<" not in row["error"]["message"], (fault, row["error"])
        assert row["attempts"] == sent[bad[fault]] == attempts, fault
        assert TEST_KEY not in row["error"]["message"]


def test_unknown_reply_fields_parse(gradient_conn, tmp_path) -> None:
    # The emulator's replies carry fields our reply model does not declare, at the top level
    # ("created_at", "metadata"...) and inside output items ("annotations", "logprobs").
    probe = httpx.post(f"{gradient_conn.base_url}/responses", json={"model": "m", "input": "probe"},
                       headers={"Authorization": f"Bearer {TEST_KEY}"}).json()
    assert set(probe) - set(ResponseResult.model_fields) >= {"created_at", "metadata"}
    assert {"annotations", "logprobs"} <= set(probe["output"][0]["content"][0]) - set(ContentPart.model_fields)
    _, state, manifest = run_batch_task("batch_unknown_fields", inputs=["with unknown fields"],
                                        output_path=str(tmp_path / "out"))
    assert state == "success"
    (row,) = read_results(manifest, by="index")
    assert row["output_text"] == reply_text("with unknown fields") and row["usage"]["total_tokens"] > 0


def test_a_refused_key_stops_the_batch(emulator, monkeypatch, tmp_path) -> None:
    for name, value in conn_env(emulator.base_url, key="sk-wrong-key").items():
        monkeypatch.setenv(name, value)
    _, state, _ = run_batch_task("batch_wrong_key", inputs=[f"doc {i}" for i in range(40)],
                                 output_path=str(tmp_path / "out"), max_concurrency=4)
    assert state == "failed"
    assert emulator.request_count() <= 4  # at most what was in flight when the first 401 came back
    rows = read_results(str(tmp_path / "out"), by="index")
    assert len(rows) == 40 and {row["status"] for row in rows} == {"failed"}
    assert {row["error"]["type"] for row in rows} == {"GradientAuthError"}
    assert all("gradient_default" in row["error"]["message"] for row in rows)


def test_missing_billing_stops_the_batch(gradient_conn, tmp_path) -> None:
    _, state, _ = run_batch_task("batch_no_billing", inputs=[f"[[fault:402]] doc {i}" for i in range(40)],
                                 output_path=str(tmp_path / "out"), max_concurrency=4)
    assert state == "failed"
    assert gradient_conn.request_count() <= 4
    rows = read_results(str(tmp_path / "out"), by="index")
    assert {row["error"]["type"] for row in rows} == {"GradientPaymentError"}
