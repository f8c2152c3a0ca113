"""A Pydantic AI model on a ``pydanticai_gradient`` connection is traced as the provider's own calls
are: one CLIENT span per attempt, under the same conventions (issue 22, the spans of issue 20)."""

from __future__ import annotations

import json

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import TEST_KEY

pytest.importorskip("airflow.providers.common.ai")


def test_an_agent_call_is_a_chat_span_per_attempt_with_its_usage(emulator, otel, monkeypatch) -> None:
    from tests.common_ai.conftest import pydantic_ai_conn_env

    for name, value in pydantic_ai_conn_env("gradient_ai", emulator.base_url, max_retries=2,
                                            max_retry_wait=1).items():
        monkeypatch.setenv(name, value)
    from airflow_gradient.hooks.pydantic_ai import PydanticAIGradientHook

    agent = PydanticAIGradientHook("gradient_ai").create_agent(instructions="Answer briefly.")
    agent.run_sync("hello [[fault:503x1]]")

    spans = sorted((s for s in otel.spans() if s.attributes.get("gen_ai.operation.name") == "chat"),
                   key=lambda s: s.start_time)
    assert [s.attributes["http.response.status_code"] for s in spans] == [503, 200]
    refused, answered = spans
    assert all(s.kind == SpanKind.CLIENT and s.name.startswith("chat ") for s in spans)
    assert refused.status.status_code == StatusCode.ERROR and refused.attributes["error.type"] == "503"
    assert answered.attributes["http.request.resend_count"] == 1
    assert answered.attributes["gen_ai.usage.input_tokens"] > 0
    assert answered.attributes["gen_ai.usage.output_tokens"] > 0
    texts = [json.dumps(dict(s.attributes), default=str) for s in spans]
    assert not any(TEST_KEY in text or "hello" in text for text in texts)
