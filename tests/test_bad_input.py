"""Bad input through the entry points users touch, against a running emulator that must see nothing.

``GradientHook.create_response`` / ``stream_response`` raise :class:`GradientRequestInvalid`; the
operators raise ``AirflowFailException`` from it, so Airflow does not retry what would fail the
same way. Every case names the field at fault. The model-level table of ``tests/test_models.py`` is
replayed through each entry point; the table here adds what only the entry points see.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jinja2
import pendulum
import pytest

from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException
from airflow_gradient import GradientBatchOperator, GradientHook, GradientRequestInvalid, GradientResponseOperator
from airflow_gradient.testing import GradientEmulator
from tests.conftest import TEST_KEY, conn_env, run_dag, task_states, try_numbers
from tests.test_models import INVALID

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
    return folder


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


CALLERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "hook": via_hook, "stream": via_stream, "response": via_response_operator, "batch": via_batch_operator,
}


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
    ("batch", {"inputs": ["a"], "rows": [{"t": 1}]}, "inputs"),
    ("batch", {"inputs": ["a"], "prompt_template": "{{ t }}"}, "prompt_template"),
    ("batch", {"rows": [{"t": "a"}]}, "prompt_template"),
    # unreadable rows files
    ("batch", {"prompt_template": "{{ t }}", "rows_path": "malformed.jsonl"}, "rows_path:2"),
    ("batch", {"prompt_template": "{{ t }}", "rows_path": "array.jsonl"}, "rows_path:1"),
]


@pytest.mark.parametrize(("entry", "kwargs", "field"), ENTRY_CASES,
                         ids=[f"{i:02d}-{c[0]}-{c[2]}" for i, c in enumerate(ENTRY_CASES)])
def test_entry_point_rejects_before_sending_and_names_the_field(idle_emulator, rows_dir, entry: str,
                                                                kwargs: dict, field: str) -> None:
    if "rows_path" in kwargs:
        kwargs = {**kwargs, "rows_path": str(rows_dir / kwargs["rows_path"])}
    error = reject(idle_emulator, lambda: CALLERS[entry](kwargs))
    assert_names(invalid(error, from_operator=entry in ("response", "batch")), field)


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


def _with_rows_dir(kwargs: dict[str, Any], rows_dir: Path) -> dict[str, Any]:
    return {**kwargs, "rows_path": str(rows_dir / kwargs["rows_path"])} if "rows_path" in kwargs else kwargs


@pytest.mark.parametrize(("kwargs", "raised", "named", "field"), TEMPLATE_AND_FILE_CASES, ids=TEMPLATE_IDS)
def test_template_and_file_errors_fail_without_retry_naming_the_argument(idle_emulator, rows_dir, kwargs, raised,
                                                                         named, field) -> None:
    error = invalid(reject(idle_emulator, lambda: via_batch_operator(_with_rows_dir(kwargs, rows_dir))),
                    from_operator=True)
    assert_names(error, field)
    assert named in str(error)  # the cause the template engine or the file system gave


# -- in real DAG runs: failed at once, never retried ----------------------------------------------


@pytest.mark.parametrize(("operator", "kwargs"), [
    (GradientBatchOperator, {"inputs": [{"input": "a", "custom_id": "k"}, {"input": "b", "custom_id": "k"}]}),
    (GradientResponseOperator, {"input": "x", "tools": [{"type": "function", "name": "get weather"}]}),
], ids=["batch-duplicate-ids", "response-bad-tool-name"])
def test_bad_input_fails_the_task_once_despite_retries(idle_emulator, operator, kwargs) -> None:
    with DAG(f"bad_input_{operator.__name__}", schedule=None, start_date=START) as dag:
        operator(task_id="t", retries=2, retry_delay=datetime.timedelta(0), **kwargs)
    run = run_dag(dag)
    assert task_states(run) == {"t": "failed"} and try_numbers(run) == {"t": 1}
    assert idle_emulator.request_count(path=None) == 0
