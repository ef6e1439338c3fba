#!/usr/bin/env python3
"""Benchmark the default render: image sizes, build times, start to /ready, /predict latency and throughput.

    make bench                      # or: .venv/bin/python bench/bench.py [--requests 2000] [--concurrency 4]

Prints a Markdown table for BENCHMARKS.md. The cold build clears BuildKit's cache (layers and the pip cache mount)
first, so packages are downloaded again. Load goes to 127.0.0.1 only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.answers import MATRIX, REPO
from helpers.combos import DEFAULT_COMBO
from helpers.engine import run
from helpers.render import copier_cli

MB = 1_000_000
BODY = json.dumps({"features": [5.1, 3.5, 1.4, 0.2]}).encode()


def timed(cmd: list[str], cwd: Path) -> float:
    started = time.monotonic()
    run(cmd, cwd=cwd, env={"DOCKER_BUILDKIT": "1"}, timeout=3600)
    return time.monotonic() - started


def size(image: str) -> int:
    return int(run(["docker", "image", "inspect", "--format", "{{.Size}}", image]).stdout)


def layers(image: str) -> list[int]:
    out = run(["docker", "history", "--human=false", "--format", "{{.Size}}", image]).stdout
    return [int(x) for x in out.split()]


def start_to_ready(image: str) -> float:
    started = time.monotonic()
    cid = run(["docker", "run", "-d", "-p", "127.0.0.1::8000", "--read-only", "--tmpfs", "/tmp", image]).stdout.strip()
    port = int(run(["docker", "port", cid, "8000/tcp"]).stdout.split()[0].rsplit(":", 1)[1])
    try:
        while time.monotonic() - started < 120:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/ready")
                if conn.getresponse().status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("serve never became ready")
    finally:
        run(["docker", "rm", "-f", cid], check=False)


def load(image: str, requests: int, concurrency: int, max_seconds: float) -> dict[str, float]:
    cid = run(["docker", "run", "-d", "-p", "127.0.0.1::8000", "--cpus", "2", image]).stdout.strip()
    port = int(run(["docker", "port", cid, "8000/tcp"]).stdout.split()[0].rsplit(":", 1)[1])
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds
    per_worker = requests // concurrency

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for _ in range(per_worker):
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter()
            conn.request("POST", "/predict", body=BODY, headers={"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            with lock:
                latencies.append(time.perf_counter() - t0)

    try:
        for _ in range(100):  # wait for ready, then warm up
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/ready")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
    finally:
        run(["docker", "rm", "-f", cid], check=False)
    latencies.sort()
    return {
        "requests": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "rps": len(latencies) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=60)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mldt-bench-"))
    project = work / "project"
    combo = DEFAULT_COMBO
    answers = [a for k, v in combo.answers.items() for a in ("-d", f"{k}={v}")]
    result = copier_cli("copy", "--trust", "--defaults", "--vcs-ref", "HEAD", *answers, str(REPO), str(project))
    assert result.returncode == 0, result.stderr
    base = MATRIX["base_image"][combo.base_image]["runtime"].format(
        python=combo.python_version, debian=MATRIX["python"][combo.python_version]["debian"])

    def code_change() -> None:
        app_py = next((project / "src").glob("*/serving/app.py"))
        app_py.write_text(app_py.read_text() + f"\n# bench {time.time()}\n")

    # cold = no layers and an empty pip cache mount, before each target's first build
    run(["docker", "builder", "prune", "-af"], check=False)
    cold_train = timed(["docker", "build", "--target", "train", "-t", "mldt-bench:train", "."], project)
    models = project / "models"
    models.chmod(0o777)
    run(["docker", "run", "--rm", "-v", f"{models}:/app/models", "mldt-bench:train"])
    code_change()
    rebuild_train = timed(["docker", "build", "--target", "train", "-t", "mldt-bench:train", "."], project)
    run(["docker", "builder", "prune", "-af"], check=False)
    cold_serve = timed(["docker", "build", "--target", "serve", "-t", "mldt-bench:serve", "."], project)
    code_change()
    rebuild_serve = timed(["docker", "build", "--target", "serve", "-t", "mldt-bench:serve", "."], project)

    base_size, base_layers = size(base), len(layers(base))
    rows = []
    for target, cold, rebuild in (("serve", cold_serve, rebuild_serve), ("train", cold_train, rebuild_train)):
        image = f"mldt-bench:{target}"
        ours = layers(image)[:-base_layers]
        rows.append((target, (size(image) - base_size) / MB, max(ours) / MB, cold, rebuild))
    ready = sorted(start_to_ready("mldt-bench:serve") for _ in range(3))[1]
    perf = load("mldt-bench:serve", args.requests, args.concurrency, args.max_seconds)

    print(f"Default render ({combo.id}); base {base} ({base_size / MB:.0f} MB); "
          f"{platform.machine()}, {subprocess.run(['nproc'], capture_output=True, text=True, check=False, timeout=10).stdout.strip()} cores\n")
    print("| image | MB over base | largest layer MB | cold build s | rebuild after code change s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for target, over, largest, cold, rebuild in rows:
        print(f"| {target} | {over:.1f} | {largest:.1f} | {cold:.1f} | {rebuild:.1f} |")
    print(f"\nserve: start to /ready {ready:.2f} s (median of 3); /predict with {args.concurrency} keep-alive "
          f"clients, {perf['requests']} requests, container limited to 2 CPUs: p50 {perf['p50_ms']:.1f} ms, "
          f"p99 {perf['p99_ms']:.1f} ms, {perf['rps']:.0f} requests/s")


if __name__ == "__main__":
    main()
