"""The emulator over real sockets: httpx, the official openai SDK, our hook and the CLI."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from airflow_gradient.models.result import ResponseResult
from airflow_gradient.testing import GradientEmulator, gradient_emulator  # noqa: F401 - fixture
from airflow_gradient.testing.emulator import FAULT_NAMES, MODELS, count_tokens, reply_text
from airflow_gradient.testing.emulator.__main__ import build_parser
from airflow_gradient.testing.emulator.config import EmulatorConfig
from airflow_gradient.testing.emulator.ratelimit import SlidingWindow

MODEL = "test-model"
Frames = list[tuple[str | None, str]]


@pytest.fixture
def client(emulator: GradientEmulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {emulator.config.api_key}"}
    # Plain HTTP to loopback: verify=False only spares loading the CA bundle (20 ms a client).
    with httpx.Client(base_url=emulator.base_url, headers=headers, timeout=10, verify=False) as http:
        yield http


@pytest.fixture
def sdk(emulator: GradientEmulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=emulator.base_url, api_key=emulator.config.api_key, max_retries=0)


def post(client: httpx.Client, prompt: Any = "hello there", *, headers: dict[str, str] | None = None,
         timeout: float = 10, **body: Any) -> httpx.Response:
    return client.post("/responses", json={"model": MODEL, "input": prompt, **body}, headers=headers or {},
                       timeout=timeout)


def read_sse(text: str) -> Frames:
    """``(event, data)`` of each SSE frame; comments are skipped."""
    frames = []
    for block in text.split("\n\n"):
        lines = block.splitlines()
        data = [line[len("data: "):] for line in lines if line.startswith("data: ")]
        event = next((line[len("event: "):] for line in lines if line.startswith("event: ")), None)
        if data:
            frames.append((event, "\n".join(data)))
    return frames


def payloads(frames: Frames) -> list[dict[str, Any]]:
    return [json.loads(data) for _, data in frames if data != "[DONE]"]


def streamed_text(framing: str, frames: Frames) -> str:
    """The text a client of ``framing`` accumulates."""
    if framing == "typed":
        return "".join(p["delta"] for p in payloads(frames) if p["type"] == "response.output_text.delta")
    if framing == "chunk":
        return "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads(frames) if p["choices"])
    return ResponseResult.model_validate(payloads(frames)[-1]).output_text


# -- models, auth, validation -----------------------------------------------------------------


def test_models_list(client: httpx.Client) -> None:
    reply = client.get("/models")
    assert reply.status_code == 200
    body = reply.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == list(MODELS)
    assert {m["owned_by"] for m in body["data"]} == {"digitalocean"}


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", "Basic abc", "Bearer"])
def test_wrong_key_is_401(emulator: GradientEmulator, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for path in ("/models", "/responses"):
        reply = httpx.request("GET" if path == "/models" else "POST", emulator.base_url + path, headers=headers,
                              json={"model": MODEL, "input": "hi"})
        assert (reply.status_code, reply.json()) == (401, {"error": "Unauthorized"})
    assert [r.status for r in emulator.log] == [401, 401]
    assert all("authorization" not in r.headers for r in emulator.log)


def test_any_key_accepted_without_api_key(gradient_emulator: GradientEmulator) -> None:
    reply = httpx.post(gradient_emulator.base_url + "/responses", json={"model": MODEL, "input": "hi"},
                       headers={"Authorization": "Bearer anything"})
    assert reply.status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "input": "hi", "temperature": 5}, "temperature"),
        ({"input": "hi"}, "model"),
        ({"model": MODEL, "input": "hi", "bogus": 1}, "bogus"),
        ({"model": MODEL, "input": []}, "input"),
        ({"model": MODEL, "input": "hi", "stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_invalid_request_is_400(client: httpx.Client, body: dict[str, Any], param: str) -> None:
    reply = client.post("/responses", json=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error.keys() == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param in error["message"]
    assert "x-ratelimit-remaining-requests" in reply.headers


def test_body_that_is_not_json_is_400(client: httpx.Client) -> None:
    reply = client.post("/responses", content=b"{nope", headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"


# -- faults -----------------------------------------------------------------------------------


def _not_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


STATUS_FAULTS: dict[str, tuple[int, Callable[[httpx.Response], bool]]] = {
    "429": (429, lambda r: r.headers["retry-after"] == "1" and r.json()["id"] == "too_many_requests"),
    "429-reset": (429, lambda r: "retry-after" not in r.headers
                  and r.headers["x-ratelimit-remaining-requests"] == "0"
                  and 0 < float(r.headers["x-ratelimit-reset-requests"]) - time.time() <= 1.5),
    "429-isolated": (429, lambda r: r.headers["retry-after"] == "1"
                     and r.headers["x-ratelimit-remaining-requests"] != "0"),
    "429-isolated-bare": (429, lambda r: "retry-after" not in r.headers
                          and r.headers["x-ratelimit-remaining-requests"] != "0"),
    "500": (500, lambda r: r.json()["error"]["type"] == "server_error"),
    "503": (503, lambda r: r.json()["id"] == "service_unavailable" and r.json()["request_id"]),
    "502-html": (502, lambda r: r.headers["content-type"].startswith("text/html") and "502 Bad Gateway" in r.text),
    "malformed": (200, lambda r: _not_json(r.text)),
    "error-200": (200, lambda r: "output" not in r.json() and r.json()["error"]["message"]),
    "missing-fields": (200, lambda r: r.json()["object"] == "response" and not {"output", "choices"} & r.json().keys()),
    "wrong-content-type": (200, lambda r: r.headers["content-type"].startswith("text/plain")
                           and json.loads(r.text)["output"]),
    "401": (401, lambda r: r.json()["id"] == "unauthorized"),
    "402": (402, lambda r: r.json()["id"] == "payment_required"),
    "404": (404, lambda r: r.json()["error"]["code"] == "model_not_found"),
}


def test_every_fault_is_tested() -> None:
    assert set(STATUS_FAULTS) | {"drop", "hang"} == set(FAULT_NAMES)


def _fault_request(form: str, name: str, prompt: str = "hi") -> dict[str, Any]:
    """Keyword arguments of :func:`post` asking for fault ``name`` by header or by directive."""
    if form == "header":
        return {"prompt": prompt, "headers": {"x-emulator-fault": name}}
    return {"prompt": f"{prompt} [[fault:{name}]]"}


@pytest.mark.parametrize("form", ["header", "directive"])
@pytest.mark.parametrize("name", sorted(STATUS_FAULTS))
def test_fault(emulator: GradientEmulator, client: httpx.Client, name: str, form: str) -> None:
    status, check = STATUS_FAULTS[name]
    reply = post(client, **_fault_request(form, name))
    assert reply.status_code == status
    assert check(reply)
    assert reply.headers["x-ratelimit-limit-requests"]
    [record] = emulator.log
    assert (record.status, record.fault, record.generated) == (status, name, False)
    assert emulator.generated_counts() == {}


@pytest.mark.parametrize("form", ["header", "directive"])
def test_drop_closes_the_connection_mid_reply(emulator: GradientEmulator, client: httpx.Client, form: str) -> None:
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        post(client, **_fault_request(form, "drop"))
    assert [(r.status, r.fault) for r in emulator.log] == [(0, "drop")]


def test_hang_until_the_client_gives_up(emulator: GradientEmulator, client: httpx.Client) -> None:
    with pytest.raises(httpx.ReadTimeout):
        post(client, **_fault_request("header", "hang"), timeout=0.3)
    assert [(r.status, r.fault) for r in emulator.log] == [(0, "hang")]


def test_hang_ends_in_a_drop_after_hang_seconds(emulator: GradientEmulator, client: httpx.Client) -> None:
    emulator.configure(hang_seconds=0.2)
    started = time.monotonic()
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        post(client, **_fault_request("directive", "hang"))
    assert 0.2 <= time.monotonic() - started < 2


def test_stopping_ends_a_hang_at_once() -> None:
    errors: list[BaseException] = []

    def hang(url: str) -> None:
        try:
            httpx.post(url, json={"model": MODEL, "input": "hi"}, timeout=20,
                       headers={"Authorization": "Bearer k", "x-emulator-fault": "hang"})
        except httpx.HTTPError as exc:
            errors.append(exc)

    emulator = GradientEmulator(hang_seconds=30).start()
    sender = threading.Thread(target=hang, args=(emulator.base_url + "/responses",))
    sender.start()
    assert emulator.wait_for_requests(1)
    started = time.monotonic()
    emulator.stop()
    sender.join(timeout=5)
    assert time.monotonic() - started < 3
    assert len(errors) == 1 and isinstance(errors[0], (httpx.RemoteProtocolError, httpx.ReadError))


@pytest.mark.parametrize("form", ["header", "directive"])
def test_fault_times_counts_per_prompt(emulator: GradientEmulator, client: httpx.Client, form: str) -> None:
    request = _fault_request(form, "500x2", prompt="count me")
    assert [post(client, **request).status_code for _ in range(4)] == [500, 500, 200, 200]
    assert post(client, "another prompt").status_code == 200
    key = request["prompt"]
    assert emulator.generated_counts() == {key: 2, "another prompt": 1}
    emulator.reset()
    assert post(client, **request).status_code == 500


def test_unknown_fault_is_400(client: httpx.Client) -> None:
    reply = post(client, headers={"x-emulator-fault": "teapot"})
    assert reply.status_code == 400
    assert "teapot" in reply.json()["error"]["message"]


def test_random_faults_follow_the_seed(emulator: GradientEmulator, client: httpx.Client) -> None:
    emulator.configure(rate_500=0.3, rate_503=0.3, seed=7)
    first = [post(client, f"p{i}").status_code for i in range(30)]
    emulator.reset()
    again = [post(client, f"p{i}").status_code for i in range(30)]
    assert first == again
    assert {200, 500, 503} <= set(first)
    assert sum(emulator.generated_counts().values()) == first.count(200)


@pytest.mark.parametrize(
    ("field", "status"), [("rate_429", 429), ("rate_429_reset_only", 429), ("rate_503", 503), ("rate_malformed", 200)]
)
def test_certain_random_fault(emulator: GradientEmulator, client: httpx.Client, field: str, status: int) -> None:
    emulator.configure(**{field: 1.0})
    reply = post(client)
    assert reply.status_code == status
    assert emulator.log[0].fault is not None and not emulator.log[0].generated


def test_random_drop_and_hang(emulator: GradientEmulator, client: httpx.Client) -> None:
    emulator.configure(rate_drop=1.0)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        post(client)
    emulator.configure(rate_drop=0.0, rate_hang=1.0)
    with pytest.raises(httpx.ReadTimeout):
        post(client, timeout=0.2)
    assert [r.fault for r in emulator.log] == ["drop", "hang"]


def test_fault_fractions_cannot_exceed_one(emulator: GradientEmulator) -> None:
    with pytest.raises(ValueError, match="more than 1"):
        emulator.configure(rate_500=0.6, rate_503=0.6)


@pytest.mark.parametrize("name", ["malformed", "error-200"])
def test_stream_faults_arrive_as_frames(client: httpx.Client, name: str) -> None:
    reply = post(client, headers={"x-emulator-fault": name}, stream=True)
    assert reply.headers["content-type"].startswith("text/event-stream")
    [(event, data)] = read_sse(reply.text)
    if name == "malformed":
        assert _not_json(data)
    else:
        assert (event, json.loads(data)["type"]) == ("error", "error")


# -- enforced rate limits ---------------------------------------------------------------------


@pytest.mark.parametrize("retry_after", [True, False])
def test_request_limit(emulator: GradientEmulator, client: httpx.Client, retry_after: bool) -> None:
    emulator.configure(rpm_limit=2, limit_retry_after=retry_after)
    first_at = time.time()
    ok = [post(client, f"p{i}") for i in range(2)]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in ok] == ["1", "0"]
    limited = post(client, "p3")
    assert limited.status_code == 429
    assert limited.json()["id"] == "too_many_requests" and limited.json()["request_id"]
    assert limited.headers["x-ratelimit-limit-requests"] == "2"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert abs(float(limited.headers["x-ratelimit-reset-requests"]) - (first_at + 60)) < 2
    if retry_after:
        assert 58 <= int(limited.headers["retry-after"]) <= 60
    else:
        assert "retry-after" not in limited.headers
    assert emulator.log[-1].fault == "rate_limit"


def test_token_limit(emulator: GradientEmulator, client: httpx.Client) -> None:
    emulator.configure(tpm_limit=20)
    # cost = 3 input words + max_output_tokens
    first = post(client, "a b c", max_output_tokens=8)
    assert (first.status_code, first.headers["x-ratelimit-remaining-tokens"]) == (200, "9")
    assert first.headers["x-ratelimit-remaining-tokens-per-minute"] == "9"
    assert post(client, "a b c", max_output_tokens=8).status_code == 429
    assert post(client, "a b c", max_output_tokens=6).status_code == 200
    too_big = post(client, "a b c", max_output_tokens=30)
    assert (too_big.status_code, too_big.headers["retry-after"]) == (429, "60")


def test_sliding_window_frees_slots_as_entries_age() -> None:
    window = SlidingWindow()
    assert window.admit(5, now=1000.0, rpm=2, tpm=None).admitted
    assert window.admit(5, now=1030.0, rpm=2, tpm=None).admitted
    refused = window.admit(5, now=1059.5, rpm=2, tpm=None)
    assert (refused.admitted, refused.retry_after, refused.retry_after_header) == (False, 0.5, "1")
    assert window.headers(1059.5, rpm=2, tpm=None)["x-ratelimit-reset-requests"] == "1060.000"
    assert window.admit(5, now=1060.0, rpm=2, tpm=None).admitted
    assert window.admit(1, now=1061.0, rpm=None, tpm=10).retry_after == 29.0
    # The running token total follows entries out of the window (1030 left, 1060 stays).
    assert window.headers(1091.0, rpm=None, tpm=100)["x-ratelimit-remaining-tokens"] == "95"


# -- streaming --------------------------------------------------------------------------------


def _framing_request(how: str, framing: str, emulator: GradientEmulator, prompt: str) -> dict[str, Any]:
    if how == "config":
        emulator.configure(stream_framing=framing)
        return {"prompt": prompt}
    if how == "header":
        return {"prompt": prompt, "headers": {"x-emulator-framing": framing}}
    return {"prompt": f"{prompt} [[framing:{framing}]]"}


def _assert_terminal(framing: str, frames: Frames) -> None:
    last = payloads(frames)[-1]
    if framing == "typed":
        assert frames[-1][0] == "response.completed"
        assert last["response"]["usage"]["output_tokens"] > 0
        assert [p["sequence_number"] for p in payloads(frames)] == list(range(len(frames)))
        return
    assert frames[-1][1] == "[DONE]"
    if framing == "chunk":
        assert payloads(frames)[-1]["choices"][0]["finish_reason"] == "stop"
    else:
        assert last["status"] == "completed" and last["usage"]["total_tokens"] > 0
        assert {p["status"] for p in payloads(frames)[:-1]} == {"in_progress"}


@pytest.mark.parametrize("how", ["config", "header", "directive"])
@pytest.mark.parametrize("framing", ["typed", "chunk", "snapshot"])
def test_stream_framings(emulator: GradientEmulator, client: httpx.Client, framing: str, how: str) -> None:
    request = _framing_request(how, framing, emulator, "tell me a long story")
    reply = post(client, **request, stream=True)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.text.startswith(": keep-alive\n\n")
    frames = read_sse(reply.text)
    assert streamed_text(framing, frames) == reply_text(request["prompt"])
    _assert_terminal(framing, frames)
    assert emulator.generated_counts() == {request["prompt"]: 1}


def test_chunk_stream_usage_chunk(emulator: GradientEmulator, client: httpx.Client) -> None:
    emulator.configure(stream_framing="chunk")
    frames = read_sse(post(client, "a b", stream=True, stream_options={"include_usage": True}).text)
    usage_chunk = payloads(frames)[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["input_tokens"] == 2
    assert {p["usage"] for p in payloads(frames)[:-1]} == {None}
    assert {p["object"] for p in payloads(frames)} == {"response.chunk"}


@pytest.mark.parametrize("framing", ["typed", "chunk", "snapshot"])
def test_cut_stream(emulator: GradientEmulator, client: httpx.Client, framing: str) -> None:
    emulator.configure(stream_framing=framing, stream_cut_after=3)
    frames = read_sse(post(client, "one two three four five six", stream=True).text)
    assert len(frames) == 3
    assert "[DONE]" not in [data for _, data in frames]
    assert "response.completed" not in [event for event, _ in frames]
    [record] = emulator.log
    assert (record.status, record.fault, record.generated) == (200, "stream-cut", False)


@pytest.mark.parametrize(("framing", "is_error"), [
    ("typed", lambda event, p: event == "error" and p["type"] == "error" and p["sequence_number"] == 2),
    ("chunk", lambda event, p: p["error"]["type"] == "server_error"),
    ("snapshot", lambda event, p: p["error"]["message"]),
])
def test_error_stream(emulator: GradientEmulator, client: httpx.Client, framing: str,
                      is_error: Callable[[str | None, dict[str, Any]], bool]) -> None:
    emulator.configure(stream_framing=framing, stream_error_after=2)
    frames = read_sse(post(client, "one two three four five six", stream=True).text)
    assert len(frames) == 3
    event, data = frames[-1]
    assert is_error(event, json.loads(data))
    assert emulator.log[0].fault == "stream-error"


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "hot": {"type": "boolean"},
                       "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}, "ratio": {"type": "number"}},
        "required": ["city"],
    },
}
SEARCH = {"type": "function", "name": "search",
          "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}


# -- the official openai SDK ------------------------------------------------------------------


def test_openai_sdk_reads_the_plain_reply(sdk: openai.OpenAI) -> None:
    reply = sdk.responses.create(model=MODEL, input="what is an emulator")
    assert reply.output_text == reply_text("what is an emulator")
    assert reply.status == "completed"
    assert reply.usage is not None and reply.usage.input_tokens == 4


def test_openai_sdk_accumulates_the_typed_stream(sdk: openai.OpenAI) -> None:
    plain = sdk.responses.create(model=MODEL, input="stream this please")
    with sdk.responses.stream(model=MODEL, input="stream this please") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.output_text == plain.output_text == "".join(deltas) == reply_text("stream this please")
    assert final.usage is not None and plain.usage is not None
    assert final.usage.output_tokens == plain.usage.output_tokens


def test_openai_sdk_streams_reasoning_and_tool_calls(sdk: openai.OpenAI) -> None:
    tools = [{**SEARCH, "name": "lookup"}]
    plain = sdk.responses.create(model=MODEL, input="find it", tools=tools, reasoning={"effort": "low"})
    with sdk.responses.stream(model=MODEL, input="find it", tools=tools, reasoning={"effort": "low"}) as stream:
        final = stream.get_final_response()
    assert [item.type for item in final.output] == ["reasoning", "function_call"]
    call = final.output[1]
    assert (call.name, json.loads(call.arguments)) == ("lookup", {"q": "find it"})
    assert call.arguments == plain.output[1].arguments


def test_openai_sdk_sees_a_cut_stream_fail(emulator: GradientEmulator, sdk: openai.OpenAI) -> None:
    emulator.configure(stream_cut_after=5)
    with sdk.responses.stream(model=MODEL, input="a b c d e f") as stream:
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()


def test_openai_sdk_sees_the_error_event(emulator: GradientEmulator, sdk: openai.OpenAI) -> None:
    emulator.configure(stream_error_after=4)
    with sdk.responses.stream(model=MODEL, input="a b c d e f") as stream:
        events = list(stream)
    assert events[-1].type == "error"


# -- reply content ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["output", "choices", "both"])
def test_reply_shapes(emulator: GradientEmulator, client: httpx.Client, shape: str) -> None:
    emulator.configure(reply_shape=shape)
    body = post(client, "shape me").json()
    assert ResponseResult.model_validate(body).output_text == reply_text("shape me")
    assert bool(body["output"]) == (shape != "choices")
    if shape != "output":
        assert body["choices"][0]["message"] == {"role": "assistant", "content": reply_text("shape me")}
        assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("gradient_emulator", [{"reply_shape": "choices"}], indirect=True)
def test_fixture_takes_config(gradient_emulator: GradientEmulator) -> None:
    assert gradient_emulator.config.reply_shape == "choices"


def test_tool_call_then_answer(client: httpx.Client) -> None:
    body = post(client, "weather in Oslo", tools=[WEATHER, SEARCH]).json()
    [call] = body["output"]
    assert (call["type"], call["name"]) == ("function_call", "get_weather")
    assert call["call_id"].startswith("call_")
    assert json.loads(call["arguments"]) == {"city": "weather in Oslo", "days": 1, "hot": True, "unit": "celsius",
                                             "ratio": 1}
    assert ResponseResult.model_validate(body).finish_reason == "tool_calls"
    follow_up = [
        {"role": "user", "content": "weather in Oslo"},
        {k: call[k] for k in ("type", "call_id", "name", "arguments")},
        {"type": "function_call_output", "call_id": call["call_id"], "output": '{"temp": 21}'},
    ]
    answer = post(client, follow_up, tools=[WEATHER, SEARCH]).json()
    assert ResponseResult.model_validate(answer).output_text == 'Answer: {"temp": 21}'


def test_tool_choice_and_forced_arguments(client: httpx.Client) -> None:
    choice = {"type": "function", "function": {"name": "search"}}
    forced = post(client, "hi", tools=[WEATHER, SEARCH], tool_choice=choice)
    assert forced.json()["output"][0]["name"] == "search"
    assert post(client, "hi", tools=[WEATHER], tool_choice="none").json()["output"][0]["type"] == "message"
    raw = post(client, "hi [[tool_args:{not json]]", tools=[WEATHER]).json()["output"][0]["arguments"]
    assert raw == "{not json"


def test_tool_calls_in_choices(emulator: GradientEmulator, client: httpx.Client) -> None:
    emulator.configure(reply_shape="choices")
    choice = post(client, "hi", tools=[SEARCH]).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {"name": "search", "arguments": '{"q": "hi"}'}


SCHEMA = {
    "name": "report",
    "schema": {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "score": {"type": "number"},
            "count": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "author": {"$ref": "#/$defs/Author"},
            "kind": {"enum": ["a", "b"]},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["title", "score", "count", "tags", "author", "kind", "note"],
        "$defs": {"Author": {"type": "object", "properties": {"name": {"type": "string"}, "ok": {"type": "boolean"}}}},
    },
}


def test_structured_output(client: httpx.Client) -> None:
    prompt = "summarise the quarterly report for the board in detail please"
    text = ResponseResult.model_validate(
        post(client, prompt, response_format={"type": "json_schema", "json_schema": SCHEMA}).json()
    ).output_text
    short = prompt[:40]
    assert json.loads(text) == {"title": short, "score": 1.0, "count": 1, "tags": [short],
                                "author": {"name": short, "ok": True}, "kind": "a", "note": short}
    echo = post(client, "hi", response_format={"type": "json_object"}).json()
    assert json.loads(ResponseResult.model_validate(echo).output_text) == {"echo": "hi"}
    bad = post(client, "hi [[json:bad]]", response_format={"type": "json_object"}).json()
    assert _not_json(ResponseResult.model_validate(bad).output_text)


def test_usage_counts_and_cache(client: httpx.Client) -> None:
    first = post(client, "count these four words", instructions="be brief").json()["usage"]
    assert first == {
        "input_tokens": 6, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0, "tool_output_tokens": 0}, "total_tokens": 11,
    }
    again = post(client, "count these four words", instructions="be brief").json()["usage"]
    assert again["input_tokens_details"]["cached_tokens"] == 3


def test_reasoning_tokens(client: httpx.Client) -> None:
    result = ResponseResult.model_validate(post(client, "think hard", reasoning={"effort": "high"}).json())
    assert result.reasoning_text == "Thinking about: think hard"
    assert result.usage is not None and result.usage.reasoning_tokens == count_tokens("Thinking about: think hard")
    assert result.usage.output_tokens == count_tokens(reply_text("think hard")) + 4


def test_max_output_tokens_cuts_the_reply(client: httpx.Client) -> None:
    body = post(client, "one two three four five", max_output_tokens=3).json()
    result = ResponseResult.model_validate(body)
    assert result.output_text == reply_text("one two three four five", 3) == "Echo: one two"
    assert (body["status"], body["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    assert result.finish_reason == "length"


def test_prompt_key_of_item_input(emulator: GradientEmulator, client: httpx.Client) -> None:
    items = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "input_text", "text": "second"}, {"type": "input_text", "text": "part"}]},
    ]
    body = post(client, items).json()
    assert ResponseResult.model_validate(body).output_text == reply_text("second\npart")
    assert emulator.log[0].prompt_key == "second\npart"


# -- log, control routes, helpers -------------------------------------------------------------


def test_request_log_and_counts(emulator: GradientEmulator, client: httpx.Client) -> None:
    post(client, "a")
    post(client, "a")
    post(client, "b", headers={"x-emulator-fault": "500"})
    client.get("/models")
    assert emulator.request_count() == 3
    assert emulator.request_count("/v1/models") == 1
    assert emulator.request_count(None) == 4
    assert emulator.generated_counts() == {"a": 2}
    record = emulator.log[0]
    assert (record.method, record.path, record.status, record.body) == ("POST", "/v1/responses", 200,
                                                                        {"model": MODEL, "input": "a"})
    assert record.t <= emulator.log[1].t
    assert "authorization" not in record.headers and record.headers["content-type"] == "application/json"


def test_log_is_safe_under_concurrent_requests(emulator: GradientEmulator, client: httpx.Client) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(post, client, f"p{i % 5}") for i in range(40)]
        while not all(future.done() for future in futures):
            assert len(emulator.log) <= 40  # read while uvicorn's thread writes
        assert {future.result().status_code for future in futures} == {200}
    assert emulator.generated_counts() == {f"p{i}": 8 for i in range(5)}


def test_control_routes(emulator: GradientEmulator, client: httpx.Client) -> None:
    root = emulator.url + "/_emulator"
    post(client, "x")
    [entry] = httpx.get(root + "/log").json()
    assert entry["path"] == "/v1/responses"
    assert (entry["status"], entry["prompt_key"], entry["generated"]) == (200, "x", True)
    assert httpx.get(root + "/generated_counts").json() == {"x": 1}
    changed = httpx.post(root + "/config", json={"reply_shape": "both", "rate_500": 0.0}).json()
    assert changed["reply_shape"] == emulator.config.reply_shape == "both"
    assert httpx.get(root + "/config").json()["reply_shape"] == "both"
    refused = httpx.post(root + "/config", json={"rate_500": 3})
    assert refused.status_code == 400 and "rate_500" in refused.json()["error"]["message"]
    assert httpx.post(root + "/config", json={"no_such_field": 1}).status_code == 400
    assert httpx.post(root + "/reset").status_code == 200
    assert httpx.get(root + "/log").json() == [] and emulator.request_count() == 0


def test_latency(emulator: GradientEmulator, client: httpx.Client) -> None:
    emulator.configure(latency=0.2, stream_delay=0.01)
    started = time.monotonic()
    post(client, "slow one", stream=True)
    assert time.monotonic() - started >= 0.2


def test_hook_uses_connection_env(emulator: GradientEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_gradient.hooks.gradient import GradientHook

    for name, value in emulator.connection_env(conn_id="emu", max_retries=0).items():
        monkeypatch.setenv(name, value)
    result = GradientHook("emu").create_response({"input": "via the hook"})
    assert result.output_text == reply_text("via the hook")
    assert emulator.log[0].body["model"] == "test-model"


# -- CLI --------------------------------------------------------------------------------------


def test_cli_flags_map_to_config() -> None:
    options = vars(build_parser().parse_args(
        ["--port", "0", "--rate-500", "0.25", "--no-limit-retry-after", "--stream-framing", "chunk", "--rpm-limit", "9"]
    ))
    assert options.pop("port") == 0 and options.pop("host") == "127.0.0.1"
    config = EmulatorConfig(**options)
    assert (config.rate_500, config.limit_retry_after) == (0.25, False)
    assert (config.stream_framing, config.rpm_limit) == ("chunk", 9)


def test_cli_serves_until_terminated(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "airflow_gradient.testing.emulator",
               "--port", str(port), "--api-key", "cli-key", "--rpm-limit", "7"]
    with (tmp_path / "stderr.txt").open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        # The base URL is printed once the server accepts connections.
        assert process.stdout is not None
        assert f"http://127.0.0.1:{port}/v1" in process.stdout.readline(), (tmp_path / "stderr.txt").read_text()
        headers = {"Authorization": "Bearer cli-key"}
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", headers=headers).status_code == 200
        body = {"model": MODEL, "input": "hi"}
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/responses", headers=headers, json=body)
        assert reply.headers["x-ratelimit-limit-requests"] == "7"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


# -- what the pacing tests need: no quota headers, isolated 429s, limits that change -------------


def test_no_quota_headers_on_any_reply(emulator: GradientEmulator, client: httpx.Client) -> None:
    emulator.configure(quota_headers=False, rpm_limit=1)
    ok, limited = post(client, "a"), post(client, "b")
    assert (ok.status_code, limited.status_code) == (200, 429)
    assert limited.headers["retry-after"]
    for name in ("429", "429-reset", "429-isolated", "500"):
        reply = post(client, headers={"x-emulator-fault": name})
        assert not [h for h in reply.headers if h.startswith("x-ratelimit-")], name
    assert not [h for r in (ok, limited) for h in r.headers if h.startswith("x-ratelimit-")]


@pytest.mark.parametrize(("field", "retry_after"), [("rate_429_isolated", True), ("rate_429_isolated_bare", False)])
def test_isolated_429_shows_quota_left(emulator: GradientEmulator, client: httpx.Client, field: str,
                                       retry_after: bool) -> None:
    emulator.configure(**{field: 1.0}, rpm_limit=100, fault_retry_after=2)
    reply = post(client)
    assert reply.status_code == 429 and reply.json()["id"] == "too_many_requests"
    assert int(reply.headers["x-ratelimit-remaining-requests"]) > 90
    assert reply.headers.get("retry-after") == ("2" if retry_after else None)
    assert emulator.log[0].fault == field.replace("rate_", "").replace("_", "-")


def test_isolated_429s_at_a_chosen_rate(emulator: GradientEmulator, client: httpx.Client) -> None:
    emulator.configure(rate_429_isolated_bare=0.2, seed=3)
    statuses = [post(client, f"p{i}").status_code for i in range(100)]
    assert 10 <= statuses.count(429) <= 30


def test_limit_changes_while_running(emulator: GradientEmulator, client: httpx.Client) -> None:
    emulator.configure(rpm_limit=1)
    assert [post(client, f"p{i}").status_code for i in range(2)] == [200, 429]
    config = httpx.post(f"{emulator.url}/_emulator/config", json={"rpm_limit": 3}).json()
    assert config["rpm_limit"] == 3
    assert [post(client, f"q{i}").status_code for i in range(3)] == [200, 200, 429]


def test_short_window_enforces_a_per_second_rate() -> None:
    window = SlidingWindow()
    verdicts = [window.admit(1, now=100.0 + i * 0.1, rpm=300, tpm=None, window=1.0) for i in range(7)]
    assert [v.admitted for v in verdicts] == [True] * 5 + [False] * 2
    assert verdicts[5].retry_after == pytest.approx(0.5)
    assert window.admit(1, now=101.0, rpm=300, tpm=None, window=1.0).admitted
    assert window.headers(101.0, rpm=300, tpm=None, window=1.0)["x-ratelimit-remaining-requests"] == "0"


def test_cli_flags_for_pacing_modes() -> None:
    options = vars(build_parser().parse_args(
        ["--no-quota-headers", "--limit-window", "1", "--rate-429-isolated", "0.05", "--rate-429-isolated-bare", "0.05"]
    ))
    options.pop("port"), options.pop("host")
    config = EmulatorConfig(**options)
    assert (config.quota_headers, config.limit_window) == (False, 1.0)
    assert (config.rate_429_isolated, config.rate_429_isolated_bare) == (0.05, 0.05)
