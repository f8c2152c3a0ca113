"""What each kind of argument allows: the one place where an argument is judged valid or not.

The operators, the decorator, the trigger, :class:`~airflow_gradient.hooks.gradient.GradientHook`
and the batch settings call these checkers on their arguments before anything is sent, uploaded or
created. Each returns the value (a number meant as seconds or a rate as a ``float``) or raises
:class:`~airflow_gradient.exceptions.GradientArgumentError` in one format, naming the argument,
what was given and what is allowed::

    invalid argument: max_concurrency: got 0; allowed: an integer >= 1

The operators turn that error into ``AirflowFailException`` (see
:func:`airflow_gradient.operators.base.fail_without_retries`), the hook raises it as it is, and the
connection's extras are reported as :class:`~airflow_gradient.exceptions.GradientConfigError`.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from numbers import Real
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel

from airflow_gradient.exceptions import GradientArgumentError

T = TypeVar("T")

_SHORT = 80
# The API's rule for a function's name; the request model's ``ToolName`` uses it too.
TOOL_NAME_PATTERN = r"[a-zA-Z0-9_-]{1,64}"
_TOOL_NAME = re.compile(TOOL_NAME_PATTERN)


def short(value: Any, limit: int = _SHORT) -> str:
    """``repr(value)``, cut to ``limit`` characters: an error message quotes, it does not dump."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def refuse(name: str, allowed: str, *, got: Any = None, reason: str | None = None) -> NoReturn:
    """Raise the one error of this module: ``invalid argument: <name>: <reason>; allowed: <allowed>``,
    the reason being ``got <value>`` unless given."""
    raise GradientArgumentError(name, reason or f"got {short(got)}", allowed)


def optional(check: Callable[..., T], name: str, value: Any, *rule: Any) -> T | None:
    """``None`` (the argument's "not set"), or what ``check(name, value, *rule)`` makes of ``value``."""
    return None if value is None else check(name, value, *rule)


# -- numbers ----------------------------------------------------------------------------------


def _integer(name: str, value: Any, allowed: str, low: int, high: int | None = None) -> int:
    # bool is an int to Python, never to a user.
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        refuse(name, allowed, got=value)
    return value


def positive_int(name: str, value: Any) -> int:
    """An integer >= 1 (a count that must allow some work: concurrency, connections, a budget)."""
    return _integer(name, value, "an integer >= 1", 1)


def non_negative_int(name: str, value: Any) -> int:
    """An integer >= 0 (retries, rounds)."""
    return _integer(name, value, "an integer >= 0", 0)


def int_between(name: str, value: Any, low: int, high: int) -> int:
    """An integer from ``low`` to ``high``, both included."""
    return _integer(name, value, f"an integer from {low} to {high:,}", low, high)


def _real(name: str, value: Any, allowed: str, ok: Callable[[float], bool]) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        refuse(name, allowed, got=value)
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        refuse(name, allowed, got=value)
    if not math.isfinite(number) or not ok(number):
        refuse(name, allowed, got=value)
    return number


def positive_number(name: str, value: Any) -> float:
    """A finite number > 0 (seconds, a rate)."""
    return _real(name, value, "a number > 0", lambda n: n > 0)


def non_negative_number(name: str, value: Any) -> float:
    """A finite number >= 0."""
    return _real(name, value, "a number >= 0", lambda n: n >= 0)


def fraction(name: str, value: Any) -> float:
    """A number from 0 to 1."""
    return _real(name, value, "a number from 0 to 1", lambda n: 0 <= n <= 1)


def duration(name: str, value: Any) -> float:
    """A positive ``timedelta`` or a number of seconds > 0, as seconds."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    return _real(name, seconds, "a timedelta or a number of seconds, > 0", lambda n: n > 0)


def number_text(name: str, value: Any, check: Callable[[str, Any], T]) -> T:
    """``check`` applied to a number that may be written as text ("30"), as connection extras are."""
    if isinstance(value, str):
        for kind in (int, float):
            with contextlib.suppress(ValueError):
                return check(name, kind(value))
    return check(name, value)


# -- other kinds --------------------------------------------------------------------------------


def boolean(name: str, value: Any) -> bool:
    """``True`` or ``False`` (not 1, not "yes")."""
    if not isinstance(value, bool):
        refuse(name, "True or False", got=value)
    return value


def text(name: str, value: Any) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value.strip():
        refuse(name, "a non-empty string", got=value)
    return value


def texts(name: str, value: Any) -> list[str]:
    """A non-empty list of non-empty strings (ids), as a new list."""
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        refuse(name, "a non-empty list of non-empty strings", got=value)
    return list(value)


def one_of(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """One of the strings in ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        refuse(name, " or ".join(repr(a) for a in allowed), got=value)
    return value


def mapping(name: str, value: Any) -> Mapping[str, Any]:
    """A mapping whose keys are strings (parameters by name)."""
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        refuse(name, "a dict with string keys", got=value)
    return value


def string_pairs(name: str, value: Any) -> Mapping[str, str]:
    """A mapping of strings to strings."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        refuse(name, "a dict of strings to strings", got=value)
    return value


def instance(name: str, value: Any, kind: type | tuple[type, ...], allowed: str) -> Any:
    """An instance of ``kind`` (``allowed`` says it in words)."""
    if not isinstance(value, kind):
        refuse(name, allowed, got=value)
    return value


def functions(name: str, value: Any) -> Mapping[str, Callable[..., Any]]:
    """``{name: callable}``, each name a valid tool name (``[a-zA-Z0-9_-]{1,64}``)."""
    allowed = "a dict of tool names ([a-zA-Z0-9_-]{1,64}) to callables"
    if not isinstance(value, Mapping):
        refuse(name, allowed, got=value)
    for key, function in value.items():
        if not (isinstance(key, str) and _TOOL_NAME.fullmatch(key)):
            refuse(name, allowed, reason=f"tool name {short(key)} is not valid")
        if not callable(function):
            refuse(name, allowed, reason=f"{key!r} is {short(function)}, not callable")
    return value


def storage_path(name: str, value: Any) -> Any:
    """A location: a non-empty URI string, an ``ObjectStoragePath`` or an ``os.PathLike``."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, os.PathLike) or (hasattr(value, "protocol") and hasattr(value, "open")):
        return value
    refuse(name, "a non-empty path or URI string, or an ObjectStoragePath", got=value)


# -- JSON -----------------------------------------------------------------------------------------

JSON_RULE = "JSON values only: finite numbers, strings, booleans, null, lists and objects"
_SCALARS = (str, int, bool, type(None))


def json_problems(value: Any, path: str = "", *, strict: bool = True) -> Iterator[tuple[str, str]]:
    """Where ``value`` cannot be sent as JSON, as ``(path, problem)``: NaN and infinities anywhere
    (JSON has no such numbers), and with ``strict`` any value that is not a JSON type."""
    if type(value) in _SCALARS:  # the common case, first: every item of a batch passes here
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            yield path, f"{value} is not a JSON number"
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if strict and not isinstance(key, str):
                yield path, f"key {short(key)} is not a string"
            yield from json_problems(item, f"{path}.{key}" if path else str(key), strict=strict)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from json_problems(item, f"{path}[{index}]", strict=strict)
    elif isinstance(value, BaseModel):
        yield from json_problems(dict(value), path, strict=strict)
    elif strict and not (value is None or isinstance(value, (str, bool, int))):
        yield path, f"{type(value).__name__} is not a JSON value"


# -- storage ----------------------------------------------------------------------------------------

# Errors that say the location itself is wrong; others (a dropped connection to S3) may pass.
_PERMANENT = (PermissionError, NotADirectoryError, FileExistsError, IsADirectoryError, FileNotFoundError)
_PERMANENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EROFS,
                     errno.ENAMETOOLONG}


def writable_directory(name: str, path: Any) -> None:
    """Create the directory ``path`` (an ``ObjectStoragePath``) and write and delete a small probe
    file in it, so that a location this worker cannot write is refused before any request is paid.

    A permission, read-only or not-a-directory error is refused as a bad argument; any other
    failure (a network error on the way to object storage) propagates unchanged, to be retried.
    """
    probe = path / f".gradient-write-probe-{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as handle:
            handle.write(b"probe\n")
        probe.unlink()
    except OSError as exc:
        if isinstance(exc, _PERMANENT) or exc.errno in _PERMANENT_ERRNOS:
            refuse(name, "a directory this worker can create and write files in",
                   reason=f"cannot write to {path}: {type(exc).__name__}: {exc}")
        raise
