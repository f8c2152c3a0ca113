"""The two private methods of common.ai's ``PydanticAIHook`` that ``PydanticAIGradientHook``
overrides are still there and still called.

common.ai 1.0 has no public override point that a fallback chain also goes through: it resolves
each fallback connection with the private ``_resolve_own_model``, never ``get_conn``, and that
calls ``_get_configured_model_name`` and ``_get_provider_kwargs`` (the latter documented there as
the one subclasses override; its Azure, Bedrock and Vertex hooks do). Should common.ai rename
either, our override would silently stop being called and the openai SDK would talk to Gradient
on its own (no pacing, its own retries, the key in its client): these tests name the method.
"""

from __future__ import annotations

import importlib.metadata
import inspect

import pytest

from tests.common_ai.conftest import MODEL, pydantic_ai_conn_env
from tests.conftest import TEST_KEY, conn_env

OVERRIDDEN = ("_get_provider_kwargs", "_get_configured_model_name")


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_the_overridden_private_method_is_still_common_ais(name: str) -> None:
    from airflow.providers.common.ai.hooks.pydantic_ai import PydanticAIHook

    from airflow_gradient.hooks.pydantic_ai import PydanticAIGradientHook

    version = importlib.metadata.version("apache-airflow-providers-common-ai")
    assert name in vars(PydanticAIHook), (
        f"common.ai {version} no longer defines PydanticAIHook.{name}, which PydanticAIGradientHook overrides: "
        "find what replaced it and override that (see the comment on the method)"
    )
    theirs = list(inspect.signature(vars(PydanticAIHook)[name]).parameters)
    ours = list(inspect.signature(vars(PydanticAIGradientHook)[name]).parameters)
    assert ours == theirs, f"common.ai {version} changed the parameters of PydanticAIHook.{name}: {theirs}, ours {ours}"


def test_get_conn_goes_through_both_overrides(monkeypatch) -> None:
    # A borrowed connection that alone names the model; no request is made.
    for name, value in {**conn_env("http://127.0.0.1:9/v1", conn_id="gradient_main", model=MODEL),
                        **pydantic_ai_conn_env("gradient_ai", None, key=None, gradient_conn_id="gradient_main",
                                               model=None)}.items():
        monkeypatch.setenv(name, value)
    from airflow_gradient.hooks.pydantic_ai import PydanticAIGradientHook

    hook = PydanticAIGradientHook("gradient_ai")
    model = hook.get_conn()
    assert model.model_name == MODEL, "PydanticAIHook._get_configured_model_name was not called"
    assert hook.transport is not None, "PydanticAIHook._get_provider_kwargs was not called"


def test_a_pydanticai_gradient_fallback_goes_through_this_providers_path(emulator, monkeypatch, caplog) -> None:
    """Why ``get_conn`` (public) is not enough: common.ai resolves a fallback without calling it."""
    import json

    from airflow.providers.common.ai.hooks.pydantic_ai import PydanticAIHook

    primary = {"conn_type": "pydanticai", "host": emulator.base_url, "password": "sk-do-wrong-key-0000",
               "extra": {"model": f"openai-chat:{MODEL}", "fallback_conn_ids": ["gradient_ai"]}}
    monkeypatch.setenv("AIRFLOW_CONN_GENERIC_AI", json.dumps(primary))
    for name, value in pydantic_ai_conn_env("gradient_ai", emulator.base_url).items():
        monkeypatch.setenv(name, value)

    caplog.set_level("INFO")
    result = PydanticAIHook.get_hook("generic_ai").create_agent(instructions="Answer briefly.").run_sync("hello")
    assert result.output == "Echo: hello"
    assert [r.status for r in emulator.log] == [401, 200]  # the primary's key refused, then the fallback
    assert f"Gradient {MODEL} via 'gradient_ai'" in caplog.text  # our transport's usage line
    assert TEST_KEY not in caplog.text
