"""The main job, end to end and offline: an example DAG against the bundled emulator.

Starts the emulator on a free loopback port, creates a throwaway AIRFLOW_HOME with SQLite, runs
``airflow dags test <dag_id>`` on ``dags_examples/`` (a real Airflow, in its own process), and
prints what the run produced: its task states, XComs and output files.

For ``summarise_documents`` it runs the DAG twice, changing one document in between, as two
nights of a schedule would: the second run sends only the changed document and reuses the other
rows (``reuse_results_from``); both runs' cost is printed. The emulator's connection carries a
``prices`` extra with example numbers (not DigitalOcean's prices).

    python scripts/demo.py [dag_id]       # default: summarise_documents
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DAG = "summarise_documents"
MODEL = "emulated-model"
# Example numbers, US dollars per million tokens: they show the shape, not anyone's price list.
EXAMPLE_PRICES = {MODEL: {"input": 0.65, "cached_input": 0.30, "output": 0.65, "batch_discount": 0.5}}
CHANGED_DOC = "incident-review.txt"


def main(dag_id: str) -> int:
    home = Path(tempfile.mkdtemp(prefix="airflow-gradient-demo-"))
    out_dir = home / "output"
    docs = home / "docs"
    shutil.copytree(REPO / "dags_examples" / "data" / "docs", docs)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags_examples"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "GRADIENT_EXAMPLE_OUTPUT": str(out_dir),
        "GRADIENT_EXAMPLE_DOCS": str(docs),
    }
    os.environ.update(env)  # for this process's own Airflow import below

    from airflow_gradient.testing import GradientEmulator

    airflow = str(Path(sys.executable).with_name("airflow"))
    with GradientEmulator(api_key="demo-key", latency=0.05) as emulator:
        env.update(emulator.connection_env(model=MODEL, prices=EXAMPLE_PRICES))
        print(f"emulator: {emulator.base_url}    AIRFLOW_HOME: {home}", flush=True)
        _run([airflow, "db", "migrate"], env, quiet=True)
        code = _run([airflow, "dags", "test", dag_id], env, quiet=True)
        runs = [emulator.request_count()]
        if dag_id == DEFAULT_DAG and code == 0:
            # The next night: one document changed, the others as they were.
            changed = docs / CHANGED_DOC
            changed.write_text(changed.read_text() + "\nUpdate: the fix now runs in every region.\n")
            code = _run([airflow, "dags", "test", dag_id], env, quiet=True)
            runs.append(emulator.request_count() - runs[0])
        generated = sum(emulator.generated_counts().values())
    print(f"\n== {dag_id}: {'success' if code == 0 else 'FAILED'}; the emulator generated {generated} responses")
    if dag_id == DEFAULT_DAG:
        _print_costs(dag_id, runs)
    _print_run(dag_id)
    _print_outputs(out_dir)
    return code


def _print_costs(dag_id: str, requests: list[int]) -> None:
    """Each run's cost and what the second one reused, from the manifests in XCom."""
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.settings import Session

    with Session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id)).all()
        print(f"\n== cost per run (example prices {json.dumps(EXAMPLE_PRICES[MODEL])} USD per million tokens)")
        for number, (run, sent) in enumerate(zip(runs, requests), start=1):
            xcom = session.scalars(select(XComModel).where(
                XComModel.dag_id == dag_id, XComModel.run_id == run.run_id, XComModel.task_id == "summarise",
                XComModel.key == "return_value")).first()
            if xcom is None:
                print(f"   run {number}: no manifest")
                continue
            manifest = XComModel.deserialize_value(xcom)
            cost, reused = manifest["cost_usd"], manifest["reused"]
            print(f"   run {number}: {manifest['total']} documents, {sent} requests sent, "
                  f"cost {'unknown' if cost is None else f'${cost:.6f}'}; "
                  f"{reused['items']} reused from earlier runs, saving {reused['tokens_saved']} tokens"
                  + ("" if reused["cost_usd_saved"] is None else f" and ${reused['cost_usd_saved']:.6f}"))


def _run(cmd: list[str], env: dict[str, str], *, quiet: bool) -> int:
    done = subprocess.run(cmd, env=env, capture_output=quiet, text=True)
    if done.returncode != 0 and quiet:
        sys.stdout.write(done.stdout[-6000:])
        sys.stderr.write(done.stderr[-6000:])
    return done.returncode


def _print_run(dag_id: str) -> None:
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.settings import Session

    with Session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc())).first()
        if run is None:
            print("no run recorded")
            return
        for ti in sorted(run.get_task_instances(session=session), key=lambda t: (t.task_id, t.map_index)):
            name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            print(f"\n-- task {name}: {ti.state}")
            xcoms = session.scalars(
                select(XComModel).where(
                    XComModel.dag_id == dag_id,
                    XComModel.run_id == run.run_id,
                    XComModel.task_id == ti.task_id,
                    XComModel.map_index == ti.map_index,
                )
            )
            for xcom in xcoms:
                value = json.dumps(XComModel.deserialize_value(xcom), indent=2, default=str)
                print(f"   XCom {xcom.key}: {_clip(value, 1500)}")


def _print_outputs(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    for path in sorted(p for p in out_dir.rglob("*") if p.is_file()):
        text = path.read_text(errors="replace")
        print(f"\n-- file {path.relative_to(out_dir)} ({len(text.splitlines())} lines)")
        print(_clip(text, 2500))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n   ... ({len(text) - limit} more characters)"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DAG))
