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


def _airflow(*args: str) -> str:
    done = subprocess.run([AIRFLOW, *args], capture_output=True, text=True, env=os.environ, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_provider_info_matches_airflow_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_providers_list_shows_us() -> None:
    assert "airflow-gradient" in _airflow("providers", "list")


def test_connection_add_with_gradient_type_and_hook_lookup() -> None:
    _airflow("connections", "add", "gradient_cli", "--conn-type", "gradient", "--conn-password", "sk-cli-key")
    out = _airflow("connections", "get", "gradient_cli", "-o", "json")
    assert json.loads(out)[0]["conn_type"] == "gradient"
    assert "gradient" in _airflow("providers", "hooks")
