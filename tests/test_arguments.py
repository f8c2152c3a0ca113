"""The argument checkers themselves: the kinds of value each refuses, and the output_path probe."""

from __future__ import annotations

import datetime
import errno
import math
from pathlib import Path

import pytest

from airflow.sdk import ObjectStoragePath
from airflow_gradient import arguments
from airflow_gradient.exceptions import GradientArgumentError


@pytest.mark.parametrize(("check", "value"), [
    (arguments.positive_int, True),  # a bool is no count
    (arguments.positive_int, 2.0),
    (arguments.non_negative_int, "1"),
    (arguments.positive_number, math.inf),
    (arguments.positive_number, 10**400),  # too large for a float
    (arguments.fraction, math.nan),
    (arguments.duration, datetime.timedelta(seconds=-1)),
    (arguments.boolean, 1),
    (arguments.text, "   "),
    (arguments.mapping, {1: "a"}),
    (arguments.string_pairs, {"a": 1}),
    (arguments.storage_path, ""),
])
def test_each_checker_refuses_in_one_format(check, value) -> None:
    with pytest.raises(GradientArgumentError) as info:
        check("arg", value)
    assert str(info.value).startswith("invalid argument: arg: got ") and "; allowed: " in str(info.value)
    assert info.value.argument == "arg" and info.value.errors == [("arg", info.value.allowed)]


def test_numbers_written_as_text_are_read_as_numbers_where_allowed() -> None:
    assert arguments.number_text("max_retries", "3", arguments.non_negative_int) == 3
    assert arguments.number_text("timeout", "2.5", arguments.positive_number) == 2.5
    with pytest.raises(GradientArgumentError, match="got 'nan'"):
        arguments.number_text("timeout", "nan", arguments.positive_number)


def test_json_problems_name_the_path() -> None:
    value = {"a": [1, {"b": math.nan}], "c": datetime.date(2025, 1, 1), "d": {2: "x"}}
    assert list(arguments.json_problems(value, "extra_body")) == [
        ("extra_body.a[1].b", "nan is not a JSON number"),
        ("extra_body.c", "date is not a JSON value"),
        ("extra_body.d", "key 2 is not a string"),
    ]
    assert list(arguments.json_problems({"c": datetime.date(2025, 1, 1)}, strict=False)) == []


def test_the_output_path_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    target = ObjectStoragePath(str(tmp_path / "new" / "dir"))
    arguments.writable_directory("output_path", target)
    assert (tmp_path / "new" / "dir").is_dir() and list((tmp_path / "new" / "dir").iterdir()) == []


class _Unreachable:
    """A location on object storage whose service cannot be reached: that cannot happen here."""

    def __truediv__(self, name: str) -> _Unreachable:
        return self

    def mkdir(self, **_: object) -> None:
        raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer")


def test_the_probe_lets_a_network_error_through_to_be_retried() -> None:
    # Only a location that is wrong is a bad argument; a failing network is Airflow's to retry.
    with pytest.raises(ConnectionResetError):
        arguments.writable_directory("output_path", _Unreachable())
