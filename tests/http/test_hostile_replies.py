"""Hostile replies, from a server written in this test (``tests/support/hostile_server.py``), not the emulator.

Each odd reply fails its own item with a typed error and the batch goes on; a 200 cut half way
is never bought again; resets and closed connections are named for what they are; the attempt's
time limit ends a reply trickled a byte at a time; and a server echoing the key back gets it
nowhere (rows, XCom, the task log, the metadata database, exception text).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pendulum
import pytest

from airflow.sdk import DAG
from airflow_gradient import GradientHook, GradientResponseOperator, read_results
from airflow_gradient.batch.jobs.output import read_result_lines
from airflow_gradient.exceptions import GradientBadRequestError, GradientConnectionError, GradientProtocolError
from tests.conftest import conn_env, run_dag, task_states
from tests.support.hostile_server import RawRequest, hostile_server, http_bytes, reply_body, send_json
from tests.support.batch_task import run_batch_task

KEY = f"sk-do-hostile-{uuid.uuid4().hex}"
START = pendulum.datetime(2025, 1, 1, tz="UTC")
Writer = asyncio.StreamWriter
# Bytes of the body each trickled reply got out before the client hung up, by prompt.
TRICKLED: Counter[str] = Counter()


async def usage_list(request: RawRequest, writer: Writer) -> None:
    await send_json(writer, 200, reply_body(request.prompt, usage=[5, 7]))


async def usage_strings(request: RawRequest, writer: Writer) -> None:
    await send_json(writer, 200, reply_body(request.prompt, usage={"input_tokens": "5", "output_tokens": 7}))


async def not_http(request: RawRequest, writer: Writer) -> None:
    writer.write(b"SSH-2.0-OpenSSH_8.9\r\nProtocol mismatch.\r\n\r\n")
    await writer.drain()


async def lone_surrogate(request: RawRequest, writer: Writer) -> None:
    await send_json(writer, 200, reply_body(request.prompt, text="half a pair: \ud800 end"))


async def nested_arguments(request: RawRequest, writer: Writer) -> None:
    body = reply_body(request.prompt)
    body["output"].append({"type": "function_call", "call_id": "c1", "name": "f",
                           "arguments": "[" * 100_000 + "]" * 100_000})
    await send_json(writer, 200, body)


async def nested_body(request: RawRequest, writer: Writer) -> None:
    raw = json.dumps(reply_body(request.prompt)).encode()
    writer.write(http_bytes(200, raw[:-1] + b', "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"))
    await writer.drain()


async def cut_200(request: RawRequest, writer: Writer) -> None:
    body = json.dumps(reply_body(request.prompt)).encode()
    writer.write(http_bytes(200, body[: len(body) // 2], content_length=len(body)))
    await writer.drain()


async def reset(request: RawRequest, writer: Writer) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    writer.transport.abort()


async def closed(request: RawRequest, writer: Writer) -> None:
    writer.close()


async def trickle(request: RawRequest, writer: Writer) -> None:
    body = json.dumps(reply_body(request.prompt)).encode()
    writer.write(http_bytes(200, b"", content_length=len(body)))
    await writer.drain()
    for byte in body:  # ~15 s for the whole body; the client's limit is 1 s
        writer.write(bytes([byte]))
        await writer.drain()
        TRICKLED[request.prompt] += 1
        await asyncio.sleep(0.05)


async def echo_key_200(request: RawRequest, writer: Writer) -> None:
    await send_json(writer, 200, {"error": {"message": f"refused {request.headers['authorization']}"}},
                    extra_headers={"x-request-id": request.headers["authorization"]})


async def echo_key_400(request: RawRequest, writer: Writer) -> None:
    auth = request.headers["authorization"]
    await send_json(writer, 400, {"error": {"message": f"bad header {auth}", "param": auth, "code": auth[7:]}})


async def echo_key_text(request: RawRequest, writer: Writer) -> None:
    await send_json(writer, 200, reply_body(request.prompt, text=f"you sent {request.headers['authorization']}"))


# prompt: (behaviour, row status, error type, words of the message, requests the server saw)
ODD_REPLIES = {
    "usage-list": (usage_list, "failed", "GradientProtocolError", "Input should be a valid dictionary", 1),
    "usage-strings": (usage_strings, "failed", "GradientProtocolError", "valid integer at usage.input_tokens", 1),
    "not-http": (not_http, "failed", "GradientProtocolError", "did not answer in HTTP", 1),
    "nested-arguments": (nested_arguments, "failed", "GradientProtocolError", "nested too deeply", 1),
    "nested-body": (nested_body, "failed", "GradientProtocolError", "not valid JSON: maximum recursion", 1),
    "cut-200": (cut_200, "failed", "GradientProtocolError", "HTTP 200 reply broke off after", 1),
    "reset": (reset, "failed", "GradientConnectionError", "connection reset by the server", 2),
    "closed": (closed, "failed", "GradientConnectionError", "connection closed by the server", 2),
    "echo-key-200": (echo_key_200, "failed", "GradientProtocolError", "refused Bearer ***", 1),
    "echo-key-400": (echo_key_400, "failed", "GradientBadRequestError", "bad header Bearer *** code=*** param=Bearer ***", 1),
    "echo-key-text": (echo_key_text, "succeeded", None, None, 1),
    "lone-surrogate": (lone_surrogate, "succeeded", None, None, 1),
}


def _use(server, monkeypatch: pytest.MonkeyPatch, **extra) -> None:
    for name, value in conn_env(server.base_url, key=KEY, max_retry_wait=0.1, **extra).items():
        monkeypatch.setenv(name, value)


def _files_containing(root: Path, needle: bytes) -> list[str]:
    """Files under ``root`` holding ``needle``, searched by another process: opening and closing the
    live SQLite database from this one would drop SQLite's POSIX locks on it (they are per process),
    and a later connection could then delete the WAL file under the others, hiding what they write
    from every file search that follows."""
    found = subprocess.run(["grep", "-rlFa", "--", needle.decode(), str(root)], capture_output=True, text=True)
    assert found.returncode in (0, 1), found.stderr
    return found.stdout.split()


@pytest.mark.parametrize("with_output_path", [True, False], ids=["rows-to-storage", "rows-to-xcom"])
def test_odd_replies_fail_only_their_item(monkeypatch, tmp_path, airflow_db, capfd, with_output_path) -> None:
    good = [f"good {i}" for i in range(4)]
    with hostile_server({name: spec[0] for name, spec in ODD_REPLIES.items()}) as server:
        _use(server, monkeypatch)
        out = tmp_path / "out"
        inputs = [{"input": prompt, "custom_id": prompt} for prompt in [*good, *ODD_REPLIES]]
        _, state, manifest = run_batch_task(
            f"batch_hostile_{with_output_path}", inputs=inputs, output_path=str(out) if with_output_path else None,
            max_retries=1, max_failed_fraction=1.0, max_concurrency=4,
        )
        requests = dict(server.requests)
    assert state == "success"
    n_failed = sum(spec[1] == "failed" for spec in ODD_REPLIES.values())
    assert manifest["counts"] == {"succeeded": len(inputs) - n_failed, "failed": n_failed, "skipped": 0}
    rows = read_results(manifest)
    assert [rows[p]["output_text"] for p in good] == [f"ok: {p}" for p in good]
    for prompt, (_, status, kind, words, sent) in ODD_REPLIES.items():
        row = rows[prompt]
        assert row["status"] == status, (prompt, row["error"])
        assert requests[prompt] == row["attempts"] == sent, prompt
        if kind is not None:
            assert (row["error"]["type"], words in row["error"]["message"]) == (kind, True), (prompt, row["error"])
    # The lone surrogate became U+FFFD: the row is valid UTF-8 wherever it goes.
    assert rows["lone-surrogate"]["output_text"] == "half a pair: \ufffd end"
    assert rows["echo-key-text"]["output_text"] == "you sent Bearer ***"
    if with_output_path:
        for part in out.glob("part-*.jsonl"):
            assert all(json.loads(line.decode("utf-8")) for line in part.read_bytes().splitlines())
        assert _files_containing(out, KEY.encode()) == []
    assert KEY not in json.dumps(manifest)
    printed = capfd.readouterr()
    assert "Gradient request failed (connection reset by the server" in printed.out + printed.err  # the log
    assert KEY not in printed.out + printed.err
    assert any("airflow.db" in name for name in _files_containing(airflow_db, b"batch_hostile_"))  # reaches the DB
    assert _files_containing(airflow_db, KEY.encode()) == []


def _single_request_dag(dag_id: str, prompt: str, **kwargs) -> DAG:
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        GradientResponseOperator(task_id="ask", input=prompt, model="m", **kwargs)
    return dag


def test_the_single_operator_never_buys_a_cut_200_twice(monkeypatch, capfd) -> None:
    with hostile_server({"cut": cut_200}) as server:
        _use(server, monkeypatch)
        run = run_dag(_single_request_dag("single_cut_200", "cut", max_retries=2))
        assert server.requests["cut"] == 1
    assert task_states(run) == {"ask": "failed"}
    printed = capfd.readouterr()
    assert "GradientProtocolError: HTTP 200 reply broke off after" in printed.out + printed.err
    assert "is not sent again" in printed.out + printed.err


def test_a_key_echoed_in_a_400_reaches_no_log_or_database(monkeypatch, capfd, airflow_db) -> None:
    with hostile_server({"echo": echo_key_400}) as server:
        _use(server, monkeypatch)
        run = run_dag(_single_request_dag("single_echo_key", "echo", max_retries=0))
    assert task_states(run) == {"ask": "failed"}
    printed = capfd.readouterr()
    assert "bad header Bearer ***" in printed.out + printed.err
    assert KEY not in printed.out + printed.err
    assert _files_containing(airflow_db, KEY.encode()) == []


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
@pytest.mark.parametrize(("behaviour", "words"), [(reset, "connection reset by the server"),
                                                  (closed, "connection closed by the server")])
def test_resets_and_closed_connections_are_named_and_retried(monkeypatch, transport, behaviour, words) -> None:
    with hostile_server({"x": behaviour}) as server:
        _use(server, monkeypatch)
        hook = GradientHook(max_retries=1, async_transport=transport)

        async def ask() -> None:
            try:
                await hook.acreate_response({"input": "x", "model": "m"})
            finally:
                await hook.aclose()

        with pytest.raises(GradientConnectionError, match=words) as info:
            hook.create_response({"input": "x", "model": "m"}) if transport == "httpx" else asyncio.run(ask())
        assert server.requests["x"] == 2
    assert "Timeout" not in str(info.value)


def test_request_timeout_ends_a_trickled_reply_in_a_batch(monkeypatch, tmp_path) -> None:
    with hostile_server({"slow": trickle}) as server:
        _use(server, monkeypatch)
        _, state, manifest = run_batch_task("batch_trickle", inputs=[{"input": p, "custom_id": p} for p in ("slow", "fast")],
                                            request_timeout=1,
                                            max_failed_fraction=1.0, max_retries=2)
        requests = dict(server.requests)
    assert state == "success"
    rows = read_results(manifest)
    assert rows["fast"]["status"] == "succeeded"
    assert rows["slow"]["error"]["type"] == "GradientProtocolError"
    assert "not complete within the 1 s time limit" in rows["slow"]["error"]["message"]
    # Ended by the limit, not by the server: most of the body was never sent, and never asked again.
    assert TRICKLED["slow"] < len(json.dumps(reply_body("slow"))) // 2
    assert requests["slow"] == 1


def test_request_timeout_ends_a_trickled_reply_to_the_single_operator(monkeypatch, capfd) -> None:
    with hostile_server({"slow-single": trickle}) as server:
        _use(server, monkeypatch)
        run = run_dag(_single_request_dag("single_trickle", "slow-single", request_timeout=1, max_retries=2))
        assert server.requests["slow-single"] == 1
    assert task_states(run) == {"ask": "failed"}
    assert TRICKLED["slow-single"] < len(json.dumps(reply_body("slow-single"))) // 2
    printed = capfd.readouterr()
    assert "not complete within the 1 s time limit" in printed.out + printed.err


def test_every_malformed_reply_is_a_protocol_error_for_the_hook(monkeypatch) -> None:
    behaviours = {name: spec[0] for name, spec in ODD_REPLIES.items() if spec[2] == "GradientProtocolError"}
    with hostile_server(behaviours) as server:
        _use(server, monkeypatch)
        hook = GradientHook(max_retries=2)
        for prompt in behaviours:
            with pytest.raises(GradientProtocolError) as info:
                hook.create_response({"input": prompt, "model": "m"})
            assert KEY not in str(info.value)
            assert server.requests[prompt] == 1, prompt


def test_batch_job_result_lines_are_scrubbed_too(tmp_path) -> None:
    # The provider-side batch's result files hold what the server answered for each item.
    path = tmp_path / "output.jsonl"
    line = {"custom_id": "a", "response": {"status_code": 400, "body": {
        "error": {"message": f"bad header Bearer {KEY}", "param": KEY}}}}
    path.write_text(json.dumps(line) + "\n")
    ((custom_id, outcome),) = read_result_lines(path, lambda message: None, KEY)
    assert custom_id == "a" and isinstance(outcome, GradientBadRequestError)
    assert KEY not in str(outcome) and "bad header Bearer ***" in str(outcome)
