"""GradientHook against the real emulator over real sockets: sending, retry rules, errors, secrets."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from airflow_gradient import (
    GradientAuthError,
    GradientBadRequestError,
    GradientConfigError,
    GradientHook,
    GradientNotFoundError,
    GradientPaymentError,
    GradientProtocolError,
    GradientRateLimitError,
    GradientRequestInvalid,
    GradientServerError,
    GradientTimeoutError,
)
from airflow_gradient.hooks.gradient import DEFAULT_BASE_URL, USER_AGENT
from airflow_gradient.http.settings import _base_url_of
from airflow_gradient.testing.emulator.generate import reply_text
from tests.conftest import TEST_KEY, conn_env

RESPONSES = "/v1/responses"


def _hook(**kwargs) -> GradientHook:
    return GradientHook(**kwargs)


def test_base_url_defaults_to_gradient_and_appends_v1() -> None:
    assert DEFAULT_BASE_URL == "https://inference.do-ai.run/v1"
    assert _base_url_of(None, None, None) == DEFAULT_BASE_URL
    assert _base_url_of("inference.do-ai.run", None, None) == DEFAULT_BASE_URL
    assert _base_url_of("https://inference.do-ai.run/", None, None) == DEFAULT_BASE_URL
    assert _base_url_of("http://127.0.0.1:8000/v1", None, None) == "http://127.0.0.1:8000/v1"
    assert _base_url_of("http://127.0.0.1", 8000, None) == "http://127.0.0.1:8000/v1"


def test_create_response_returns_parsed_text_and_usage(gradient_conn) -> None:
    result = _hook().create_response({"input": "Summarise the quarterly report"})
    assert result.output_text == reply_text("Summarise the quarterly report")
    assert result.model == "test-model"  # the connection's default model filled in
    assert result.usage is not None and result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert result.call.attempts == 1
    assert result.call.rate_limit_headers  # the emulator always sends x-ratelimit-*
    assert gradient_conn.request_count(path=RESPONSES) == 1


def test_async_and_sync_give_the_same_result(gradient_conn) -> None:
    hook = _hook()
    sync = hook.create_response({"input": "same path"})

    async def run():
        try:
            return await hook.acreate_response({"input": "same path"})
        finally:
            await hook.aclose()

    result = asyncio.run(run())
    assert result.output_text == sync.output_text
    assert result.usage_summary()["output_tokens"] == sync.usage_summary()["output_tokens"]


def test_one_pooled_client_is_reused_and_sends_our_user_agent(gradient_conn) -> None:
    hook = _hook()
    first = hook.get_conn()
    hook.create_response({"input": "one"})
    hook.create_response({"input": "two"})
    assert hook.get_conn() is first
    agents = {rec.headers.get("user-agent") for rec in gradient_conn.log}
    assert agents == {USER_AGENT}
    assert USER_AGENT.startswith("airflow-gradient/")
    hook.close()
    assert first.is_closed


def test_bad_request_is_rejected_before_any_http_call(gradient_conn) -> None:
    with pytest.raises(GradientRequestInvalid, match=r"temperature: .*0 to 2"):
        _hook().create_response({"input": "x", "temperature": 9})
    assert gradient_conn.request_count() == 0


def test_missing_model_is_rejected_before_any_http_call(emulator, monkeypatch) -> None:
    env = conn_env(emulator.base_url)
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace('"model": "test-model"', '"model": ""'))
    with pytest.raises(GradientRequestInvalid, match="model"):
        _hook().create_response({"input": "x"})
    assert emulator.request_count() == 0


def test_connection_without_key_is_a_config_error(emulator, monkeypatch) -> None:
    for name, value in conn_env(emulator.base_url, key="").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(GradientConfigError, match="password"):
        _hook().create_response({"input": "x"})
    assert emulator.request_count() == 0


@pytest.mark.parametrize(
    ("fault", "expected"),
    [("500x2", 3), ("503x1", 2), ("429x1", 2), ("429-resetx1", 2)],
)
def test_retryable_failures_are_retried_until_success(gradient_conn, fault: str, expected: int) -> None:
    # What is counted here is the attempts, not the wait: the 429s ask for 50 ms, not the default 1 s
    # (test_retry_after_header_is_honoured checks the wait).
    gradient_conn.configure(fault_retry_after=0.05)
    prompt = f"[[fault:{fault}]] retry me"
    result = _hook().create_response({"input": prompt})
    assert result.call.attempts == expected
    assert gradient_conn.request_count(path=RESPONSES) == expected
    assert gradient_conn.generated_counts() == {prompt: 1}


def test_retries_stop_after_max_retries(gradient_conn) -> None:
    with pytest.raises(GradientServerError) as info:
        _hook(max_retries=1).create_response({"input": "[[fault:500]] always"})
    assert info.value.status == 500
    assert gradient_conn.request_count(path=RESPONSES) == 2


def test_retry_after_header_is_honoured(gradient_conn) -> None:
    # Ask the emulator once, directly, what Retry-After it sends with this fault.
    probe = httpx.post(
        gradient_conn.base_url + "/responses",
        json={"model": "m", "input": "probe"},
        headers={"Authorization": f"Bearer {TEST_KEY}", "x-emulator-fault": "429"},
    )
    told = float(probe.headers["retry-after"])
    gradient_conn.reset()
    _hook().create_response({"input": "[[fault:429x1]] wait for it"})
    first, second = [rec.t for rec in gradient_conn.log if rec.path == RESPONSES]
    assert second - first >= told


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("401", GradientAuthError, 401),
        ("402", GradientPaymentError, 402),
        ("404", GradientNotFoundError, 404),
    ],
)
def test_client_errors_fail_at_once(gradient_conn, fault: str, error: type, status: int) -> None:
    with pytest.raises(error) as info:
        _hook().create_response({"input": f"[[fault:{fault}]] no retry"})
    assert info.value.status == status
    assert gradient_conn.request_count(path=RESPONSES) == 1


def test_server_side_validation_400_fails_at_once_with_the_server_message(gradient_conn) -> None:
    # extra_body skips our own checks, so the emulator sees the bad value and answers 400.
    with pytest.raises(GradientBadRequestError) as info:
        _hook().create_response({"input": "x", "extra_body": {"temperature": 7}})
    assert info.value.status == 400
    assert "temperature" in info.value.message
    assert gradient_conn.request_count(path=RESPONSES) == 1


def test_401_names_the_connection_to_fix(emulator, monkeypatch) -> None:
    for name, value in conn_env(emulator.base_url, key="sk-wrong-key").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(GradientAuthError) as info:
        _hook().create_response({"input": "x"})
    assert "gradient_default" in str(info.value)
    assert "sk-wrong-key" not in str(info.value)
    assert emulator.request_count() == 1


def test_environment_token_never_replaces_the_connection_key(gradient_conn, monkeypatch) -> None:
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", "dop_v1_env_token")
    monkeypatch.setenv("GRADIENT_MODEL_ACCESS_KEY", "env-model-key")
    monkeypatch.setenv("OPENAI_API_KEY", "env-openai-key")
    assert _hook().create_response({"input": "x"}).output_text
    assert _hook().settings.api_key == TEST_KEY


def test_environment_token_is_no_fallback_for_a_missing_key(emulator, monkeypatch) -> None:
    for name, value in conn_env(emulator.base_url, key="").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DIGITALOCEAN_ACCESS_TOKEN", TEST_KEY)
    monkeypatch.setenv("GRADIENT_MODEL_ACCESS_KEY", TEST_KEY)
    with pytest.raises(GradientConfigError, match="'gradient_default' has no model access key"):
        _hook().create_response({"input": "x"})
    assert emulator.request_count(path=None) == 0


@pytest.mark.parametrize("fault", ["malformed", "error-200", "missing-fields", "wrong-content-type"])
def test_malformed_replies_are_protocol_errors_and_not_retried(gradient_conn, fault: str) -> None:
    with pytest.raises(GradientProtocolError):
        _hook().create_response({"input": f"[[fault:{fault}]] x"})
    assert gradient_conn.request_count(path=RESPONSES) == 1


def test_html_502_page_is_a_retried_server_error(gradient_conn) -> None:
    with pytest.raises(GradientServerError) as info:
        _hook(max_retries=1).create_response({"input": "[[fault:502-html]] x"})
    assert info.value.status == 502
    assert "<" not in info.value.message
    assert gradient_conn.request_count(path=RESPONSES) == 2


def test_timeout_is_typed_and_retried(gradient_conn) -> None:
    hook = _hook(max_retries=1, timeout=0.3)
    with pytest.raises(GradientTimeoutError):
        hook.create_response({"input": "[[fault:hang]] x"})
    assert gradient_conn.request_count(path=RESPONSES) == 2


def test_a_reply_cut_after_its_200_is_not_sent_again(gradient_conn) -> None:
    # The emulator's "drop" sends a 200 and part of the body: the reply was generated (billed).
    with pytest.raises(GradientProtocolError, match="HTTP 200 reply broke off after 13 of 4096 bytes: connection closed"):
        _hook(max_retries=1).create_response({"input": "[[fault:drop]] x"})
    assert gradient_conn.request_count(path=RESPONSES) == 1


def test_rate_limit_error_carries_retry_after(gradient_conn) -> None:
    with pytest.raises(GradientRateLimitError) as info:
        _hook(max_retries=0).create_response({"input": "[[fault:429]] x"})
    assert info.value.retry_after is not None and info.value.retry_after >= 0


def test_key_never_in_repr_or_errors(gradient_conn) -> None:
    hook = _hook()
    assert TEST_KEY not in repr(hook)
    assert TEST_KEY not in repr(hook.settings)
    for fault in ("401", "500", "malformed"):
        with pytest.raises(Exception) as info:
            _hook(max_retries=0).create_response({"input": f"[[fault:{fault}]] x"})
        assert TEST_KEY not in str(info.value) and TEST_KEY not in repr(info.value)


def test_test_connection_reports_model_count(gradient_conn) -> None:
    ok, message = _hook().test_connection()
    assert ok, message
    assert "models available" in message
    assert gradient_conn.request_count(path=RESPONSES) == 0


def test_test_connection_reports_bad_key(emulator, monkeypatch) -> None:
    for name, value in conn_env(emulator.base_url, key="sk-bad").items():
        monkeypatch.setenv(name, value)
    ok, message = _hook().test_connection()
    assert not ok
    assert "gradient_default" in message and "sk-bad" not in message


def test_test_connection_reports_unreachable_host(monkeypatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    for name, value in conn_env(f"http://127.0.0.1:{port}/v1").items():
        monkeypatch.setenv(name, value)
    ok, message = _hook().test_connection()
    assert not ok
    assert "cannot reach" in message
