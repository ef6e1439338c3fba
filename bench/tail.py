#!/usr/bin/env python3
"""Where a server's slowest requests come from: wrk's latency percentiles up to p99.9, with the server's event loop
thread split, over the same load, into its own CPU time, time waiting for a CPU (runnable while another task had
it) and idle time (nothing to do: no request had arrived); for a generated server, the same split for each batch.

    .venv/bin/python bench/tail.py                                        # the default render's bench image
    .venv/bin/python bench/tail.py --answers serve_runtime=onnx           # built first if missing
    .venv/bin/python bench/tail.py --image mldt-bench/floor:bench --image mldt-bench/serving-serve-runtime-onnx:bench

Each server runs as bench/serving.py runs it (`--cpus 1 --cpuset-cpus 0`, read-only root, no capabilities; wrk on
the other CPU, on the container's own loopback), one after the other, --rounds times. The split of the whole load
comes from the host: /proc/<pid>/schedstat of the server's main thread (where uvicorn's event loop runs) before and
after, with the times its cgroup was throttled by the CPU quota (cpu.stat). For a generated server (an image with
/app/src/<package>/serving) the batches come from bench/tail_probe.py, mounted read-only and run as the image's
Python in place of `python -m <package>.serve` (WORKERS=1): the same server, with each batch noted (wall clock, the
thread's CPU time, its wait for a CPU); a cycle is the time from one batch to the next, and a slow one (over twice
the median) is split the same way. Idle time inside a cycle is the server waiting for requests that the client has
not sent or the kernel has not delivered yet.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# bench/serving.py: how the bench builds, runs, checks and loads a server
from serving import (  # noqa: E402
    Running,
    Server,
    baseline_server,
    check_answers,
    parse_answers,
    render_or_build,
    run,
    start,
    wrk_script,
)

PROBE = Path(__file__).resolve().parent / "tail_probe.py"
PERCENTILES = (50, 90, 99, 99.9)
WRK_DONE = """
done = function(summary, latency, requests)
  io.write(string.format('TAIL {"requests": %d, "duration_us": %d, "errors": %d, "max_us": %d',
    summary.requests, summary.duration, summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout, latency.max))
  for _, p in ipairs({PERCENTILE_LIST}) do
    io.write(string.format(', "p%s": %d', p, latency:percentile(p)))
  end
  io.write("}\\n")
end
""".replace("PERCENTILE_LIST", ", ".join(str(p) for p in PERCENTILES))


def wrk(running: Running, script: Path, args: argparse.Namespace, seconds: int) -> dict[str, float]:
    out = run([*running.nsenter(), "taskset", "-c", args.client_cpu, "wrk", "-t1", f"-c{args.connections}",
               f"-d{seconds}s", "--timeout", "10s", "-s", str(script), running.base], timeout=seconds + 120).stdout
    line = next((x for x in out.splitlines() if x.startswith("TAIL ")), None)
    if line is None:
        raise SystemExit(f"{running.server.label}: no summary from wrk:\n{out}")
    return json.loads(line.removeprefix("TAIL "))


def schedstat(pid: int) -> tuple[int, int]:
    """(ns on a CPU, ns waiting for one) of the process's main thread, as the host sees it."""
    on_cpu, waiting, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(on_cpu), int(waiting)


def throttled(pid: int) -> tuple[int, float]:
    """(periods throttled, ms throttled) of the process's cgroup by its CPU quota (--cpus), cgroup v1 or v2."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers and "cpu" not in controllers.split(","):
            continue
        # v1: /sys/fs/cgroup/<controllers>/<path>; v2 (the "0::" line): /sys/fs/cgroup/<path>
        found = Path("/sys/fs/cgroup", controllers, path.lstrip("/"), "cpu.stat")
        if found.exists():
            stat = dict(x.split() for x in found.read_text().splitlines())
            ms = int(stat["throttled_time"]) / 1e6 if "throttled_time" in stat else int(stat["throttled_usec"]) / 1e3
            return int(stat["nr_throttled"]), ms
    raise SystemExit(f"no cpu.stat for pid {pid}'s cgroup")


def generated(image: str) -> bool:
    """Whether the image holds a generated server (its Python: distroless images have no shell)."""
    probe = run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c",
                 "import glob, sys; sys.exit(0 if glob.glob('/app/src/*/serving') else 1)"], check=False)
    return probe.returncode == 0


def cycles(path: Path, window: tuple[float, float]) -> str:
    """The batches noted inside the measured window: cycle times and what the slow ones were made of."""
    if not path.exists():
        return "no batches noted (the probe wrote nothing: see the server's log)"
    notes = [n for n in json.loads(path.read_text()) if window[0] <= n[0] <= window[1]]
    pairs = zip(notes, notes[1:], strict=False)
    # (wall, own CPU, waiting for a CPU) of each cycle, in microseconds
    gaps = [((b[0] - a[0]) * 1e6, (b[1] - a[1]) * 1e6, (b[2] - a[2]) / 1e3) for a, b in pairs]
    if len(gaps) < 10:
        return f"{len(gaps)} cycles noted: too few to split"
    walls = sorted(g[0] for g in gaps)
    median = statistics.median(walls)
    slow = [g for g in gaps if g[0] > 2 * median]
    extra = sum(g[0] - median for g in slow) or 1.0
    idle = sum(max(0.0, g[0] - g[1] - g[2]) for g in slow)
    waiting = sum(g[2] for g in slow)
    cpu = statistics.median(g[1] for g in gaps)
    own = sum(max(0.0, g[1] - cpu) for g in slow)
    requests = statistics.mean(n[3] for n in notes)
    share = 100 * len(slow) / len(gaps)
    return (f"{len(gaps)} cycles ({requests:.1f} requests queued as one starts), median {median:.0f} us ({cpu:.0f} "
            f"of own CPU), p99 {walls[int(len(walls) * 0.99)]:.0f} us; {len(slow)} over twice the median "
            f"({share:.1f}%), their time over the median: idle {100 * idle / extra:.0f}%, waiting for a CPU "
            f"{100 * waiting / extra:.0f}%, own CPU over the median cycle's {100 * own / extra:.0f}%")


def measure(server: Server, args: argparse.Namespace, work: Path) -> str:
    out = Path(tempfile.mkdtemp(prefix="tail-", dir=work))
    out.chmod(0o777)  # the server's user writes the probe's notes here
    probed = server.kind == "template"
    if probed:
        server = Server(server.label, server.image, server.port,
                        [*server.args, "-e", "WORKERS=1", "--entrypoint", "python",
                         "-v", f"{PROBE}:/probe/tail_probe.py:ro", "-v", f"{out}:/out"],
                        ["/probe/tail_probe.py"], server.kind)
    running = start(server, args.server_cpu)
    try:
        check_answers(running)
        script = wrk_script(server, 1, work / "tail.lua", WRK_DONE)
        if args.warmup > 0:
            wrk(running, script, args, args.warmup)
        before, quota_before, began = schedstat(running.pid), throttled(running.pid), time.perf_counter()
        stats = wrk(running, script, args, args.seconds)
        after, quota_after, ended = schedstat(running.pid), throttled(running.pid), time.perf_counter()
        run(["docker", "stop", "--time", "10", running.cid], check=False, timeout=60)
    finally:
        run(["docker", "rm", "-f", running.cid], check=False)
    seconds = stats["duration_us"] / 1e6
    wall = (ended - began) * 1e9
    on_cpu, waiting = after[0] - before[0], after[1] - before[1]
    line = (f"{server.label}: {stats['requests'] / seconds:.0f} requests/s, "
            + ", ".join(f"p{p} {stats[f'p{p}'] / 1000:.2f}" for p in PERCENTILES)
            + f", max {stats['max_us'] / 1000:.2f} ms" + (f", {stats['errors']} errors" if stats["errors"] else "")
            + f"; event loop thread: own CPU {100 * on_cpu / wall:.0f}%, waiting for a CPU "
            f"{100 * waiting / wall:.1f}%, idle {100 * max(0.0, wall - on_cpu - waiting) / wall:.1f}%; throttled by "
            f"its CPU quota {quota_after[0] - quota_before[0]} times, {quota_after[1] - quota_before[1]:.1f} ms")
    if probed:
        line += "\n    batches: " + cycles(out / "cycles.json", (began, ended))
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", action="append", default=[],
                        help="a serve image or the floor's (repeatable; default: the render's)")
    parser.add_argument("--answers", nargs="+", default=[], metavar="KEY=VALUE",
                        help="the render with these answers over the defaults (built as bench/serving.py does if "
                             "its image is not there)")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of measured load per server and round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="every server in turn, this many times")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    args = parser.parse_args()
    for tool in ("wrk", "taskset", "nsenter", "docker"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (wrk: apt-get install -y wrk)")
    if os.geteuid() != 0:
        raise SystemExit("needs root: wrk enters each container's network namespace")

    work = Path(tempfile.mkdtemp(prefix="mldt-bench-tail-"))
    try:
        servers = []
        for image in args.image:
            server = baseline_server(image)
            server.label = image
            server.kind = "template" if generated(image) else "floor"  # the floor: any answer to a row will do
            servers.append(server)
        if not servers:
            servers.append(render_or_build(parse_answers(args.answers), work))
        print(f"{time.strftime('%Y-%m-%d')}; {args.connections} connections x 1 row, {args.warmup} s warm-up then "
              f"{args.seconds} s; latencies in ms", flush=True)
        for round_ in range(1, args.rounds + 1):
            for server in servers:
                print(f"[round {round_}/{args.rounds}] {measure(server, args, work)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
