"""Writing results to object storage: the same batch with ``output_path`` on S3 (a moto server in a
process of its own, as the storage tests use) and on local disk, side by side.

On object storage a part becomes visible when it is closed, and each row's write goes to a thread
one at a time (:meth:`BatchEngine.store`): the figure says what that costs a latency-bound batch.
Run through ``python -m bench --only storage``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import run_ours

BUCKET = "bench-bucket"


def _moto() -> tuple[subprocess.Popen[bytes], str]:
    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)
            return proc, endpoint
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.terminate()
                raise RuntimeError("the moto server did not start") from None
            time.sleep(0.2)


def bench_storage(emu: Any, tmp: Path, n: int, latency: float = 0.05, concurrency: int = 64) -> dict[str, Any]:
    """Wall time of ``n`` items written to S3 over the same to local disk; every row must land."""
    from airflow_gradient import read_results

    proc, endpoint = _moto()
    os.environ["AIRFLOW_CONN_AWS_MOTO"] = json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}})
    out: dict[str, Any] = {"n": n, "latency_s": latency, "concurrency": concurrency,
                           "ideal_s": round(n * latency / concurrency, 2)}
    try:
        for name, target in (("local", str(tmp / "storage-local")), ("s3", f"s3://aws_moto@{BUCKET}/out/")):
            emu.reset()
            emu.configure(latency=latency, rpm_limit=None, tpm_limit=None)
            prompts = [f"{name} storage {i}" for i in range(n)]
            with emu.forgetting():
                started = time.monotonic()
                manifest = run_ours(target, prompts=prompts, concurrency=concurrency)
                wall = time.monotonic() - started
            rows = read_results(target)
            assert manifest["counts"]["succeeded"] == n and len(rows) == n, (manifest["counts"], len(rows))
            out[name] = {"wall_s": round(wall, 2), "parts": len(manifest["parts"])}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    out["s3_over_local"] = round(out["s3"]["wall_s"] / out["local"]["wall_s"], 3)
    return out
