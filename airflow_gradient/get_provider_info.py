"""Registration with Airflow's providers manager (the ``apache_airflow_provider`` entry point)."""

from __future__ import annotations

import importlib.util
from typing import Any

from airflow_gradient._version import __version__

_HOOK = "airflow_gradient.hooks.gradient.GradientHook"

# The Gradient connection form, as Airflow's UI reads it; GradientHook.get_ui_field_behaviour
# returns the same (this is its one owner, importable without importing the hook).
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "login"],
    "relabeling": {"host": "Base URL", "password": "Model access key"},
    "placeholders": {
        "host": "https://inference.do-ai.run/v1",
        "extra": '{"model": "llama3.3-70b-instruct", "prices": {"llama3.3-70b-instruct": '
        '{"input": 0.65, "cached_input": 0.3, "output": 0.65}}}',
        "rate_limit_store": "redis_default",
    },
}


# The extras of a Gradient connection, as the connection form shows them: the one list of the
# extras that exist (GradientSettings warns of any other key, naming the closest of these).
CONN_FIELDS: dict[str, Any] = {
    "model": {
        "label": "Default model",
        "schema": {"type": ["string", "null"]},
        "description": "Model id used when a task names none",
    },
    "timeout": {
        "label": "Read timeout (s)",
        "schema": {"type": ["number", "null"], "default": 600},
    },
    "connect_timeout": {
        "label": "Connect timeout (s)",
        "schema": {"type": ["number", "null"], "default": 10},
    },
    "max_retries": {
        "label": "Max retries",
        "schema": {"type": ["integer", "null"], "default": 2, "minimum": 0},
    },
    "max_retry_wait": {
        "label": "Longest wait between tries (s)",
        "schema": {"type": ["number", "null"], "default": 60, "minimum": 0},
    },
    "prices": {
        "label": "Prices (USD per million tokens)",
        "schema": {"type": ["object", "null"]},
        "description": 'Per model: {"model-id": {"input": 0.65, "cached_input": 0.3, '
        '"output": 0.65, "batch_discount": 0.5}} (example numbers); no price, no cost shown',
    },
    "rate_limit_store": {
        "label": "Rate limit store (Redis connection id)",
        "schema": {"type": ["string", "null"]},
        "description": "An Airflow connection of type redis: every batch task using this "
        "Gradient connection then shares one pace for the account (docs: Scaling out)",
    },
    "tracing": {
        "label": "Tracing (items, batch or off)",
        "schema": {"type": ["string", "null"], "enum": ["items", "batch", "off", None]},
        "description": "What OpenTelemetry traces when a task does not say: a span per HTTP attempt under "
        "the batch span (items, the default), the batch span only, or none (docs: Observability)",
    },
}


def get_provider_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "package-name": "airflow-gradient",
        "name": "DigitalOcean Gradient",
        "description": "DigitalOcean Gradient serverless inference (`POST /v1/responses`, `POST /v1/embeddings`): "
        "single requests, in-task batches with rate limiting and resume, embeddings at batch scale, and "
        "provider-side Batch Inference jobs.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "DigitalOcean Gradient",
                "external-doc-url": "https://docs.digitalocean.com/products/gradient-ai-platform/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "DigitalOcean Gradient",
                "python-modules": ["airflow_gradient.hooks.gradient", "airflow_gradient.hooks.batch_job"],
            }
        ],
        "operators": [
            {
                "integration-name": "DigitalOcean Gradient",
                "python-modules": [
                    "airflow_gradient.operators.response",
                    "airflow_gradient.operators.batch",
                    "airflow_gradient.operators.batch_job",
                    "airflow_gradient.operators.embedding",
                    "airflow_gradient.operators.batch_embedding",
                ],
            }
        ],
        "triggers": [
            {"integration-name": "DigitalOcean Gradient", "python-modules": ["airflow_gradient.triggers.batch_job"]}
        ],
        "task-decorators": [{"class-name": "airflow_gradient.decorators.gradient.gradient_task", "name": "gradient"}],
        # The Gradient pages of the UI (docs/ui.md), served by the API server.
        "plugins": [{"name": "gradient", "plugin-class": "airflow_gradient.plugins.plugin.GradientUIPlugin"}],
        "connection-types": [
            {
                "hook-class-name": _HOOK,
                "hook-name": "DigitalOcean Gradient",
                "connection-type": "gradient",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }
    if _common_ai_installed():
        info["hooks"][0]["python-modules"].append("airflow_gradient.hooks.pydantic_ai")
        info["connection-types"].append(_pydantic_ai_connection_type(info["connection-types"][0]["conn-fields"]))
    return info


def _common_ai_installed() -> bool:
    """Whether Airflow's common.ai provider is importable: only then is ``pydanticai_gradient``
    registered (elsewhere it is left out, so Airflow has nothing to warn about)."""
    try:
        return importlib.util.find_spec("airflow.providers.common.ai") is not None
    except ImportError:  # airflow.providers.common itself is missing
        return False


def _pydantic_ai_connection_type(gradient_fields: dict[str, Any]) -> dict[str, Any]:
    """The ``pydanticai_gradient`` connection of common.ai's ``@task.llm`` / ``@task.agent``: the
    ``gradient`` form (``gradient_fields``), plus a Gradient connection to borrow and common.ai's
    fallback chain."""
    return {
        "hook-class-name": "airflow_gradient.hooks.pydantic_ai.PydanticAIGradientHook",
        "hook-name": "Pydantic AI (DigitalOcean Gradient)",
        "connection-type": "pydanticai_gradient",
        "conn-fields": {
            **gradient_fields,
            "model": {
                "label": "Model",
                "schema": {"type": ["string", "null"]},
                "description": "A Gradient model id such as llama3.3-70b-instruct (no provider prefix needed)",
            },
            "gradient_conn_id": {
                "label": "Gradient connection id",
                "schema": {"type": ["string", "null"]},
                "description": "Borrow the key, base URL and settings of this gradient connection instead of "
                "entering them here",
            },
            "fallback_conn_ids": {
                "label": "Fallback Connections",
                "schema": {"type": ["array", "null"], "items": {"type": "string"}},
                "description": "Connection ids to fail over to, in order, while Gradient is unavailable",
            },
        },
        "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
    }
