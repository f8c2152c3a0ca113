"""An agent task and a batch on one account share one budget through ``rate_limit_store``.

Both run at once, each its own process, on an emulated account admitting 10 requests in any second
(the scenario of ``python -m bench --only common_ai``, smaller here): the agent's Chat Completions
calls and the batch's requests take turns from one Redis-shared pace, so the account refuses
almost nothing.
"""

from __future__ import annotations

from tests.conftest import TEST_KEY
from tests.support.services import require_redis


def test_agent_and_batch_on_one_account_share_one_pace(emulator, tmp_path) -> None:
    require_redis()
    from bench.common_ai import shared_budget

    figures = shared_budget(emulator, TEST_KEY, tmp_path, mode="shared", agent_calls=40, items=150)
    assert figures["agent"]["agent"]["requests"] == 40 and figures["agent"]["agent"]["failed_runs"] == 0
    assert figures["batch"]["batch"]["counts"] == {"succeeded": 150, "failed": 0, "skipped": 0}
    assert figures["by_path"]["/v1/chat/completions"] >= 40 and figures["by_path"]["/v1/responses"] >= 150
    assert "shared via" in figures["batch"]["batch"]["pacing"]
    assert figures["429s"] <= 5, figures
