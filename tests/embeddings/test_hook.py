"""GradientHook.create_embeddings / acreate_embeddings against the emulator, the openai SDK against the
emulator (to keep it honest), and a hostile server written here from the wire description alone."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from airflow_gradient import GradientHook
from airflow_gradient.exceptions import (
    GradientBadRequestError,
    GradientProtocolError,
    GradientRequestInvalid,
)
from airflow_gradient.testing.emulator.embeddings import EmbeddingsLedger, vector
from tests.conftest import TEST_KEY, conn_env

TEXTS = ["red running shoes", "a blue kettle", "green tea, loose leaf"]


@pytest.fixture
def hook(gradient_conn, monkeypatch: pytest.MonkeyPatch) -> Iterator[GradientHook]:
    gradient_conn.configure(embedding_dimensions=16)
    hook = GradientHook()
    yield hook
    hook.close()


@pytest.mark.parametrize("encoding_format", ["base64", "float"])
def test_vectors_come_back_in_input_order(hook: GradientHook, gradient_conn, encoding_format: str) -> None:
    result = hook.create_embeddings(TEXTS, model="embed-model", encoding_format=encoding_format)
    assert result.vectors == [vector("embed-model", text, 16) for text in TEXTS]
    assert (result.model, result.dimensions, len(result)) == ("embed-model", 16, 3)
    assert result.usage.input_tokens == result.usage.total_tokens == 10
    (record,) = gradient_conn.log
    assert record.body == {"model": "embed-model", "input": TEXTS, "encoding_format": encoding_format}


def test_one_text_and_the_connection_model(hook: GradientHook, gradient_conn) -> None:
    result = hook.create_embeddings("just one", user="u-1")
    assert result.vectors == [vector("test-model", "just one", 16)]
    assert gradient_conn.log[0].body["user"] == "u-1"


async def test_async_twin_and_its_observer(hook: GradientHook, gradient_conn) -> None:
    seen: list[int] = []

    class Observer:
        async def before_send(self) -> None:
            seen.append(0)

        def on_reply(self, status: int, headers: object) -> None:
            seen.append(status)

    texts = [*TEXTS, "[[fault:500x1]] retried"]
    result = await hook.acreate_embeddings(texts, observer=Observer())
    await hook.aclose()
    assert len(result) == 4 and result.attempts == 2
    assert seen == [0, 500, 0, 200]


@pytest.mark.parametrize(
    ("input", "message"),
    [("", "must not be empty"), (["ok", 7], "must be a string"), (["x"] * 2049, "got 2049")],
)
def test_bad_input_is_refused_before_sending(hook: GradientHook, gradient_conn, input: object, message: str) -> None:
    with pytest.raises(GradientRequestInvalid, match=message):
        hook.create_embeddings(input)  # type: ignore[arg-type]
    assert gradient_conn.request_count(None) == 0


def test_a_text_over_the_context_is_the_servers_400(hook: GradientHook, gradient_conn) -> None:
    gradient_conn.configure(embedding_context_tokens=3)
    with pytest.raises(GradientBadRequestError, match=r"input\[1\] has 5 tokens") as caught:
        hook.create_embeddings(["short", "one two three four five"])
    assert caught.value.status == 400
    assert gradient_conn.request_count("/v1/embeddings") == 1  # not retried
    assert EmbeddingsLedger.of(gradient_conn.state).requests == 0


@pytest.mark.parametrize("encoding_format", ["base64", "float"])
def test_the_openai_sdk_reads_the_emulator(gradient_conn, encoding_format: str) -> None:
    gradient_conn.configure(embedding_dimensions=32)
    client = openai.OpenAI(base_url=gradient_conn.base_url, api_key=TEST_KEY, max_retries=0)
    reply = client.embeddings.create(model="embed-model", input=TEXTS, encoding_format=encoding_format)
    for item, text in zip(reply.data, TEXTS, strict=True):
        # Asked for base64 explicitly, the SDK hands the string over as it came.
        embedding = item.embedding if isinstance(item.embedding, list) else \
            list(struct.unpack("<32f", base64.b64decode(item.embedding)))
        assert embedding == pytest.approx(vector("embed-model", text, 32))
    assert [item.index for item in reply.data] == [0, 1, 2]
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == 10
    default = client.embeddings.create(model="embed-model", input="alone")  # the SDK asks base64, decodes it
    assert default.data[0].embedding == pytest.approx(vector("embed-model", "alone", 32))
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="embed-model", input=["fine", ""])


# -- a hostile server ------------------------------------------------------------------------------


def _b64(*numbers: float) -> str:
    return base64.b64encode(struct.pack(f"<{len(numbers)}f", *numbers)).decode()


HOSTILE: dict[str, Callable[[list[str]], tuple[int, str, bytes]]] = {
    # What each first text asks the server to do: status, content type, body.
    "missing": lambda texts: (200, "application/json", json.dumps(
        {"data": [{"index": 0, "embedding": [1.0]}], "model": "m"}).encode()),
    "twice": lambda texts: (200, "application/json", json.dumps(
        {"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]}).encode()),
    "ragged": lambda texts: (200, "application/json", json.dumps(
        {"data": [{"index": 0, "embedding": _b64(1, 2)}, {"index": 1, "embedding": [1.0]}]}).encode()),
    "html": lambda texts: (200, "text/html", b"<html>maintenance</html>"),
    "error-200": lambda texts: (200, "application/json", json.dumps({"error": {"message": "upstream"}}).encode()),
    "mixed": lambda texts: (200, "application/json", json.dumps(
        {"object": "list", "model": "m", "usage": {"prompt_tokens": 2, "total_tokens": 2},
         "data": [{"index": 1, "embedding": [0.5, 0.25]}, {"index": 0, "embedding": _b64(1.5, -2)}]}).encode()),
    "echo-key": lambda texts: (400, "application/json", json.dumps({"error": {"message": f"bad key {KEY}"}}).encode()),
}
KEY = "sk-hostile-secret-1234"


@contextmanager
def hostile_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            status, content_type, payload = HOSTILE[texts[0]](texts)
            if texts[0] == "echo-key":
                payload = payload.replace(KEY.encode(), self.headers["authorization"].split()[-1].encode())
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hostile_hook(monkeypatch: pytest.MonkeyPatch) -> Iterator[GradientHook]:
    with hostile_server() as base_url:
        for name, value in conn_env(base_url, KEY, max_retries=0).items():
            monkeypatch.setenv(name, value)
        hook = GradientHook()
        yield hook
        hook.close()


@pytest.mark.parametrize(
    ("first", "message"),
    [
        ("missing", "1 vectors for 2 inputs"),
        ("twice", "index 0 appears twice"),
        ("ragged", "different or zero lengths"),
        ("html", "not JSON"),
        ("error-200", "carried an error body"),
    ],
)
def test_mangled_replies_are_protocol_errors(hostile_hook: GradientHook, first: str, message: str) -> None:
    with pytest.raises(GradientProtocolError, match=message):
        hostile_hook.create_embeddings([first, "second"])


def test_a_reply_mixing_encodings_and_order_is_read(hostile_hook: GradientHook) -> None:
    result = asyncio.run(hostile_hook.acreate_embeddings(["mixed", "other"]))
    assert result.vectors == [[1.5, -2.0], [0.5, 0.25]]


def test_the_key_a_server_echoes_is_scrubbed(hostile_hook: GradientHook) -> None:
    with pytest.raises(GradientBadRequestError) as caught:
        hostile_hook.create_embeddings(["echo-key", "x"])
    assert KEY not in str(caught.value) and "bad key" in str(caught.value)
