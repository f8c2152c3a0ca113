"""Server-sent frames of a streamed ``/v1/responses`` reply -> :class:`StreamEvent` -> final result.

Sans-IO: :class:`StreamDecoder` is fed the ``(event, data)`` of each SSE frame (httpx-sse splits
the bytes) and knows nothing of sockets, so the sync and async transports share it. The framing is
detected per frame, because gateways differ (``docs/api-notes.md#streaming-framings``):

- typed events: ``{"type": "response.output_text.delta", ...}`` ... ``response.completed``, no ``[DONE]``;
- chat-style chunks: ``{"object": "response.chunk", "choices": [{"delta": ...}]}``, a usage chunk
  with empty ``choices``, then ``[DONE]``;
- snapshots: ``{"object": "response", "output": [...]}``, each the whole reply so far, then ``[DONE]``.

The final result is the terminal frame's response; its ``output`` falls back to the accumulated
deltas when it comes back empty (older vLLM sent ``response.completed`` with ``output: []``).
A stream without a terminal frame (``response.completed``/``incomplete``, a ``finish_reason``, a
finished snapshot or ``[DONE]``) or with an ``error`` frame raises :class:`GradientProtocolError`.
:func:`collect` and :func:`acollect` drain a stream of events to its final result, the one sync and
the one async driver.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from airflow_gradient.exceptions import GradientProtocolError
from airflow_gradient.models.events import StreamEvent, StreamEventKind
from airflow_gradient.models.result import ResponseResult, ToolCall, Usage, parse_reply

DONE = "[DONE]"
_TERMINAL_TYPES = ("response.completed", "response.incomplete")
_FINISHED_STATUSES = ("completed", "incomplete")
# finish_reason of a chat chunk -> (status, incomplete_details) of a Responses reply
_UNFINISHED = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass
class _ToolCallSoFar:
    call_id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class _SoFar:
    """What the deltas have said so far: the fallback when no frame carries the whole reply."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[str, _ToolCallSoFar] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None

    def output(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        if self.reasoning:
            items.append({"type": "reasoning", "summary": [],
                          "content": [{"type": "reasoning_text", "text": "".join(self.reasoning)}]})
        if self.text:
            items.append({"type": "message", "role": "assistant", "status": "completed",
                          "content": [{"type": "output_text", "text": "".join(self.text)}]})
        items.extend({"type": "function_call", "call_id": call.call_id, "name": call.name,
                      "arguments": call.arguments} for call in self.tool_calls.values())
        return items

    def response(self) -> dict[str, Any]:
        reason = _UNFINISHED.get(self.finish_reason or "")
        return {
            "object": "response",
            **self.meta,
            "status": "incomplete" if reason else "completed",
            "incomplete_details": {"reason": reason} if reason else None,
            "output": self.output(),
        }


class StreamDecoder:
    """Turns SSE frames into events; :meth:`finish` gives the final result or raises.

    Usage: ``events = decoder.feed(sse.event, sse.data)`` for every frame, then
    ``decoder.finish()`` when the body ends.
    """

    def __init__(self, *, status: int | None = 200, request_id: str | None = None) -> None:
        self.frames = 0
        self.status = status
        self.request_id = request_id
        self._so_far = _SoFar()
        self._final: dict[str, Any] | None = None  # the terminal frame's response, or latest snapshot
        self._usage: Usage | None = None
        self._terminal = False
        self._snapshot_seen: dict[str, str] = {}  # text, reasoning and arguments of the last snapshot

    # -- frames in ---------------------------------------------------------------------------

    def feed(self, event: str, data: str) -> list[StreamEvent]:
        """The events one SSE frame adds (often none)."""
        if not data.strip():
            return []  # keep-alive: an empty data line
        self.frames += 1
        if data.strip() == DONE:
            self._terminal = True
            return []
        frame = self._json(data)
        kind = frame.get("type") or (event if event not in ("", "message") else None)
        if kind in ("error", "response.failed") or (frame.get("error") and not kind
                                                     and not frame.get("output") and not frame.get("choices")):
            raise self._error(frame)
        if isinstance(kind, str) and kind.startswith("response."):
            return self._typed(kind, frame)
        if "choices" in frame or frame.get("object") == "response.chunk":
            return self._chunk(frame)
        if "output" in frame or frame.get("object") == "response":
            return self._snapshot(frame)
        return [StreamEvent(kind="other", raw=frame)]

    def feed_whole(self, body: str) -> list[StreamEvent]:
        """A server that ignored ``stream: true`` sent one JSON reply: a last snapshot, then done."""
        events = self.feed("message", body)
        self._terminal = True
        return events

    # -- the end -----------------------------------------------------------------------------

    def finish(self) -> ResponseResult:
        """The final result, once the body has ended; raises if the stream stopped short."""
        if not self._terminal:
            raise self._protocol_error(
                f"stream ended after {self.frames} frames without a terminal event "
                "(response.completed, a finish_reason, a completed snapshot or [DONE])"
            )
        data = dict(self._final) if self._final is not None else self._so_far.response()
        if not data.get("output") and not data.get("choices"):
            data["output"] = self._so_far.output()
        for key, value in self._so_far.meta.items():
            data.setdefault(key, value)
        result = parse_reply(data, what="final frame", status=self.status, request_id=self.request_id)
        if result.usage is None:
            result.usage = self._usage
        return result

    # -- the three framings ------------------------------------------------------------------

    def _typed(self, kind: str, frame: dict[str, Any]) -> list[StreamEvent]:
        if isinstance(frame.get("response"), dict):
            response = frame["response"]
            self._remember_meta(response)
            if kind in _TERMINAL_TYPES:
                self._final, self._terminal = response, True
        if kind == "response.created":
            return [StreamEvent(kind="created", raw=frame)]
        if kind == "response.output_text.delta":
            return [self._delta("text_delta", frame.get("delta"), frame)]
        if kind in ("response.reasoning_text.delta", "response.reasoning.delta"):
            return [self._delta("reasoning_delta", frame.get("delta"), frame)]
        item = frame.get("item")
        if kind in ("response.output_item.added", "response.output_item.done") and isinstance(item, dict) \
                and item.get("type") == "function_call":
            call = self._tool_call(str(item.get("id") or frame.get("output_index")))
            call.call_id = item.get("call_id") or item.get("id") or call.call_id
            call.name = item.get("name") or call.name
            call.arguments = item.get("arguments") or call.arguments
        elif kind == "response.function_call_arguments.delta":
            call = self._tool_call(str(frame.get("item_id") or frame.get("output_index")))
            return [self._tool_delta(call, frame.get("delta"), frame)]
        elif kind == "response.function_call_arguments.done" and frame.get("arguments") is not None:
            self._tool_call(str(frame.get("item_id") or frame.get("output_index"))).arguments = frame["arguments"]
        return [StreamEvent(kind="other", raw=frame)]

    def _chunk(self, frame: dict[str, Any]) -> list[StreamEvent]:
        self._remember_meta(frame)
        if isinstance(frame.get("usage"), dict):
            try:
                self._usage = Usage.model_validate(frame["usage"])
            except ValidationError as exc:
                raise GradientProtocolError.of_shape(exc, f"stream frame {self.frames} usage", status=self.status,
                                                     request_id=self.request_id) from None
        events: list[StreamEvent] = []
        for choice in frame.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1 is not part of this API; the first choice is the reply
            delta = choice.get("delta") or choice.get("message") or {}
            if delta.get("reasoning_content") or delta.get("reasoning"):
                events.append(self._delta("reasoning_delta",
                                          delta.get("reasoning_content") or delta.get("reasoning"), frame))
            if delta.get("content"):
                events.append(self._delta("text_delta", delta["content"], frame))
            for tc in delta.get("tool_calls") or ():
                call = self._tool_call(f"chunk-{tc.get('index', 0)}")
                function = tc.get("function") or {}
                call.call_id = tc.get("id") or call.call_id
                call.name = function.get("name") or call.name
                events.append(self._tool_delta(call, function.get("arguments"), frame))
            if choice.get("finish_reason"):
                self._so_far.finish_reason = choice["finish_reason"]
                self._terminal = True
        return events

    def _snapshot(self, frame: dict[str, Any]) -> list[StreamEvent]:
        self._final = frame
        self._remember_meta(frame)
        if frame.get("status") in _FINISHED_STATUSES:
            self._terminal = True
        now = parse_reply(frame, what=f"snapshot frame {self.frames}", status=self.status, request_id=self.request_id)
        parts: list[tuple[StreamEventKind, str, str, ToolCall | None]] = [
            ("reasoning_delta", "reasoning", now.reasoning_text, None),
            ("text_delta", "text", now.output_text, None),
            *(("tool_arguments_delta", f"call {call.call_id}", call.arguments_json, call) for call in now.tool_calls),
        ]
        events: list[StreamEvent] = []
        # A snapshot holds the whole reply so far: each delta is what it adds to the previous one.
        for kind, key, after, call in parts:
            before = self._snapshot_seen.get(key, "")
            added = after[len(before):] if after.startswith(before) else after
            self._snapshot_seen[key] = after
            if added:
                events.append(StreamEvent(kind=kind, text=added, call_id=call.call_id if call else None,
                                          name=call.name if call else None, raw=frame))
        return events

    # -- helpers -----------------------------------------------------------------------------

    def _delta(self, kind: StreamEventKind, text: Any, frame: dict[str, Any]) -> StreamEvent:
        piece = text if isinstance(text, str) else ""
        (self._so_far.text if kind == "text_delta" else self._so_far.reasoning).append(piece)
        return StreamEvent(kind=kind, text=piece, raw=frame)

    def _tool_call(self, key: str) -> _ToolCallSoFar:
        return self._so_far.tool_calls.setdefault(key, _ToolCallSoFar())

    @staticmethod
    def _tool_delta(call: _ToolCallSoFar, text: Any, frame: dict[str, Any]) -> StreamEvent:
        piece = text if isinstance(text, str) else ""
        call.arguments += piece
        return StreamEvent(kind="tool_arguments_delta", text=piece, call_id=call.call_id or None,
                           name=call.name or None, raw=frame)

    def _remember_meta(self, data: dict[str, Any]) -> None:
        for key in ("id", "model", "created", "created_at"):
            if data.get(key) is not None:
                self._so_far.meta.setdefault(key, data[key])

    def _json(self, data: str) -> dict[str, Any]:
        try:
            frame = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise self._protocol_error(f"stream frame {self.frames} is not valid JSON: {exc}") from None
        if not isinstance(frame, dict):
            raise self._protocol_error(f"stream frame {self.frames} is JSON {type(frame).__name__}, not an object")
        return frame

    def _error(self, frame: dict[str, Any]) -> GradientProtocolError:
        error = frame.get("error")
        if not isinstance(error, dict):
            response = frame.get("response")
            error = (response.get("error") if isinstance(response, dict) else None) or frame
        message = error.get("message") if isinstance(error, dict) else str(error)
        code = error.get("code") if isinstance(error, dict) else None
        return self._protocol_error(
            f"stream carried an error after {self.frames - 1} frames: {message or json.dumps(frame)[:300]}"
            + (f" (code={code})" if code else "")
        )

    def _protocol_error(self, message: str) -> GradientProtocolError:
        return GradientProtocolError(message, status=self.status, request_id=self.request_id)


class _Collector:
    """What draining a stream keeps: the final result, and the text of the line not yet whole."""

    def __init__(self, on_line: Callable[[str], None] | None) -> None:
        self.on_line = on_line
        self.pending = ""
        self.result: ResponseResult | None = None

    def add(self, event: StreamEvent) -> None:
        if event.kind == "text_delta" and self.on_line is not None:
            *lines, self.pending = (self.pending + event.text).split("\n")
            for line in lines:
                self.on_line(line)
        elif event.kind == "completed":
            self.result = event.response

    def finish(self) -> ResponseResult:
        if self.pending and self.on_line is not None:
            self.on_line(self.pending)
        if self.result is None:
            raise GradientProtocolError("stream gave no completed event")
        return self.result


def collect(events: Iterable[StreamEvent], on_line: Callable[[str], None] | None = None) -> ResponseResult:
    """Drain a stream to its final result; ``on_line`` gets each whole line of text as it completes
    (a log wants lines, not a line per token)."""
    collector = _Collector(on_line)
    for event in events:
        collector.add(event)
    return collector.finish()


async def acollect(
    events: AsyncIterable[StreamEvent], on_line: Callable[[str], None] | None = None
) -> ResponseResult:
    """Async :func:`collect`."""
    collector = _Collector(on_line)
    async for event in events:
        collector.add(event)
    return collector.finish()
