"""Single-request overhead: GradientHook.create_response vs the openai SDK's responses.create.

Both talk to the bundled emulator on loopback at zero latency, sequentially, in alternating rounds
so that machine noise hits both alike. Prints the median per-request time of each and their ratio.

    .venv/bin/python -m bench.single_request [requests_per_round] [rounds]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Callable

KEY = "bench-key"


def _time_per_request(call: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - started) / n


def run(per_round: int = 200, rounds: int = 5) -> dict[str, float]:
    import openai

    from airflow_gradient import GradientHook
    from airflow_gradient.testing import GradientEmulator

    with GradientEmulator(api_key=KEY) as emu:
        os.environ.update(emu.connection_env(model="bench-model"))
        hook = GradientHook()
        sdk = openai.OpenAI(base_url=emu.base_url, api_key=KEY, max_retries=2)
        request = {"input": "Summarise: the quick brown fox jumps over the lazy dog", "max_output_tokens": 32}

        def ours() -> object:
            return hook.create_response(request).output_text

        def theirs() -> object:
            return sdk.responses.create(model="bench-model", **request).output_text

        assert ours() == theirs()  # same reply through both clients, and both warmed up
        hook_times, sdk_times = [], []
        for _ in range(rounds):
            hook_times.append(_time_per_request(ours, per_round))
            sdk_times.append(_time_per_request(theirs, per_round))
        hook.close()
        sdk.close()
    hook_ms = statistics.median(hook_times) * 1000
    sdk_ms = statistics.median(sdk_times) * 1000
    return {"hook_ms": hook_ms, "openai_ms": sdk_ms, "ratio": sdk_ms / hook_ms}


def report(figures: dict[str, float]) -> str:
    return (
        "single request, zero latency, sequential (median of rounds):\n"
        f"  GradientHook.create_response   {figures['hook_ms']:7.2f} ms/request\n"
        f"  openai responses.create        {figures['openai_ms']:7.2f} ms/request\n"
        f"  openai time / hook time        {figures['ratio']:7.2f}x (above 1: the hook is faster)"
    )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    print(report(run(*args)))
