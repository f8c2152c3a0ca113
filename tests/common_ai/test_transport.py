"""The retry rules of this provider, not the openai SDK's, apply to a Pydantic AI model on a
``pydanticai_gradient`` connection: what is retried, how often, and a billed reply never resent."""

from __future__ import annotations

import pytest

from tests.common_ai.conftest import pydantic_ai_conn_env
from tests.conftest import TEST_KEY


@pytest.fixture
def agent(emulator, monkeypatch):
    for name, value in pydantic_ai_conn_env("gradient_ai", emulator.base_url, max_retries=2,
                                            max_retry_wait=1).items():
        monkeypatch.setenv(name, value)
    from airflow_gradient.hooks.pydantic_ai import PydanticAIGradientHook

    return PydanticAIGradientHook("gradient_ai").create_agent(instructions="Answer briefly.")


@pytest.mark.parametrize("fault", ["500", "503", "429-reset", "502-html"])
def test_a_passing_failure_is_retried_once_by_the_hook_not_by_the_sdk(agent, emulator, fault) -> None:
    result = agent.run_sync(f"hello [[fault:{fault}x1]]")
    assert result.output.startswith("Echo: hello")
    assert [r.status for r in emulator.log] == [int(fault[:3]), 200]


def test_retries_spent_hand_the_last_refusal_to_pydantic_ai(agent, emulator) -> None:
    from pydantic_ai.exceptions import ModelHTTPError

    with pytest.raises(ModelHTTPError) as refused:
        agent.run_sync("hello [[fault:503]]")
    assert refused.value.status_code == 503
    assert [r.status for r in emulator.log] == [503, 503, 503]  # max_retries=2, and no SDK retries on top


def test_a_reply_cut_after_its_200_is_not_sent_again(agent, emulator) -> None:
    from airflow_gradient.exceptions import GradientProtocolError

    with pytest.raises(Exception) as failed:
        agent.run_sync("hello [[fault:drop]]")
    causes = []
    error: BaseException | None = failed.value
    while error is not None:
        causes.append(error)
        error = error.__cause__ or error.__context__
    protocol = next(e for e in causes if isinstance(e, GradientProtocolError))
    assert "may be billed" in str(protocol) and TEST_KEY not in str(protocol)
    assert len(emulator.log) == 1


def test_the_sdk_never_holds_the_key(agent, emulator) -> None:
    agent.run_sync("hello")
    client = agent.model.client  # the openai client Pydantic AI drives
    assert client.api_key != TEST_KEY and TEST_KEY not in repr(client.__dict__)


def test_the_sync_entry_points_are_served_by_the_async_transport(agent, emulator) -> None:
    """No sync transport is needed: ``run_sync`` (what common.ai's operators call) drives the async
    model on its thread's loop, and a fresh loop or thread gets the hook's client of that loop."""
    import asyncio
    import threading

    answers = [agent.run_sync("one").output, asyncio.run(agent.run("two")).output, asyncio.run(agent.run("three")).output]
    worker = threading.Thread(target=lambda: answers.append(agent.run_sync("four").output))
    worker.start()
    worker.join()
    assert answers == ["Echo: one", "Echo: two", "Echo: three", "Echo: four"]
    # 200s: the SDK holds a placeholder key, so only the hook's client is let in.
    assert [r.status for r in emulator.log] == [200] * 4


def test_common_ais_batch_decorator_refuses_the_connection_type() -> None:
    """``@task.llm_batch`` is common.ai's one path with a sync openai client, built from a
    connection's password and host without the hook: it accepts no ``pydanticai_gradient``
    connection (use ``GradientBatchOperator``)."""
    from airflow.providers.common.ai.batch import dispatch
    from airflow.providers.common.ai.exceptions import BatchProviderNotYetSupportedError

    with pytest.raises(BatchProviderNotYetSupportedError, match="'pydanticai_gradient'"):
        dispatch.get_adapter_class("pydanticai_gradient", "openai:llama3.3-70b-instruct")
