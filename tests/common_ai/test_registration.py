"""``pydanticai_gradient`` is registered where common.ai is installed, and only there: without it the
provider imports and registers as before, with nothing to warn about."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema

import airflow
from airflow_gradient.get_provider_info import get_provider_info

# Run in a fresh interpreter as on a worker without the extra: common.ai's distribution is not
# listed (so Airflow does not discover it) and it and pydantic_ai cannot be imported. Prints what
# Airflow registered and every warning it logged that mentions us.
_WITHOUT_COMMON_AI = textwrap.dedent("""
    import importlib.abc, importlib.metadata, json, logging, sys
    import importlib_metadata

    HIDDEN = ("apache-airflow-providers-common-ai", "pydantic-ai-slim", "pydantic-graph")
    for lister in (importlib.metadata, importlib_metadata):
        lister.distributions = lambda listed=lister.distributions, **kw: (
            d for d in listed(**kw) if d.metadata["Name"].lower().replace("_", "-") not in HIDDEN)

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.startswith(("airflow.providers.common.ai", "pydantic_ai", "pydantic_graph")):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger().addHandler(handler)

    from airflow_gradient.get_provider_info import get_provider_info
    from airflow.providers_manager import ProvidersManager
    import airflow_gradient

    info = get_provider_info()
    hooks = ProvidersManager().hooks
    ours = [r.getMessage() for r in records if "gradient" in r.getMessage().lower()]
    try:
        import airflow_gradient.hooks.pydantic_ai
        direct = "imported"
    except Exception as exc:
        direct = type(exc).__name__ + ": " + str(exc)
    print(json.dumps({
        "types": [c["connection-type"] for c in info["connection-types"]],
        "modules": info["hooks"][0]["python-modules"],
        "gradient_hook": hooks["gradient"].hook_class_name if "gradient" in hooks else None,
        "pydanticai_gradient": "pydanticai_gradient" in hooks,
        "warnings": ours,
        "direct_import": direct,
        "exported": "GradientHook" in airflow_gradient.__all__,
    }))
""")


def test_registered_with_the_gradient_form_where_common_ai_is_installed() -> None:
    # The registry a task resolves llm_conn_id through (common.ai's PydanticAIHook.get_hook).
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    info = get_provider_info()
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    gradient, pydantic_ai = info["connection-types"]
    assert pydantic_ai["connection-type"] == "pydanticai_gradient"
    assert pydantic_ai["ui-field-behaviour"] == gradient["ui-field-behaviour"]
    assert set(gradient["conn-fields"]) < set(pydantic_ai["conn-fields"])
    assert {"gradient_conn_id", "fallback_conn_ids"} <= set(pydantic_ai["conn-fields"])

    hook_info = ProvidersManagerTaskRuntime().hooks["pydanticai_gradient"]
    assert hook_info is not None and hook_info.hook_class_name.endswith("PydanticAIGradientHook")
    from airflow.providers.common.ai.hooks.pydantic_ai import PydanticAIHook

    from airflow_gradient.hooks.pydantic_ai import PydanticAIGradientHook

    assert issubclass(PydanticAIGradientHook, PydanticAIHook)


def test_without_common_ai_the_provider_imports_and_registers_as_before() -> None:
    done = subprocess.run([sys.executable, "-c", _WITHOUT_COMMON_AI], capture_output=True, text=True,
                          env=os.environ, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["types"] == ["gradient"]
    assert "airflow_gradient.hooks.pydantic_ai" not in seen["modules"]
    assert seen["gradient_hook"] == "airflow_gradient.hooks.gradient.GradientHook"
    assert seen["pydanticai_gradient"] is False
    assert seen["warnings"] == []
    assert seen["exported"] is True
    # Only a direct import of the hook says what is missing.
    assert seen["direct_import"].startswith("AirflowOptionalProviderFeatureException")
    assert "airflow-gradient[common-ai]" in seen["direct_import"]
