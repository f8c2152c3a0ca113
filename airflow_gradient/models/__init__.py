"""Wire models shared by the hook, the operators and the emulator."""

from airflow_gradient.models.request import (
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    ReasoningItem,
    ResponseRequest,
    Tool,
    build_request,
)
from airflow_gradient.models.events import StreamEvent, StreamEventKind
from airflow_gradient.models.result import CallInfo, OutputItem, ResponseResult, ToolCall, Usage

__all__ = [
    "CallInfo",
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "MessageItem",
    "OutputItem",
    "ReasoningItem",
    "ResponseRequest",
    "ResponseResult",
    "StreamEvent",
    "StreamEventKind",
    "Tool",
    "ToolCall",
    "Usage",
    "build_request",
]
