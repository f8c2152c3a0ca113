"""Comparing replies that must be equal but for what the emulator makes fresh on every request."""

from __future__ import annotations

from typing import Any


def same_reply(xcom: dict[str, Any]) -> dict[str, Any]:
    """An XCom without its ``id``: the emulator gives every request a fresh one."""
    return {key: value for key, value in xcom.items() if key != "id"}
