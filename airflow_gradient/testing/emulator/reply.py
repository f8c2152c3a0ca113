"""The reply being built, and its JSON at any point of the build.

A :class:`Reply` is the whole answer the emulator will give (its output items, usage, status);
``texts`` says how much of each item exists so far. The non-streamed body is the reply with every
item complete, and each stream framing serialises the same reply part by part, so the three
framings and the plain reply cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

ItemKind = Literal["reasoning", "message", "function_call"]
Status = Literal["in_progress", "completed", "incomplete"]

# texts[i] is the text item i has so far, or None while it has not started.
Progress = Sequence[str | None]


@dataclass(frozen=True)
class ReplyItem:
    """One output item. ``text`` is the reasoning text, the message text or the call's arguments."""

    kind: ItemKind
    id: str
    text: str
    name: str | None = None
    call_id: str | None = None

    def part_json(self, text: str) -> dict[str, Any]:
        """The item's content part (messages and reasoning), holding ``text``."""
        if self.kind == "reasoning":
            return {"type": "reasoning_text", "text": text}
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def to_json(self, text: str | None = None, status: Status = "completed") -> dict[str, Any]:
        """The ``output[]`` item, with ``text`` so far (default: all of it)."""
        text = self.text if text is None else text
        if self.kind == "function_call":
            return {
                "type": "function_call", "id": self.id, "call_id": self.call_id, "name": self.name,
                "arguments": text, "status": status,
            }
        content = [self.part_json(text)] if text or status != "in_progress" else []
        if self.kind == "reasoning":
            return {"type": "reasoning", "id": self.id, "summary": [], "content": content, "status": status}
        return {"type": "message", "id": self.id, "status": status, "role": "assistant", "content": content}


@dataclass(frozen=True)
class Reply:
    """Everything the emulator will answer to one request."""

    id: str
    created: int
    model: str
    items: tuple[ReplyItem, ...]
    usage: dict[str, Any]
    status: Literal["completed", "incomplete"]
    finish_reason: Literal["stop", "length", "tool_calls"]
    # Request parameters echoed back in the body (temperature, tools, ...).
    echo: dict[str, Any] = field(default_factory=dict)

    @property
    def incomplete_details(self) -> dict[str, str] | None:
        return {"reason": "max_output_tokens"} if self.status == "incomplete" else None

    def response_json(self, texts: Progress | None = None, shape: str = "output") -> dict[str, Any]:
        """The ``object: response`` body: complete when ``texts`` is None, else in progress with
        the items started so far. ``shape`` puts the text in ``output``, ``choices`` or both."""
        done = texts is None
        progress = [item.text for item in self.items] if texts is None else list(texts)
        body: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created": self.created,
            "created_at": self.created,
            "model": self.model,
            "status": self.status if done else "in_progress",
            "error": None,
            "incomplete_details": self.incomplete_details if done else None,
            "output": [],
            **self.echo,
            "usage": self.usage if done else None,
        }
        if shape in ("output", "both"):
            body["output"] = [
                item.to_json(text, self.item_status if done else "in_progress")
                for item, text in zip(self.items, progress)
                if text is not None
            ]
        if shape in ("choices", "both"):
            body["choices"] = [self.choice_json(progress, finished=done)]
        return body

    @property
    def item_status(self) -> Status:
        """Status of finished items: ``incomplete`` when the reply was cut short."""
        return "incomplete" if self.status == "incomplete" else "completed"

    def choice_json(self, texts: Progress, *, finished: bool) -> dict[str, Any]:
        """``choices[0]`` in chat-completions form, from the items' texts so far."""
        message: dict[str, Any] = {"role": "assistant", "content": None}
        calls = []
        for item, text in zip(self.items, texts):
            if text is None:
                continue
            if item.kind == "message":
                message["content"] = text
            elif item.kind == "reasoning":
                message["reasoning_content"] = text
            else:
                calls.append({"id": item.call_id, "type": "function",
                              "function": {"name": item.name, "arguments": text}})
        if calls:
            message["tool_calls"] = calls
        return {"index": 0, "finish_reason": self.finish_reason if finished else None,
                "message": message, "logprobs": None}
