"""Bad input through the entry points users touch, against a running emulator that must see nothing.

``GradientHook.create_response`` / ``stream_response`` raise :class:`GradientRequestInvalid`; the
operators raise ``AirflowFailException`` from it, so Airflow does not retry what would fail the
same way. Every case names the field at fault. The model-level table of ``tests/models/test_models.py`` is
replayed through each entry point; the table here adds what only the entry points see.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jinja2
import pendulum
import pytest

from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowFailException
from airflow_gradient import (
    GradientArgumentError,
    GradientBatchJobOperator,
    GradientBatchOperator,
    GradientConfigError,
    GradientHook,
    GradientRequestInvalid,
    GradientResponseOperator,
)
from airflow_gradient.testing import GradientEmulator
from tests.support.batch_jobs import task_context
from tests.conftest import TEST_KEY, conn_env, run_dag, task_states, try_numbers
from tests.support.invalid_requests import INVALID

START = pendulum.datetime(2025, 1, 1, tz="UTC")


@pytest.fixture(scope="module")
def idle_emulator() -> Iterator[GradientEmulator]:
    """One emulator for the module, as ``gradient_default``: no case may ever reach it."""
    with GradientEmulator(api_key=TEST_KEY) as emulator, pytest.MonkeyPatch.context() as patch:
        for name, value in conn_env(emulator.base_url).items():
            patch.setenv(name, value)
        yield emulator


@pytest.fixture(scope="module")
def rows_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rows")
    (folder / "malformed.jsonl").write_text('{"t": "fine"}\n{"t": \n')
    (folder / "array.jsonl").write_text('["not", "an", "object"]\n')
    (folder / "no_text_column.csv").write_text("custom_id,title\nr1,Alpha\n")
    (folder / "short_row.csv").write_text("custom_id,t\nr1,Alpha\nr2\nr3,Gamma\n")
    (folder / "long_row.csv").write_text("custom_id,t\nr1,Alpha\nr2,Beta,Gamma\n")
    (folder / "latin1.csv").write_bytes("custom_id,t\nr1,Alpha\nr2,Café\n".encode("latin-1"))
    (folder / "a_file").write_text("not a directory")
    return folder


class InRowsDir(str):
    """A path argument that the test places under ``rows_dir``."""


def _in_rows_dir(kwargs: dict[str, Any], rows_dir: Path) -> dict[str, Any]:
    """``kwargs`` with ``rows_path`` file names and :class:`InRowsDir` values made paths under ``rows_dir``."""
    def placed(name: str, value: Any) -> Any:
        in_dir = isinstance(value, InRowsDir) or (name == "rows_path" and isinstance(value, str))
        return str(rows_dir / value) if in_dir else value

    return {name: placed(name, value) for name, value in kwargs.items()}


def reject(emulator: GradientEmulator, call: Callable[[], Any]) -> BaseException:
    """Run ``call``, which must raise; nothing may have reached the emulator."""
    with pytest.raises(BaseException) as info:
        call()
    assert emulator.request_count(path=None) == 0
    return info.value


def invalid(error: BaseException, *, from_operator: bool) -> GradientRequestInvalid:
    """The validation error: raised as is by the hook, as the cause of an AirflowFailException
    (failed, never retried) by the operators."""
    if from_operator:
        assert isinstance(error, AirflowFailException), repr(error)
        error = error.__cause__
    assert isinstance(error, GradientRequestInvalid), repr(error)
    return error


def _as_worded(field: str) -> list[str]:
    """How the message words a field path: "item[3].custom_id" as "item 3 ... custom_id" (or
    "items 1 and 3"), "rows_path:2" as "rows_path ... line 2"."""
    if item := re.fullmatch(r"item\[(\d+)\]\.?(.*)", field):
        return [rf"\bitems? (\d+ and )?{item[1]}\b", re.escape(item[2])]
    if line := re.fullmatch(r"(\w+):(\d+)", field):
        return [line[1], rf"\bline {line[2]}\b"]
    return [re.escape(field)]


def assert_names(error: GradientRequestInvalid, field: str) -> None:
    assert all(re.search(pattern, str(error)) for pattern in _as_worded(field)), str(error)
    assert any(path == field or path.startswith((f"{field}.", f"{field}[", f"{field} ")) for path, _ in error.errors), \
        error.errors


# -- callers: one per entry point --------------------------------------------------------------


def via_hook(request: dict[str, Any]) -> None:
    GradientHook().create_response(request)


def via_stream(request: dict[str, Any]) -> None:
    list(GradientHook().stream_response(request))


def via_response_operator(kwargs: dict[str, Any]) -> None:
    GradientResponseOperator(task_id="ask", **kwargs).execute({})


def via_batch_operator(kwargs: dict[str, Any]) -> None:
    # In a DAG, as users write it: the DAG's template settings apply to prompt_template.
    with DAG("bad_input", schedule=None, start_date=START):
        operator = GradientBatchOperator(task_id="batch", **kwargs)
    operator.execute({})


def via_batch_job_operator(kwargs: dict[str, Any]) -> None:
    with DAG("bad_input_job", schedule=None, start_date=START):
        operator = GradientBatchJobOperator(task_id="job", **{"inputs": ["a", "b"], **kwargs})
    operator.execute(task_context())


def via_decorator(kwargs: dict[str, Any]) -> None:
    with DAG("bad_input_decorator", schedule=None, start_date=START):
        returned = kwargs.pop("returns", "hi")

        @task.gradient(**kwargs)
        def ask() -> Any:
            return returned

        node = ask()
    node.operator.execute({})


def via_hook_arguments(kwargs: dict[str, Any]) -> None:
    GradientHook(**kwargs).create_response({"input": "hi"})


CALLERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "hook": via_hook, "stream": via_stream, "response": via_response_operator, "batch": via_batch_operator,
    "batch_job": via_batch_job_operator, "decorator": via_decorator, "hook_args": via_hook_arguments,
}
OPERATORS = ("response", "batch", "batch_job", "decorator")


# -- the model's rules, at every entry point -----------------------------------------------------


def _as_entry_point(entry: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The model table's request overrides as each entry point takes them."""
    if entry == "response":
        params = dict(overrides)
        return {"input": params.pop("input", "hi"), "request_params": params}
    if entry == "batch":  # per-item overrides, on the second item
        return {"inputs": ["fine", {"input": "hi", "custom_id": "c1", **overrides}]}
    return {"input": "hi", **overrides}


@pytest.mark.parametrize("entry", ["hook", "response", "batch"])
@pytest.mark.parametrize(("overrides", "field", "rule"), INVALID,
                         ids=[f"{i:02d}-{c[1]}" for i, c in enumerate(INVALID)])
def test_every_model_rule_holds_at_every_entry_point(idle_emulator, entry: str, overrides: dict, field: str,
                                                     rule: str) -> None:
    error = reject(idle_emulator, lambda: CALLERS[entry](_as_entry_point(entry, overrides)))
    cause = invalid(error, from_operator=entry != "hook")
    assert rule in str(error)
    assert_names(cause, field)
    if entry == "batch":
        assert "item 1 (custom_id 'c1')" in str(error)


# -- what only the entry points see ---------------------------------------------------------------

# (entry point, its arguments, the field the error must name)
ENTRY_CASES: list[tuple[str, dict[str, Any], str]] = [
    # wrong types
    ("hook", {"input": "x", "temperature": "hot"}, "temperature"),
    ("hook", {"input": "x", "max_output_tokens": 2.5}, "max_output_tokens"),
    ("hook", {"input": "x", "metadata": ["team", "data"]}, "metadata"),
    ("hook", {"input": "x", "tools": {"type": "function", "name": "f"}}, "tools"),
    ("hook", {"input": None}, "input"),
    ("hook", {"input": [{"role": "user"}]}, "input[0].content"),
    ("hook", {"input": "x", "stop": [1, 2]}, "stop"),
    ("hook", {"input": "x", "stream": "yes"}, "stream"),
    ("response", {"input": "x", "temperature": "warm"}, "temperature"),
    ("response", {"input": "x", "metadata": {"team": 7}}, "metadata"),
    ("batch", {"inputs": ["ok", 42]}, "item[1]"),
    ("batch", {"inputs": "one prompt, not a list"}, "inputs"),
    ("batch", {"inputs": [{"input": "x", "custom_id": ["a"]}]}, "item[0].custom_id"),
    # streamed requests are checked before the stream opens
    ("hook", {"input": "x", "stream": True, "temperature": 3}, "temperature"),
    ("stream", {"input": "x", "top_k": 0}, "top_k"),
    ("stream", {"input": [{"type": "function_call_output", "call_id": "", "output": "x"}]}, "input[0].call_id"),
    ("response", {"input": "x", "stream": True, "request_params": {"top_logprobs": 99}}, "top_logprobs"),
    # roles, tools, metadata, reasoning
    ("response", {"input": [{"role": "user", "content": "x"}, {"role": "narrator", "content": "y"}]}, "input[1].role"),
    ("hook", {"input": "x", "tools": [{"type": "function", "name": "get weather"}]}, "tools[0].name"),
    ("response", {"input": "x", "tools": [{"type": "function", "name": "a.b"}]}, "tools[0].name"),
    ("response", {"input": "x", "tool_choice": "always"}, "tool_choice"),
    ("response", {"input": "x", "reasoning": {"effort": "max"}}, "reasoning.effort"),
    ("batch", {"inputs": [{"input": "x", "metadata": {"k": "v" * 513}}]}, "metadata"),
    ("batch", {"inputs": [{"input": "x", "tools": [{"type": "function", "name": "bad name"}]}]}, "tools[0].name"),
    # structured output
    ("response", {"input": "x", "output_schema": "a summary"}, "output_schema"),
    ("batch", {"inputs": ["x"], "output_schema": {"type": "objekt"}}, "output_schema"),
    ("response", {"input": "x", "output_schema": {"type": "object"}, "response_format": {"type": "json_object"}},
     "response_format"),
    ("batch", {"inputs": ["x"], "output_schema": {"type": "object"}, "response_format": {"type": "text"}},
     "response_format"),
    # empty input, shared parameters, parameters given twice
    ("batch", {"inputs": ["ok", ""]}, "input"),
    ("batch", {"prompt_template": "{{ text }}", "rows": [{"text": "fine"}, {"text": ""}]}, "input"),
    ("batch", {"inputs": ["a", "b"], "temperature": 5}, "temperature"),
    ("batch", {"inputs": ["a"], "max_output_tokens": 0}, "max_output_tokens"),
    ("batch", {"inputs": ["a"], "temperature": 1, "request_params": {"temperature": 1}}, "temperature"),
    ("batch", {"inputs": [{"input": "x", "model": ""}]}, "model"),
    # item forms, ids and sources of a batch
    ("batch", {"inputs": [{"prompt": "x"}]}, "item[0].input"),
    ("batch", {"inputs": [{"input": "x", "custom_id": ""}]}, "item[0].custom_id"),
    ("batch", {"inputs": [{"input": "a", "custom_id": "k"}, {"input": "b", "custom_id": "k"}]}, "item[1].custom_id"),
    ("batch", {"inputs": ["same", "other", "same"]}, "item[2].custom_id"),
    # an id holding a lone surrogate cannot be encoded (in a row, a digest, a request): refused by name
    ("batch", {"inputs": ["fine", {"input": "x", "custom_id": "doc-\ud800"}]}, "item[1].custom_id"),
    ("batch", {"inputs": [{"input": "x", "custom_id": "\udcff"}], "shard_index": 0, "shard_count": 2},
     "item[0].custom_id"),
    ("batch", {"prompt_template": "{{ t }}", "rows": [{"t": "a", "custom_id": "r-\ud83d"}]}, "item[0].custom_id"),
    ("batch_job", {"inputs": [{"input": "x", "custom_id": "\ud800"}]}, "item[0].custom_id"),
    ("batch", {"inputs": [{"input": "x", "custom_id": True}]}, "item[0].custom_id"),
    ("batch", {"inputs": ["a"], "rows": [{"t": 1}]}, "inputs"),
    ("batch", {"inputs": ["a"], "prompt_template": "{{ t }}"}, "prompt_template"),
    ("batch", {"rows": [{"t": "a"}]}, "prompt_template"),
    # unreadable rows files
    ("batch", {"prompt_template": "{{ t }}", "rows_path": "malformed.jsonl"}, "rows_path:2"),
    ("batch", {"prompt_template": "{{ t }}", "rows_path": "array.jsonl"}, "rows_path:1"),
    ("batch", {"prompt_template": "{{ t }}", "rows_path": "short_row.csv"}, "rows_path:3"),
    ("batch", {"prompt_template": "{{ t }}", "rows_path": "long_row.csv"}, "rows_path:3"),
    ("batch", {"prompt_template": "{{ t }}", "rows_path": "latin1.csv"}, "rows_path:3"),
    ("batch_job", {"inputs": None, "prompt_template": "{{ t }}", "rows_path": "short_row.csv"}, "rows_path:3"),
    # values JSON cannot carry: refused before the first item is sent, not at the eighteenth
    ("hook", {"input": "x", "extra_body": {"penalty": math.nan}}, "extra_body.penalty"),
    ("stream", {"input": "x", "extra_body": {"when": datetime.date(2025, 1, 1)}}, "extra_body.when"),
    ("response", {"input": "x", "request_params": {"extra_body": {"bias": [1, math.inf]}}}, "extra_body.bias[1]"),
    ("response", {"input": "x", "tools": [{"type": "function", "name": "f", "parameters": {"x": -math.inf}}]},
     "tools[0].parameters.x"),
    ("batch", {"inputs": [*(f"p{i}" for i in range(17)), {"input": "x", "extra_body": {"t": math.nan}}, "a", "b"]},
     "extra_body.t"),
    ("batch_job", {"inputs": ["a", {"input": "x", "extra_body": {"t": math.nan}}]}, "extra_body.t"),
]


@pytest.mark.parametrize(("entry", "kwargs", "field"), ENTRY_CASES,
                         ids=[f"{i:02d}-{c[0]}-{c[2]}" for i, c in enumerate(ENTRY_CASES)])
def test_entry_point_rejects_before_sending_and_names_the_field(idle_emulator, rows_dir, entry: str,
                                                                kwargs: dict, field: str) -> None:
    error = reject(idle_emulator, lambda: CALLERS[entry](_in_rows_dir(kwargs, rows_dir)))
    assert_names(invalid(error, from_operator=entry in OPERATORS), field)


# -- arguments: every argument of every operator, the decorator and the hook ---------------------

# (entry point, its arguments, the argument the error must name). Whether the argument is checked
# when the operator is made (not templated) or when it runs (templated), nothing is sent.
ARGUMENT_CASES: list[tuple[str, dict[str, Any], str]] = [
    # GradientHook(...)
    ("hook_args", {"max_connections": 0}, "max_connections"),
    ("hook_args", {"timeout": "soon"}, "timeout"),
    ("hook_args", {"timeout": -1}, "timeout"),
    ("hook_args", {"timeout": math.nan}, "timeout"),
    ("hook_args", {"max_retries": -1}, "max_retries"),
    ("hook_args", {"max_retries": 1.5}, "max_retries"),
    ("hook_args", {"async_transport": "curl"}, "async_transport"),
    ("hook_args", {"gradient_conn_id": ""}, "gradient_conn_id"),
    # what every operator shares
    ("response", {"input": "x", "request_timeout": -1}, "request_timeout"),
    ("response", {"input": "x", "request_timeout": "10"}, "request_timeout"),
    ("response", {"input": "x", "max_retries": -1}, "max_retries"),
    ("response", {"input": "x", "gradient_conn_id": None}, "gradient_conn_id"),
    ("response", {"input": "x", "request_params": "temperature=1"}, "request_params"),
    ("batch", {"inputs": ["a"], "request_params": ["temperature", 1]}, "request_params"),
    ("batch", {"inputs": ["a"], "request_timeout": 0}, "request_timeout"),
    # GradientResponseOperator and @task.gradient
    ("response", {"input": "x", "include_raw": "yes"}, "include_raw"),
    ("response", {"input": "x", "stream": 1}, "stream"),
    ("response", {"input": "x", "output_retries": -1}, "output_retries"),
    ("response", {"input": "x", "max_tool_rounds": -1}, "max_tool_rounds"),
    ("response", {"input": "x", "tool_functions": {"get weather": len}}, "tool_functions"),
    ("response", {"input": "x", "tool_functions": {"f": "not callable"}}, "tool_functions"),
    ("response", {"input": "x", "tool_functions": [len]}, "tool_functions"),
    ("decorator", {"max_tool_rounds": -1}, "max_tool_rounds"),
    ("decorator", {"request_timeout": -5}, "request_timeout"),
    ("decorator", {"returns": {"prompt": "x"}}, "input"),
    # GradientBatchOperator
    ("batch", {"inputs": ["a"], "max_concurrency": 0}, "max_concurrency"),
    ("batch", {"inputs": ["a"], "max_concurrency": 2.5}, "max_concurrency"),
    ("batch", {"inputs": ["a"], "max_concurrency": True}, "max_concurrency"),
    ("batch", {"inputs": ["a"], "requests_per_minute": -60}, "requests_per_minute"),
    ("batch", {"inputs": ["a"], "requests_per_minute": 0}, "requests_per_minute"),
    ("batch", {"inputs": ["a"], "tokens_per_minute": -1000}, "tokens_per_minute"),
    ("batch", {"inputs": ["a"], "tokens_per_minute": "many"}, "tokens_per_minute"),
    ("batch", {"inputs": ["a"], "max_total_tokens": 0}, "max_total_tokens"),
    ("batch", {"inputs": ["a"], "max_total_tokens": -5}, "max_total_tokens"),
    ("batch", {"inputs": ["a"], "max_failed_fraction": -0.1}, "max_failed_fraction"),
    ("batch", {"inputs": ["a"], "max_failed_fraction": 1.5}, "max_failed_fraction"),
    ("batch", {"inputs": ["a"], "max_failed_fraction": "half"}, "max_failed_fraction"),
    ("batch", {"inputs": ["a"], "max_failed_fraction": math.nan}, "max_failed_fraction"),
    ("batch", {"inputs": ["a"], "item_timeout": -1}, "item_timeout"),
    ("batch", {"inputs": ["a"], "progress_interval": 0}, "progress_interval"),
    ("batch", {"inputs": ["a"], "rate_limiter": object()}, "rate_limiter"),
    ("batch", {"inputs": ["a"], "output_asset": "s3://bucket/out"}, "output_asset"),
    ("batch", {"rows": [{"t": "a"}], "prompt_template": 42}, "prompt_template"),
    ("batch", {"inputs": ["a"], "output_path": 42}, "output_path"),
    ("batch", {"inputs": ["a"], "output_path": InRowsDir("a_file/out")}, "output_path"),
    ("batch", {"prompt_template": "{{ t }}", "rows_path": ["a.csv"]}, "rows_path"),
    # GradientBatchJobOperator: refused before any file is uploaded or any job created
    ("batch_job", {"timeout": -1}, "timeout"),
    ("batch_job", {"timeout": datetime.timedelta(0)}, "timeout"),
    ("batch_job", {"wait_timeout": -1}, "wait_timeout"),
    ("batch_job", {"provider": "google"}, "provider"),
    ("batch_job", {"completion_window": "48h"}, "completion_window"),
    ("batch_job", {"max_requests_per_file": 0}, "max_requests_per_file"),
    ("batch_job", {"max_requests_per_file": 50_001}, "max_requests_per_file"),
    ("batch_job", {"max_bytes_per_file": 0}, "max_bytes_per_file"),
    ("batch_job", {"poll_interval": 0}, "poll_interval"),
    ("batch_job", {"max_poll_failures": 0}, "max_poll_failures"),
    ("batch_job", {"deferrable": "no"}, "deferrable"),
    ("batch_job", {"cancel_on_kill": None}, "cancel_on_kill"),
    ("batch_job", {"cancel_on_timeout": "yes"}, "cancel_on_timeout"),
    ("batch_job", {"job_metadata": {"team": 7}}, "job_metadata"),
    ("batch_job", {"max_failed_fraction": 2}, "max_failed_fraction"),
    ("batch_job", {"output_path": InRowsDir("a_file/out")}, "output_path"),
]


@pytest.mark.parametrize(("entry", "kwargs", "argument"), ARGUMENT_CASES,
                         ids=[f"{i:02d}-{c[0]}-{c[2]}" for i, c in enumerate(ARGUMENT_CASES)])
def test_bad_argument_is_refused_before_anything_is_sent_naming_it(idle_emulator, rows_dir, entry: str,
                                                                   kwargs: dict, argument: str) -> None:
    error = reject(idle_emulator, lambda: CALLERS[entry](_in_rows_dir(kwargs, rows_dir)))
    cause = invalid(error, from_operator=entry in OPERATORS)
    assert isinstance(cause, GradientArgumentError) and cause.argument == argument, repr(cause)
    assert str(cause).startswith(f"invalid argument: {argument}: ") and "; allowed: " in str(cause), str(cause)
    assert "Airflow connection" not in str(cause)  # blamed on the argument, never on the connection
    assert idle_emulator.request_count(path=None) == 0  # no request, no upload, no job


@pytest.fixture
def bad_connection(idle_emulator, monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], str]:
    """Defines connection ``bad_conn`` to the emulator with the given extra (a dict or raw text)."""

    def define(extra: Any) -> str:
        value = {"conn_type": "gradient", "host": idle_emulator.base_url, "password": TEST_KEY, "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_BAD_CONN", json.dumps(value))
        return "bad_conn"

    return define


# (the connection's extra, what the error must name)
EXTRA_CASES = [
    ('{"model": "m", "timeout": 30', "not valid JSON"),
    ('["model", "m"]', "a JSON list"),
    ({"model": "m", "timeout": -1}, "timeout"),
    ({"model": "m", "timeout": "soon"}, "timeout"),
    ({"model": "m", "connect_timeout": 0}, "connect_timeout"),
    ({"model": "m", "max_retries": -1}, "max_retries"),
    ({"model": "m", "max_retry_wait": -1}, "max_retry_wait"),
    ({"model": 42}, "model"),
    ({"model": "m", "max_retry_wait": TEST_KEY}, "max_retry_wait"),  # the key pasted in the wrong field
]


@pytest.mark.parametrize("entry", ["hook", "response", "batch"])
@pytest.mark.parametrize(("extra", "named"), EXTRA_CASES, ids=[f"{i}-{c[1]}" for i, c in enumerate(EXTRA_CASES)])
def test_bad_connection_extra_is_refused_naming_connection_and_extra(bad_connection, idle_emulator, entry, extra,
                                                                     named) -> None:
    conn_id = bad_connection(extra)
    call = {"hook": lambda: GradientHook(conn_id).create_response({"input": "x"}),
            "response": lambda: via_response_operator({"input": "x", "gradient_conn_id": conn_id}),
            "batch": lambda: via_batch_operator({"inputs": ["x"], "gradient_conn_id": conn_id})}[entry]
    error = reject(idle_emulator, call)
    if entry != "hook":
        assert isinstance(error, AirflowFailException), repr(error)
        error = error.__cause__
    assert isinstance(error, GradientConfigError), repr(error)
    assert f"connection {conn_id!r}" in str(error) and named in str(error) and "allowed: " in str(error)
    assert TEST_KEY not in str(error)


# -- templates and files: stopped before sending, failed for good ---------------------------------

# (arguments, the underlying error, what its message says, the field the typed error names)
TEMPLATE_AND_FILE_CASES = [
    ({"prompt_template": "Summarise {{ text ", "rows": [{"text": "a"}]}, jinja2.TemplateSyntaxError,
     "end of template", "prompt_template"),
    # Inside a DAG the template env is the DAG's, with StrictUndefined (Airflow's default).
    ({"prompt_template": "Summarise {{ text }}", "rows": [{"title": "a"}]}, jinja2.UndefinedError,
     "'text' is undefined", "prompt_template"),
    ({"prompt_template": "Summarise {{ text }}", "rows_path": "no_text_column.csv"}, jinja2.UndefinedError,
     "'text' is undefined", "prompt_template"),
    ({"prompt_template": "{{ t }}", "rows_path": "missing.jsonl"}, FileNotFoundError, "missing.jsonl", "rows_path"),
    ({"prompt_template": "{{ t }}", "rows": ["a", "b"]}, TypeError, "not a mapping", "rows"),
]
TEMPLATE_IDS = ["syntax-error", "undefined-variable", "csv-without-column", "missing-file", "rows-not-dicts"]


@pytest.mark.parametrize(("kwargs", "raised", "named", "field"), TEMPLATE_AND_FILE_CASES, ids=TEMPLATE_IDS)
def test_template_and_file_errors_fail_without_retry_naming_the_argument(idle_emulator, rows_dir, kwargs, raised,
                                                                         named, field) -> None:
    error = invalid(reject(idle_emulator, lambda: via_batch_operator(_in_rows_dir(kwargs, rows_dir))),
                    from_operator=True)
    assert_names(error, field)
    assert named in str(error)  # the cause the template engine or the file system gave


# -- in real DAG runs: failed at once, never retried ----------------------------------------------


@pytest.mark.parametrize(("operator", "kwargs"), [
    (GradientBatchOperator, {"inputs": [{"input": "a", "custom_id": "k"}, {"input": "b", "custom_id": "k"}]}),
    (GradientResponseOperator, {"input": "x", "tools": [{"type": "function", "name": "get weather"}]}),
    # arguments only known once rendered, checked when the task starts
    (GradientResponseOperator, {"input": "x", "request_params": "{{ 'temperature=1' }}"}),
    (GradientBatchOperator, {"inputs": ["a", "b"], "output_path": InRowsDir("a_file/{{ run_id }}")}),
    (GradientBatchOperator, {"prompt_template": "{{ t }}", "rows_path": "short_row.csv"}),
    (GradientBatchJobOperator, {"inputs": ["a"], "job_metadata": {"run": "{{ run_id }}", "n": 7}}),
    (GradientResponseOperator, {"input": "x", "gradient_conn_id": "bad_conn"}),
], ids=["batch-duplicate-ids", "response-bad-tool-name", "request-params-text", "unwritable-output-path",
        "short-csv-row", "job-metadata-not-strings", "connection-extra-not-json"])
def test_bad_input_fails_the_task_once_despite_retries(idle_emulator, rows_dir, bad_connection, operator,
                                                       kwargs) -> None:
    bad_connection('{"model": ')
    with DAG(f"bad_input_{operator.__name__}", schedule=None, start_date=START) as dag:
        operator(task_id="t", retries=2, retry_delay=datetime.timedelta(0), **_in_rows_dir(kwargs, rows_dir))
    run = run_dag(dag)
    assert task_states(run) == {"t": "failed"} and try_numbers(run) == {"t": 1}
    assert idle_emulator.request_count(path=None) == 0


def test_bad_argument_of_a_mapped_task_fails_each_task_once(idle_emulator) -> None:
    # A mapped operator is only made when its task runs: the argument is refused there, not retried.
    with DAG("bad_input_mapped", schedule=None, start_date=START) as dag:
        GradientBatchOperator.partial(task_id="t", max_concurrency=0, retries=2,
                                      retry_delay=datetime.timedelta(0)).expand(inputs=[["a"], ["b"]])
    run = run_dag(dag)
    assert task_states(run) == {"t[0]": "failed", "t[1]": "failed"} and try_numbers(run) == {"t": 1}
    assert idle_emulator.request_count(path=None) == 0
