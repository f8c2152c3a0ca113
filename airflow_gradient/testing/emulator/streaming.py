"""``stream: true`` replies: one sequence of build steps, serialised in three SSE framings.

:func:`steps` walks a :class:`~airflow_gradient.testing.emulator.reply.Reply` as a model would produce
it (start, then per item: start, one delta per word, done; then finish). Each framing turns a step
into frames:

- ``typed``: ``event: <type>`` + ``data: {"type", "sequence_number", ...}`` (OpenAI / vLLM
  Responses events), ending with ``response.completed``; no ``[DONE]``.
- ``chunk``: DigitalOcean's ``object: response.chunk`` with ``choices[].delta``, a final chunk
  with ``finish_reason``, a usage chunk when ``stream_options.include_usage``, then ``[DONE]``.
- ``snapshot``: every frame the whole ``object: response`` so far, the last one completed with
  usage, then ``[DONE]``.

A typed stream always ends with ``response.completed``, whose response carries ``status:
incomplete`` when the reply was cut by ``max_output_tokens``.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from airflow_gradient.testing.emulator.reply import Reply

KEEP_ALIVE = ": keep-alive\n\n"
DONE = "data: [DONE]\n\n"


@dataclass(frozen=True)
class Step:
    """One step of building a reply; ``index`` is the output item, ``delta`` its new text."""

    kind: Literal["start", "item_start", "delta", "item_done", "finish"]
    index: int = -1
    delta: str = ""


def pieces(text: str) -> list[str]:
    """Word-sized pieces of ``text`` that join back to exactly ``text``."""
    return [piece for piece in re.split(r"(?<=\s)(?=\S)", text) if piece]


def steps(reply: Reply) -> Iterator[Step]:
    yield Step("start")
    for index, item in enumerate(reply.items):
        yield Step("item_start", index)
        for piece in pieces(item.text):
            yield Step("delta", index, piece)
        yield Step("item_done", index)
    yield Step("finish")


class Built:
    """The reply as far as the stream has got: the text of each item started so far."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.texts: list[str | None] = [None] * len(reply.items)

    def apply(self, step: Step) -> None:
        if step.kind == "item_start":
            self.texts[step.index] = ""
        elif step.kind == "delta":
            self.texts[step.index] = (self.texts[step.index] or "") + step.delta

    def text(self, index: int) -> str:
        return self.texts[index] or ""

    def call_index(self, index: int) -> int:
        """Position of item ``index`` among the function calls (chat ``tool_calls[].index``)."""
        return sum(1 for item in self.reply.items[:index] if item.kind == "function_call")


def _data(payload: Any) -> str:
    return f"data: {json.dumps(payload)}\n\n"


class Framing(Protocol):
    trailer: list[str]

    def frames(self, step: Step, built: Built) -> Iterator[str]: ...

    def error(self, message: str, sequence_number: int) -> str: ...


class _OpenAIErrorFrame:
    """Chunk and snapshot streams report a mid-stream failure as an OpenAI error body."""

    trailer = [DONE]

    def error(self, message: str, sequence_number: int) -> str:
        return _data({"error": {"message": message, "type": "server_error", "param": None, "code": "stream_error"}})


_EVENT_PREFIX = {
    "message": "response.output_text",
    "reasoning": "response.reasoning_text",
    "function_call": "response.function_call_arguments",
}


class TypedFraming:
    """Responses API events, each numbered by ``sequence_number``."""

    trailer: list[str] = []

    def __init__(self) -> None:
        self._sequence = 0

    def _event(self, kind: str, **data: Any) -> str:
        payload = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"

    def error(self, message: str, sequence_number: int) -> str:
        payload = {"type": "error", "code": "server_error", "message": message, "param": None,
                   "sequence_number": sequence_number}
        return f"event: error\ndata: {json.dumps(payload)}\n\n"

    def frames(self, step: Step, built: Built) -> Iterator[str]:
        reply = built.reply
        if step.kind == "start":
            in_progress = reply.response_json(built.texts)
            yield self._event("response.created", response=in_progress)
            yield self._event("response.in_progress", response=in_progress)
            return
        if step.kind == "finish":
            yield self._event("response.completed", response=reply.response_json())
            return
        item = reply.items[step.index]
        prefix = _EVENT_PREFIX[item.kind]
        where: dict[str, Any] = {"item_id": item.id, "output_index": step.index}
        if item.kind != "function_call":
            where["content_index"] = 0
        # The openai SDK reads logprobs from every output_text event.
        extra: dict[str, Any] = {"logprobs": []} if item.kind == "message" else {}
        text = built.text(step.index)
        if step.kind == "item_start":
            yield self._event("response.output_item.added", output_index=step.index,
                              item=item.to_json("", "in_progress"))
            if item.kind != "function_call":
                yield self._event("response.content_part.added", **where, part=item.part_json(""))
        elif step.kind == "delta":
            yield self._event(f"{prefix}.delta", **where, delta=step.delta, **extra)
        else:
            final = {"arguments": text, "name": item.name} if item.kind == "function_call" else {"text": text}
            yield self._event(f"{prefix}.done", **where, **final, **extra)
            if item.kind != "function_call":
                yield self._event("response.content_part.done", **where, part=item.part_json(text))
            yield self._event("response.output_item.done", output_index=step.index,
                              item=item.to_json(text, reply.item_status))


class ChunkFraming(_OpenAIErrorFrame):
    """DigitalOcean's chat-style chunks: ``choices[0].delta`` holds the new text."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage

    def _chunk(self, reply: Reply, choices: list[dict[str, Any]], usage: Any = None) -> str:
        return _data({"id": reply.id, "object": "response.chunk", "created": reply.created,
                      "model": reply.model, "choices": choices, "usage": usage})

    def _delta(self, reply: Reply, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        return self._chunk(reply, [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}])

    def frames(self, step: Step, built: Built) -> Iterator[str]:
        reply = built.reply
        if step.kind == "start":
            yield self._delta(reply, {"role": "assistant", "content": ""})
        elif step.kind == "finish":
            yield self._delta(reply, {}, reply.finish_reason)
            if self.include_usage:
                yield self._chunk(reply, [], reply.usage)
        elif step.kind in ("item_start", "delta"):
            item = reply.items[step.index]
            if item.kind == "function_call":
                call: dict[str, Any] = {"index": built.call_index(step.index), "function": {"arguments": step.delta}}
                if step.kind == "item_start":
                    call.update(id=item.call_id, type="function", function={"name": item.name, "arguments": ""})
                yield self._delta(reply, {"tool_calls": [call]})
            elif step.kind == "delta":
                field = "content" if item.kind == "message" else "reasoning_content"
                yield self._delta(reply, {field: step.delta})


class SnapshotFraming(_OpenAIErrorFrame):
    """Every frame is the whole response so far (the gateway framing of reference 000)."""

    def frames(self, step: Step, built: Built) -> Iterator[str]:
        if step.kind in ("item_start", "delta"):
            yield _data(built.reply.response_json(built.texts))
        elif step.kind == "finish":
            yield _data(built.reply.response_json())


def framing_for(name: str, *, include_usage: bool = False) -> Framing:
    if name == "chunk":
        return ChunkFraming(include_usage)
    if name == "snapshot":
        return SnapshotFraming()
    return TypedFraming()


@dataclass(frozen=True)
class StreamPlan:
    """The frames a stream will send, and how it ends: ``complete`` (terminal event sent),
    ``cut`` (stops short) or ``error`` (an error frame instead of the rest)."""

    frames: list[str]
    ending: Literal["complete", "cut", "error"] = "complete"

    @property
    def complete(self) -> bool:
        return self.ending == "complete"


def plan_stream(
    reply: Reply,
    framing_name: str,
    *,
    include_usage: bool = False,
    cut_after: int | None = None,
    error_after: int | None = None,
) -> StreamPlan:
    """All frames of ``reply`` in ``framing_name``, cut after ``cut_after`` frames or replaced by an
    error frame after ``error_after`` frames."""
    framing = framing_for(framing_name, include_usage=include_usage)
    built = Built(reply)
    frames: list[str] = []
    for step in steps(reply):
        built.apply(step)
        frames.extend(framing.frames(step, built))
    frames.extend(framing.trailer)
    if error_after is not None and error_after < len(frames):
        error = framing.error("the model stopped while streaming", error_after)
        return StreamPlan([*frames[:error_after], error], "error")
    if cut_after is not None and cut_after < len(frames):
        return StreamPlan(frames[:cut_after], "cut")
    return StreamPlan(frames)


async def paced(
    frames: list[str], *, delay: float, closing: threading.Event, on_complete: Callable[[], None] | None = None
) -> AsyncIterator[str]:
    """Send ``frames`` after a keep-alive comment, ``delay`` seconds apart; ``on_complete`` runs
    just before the last one goes out. Stops early when the emulator is shutting down."""
    yield KEEP_ALIVE
    for number, frame in enumerate(frames, start=1):
        if closing.is_set():
            return
        if delay:
            await asyncio.sleep(delay)
        # Before the last frame, not after: a client that stops at the terminal event must
        # already find the request logged as generated.
        if number == len(frames) and on_complete is not None:
            on_complete()
        yield frame
