"""The Gradient pages in a real browser: headless Debian chromium, driven by Playwright, against a
real ``airflow api-server`` (throwaway AIRFLOW_HOME, SQLite, the simple auth manager with known
users) after real ``airflow dags test`` runs of the example DAGs against the emulator.

The figures the pages show are checked against the recorded XComs, read here straight from the
database file. Screenshots go to ``build/ui-*.png`` (``docs/images/`` holds copies for docs/ui.md).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_gradient.plugins.svg import dollars
from tests.conftest import EXAMPLES
from tests.plugins.restricted_auth import HIDDEN_DAG, RESTRICTED_USER

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]
PASSWORD = "ui-test-password"
PRICES = {"emulated-model": {"input": 0.65, "output": 0.65}}
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow(env: dict[str, str], *args: str, timeout: float = 300) -> None:
    done = subprocess.run([AIRFLOW, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def wait_until_healthy(base: str, server: subprocess.Popen[Any], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "airflow api-server exited"
        try:
            if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)  # polling a server that is starting: there is nothing to await
    raise AssertionError("airflow api-server did not answer in time")


@pytest.fixture(scope="module")
def airflow_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed: apt-get install -y chromium (make test does)"
    from airflow_gradient.testing import GradientEmulator

    home = tmp_path_factory.mktemp("ui-airflow-home")
    (home / "passwords.json").write_text(json.dumps({"admin": PASSWORD, RESTRICTED_USER: PASSWORD}))
    # Isolated 429s (retried at once, the pace kept) and a request limit in the headers: the batch's
    # 429 count, its timeline's markers and its limit line have something to show.
    with GradientEmulator(rate_429_isolated=0.25, fault_retry_after=0.05, latency=0.05, rpm_limit=600,
                          seed=7) as emulator:
        env = {name: value for name, value in os.environ.items() if not name.startswith(("AIRFLOW", "GRADIENT"))}
        env.update({
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__AUTH_MANAGER": "tests.plugins.restricted_auth.RestrictedAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"admin:admin,{RESTRICTED_USER}:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "PYTHONPATH": str(ROOT),
            "GRADIENT_EXAMPLE_OUTPUT": str(home / "out"),
            **emulator.connection_env(model="emulated-model", prices=PRICES, max_retry_wait=1, max_retries=5),
        })
        airflow(env, "db", "migrate")
        airflow(env, "dags", "reserialize")
        airflow(env, "dags", "test", "summarise_documents")
        airflow(env, "dags", "test", "single_request")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = (home / "api-server.log").open("w")
        server = subprocess.Popen([AIRFLOW, "api-server", "--port", str(port), "--workers", "1"], env=env,
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(base, server)
            yield {"base": base, "db": home / "airflow.db"}
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()


def recorded(db: Path) -> dict[str, Any]:
    """The Gradient tasks' XComs as the runs left them, read without the plugin's code."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT x.dag_id, x.run_id, x.task_id, x.value FROM xcom x JOIN task_instance ti ON ti.dag_id = x.dag_id "
            "AND ti.run_id = x.run_id AND ti.task_id = x.task_id AND ti.map_index = x.map_index "
            "WHERE x.key = 'return_value' AND ti.operator LIKE 'Gradient%'").fetchall()
    values = {(dag, task): (run, json.loads(value)) for dag, run, task, value in rows}
    return values


def login(browser: Any, base: str, user: str, **context: Any) -> Any:
    page = browser.new_context(viewport={"width": 1366, "height": 900}, **context).new_page()
    page.goto(f"{base}/auth/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/login" not in url)
    return page


def plugin_frame(page: Any, url: str, shot: str) -> Any:
    """Open ``url`` of Airflow's UI, wait for the Gradient iframe's page, save a screenshot."""
    page.goto(url)
    frame = page.frame_locator("iframe")
    frame.locator("main h1").wait_for()
    page.wait_for_load_state("networkidle")
    BUILD.mkdir(exist_ok=True)
    page.screenshot(path=str(BUILD / shot))
    return frame


def tile(frame: Any, name: str) -> str:
    return str(frame.locator(f'[data-figure="{name}"] .figure').inner_text())


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def test_a_request_without_a_session_is_refused(airflow_ui: dict[str, Any], browser: Any) -> None:
    base = airflow_ui["base"]
    for path in ("/gradient/", "/gradient/dags/summarise_documents",
                 "/gradient/dags/summarise_documents/runs/r/tasks/summarise"):
        assert httpx.get(base + path).status_code == 401
        assert httpx.get(base + path, cookies={"_token": "forged"}).status_code in (401, 403)
    page = browser.new_page()
    page.goto(f"{base}/gradient/")
    assert "Not authenticated" in page.content() and "Spend" not in page.content()


def test_the_pages_show_the_figures_of_the_recorded_runs(airflow_ui: dict[str, Any], browser: Any) -> None:
    base, values = airflow_ui["base"], recorded(airflow_ui["db"])
    (batch_run, batch), (single_run, single) = values[("summarise_documents", "summarise")], \
        values[("single_request", "summarise")]
    cost = batch["cost_usd"] + single["cost_usd"]
    tokens = batch["usage"]["total_tokens"] + single["usage"]["total_tokens"]
    page = login(browser, base, "admin")

    nav = plugin_frame(page, f"{base}/plugin/gradient", "ui-nav.png")
    assert tile(nav, "spend") == dollars(cost)
    assert tile(nav, "tokens") == f"{tokens:,}"
    assert tile(nav, "rate-limited") == f"{batch['requests']['rate_limited']:,}"
    for dag in ("summarise_documents", "single_request"):
        assert nav.locator(f'[data-chart="spend-per-day"] svg rect[data-series="{dag}"]').count() == 1
        assert nav.locator(f'[data-chart="tokens-per-day"] svg rect[data-series="{dag}"]').count() == 1
        assert nav.locator(f'[data-chart="top-dags"] svg rect[data-series="{dag}"]').count() == 1
    assert nav.locator('[data-chart="models"] svg rect[data-series="emulated-model"]').count() == 1

    dag = plugin_frame(page, f"{base}/dags/summarise_documents/plugin/gradient-dag", "ui-dag.png")
    assert tile(dag, "spend") == dollars(batch["cost_usd"])
    assert tile(dag, "tokens") == f"{batch['usage']['total_tokens']:,}"
    assert tile(dag, "items") == f"{batch['total']:,}"
    assert dag.locator('[data-chart="cost-per-run"] svg rect[data-series="cost"]').count() == 1

    ti = plugin_frame(page, f"{base}/dags/summarise_documents/runs/{batch_run}/tasks/summarise/plugin/gradient-task",
                      "ui-task.png")
    assert tile(ti, "rate-limited") == f"{batch['requests']['rate_limited']:,}"
    assert tile(ti, "tokens") == f"{batch['usage']['total_tokens']:,}"
    assert tile(ti, "cost") == dollars(batch["cost_usd"])
    chart = ti.locator('[data-chart="requests-per-minute"] svg')
    assert chart.locator('[data-series="achieved req/min"]').count() >= 1
    assert chart.locator('[data-series="limit req/min"]').count() >= 1
    increases = sum(1 for a, b in zip([0] + [s["rate_limited"] for s in batch["timeline"]],
                                      [s["rate_limited"] for s in batch["timeline"]]) if b > a)
    assert chart.locator('[data-marker="429"]').count() == increases
    assert ti.locator('[data-chart="items-done"] svg [data-series="items done"]').count() >= 1
    assert "counts.succeeded" in ti.locator("table").last.inner_text()

    one = plugin_frame(page, f"{base}/dags/single_request/runs/{single_run}/tasks/summarise/plugin/gradient-task",
                       "ui-request.png")
    assert tile(one, "cost") == dollars(single["cost_usd"])
    assert tile(one, "finish-reason") == single["finish_reason"]
    assert tile(one, "tokens") == f"{single['usage']['total_tokens']:,}"


def test_the_dark_theme_follows_airflows(airflow_ui: dict[str, Any], browser: Any) -> None:
    page = login(browser, airflow_ui["base"], "admin", color_scheme="dark")
    nav = plugin_frame(page, f"{airflow_ui['base']}/plugin/gradient", "ui-nav-dark.png")
    background = nav.locator("body").evaluate("body => getComputedStyle(body).backgroundColor")
    assert background == "rgb(26, 32, 44)"


def test_a_user_sees_only_the_dags_the_auth_manager_lets_them_read(airflow_ui: dict[str, Any], browser: Any) -> None:
    base = airflow_ui["base"]
    page = login(browser, base, RESTRICTED_USER)
    page.goto(f"{base}/gradient/")
    assert "summarise_documents" in page.content() and HIDDEN_DAG not in page.content()
    assert page.goto(f"{base}/gradient/dags/{HIDDEN_DAG}").status == 403
    assert page.goto(f"{base}/gradient/dags/summarise_documents").status == 200


def test_the_screenshots_are_saved() -> None:
    for name in ("ui-nav.png", "ui-dag.png", "ui-task.png", "ui-request.png", "ui-nav-dark.png"):
        assert (BUILD / name).stat().st_size > 10_000
    assert shutil.which("chromium") or Path(CHROMIUM).exists()
