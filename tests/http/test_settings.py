"""A connection's settings: unknown extras warned of by name, a missing connection failed for good."""

from __future__ import annotations

import datetime
import json

import pendulum
import pytest

from airflow.sdk import DAG, Connection
from airflow_gradient import (
    GradientBatchJobOperator,
    GradientBatchOperator,
    GradientConfigError,
    GradientHook,
    GradientResponseOperator,
)
from airflow_gradient.get_provider_info import CONN_FIELDS, get_provider_info
from airflow_gradient.http.settings import KNOWN_EXTRAS, GradientSettings
from tests.conftest import TEST_KEY, conn_env, run_dag, task_states, try_numbers

START = pendulum.datetime(2026, 1, 1, tz="UTC")


def _connection(**extra: object) -> Connection:
    return Connection(conn_id="g", conn_type="gradient", host="http://127.0.0.1:9/v1", password=TEST_KEY,
                      extra=json.dumps(extra))


def test_the_known_extras_are_the_connection_form_fields() -> None:
    form = get_provider_info()["connection-types"][0]["conn-fields"]
    assert set(KNOWN_EXTRAS) == set(form) == set(CONN_FIELDS)
    # Every extra the settings read is on the form: a warning never names one that works.
    settings = GradientSettings.from_connection("g", _connection(**{name: None for name in KNOWN_EXTRAS}))
    assert settings.extra_warnings == ()


def test_an_unknown_extra_is_named_with_the_closest_known_one() -> None:
    settings = GradientSettings.from_connection("g", _connection(timout=5, max_retrys=1, colour="red"))
    assert settings.read_timeout == 600.0  # the misspelt extra is not read
    timout, retrys, colour = settings.extra_warnings
    assert "connection 'g'" in timout and "'timout'" in timout and "did you mean 'timeout'?" in timout
    assert "did you mean 'max_retries'?" in retrys
    # Nothing close: the known extras are listed instead.
    assert "'colour'" in colour and "known extras: model, timeout, connect_timeout" in colour


def test_the_connection_test_warns_of_an_unknown_extra(emulator, monkeypatch) -> None:
    for name, value in conn_env(emulator.base_url, timout=5).items():
        monkeypatch.setenv(name, value)
    ok, message = GradientHook().test_connection()
    assert ok and "models available" in message
    assert "unknown extra 'timout', which is ignored: did you mean 'timeout'?" in message


def test_the_task_log_warns_of_an_unknown_extra(emulator, monkeypatch, capfd) -> None:
    for name, value in conn_env(emulator.base_url, timout=5).items():
        monkeypatch.setenv(name, value)
    with DAG("unknown_extra_warned", schedule=None, start_date=START) as dag:
        GradientResponseOperator(task_id="ask", input="hello")
    run = run_dag(dag)
    assert task_states(run) == {"ask": "success"}  # a warning, not a failure
    printed = capfd.readouterr()
    assert "unknown extra 'timout', which is ignored: did you mean 'timeout'?" in printed.out + printed.err


def test_a_connection_test_without_unknown_extras_says_nothing_more(gradient_conn) -> None:
    ok, message = GradientHook().test_connection()
    assert ok and "unknown extra" not in message


def test_a_missing_connection_is_a_config_error_naming_it() -> None:
    with pytest.raises(GradientConfigError, match="Airflow connection 'no_such_gradient' does not exist"):
        _ = GradientHook("no_such_gradient").settings


@pytest.mark.parametrize(("operator", "kwargs"), [
    (GradientResponseOperator, {"input": "x"}),
    (GradientBatchOperator, {"inputs": ["a", "b"]}),
    (GradientBatchJobOperator, {"inputs": ["a"]}),
], ids=["response", "batch", "batch-job"])
def test_a_missing_connection_fails_the_task_once_despite_retries(operator, kwargs, tmp_path, capfd) -> None:
    if operator is not GradientResponseOperator:
        kwargs = {**kwargs, "output_path": str(tmp_path / "out")}
    with DAG(f"missing_conn_{operator.__name__}", schedule=None, start_date=START) as dag:
        operator(task_id="t", gradient_conn_id="no_such_gradient", model="m", retries=2,
                 retry_delay=datetime.timedelta(0), **kwargs)
    run = run_dag(dag)
    assert task_states(run) == {"t": "failed"} and try_numbers(run) == {"t": 1}
    printed = capfd.readouterr()
    assert "Airflow connection 'no_such_gradient' does not exist" in printed.out + printed.err
