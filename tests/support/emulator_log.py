"""What the emulator saw, counted the way several tests count it."""

from __future__ import annotations

from typing import Any


def served_429s(emulator: Any) -> int:
    """How many ``/v1/responses`` requests the emulator refused with a 429."""
    return sum(r.status == 429 for r in emulator.log if r.path == "/v1/responses")


def responses_sent(emulator: Any) -> int:
    """How many ``/v1/responses`` requests reached the emulator."""
    return sum(r.path == "/v1/responses" for r in emulator.log)
