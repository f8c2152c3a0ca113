"""Registration with Airflow: providers list, connection type, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema

import airflow
from airflow_gradient.get_provider_info import get_provider_info

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([AIRFLOW, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)


def _finish(process: subprocess.Popen[str]) -> str:
    try:
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()  # only if it ran past the timeout: it has ended otherwise
    assert process.returncode == 0, err[-2000:]
    return out


def _airflow(*args: str) -> str:
    return _finish(_start(*args))


def test_provider_info_matches_airflow_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_providers_list_shows_us() -> None:
    assert "airflow-gradient" in _airflow("providers", "list")


def test_connection_add_with_gradient_type_and_hook_lookup() -> None:
    # Each CLI call is a fresh Airflow of 2-4 s; the hook listing needs no connection, so it runs
    # beside the two calls that do.
    with _start("providers", "hooks") as hooks:
        _airflow("connections", "add", "gradient_cli", "--conn-type", "gradient", "--conn-password", "sk-cli-key")
        out = _airflow("connections", "get", "gradient_cli", "-o", "json")
        assert json.loads(out)[0]["conn_type"] == "gradient"
        assert "gradient" in _finish(hooks)
