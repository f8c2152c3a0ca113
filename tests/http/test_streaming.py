"""Streaming: the SSE parser on literal frames, then the hook streaming from the emulator."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pendulum
import pytest
from httpx_sse import EventSource
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow.sdk import DAG
from airflow_gradient import GradientHook, GradientResponseOperator
from airflow_gradient.exceptions import GradientProtocolError
from airflow_gradient.models.events import StreamEvent
from airflow_gradient.models.result import ResponseResult
from airflow_gradient.http.streams import StreamDecoder, collect
from airflow_gradient.testing.emulator.generate import reply_text
from tests.conftest import TEST_KEY, run_dag, xcom_value
from tests.support.replies import same_reply

# -- the parser, on bytes as a server would send them ------------------------------------------


def sse(*frames: dict[str, Any] | str, event_names: bool = False) -> bytes:
    """SSE bytes: each frame a ``data:`` line (``event:`` too for typed frames when asked)."""
    out = []
    for frame in frames:
        data = frame if isinstance(frame, str) else json.dumps(frame)
        name = frame.get("type") if isinstance(frame, dict) and event_names else None
        out.append((f"event: {name}\n" if name else "") + f"data: {data}\n\n")
    return "".join(out).encode()


def decode(raw: bytes, cuts: list[int] = ()) -> tuple[list[StreamEvent], ResponseResult]:
    """Feed ``raw`` (split at ``cuts``, as TCP might) through httpx-sse and the decoder."""
    bounds = [0, *sorted(cuts), len(raw)]
    chunks = [raw[a:b] for a, b in zip(bounds, bounds[1:])]
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=iter(chunks))
    decoder = StreamDecoder()
    events = [event for frame in EventSource(response).iter_sse() for event in decoder.feed(frame.event, frame.data)]
    return events, decoder.finish()


def texts(events: list[StreamEvent], kind: str) -> list[str]:
    return [event.text for event in events if event.kind == kind]


USAGE = {"input_tokens": 9, "output_tokens": 12, "total_tokens": 21,
         "input_tokens_details": {"cached_tokens": 4}, "output_tokens_details": {"reasoning_tokens": 3}}
MESSAGE = {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
           "content": [{"type": "output_text", "text": "Hello there"}]}
REASONING = {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Hmm."}]}
CALL = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "lookup", "arguments": '{"q": "x"}'}
RESPONSE = {"id": "resp_1", "object": "response", "created_at": 1, "model": "m", "status": "completed",
            "output": [REASONING, MESSAGE, CALL], "usage": USAGE}

TYPED = [
    {"type": "response.created", "sequence_number": 0, "response": {**RESPONSE, "status": "in_progress", "output": []}},
    {"type": "response.reasoning_text.delta", "sequence_number": 1, "item_id": "rs_1", "delta": "Hmm."},
    {"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_1", "delta": "Hello"},
    {"type": "response.output_text.delta", "sequence_number": 3, "item_id": "msg_1", "delta": " there"},
    {"type": "response.output_item.added", "sequence_number": 4, "output_index": 2,
     "item": {**CALL, "arguments": "", "status": "in_progress"}},
    {"type": "response.function_call_arguments.delta", "sequence_number": 5, "item_id": "fc_1", "delta": '{"q": '},
    {"type": "response.function_call_arguments.delta", "sequence_number": 6, "item_id": "fc_1", "delta": '"x"}'},
    {"type": "response.completed", "sequence_number": 7, "response": RESPONSE},
]


def chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "resp_1", "object": "response.chunk", "created": 1, "model": "m", "choices": choices, "usage": usage}


CHUNKS = [
    chunk({"role": "assistant", "reasoning_content": "Hmm."}),
    chunk({"content": "Hello"}),
    chunk({"content": " there"}),
    chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                           "function": {"name": "lookup", "arguments": '{"q": '}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"x"}'}}]}, finish="tool_calls"),
    chunk(None, usage=USAGE),
    "[DONE]",
]


def snapshot(text: str, status: str, **extra: Any) -> dict[str, Any]:
    message = {**MESSAGE, "content": [{"type": "output_text", "text": text}] if text else []}
    return {**RESPONSE, "status": status, "output": [REASONING, message], **extra}


SNAPSHOTS = [snapshot("", "in_progress"), snapshot("Hello", "in_progress"),
             snapshot("Hello there", "completed", usage=USAGE), "[DONE]"]


def assert_same_reply(result: ResponseResult, *, tool_call: bool = True) -> None:
    assert result.output_text == "Hello there"
    assert result.reasoning_text == "Hmm."
    assert result.usage_summary() == {"input_tokens": 9, "output_tokens": 12, "total_tokens": 21,
                                      "cached_tokens": 4, "reasoning_tokens": 3, "tool_output_tokens": 0}
    assert [c.to_dict() for c in result.tool_calls] == (
        [{"call_id": "call_1", "name": "lookup", "arguments": {"q": "x"}}] if tool_call else [])
    assert (result.id, result.model) == ("resp_1", "m")


def test_typed_framing() -> None:
    events, result = decode(sse(*TYPED, event_names=True))
    assert texts(events, "text_delta") == ["Hello", " there"]
    assert texts(events, "reasoning_delta") == ["Hmm."]
    deltas = [e for e in events if e.kind == "tool_arguments_delta"]
    assert [(e.call_id, e.name, e.text) for e in deltas] == [("call_1", "lookup", '{"q": '), ("call_1", "lookup", '"x"}')]
    assert events[0].kind == "created"
    assert_same_reply(result)


def test_typed_framing_without_event_lines() -> None:
    # Some servers send only data lines; the type inside the JSON is enough.
    assert_same_reply(decode(sse(*TYPED))[1])


def test_chunk_framing_with_usage_chunk_and_done() -> None:
    events, result = decode(sse(*CHUNKS))
    assert texts(events, "text_delta") == ["Hello", " there"]
    assert texts(events, "reasoning_delta") == ["Hmm."]
    assert result.finish_reason == "tool_calls"
    assert_same_reply(result)


def test_snapshot_framing_gives_only_what_each_snapshot_adds() -> None:
    events, result = decode(sse(*SNAPSHOTS))
    assert texts(events, "text_delta") == ["Hello", " there"]
    assert texts(events, "reasoning_delta") == ["Hmm."]
    assert_same_reply(result, tool_call=False)


def test_reference_document_snapshot_stream() -> None:
    # The stream of 000_ef018f62f25e37c8.txt: no status field anywhere, closed by [DONE]. As the SSE
    # spec says, each frame (the last too) ends with a blank line; a frame cut before it is dropped.
    raw = b"""data: {"id":"resp_123","object":"response","created":1677652288,"model":"gpt-4.1","output":[{"type":"message","id":"msg_123","status":"in_progress","role":"assistant","content":[]}]}

data: {"id":"resp_123","object":"response","created":1677652288,"model":"gpt-4.1","output":[{"type":"message","id":"msg_123","status":"in_progress","role":"assistant","content":[{"type":"text","text":"Hello"}]}]}

data: {"id":"resp_123","object":"response","created":1677652288,"model":"gpt-4.1","output":[{"type":"message","id":"msg_123","status":"completed","role":"assistant","content":[{"type":"text","text":"Hello there, how may I assist you today?"}]}],"usage":{"input_tokens":9,"output_tokens":12,"total_tokens":21}}

data: [DONE]

"""
    events, result = decode(raw)
    assert texts(events, "text_delta") == ["Hello", " there, how may I assist you today?"]
    assert result.output_text == "Hello there, how may I assist you today?"
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.total_tokens) == (9, 12, 21)
    assert (result.id, result.created) == ("resp_123", 1677652288)


@pytest.mark.parametrize("frames", [CHUNKS, SNAPSHOTS], ids=["chunk", "snapshot"])
def test_done_may_be_absent_when_a_terminal_frame_came(frames: list[Any]) -> None:
    assert decode(sse(*frames[:-1]))[1].output_text == "Hello there"


def test_done_alone_closes_a_typed_stream_without_completed() -> None:
    result = decode(sse(*TYPED[:-1], "[DONE]"))[1]
    assert result.output_text == "Hello there"
    assert [c.arguments for c in result.tool_calls] == [{"q": "x"}]


def test_comments_keep_alives_and_crlf_are_ignored() -> None:
    frames = sse(*CHUNKS).decode().split("\n\n")
    noisy = ": keep-alive\n\n" + "\n\n: ping\n\ndata:\n\nevent: ping\ndata: {}\n\n".join(frames)
    events, result = decode(noisy.replace("\n", "\r\n").encode())
    assert texts(events, "text_delta") == ["Hello", " there"]
    assert_same_reply(result)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_split_of_the_bytes_gives_the_same_result(data: st.DataObject) -> None:
    framing = data.draw(st.sampled_from([TYPED, CHUNKS, SNAPSHOTS]))
    raw = sse(*framing, event_names=True).replace(b"Hello", "H\u00e9llo".encode())
    cuts = data.draw(st.lists(st.integers(1, len(raw) - 1), max_size=12, unique=True))
    result = decode(raw, cuts)[1]
    assert result.output_text == "H\u00e9llo there"
    assert result.usage.total_tokens == 21


@pytest.mark.parametrize("frames", [TYPED[:-1], CHUNKS[:3], SNAPSHOTS[:2]], ids=["typed", "chunk", "snapshot"])
def test_stream_without_terminal_frame_is_a_protocol_error(frames: list[Any]) -> None:
    with pytest.raises(GradientProtocolError, match=f"ended after {len(frames)} frames without a terminal event"):
        decode(sse(*frames))


@pytest.mark.parametrize(
    "error_frame",
    [
        {"type": "error", "code": "server_error", "message": "model crashed", "sequence_number": 3},
        {"type": "response.failed", "response": {**RESPONSE, "status": "failed",
                                                 "error": {"code": "server_error", "message": "model crashed"}}},
        {"error": {"message": "model crashed", "type": "server_error", "code": "server_error"}},
    ],
    ids=["typed-error", "response.failed", "error-object"],
)
def test_error_frame_is_a_protocol_error(error_frame: dict[str, Any]) -> None:
    with pytest.raises(GradientProtocolError, match=r"error after 2 frames: model crashed \(code=server_error\)"):
        decode(sse(*TYPED[:2], error_frame, TYPED[-1]))


def test_frame_that_is_not_json_is_a_protocol_error() -> None:
    with pytest.raises(GradientProtocolError, match="frame 2 is not valid JSON"):
        decode(sse(TYPED[0], "{not json", TYPED[-1]))


def test_empty_completed_output_falls_back_to_the_deltas() -> None:
    # Older vLLM sent response.completed with output: [] (vLLM PR #30223).
    completed = {**TYPED[-1], "response": {**RESPONSE, "output": []}}
    result = decode(sse(*TYPED[:-1], completed))[1]
    assert_same_reply(result)


def test_chunk_finish_reason_length_is_incomplete() -> None:
    result = decode(sse(chunk({"content": "Hello"}, finish="length"), "[DONE]"))[1]
    assert (result.status, result.finish_reason, result.output_text) == ("incomplete", "length", "Hello")


def test_collect_writes_whole_lines_as_they_complete() -> None:
    pieces = ["first ", "line\nsec", "ond line\n", "\nlast", " bit"]
    events = [StreamEvent(kind="text_delta", text=p) for p in pieces]
    lines: list[str] = []
    seen_at: list[int] = []

    def stream() -> Any:
        for event in events:
            seen_at.append(len(lines))
            yield event
        yield StreamEvent(kind="completed", response=ResponseResult(id="r"))

    assert collect(stream(), lines.append).id == "r"
    assert lines == ["first line", "second line", "", "last bit"]
    assert seen_at == [0, 0, 1, 2, 3]  # each line is written as soon as its newline arrives


# -- the hook, streaming from the emulator ------------------------------------------------------

FRAMINGS = ["typed", "chunk", "snapshot"]
LOOKUP = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}
REQUESTS = {
    "text": {"input": "Tell me about rivers\nand lakes", "instructions": "Be brief."},
    "reasoning": {"input": "Think about rivers", "reasoning": {"effort": "low"}},
    "tool": {"input": "Look up rivers", "tools": [LOOKUP]},
    "cut": {"input": "A long answer about rivers, please", "max_output_tokens": 3},
}


def responses_log(emulator: Any) -> list[Any]:
    return [record for record in emulator.log if record.path == "/v1/responses"]


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("name", REQUESTS)
def test_streamed_result_equals_non_streamed(gradient_conn, framing: str, name: str) -> None:
    gradient_conn.configure(stream_framing=framing)
    hook = GradientHook()
    plain = hook.create_response(REQUESTS[name])
    gradient_conn.reset()  # the same prompt again would count as cached input
    events = list(hook.stream_response(REQUESTS[name]))
    streamed = events[-1].response
    assert [e.kind for e in events].count("completed") == 1 and events[-1].kind == "completed"
    assert same_reply(streamed.to_xcom()) == same_reply(plain.to_xcom())
    assert "".join(texts(events, "text_delta")) == plain.output_text
    assert "".join(texts(events, "reasoning_delta")) == plain.reasoning_text
    assert "".join(e.text for e in events if e.kind == "tool_arguments_delta") == "".join(
        c.arguments_json for c in plain.tool_calls)
    assert len(texts(events, "text_delta")) == len(plain.output_text.split())  # it did arrive in pieces
    (record,) = responses_log(gradient_conn)
    assert record.body["stream"] is True and record.body["stream_options"] == {"include_usage": True}


async def test_async_stream_equals_sync_stream(gradient_conn) -> None:
    hook = GradientHook()
    request = {"input": "Async rivers", "reasoning": {"effort": "low"}}
    sync_events = list(hook.stream_response(request))
    gradient_conn.reset()
    async_events = [event async for event in hook.astream_response(request)]
    await hook.aclose()
    assert [(e.kind, e.text) for e in async_events] == [(e.kind, e.text) for e in sync_events]
    assert same_reply(async_events[-1].response.to_xcom()) == same_reply(sync_events[-1].response.to_xcom())


def test_create_response_with_stream_true_returns_the_final_result(gradient_conn) -> None:
    hook = GradientHook()
    streamed = hook.create_response({"input": "Rivers", "stream": True})
    assert streamed.output_text == reply_text("Rivers")
    assert responses_log(gradient_conn)[0].body["stream"] is True


def test_user_stream_options_are_kept(gradient_conn) -> None:
    gradient_conn.configure(stream_framing="chunk")
    result = collect(GradientHook().stream_response(
        {"input": "Rivers", "stream": True, "stream_options": {"include_usage": False}}))
    assert responses_log(gradient_conn)[0].body["stream_options"] == {"include_usage": False}
    assert result.output_text == reply_text("Rivers") and result.usage is None


@pytest.mark.parametrize("framing", FRAMINGS)
def test_retried_before_the_first_byte(gradient_conn, framing: str) -> None:
    gradient_conn.configure(stream_framing=framing)
    prompt = "[[fault:500x1]] Rivers"
    result = collect(GradientHook().stream_response({"input": prompt}))
    assert result.output_text == reply_text(prompt)
    assert result.call.attempts == 2
    assert [r.status for r in responses_log(gradient_conn)] == [500, 200]


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize(("fault", "message"), [("stream_cut_after", "without a terminal event"),
                                                ("stream_error_after", "stream carried an error after 3 frames")])
def test_broken_stream_raises_and_is_never_retried(gradient_conn, framing: str, fault: str, message: str) -> None:
    gradient_conn.configure(stream_framing=framing, **{fault: 3})
    seen: list[str] = []
    with pytest.raises(GradientProtocolError, match=message):
        for event in GradientHook(max_retries=2).stream_response({"input": "A long answer about rivers"}):
            seen.append(event.kind)
    assert "completed" not in seen
    assert len(responses_log(gradient_conn)) == 1


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("drop", r"stream broke off after 0 frames: connection closed by the server \(RemoteProtocolError"),
        ("malformed", "frame 1 is not valid JSON"),
        ("error-200", "stream carried an error after 0 frames: the model failed to generate a reply"),
        ("wrong-content-type", "content type 'text/plain; charset=utf-8', not text/event-stream"),
    ],
)
def test_faults_after_a_200_raise_and_are_never_retried(gradient_conn, fault: str, message: str) -> None:
    with pytest.raises(GradientProtocolError, match=message):
        list(GradientHook(max_retries=2).stream_response({"input": f"[[fault:{fault}]] Rivers"}))
    assert len(responses_log(gradient_conn)) == 1


def test_openai_sdk_reads_the_same_stream(gradient_conn) -> None:
    openai = pytest.importorskip("openai")
    prompt = "Rivers for the SDK"
    client = openai.OpenAI(base_url=gradient_conn.base_url, api_key=TEST_KEY, max_retries=0)
    with client.responses.stream(model="test-model", input=prompt) as stream:
        sdk_deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    gradient_conn.reset()
    ours = list(GradientHook().stream_response({"input": prompt}))
    assert final.output_text == ours[-1].response.output_text == reply_text(prompt)
    assert sdk_deltas == texts(ours, "text_delta")
    assert final.usage.total_tokens == ours[-1].response.usage.total_tokens


# -- the operator in a DAG run ----------------------------------------------------------------


def test_operator_streams_lines_to_the_log_and_pushes_the_same_xcom(gradient_conn, capfd) -> None:
    prompt = "First line of rivers\nsecond line of lakes\nthird"

    def dag_of(stream: bool) -> DAG:
        with DAG(f"stream_{stream}", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
            GradientResponseOperator(task_id="ask", input=prompt, stream=stream)
        return dag

    plain = xcom_value(run_dag(dag_of(False)), "ask")
    gradient_conn.reset()
    capfd.readouterr()
    streamed = xcom_value(run_dag(dag_of(True)), "ask")
    assert same_reply(streamed) == same_reply(plain)
    assert responses_log(gradient_conn)[0].body["stream"] is True
    # The task log goes through structlog: "<time> [info     ] <message>   [<logger>] ..."
    captured = capfd.readouterr()
    logged = re.findall(r"\[info\s*\] (.*?)\s+\[airflow\.task\.operators\.", captured.out + captured.err)
    lines = ["Echo: First line of rivers", "second line of lakes", "third"]
    assert reply_text(prompt).split("\n") == lines
    assert logged[: len(lines)] == lines  # whole lines, in order, before the usage summary
    assert logged[len(lines)].startswith("Gradient response ")
