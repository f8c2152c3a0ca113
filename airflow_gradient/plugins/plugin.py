"""The Airflow plugin: the Gradient pages, mounted by the API server and placed in the UI.

Registered by the provider itself (``plugins`` in :mod:`airflow_gradient.get_provider_info`), so
installing the package is all it takes. The UI shows each external view in an iframe; the hrefs
are relative (no leading slash), so they work under a ``base_url`` too.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin
from airflow_gradient.plugins.app import app

URL_PREFIX = "/gradient"


class GradientUIPlugin(AirflowPlugin):
    """Spend, tokens, 429s and pace of Gradient tasks: a nav page, a DAG tab, a task-instance tab."""

    name = "gradient"
    fastapi_apps: list[dict[str, Any]] = [{"app": app, "url_prefix": URL_PREFIX, "name": "Gradient"}]
    external_views: list[dict[str, Any]] = [
        {"name": "Gradient", "href": "gradient/", "destination": "nav", "url_route": "gradient",
         "category": "browse"},
        {"name": "Gradient", "href": "gradient/dags/{DAG_ID}", "destination": "dag", "url_route": "gradient-dag"},
        {"name": "Gradient", "href": "gradient/dags/{DAG_ID}/runs/{RUN_ID}/tasks/{TASK_ID}?map_index={MAP_INDEX}",
         "destination": "task_instance", "url_route": "gradient-task"},
    ]


def _provider_plugins_loaded() -> bool:
    """Whether Airflow loads the plugins of providers' ``plugins`` entries: Airflow 3.3 does so only
    with ``[core] lazy_discover_providers = False`` (its default is True)."""
    from airflow.configuration import conf

    return not conf.getboolean("core", "lazy_discover_providers", fallback=True)


# The `airflow.plugins` entry point names this. With Airflow's default configuration the provider's
# `plugins` entry is not read, and this is the plugin; when it is read, this is None (not a plugin,
# passed over), so the plugin is not registered twice.
ENTRY_POINT_PLUGIN: type[GradientUIPlugin] | None = None if _provider_plugins_loaded() else GradientUIPlugin
