"""Registration with Airflow's providers manager (the ``apache_airflow_provider`` entry point)."""

from __future__ import annotations

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
}


def get_provider_info() -> dict[str, Any]:
    return {
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
