"""Single-request overhead: GradientHook.create_response vs the openai SDK's responses.create.

Both talk to the emulator on loopback at zero latency, sequentially, in alternating rounds so that
machine noise hits both alike. Run through ``python -m bench --only single``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def _seconds_per_request(call: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - started) / n


def bench_single(base_url: str, key: str, model: str, per_round: int = 200, rounds: int = 5) -> dict[str, Any]:
    """Median ms per request of each client over ``rounds`` alternating rounds, and their ratio."""
    import openai

    from airflow_gradient import GradientHook

    hook = GradientHook()  # gradient_default, pointed at the emulator by the caller's environment
    sdk = openai.OpenAI(base_url=base_url, api_key=key, max_retries=2)
    request = {"input": "Summarise: the quick brown fox jumps over the lazy dog", "max_output_tokens": 32}

    def ours() -> object:
        return hook.create_response(request).output_text

    def theirs() -> object:
        return sdk.responses.create(model=model, **request).output_text

    assert ours() == theirs()  # the same reply through both clients, and both warmed up
    hook_s, sdk_s = [], []
    for _ in range(rounds):
        hook_s.append(_seconds_per_request(ours, per_round))
        sdk_s.append(_seconds_per_request(theirs, per_round))
    hook.close()
    sdk.close()
    hook_ms, sdk_ms = statistics.median(hook_s) * 1000, statistics.median(sdk_s) * 1000
    return {
        "requests": per_round * rounds,
        "hook_ms_per_request": round(hook_ms, 3),
        "openai_ms_per_request": round(sdk_ms, 3),
        "openai_over_hook": round(sdk_ms / hook_ms, 2),
    }
