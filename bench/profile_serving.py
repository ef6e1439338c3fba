#!/usr/bin/env python3
"""A sampling profile of a serve image under wrk load: py-spy, from the host, against the server's processes.

    .venv/bin/pip install py-spy==0.4.3      # once: not in requirements-dev.txt (see BENCHMARKS.md)
    .venv/bin/python bench/profile_serving.py                              # the default render of bench/serving.py
    .venv/bin/python bench/profile_serving.py --answers serve_runtime=onnx --seconds 20 --connections 8
    .venv/bin/python bench/profile_serving.py --image mldt-bench/floor:bench                    # any serve image

The server runs as bench/serving.py runs it (`--cpus 1 --cpuset-cpus 0`, read-only root, tmpfs /tmp, no
capabilities, no-new-privileges), the image as built: nothing is added to it. wrk, pinned to the other CPU, sends one
request shape (--rows rows per request, --connections keep-alive connections) to the container's own loopback
(it enters the container's network namespace; no bridge, no published port) for --warmup seconds, then for the
profile; py-spy (on the client CPU too) samples the server's processes (--subprocesses: every WORKERS process) for
--seconds at --rate Hz, without pausing them (--nonblocking). Everything is bounded: wrk's and py-spy's durations, a
timeout on each command, and the container is removed at the end.

Where py-spy runs, and why: py-spy needs ptrace on the server. Inside the container it would need py-spy in the
image (the root is read-only) and the container started with --cap-add SYS_PTRACE: not the benchmarked server. So
py-spy runs from the host, as root (CAP_SYS_PTRACE in the initial user namespace: it may attach to any process),
the dev venv's static binary, entering only the container's PID namespace with a /proc of its own
(`nsenter --target <pid> --pid unshare --mount --mount-proc py-spy record --pid 1 ...`). Against the host pid
directly it samples too, but cannot tell idle threads: Python 3.11+ records each thread's id as the container sees
it, which py-spy looks up in the host's /proc and does not find, so a thread-pool worker waiting for work or the
event loop in epoll counts as busy (about three quarters of the samples in a first try). Inside the PID namespace
the ids match; --nonblocking because py-spy's own pauses make sleeping threads look runnable (the same symptom, as
py-spy's own notes say). The price: some reads of a stack that changed meanwhile fail (py-spy's "Errors" count,
printed; a quarter of the samples in a first try on a busy machine) and are left out.

Prints wrk's requests/s and p50/p99 during the profile (lower than bench/serving.py's: py-spy shares the client
CPU) and three tables: functions by own time (the sampled frame was the innermost), by cumulative time (the
function was anywhere on the stack), and own time by package. Percentages are of the samples of active threads
(running or runnable; py-spy leaves out the others: waiting in epoll, on a lock, for the GIL). A leaf such as
`Runner.run (asyncio/runners.py)` is the event loop running C code with no Python frame above it (uvloop,
httptools): py-spy's --native would show those frames, but only in blocking mode (see above). The raw stacks
(collapsed format: one `frame;frame;... count` line per stack, readable by speedscope or flamegraph.pl) are kept
in --out.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# bench/serving.py: how the bench builds, runs, checks and loads a server
from serving import (
    REPO,
    Server,
    baseline_server,
    check_answers,
    parse_answers,
    render_or_build,
    run,
    start,
    wrk,
    wrk_command,
    wrk_script,
    wrk_summary,
)

PY_SPY_VERSION = "0.4.3"
# Entry frames that every stack of a thread starts with (py-spy's file names): left out of the cumulative table, where
# they would only name the thread. The event loop's Runner.run stays: its own time is the loop's C code.
ENTRY = re.compile(r"(<module>|_run_module_as_main|_run_code) \(.*\)|(main|serve) \([^)]*serve\.py\)"
                   r"|Thread\.(_bootstrap|_bootstrap_inner|run) \(threading\.py\)|run \(asyncio/runners\.py\)"
                   r"|Server\.run \(uvicorn/server\.py\)")


def py_spy() -> str:
    found = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        raise SystemExit(f"py-spy not found: {Path(sys.executable).parent}/pip install py-spy=={PY_SPY_VERSION}")
    return found


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw output: `frame;frame;... count` per line, root first; the process and thread frames dropped."""
    stacks = []
    for line in text.splitlines():
        frames, _, count = line.rpartition(" ")
        if not frames or not count.isdigit():
            continue
        kept = [f for f in frames.split(";") if not f.startswith(("process ", "thread "))]
        if kept:
            stacks.append((kept, int(count)))
    return stacks


def short_path(path: str) -> str:
    """A frame's file without the install prefix: site-packages/x -> x, the standard library -> stdlib/x."""
    path = re.sub(r"^.*/site-packages/", "", path)
    path = re.sub(r"^.*/lib/python3\.\d+/", "stdlib/", path)
    return re.sub(r"^/app/(src/)?", "", path)


def function(frame: str) -> str:
    """`name (file:line)` -> `name (file)`: one function, whatever line of it was running."""
    match = re.fullmatch(r"(.*) \((.*?)(?::\d+)?\)", frame)
    return f"{match[1]} ({short_path(match[2])})" if match else frame


def package(frame: str) -> str:
    """The top-level package or module of a frame's file (asyncio, threading, uvicorn, the generated package...)."""
    match = re.fullmatch(r".* \((.*?)(?::\d+)?\)", frame)
    if not match:
        return frame
    parts = short_path(match[1]).split("/")
    if parts[0] == "stdlib":
        return "stdlib/" + (parts[1].removesuffix(".py") if len(parts) > 1 else "?")
    return parts[0].removesuffix(".py")


def summary(stacks: list[tuple[list[str], int]], top: int) -> str:
    total = sum(count for _, count in stacks)
    if not total:
        return "no samples (was the server busy? py-spy leaves idle threads out)"
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    for frames, count in stacks:
        own[function(frames[-1])] += count
        packages[package(frames[-1])] += count
        for name in {function(f) for f in frames}:  # once per stack, however deep the recursion
            cumulative[name] += count

    def block(title: str, counter: Counter[str], what: str) -> list[str]:
        lines = [f"\n{title}\n", f"| {what} | samples | % |", "| --- | ---: | ---: |"]
        lines += [f"| `{name}` | {n} | {100 * n / total:.1f} |" for name, n in counter.most_common(top)]
        return lines

    lines = [f"{total} samples of active threads."]
    lines += block(f"Top {top} functions by own time", own, "function (file)")
    shown = Counter({name: n for name, n in cumulative.items() if not ENTRY.fullmatch(name)})
    lines += block(f"Top {top} functions by cumulative time (entry frames left out)", shown, "function (file)")
    lines += block(f"Own time by package (top {top})", packages, "package")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--image", help="the serve image to profile (default: bench/serving.py's image of the render)")
    which.add_argument("--answers", nargs="+", default=[], metavar="KEY=VALUE",
                       help="the render with these answers over the defaults (built as bench/serving.py does if "
                            "its image is not there)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable of the server (e.g. BATCHING=false); repeatable")
    parser.add_argument("--seconds", type=int, default=20, help="seconds of profile, under load")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load before the profile")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1, help="rows per request (1: {\"features\": ...})")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="py-spy samples only the thread holding the GIL")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "profile",
                        help="where the raw stacks go (default: build/profile/, ignored by git)")
    args = parser.parse_args()
    for tool in ("wrk", "taskset", "nsenter", "unshare", "docker"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (wrk: apt-get install -y wrk)")
    if os.geteuid() != 0:
        raise SystemExit("needs root: py-spy attaches to the container's processes, wrk enters its network namespace")
    spy = py_spy()

    work = Path(tempfile.mkdtemp(prefix="mldt-bench-profile-"))
    try:
        if args.image:
            server = baseline_server(args.image)
            server.label = args.image
        else:
            server = render_or_build(parse_answers(args.answers), work)
        server.args += [a for item in args.env for a in ("-e", item)]
        return profile(server, args, spy, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def profile(server: Server, args: argparse.Namespace, spy: str, work: Path) -> int:
    running = start(server, args.server_cpu)
    name = re.sub(r"[^A-Za-z0-9.-]+", "-", server.image).strip("-")
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"{name}-c{args.connections}-r{args.rows}-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    try:
        check_answers(running)
        script = wrk_script(server, args.rows, work / "profile.lua")
        print(f"[{server.label}] {args.warmup} s warm-up, {args.connections} connections, {args.rows} rows/request",
              file=sys.stderr, flush=True)
        if args.warmup > 0:
            wrk(running, script, args.connections, args.warmup, args.client_cpu, 1)
        # the load outlasts the profile by a second on each side; py-spy starts once wrk has connected
        load = subprocess.Popen(wrk_command(running, script, args.connections, args.seconds + 2, args.client_cpu, 1),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(1)
            # inside the container's PID namespace (its thread ids), with a /proc of that namespace: see the top
            command = ["taskset", "-c", args.client_cpu, "nsenter", f"--target={running.pid}", "--pid", "--",
                       "unshare", "--mount", "--mount-proc", "--", spy, "record", "--pid", "1", "--subprocesses",
                       "--nonblocking", "--duration", str(args.seconds), "--rate", str(args.rate), "--format", "raw",
                       "--output", str(raw)]
            command += ["--gil"] * args.gil
            print(f"[{server.label}] py-spy record --pid 1 (host pid {running.pid}) for {args.seconds} s at "
                  f"{args.rate} Hz", file=sys.stderr, flush=True)
            spied = subprocess.run(command, check=False, capture_output=True, text=True,
                                   timeout=args.seconds + 60)
            out, _ = load.communicate(timeout=args.seconds + 60)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait(timeout=30)
            load.stdout.close()
        if spied.returncode != 0 or not raw.exists():
            raise SystemExit(f"py-spy failed ({spied.returncode}):\n{(spied.stdout + spied.stderr)[-3000:]}")
        stats = wrk_summary(out)
    finally:
        run(["docker", "rm", "-f", running.cid], check=False)

    seconds = stats["duration_us"] / 1e6
    errors = sum(stats[k] for k in ("non2xx", "connect", "read", "write", "timeout"))
    note = re.findall(r"Samples: \d+ Errors: \d+", spied.stdout + spied.stderr)
    print(f"\nProfile of {server.image} ({server.label}), {time.strftime('%Y-%m-%d')}: py-spy {PY_SPY_VERSION}, "
          f"{args.rate} Hz for {args.seconds} s, non-blocking{', GIL holder only' if args.gil else ''}"
          f" ({note[-1] if note else 'py-spy said no sample count'}); "
          f"wrk {args.connections} connections x {args.rows} row(s): {stats['requests'] / seconds:.0f} requests/s, "
          f"p50 {stats['p50_us'] / 1000:.1f} ms, p99 {stats['p99_us'] / 1000:.1f} ms, {errors} errors, during the "
          f"profile. Raw stacks: {raw}\n")
    print(summary(parse_collapsed(raw.read_text()), args.top))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
