#!/usr/bin/env python3
"""Serving throughput side by side: the template's generated server next to seed 002's lesson app (bench/seed002/).

    make bench-serving          # or: .venv/bin/python bench/serving.py [--duration 15] [--warmup 5]
    .venv/bin/python bench/serving.py --framework xgboost --answers serve_runtime=onnx   # more servers

What it does, in one run on one engine:
1. renders the template's default answers (copier copy --trust --defaults --vcs-ref HEAD, into a temporary
   folder), plus one render per --framework / --answers; locks each (`make lock`), trains and builds the serve image
   with the model baked (`make train build-serve`), tagged mldt-bench/serving-<render>:bench;
2. builds the seed 002 app as its lesson writes it (bench/seed002/), tagged mldt-bench/seed002:bench, and runs it
   with the lesson's docker-compose command (uvicorn main:app --host 0.0.0.0 --port 80 --reload);
3. runs each server alone, in a container limited to `--cpus 1 --cpuset-cpus 0` (the generated one with the
   compose file's read-only root, tmpfs /tmp and no capabilities), reached on its bridge address (no port
   publishing, so no docker-proxy in the path); the load generator, wrk from Debian's packages, is pinned to the
   other CPU (`taskset -c 1`);
4. per scenario (8 and 32 keep-alive connections x one row and 64-row batches): a warm-up, then --duration seconds
   of load; requests/s, rows/s, p50 and p99 from wrk, the container's memory from `docker stats` at the end.

Before the load, each server's answers are checked (the right iris classes for known rows); a scenario with any
non-2xx answer or socket error in wrk's count is marked FAILED. The seed app takes one row per request
(GET /predict?sepal_length=...): its batch scenarios are n/a, and a batch row's ratio divides by the seed's one-row
rows/s at the same connection count. Prints a Markdown table for BENCHMARKS.md. Load goes to the engine's bridge
only. Needs `apt-get install -y wrk`, 2 CPUs or more, and the python:*-slim images the renders and the seed use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from template import REPO, copier_cli, run

SEED_DIR = Path(__file__).resolve().parent / "seed002"
# docker-compose.yml of the lesson: `command: ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "80",
# "--reload"]`, ports "8000:80" (here: the container's own address, port 80). Its `./app:/app` bind mount is left
# out: the lesson's files sit at the build context's root, so that mount would hide main.py; the image has them.
SEED_COMMAND = ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "80", "--reload"]
SEED_PORT = 80
PREFIX = "mldt-bench"
LABEL = f"mldt-bench-serving={os.getpid()}"
BATCH = 64
CONNECTIONS = (8, 32)
# Known iris rows (one per class, from the data set) and their class index; batches cycle through them.
ROWS = [([5.1, 3.5, 1.4, 0.2], 0, "setosa"), ([7.0, 3.2, 4.7, 1.4], 1, "versicolor"),
        ([6.3, 3.3, 6.0, 2.5], 2, "virginica")]
SEED_PARAMS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\\n', summary.requests, summary.duration, e.status,
    e.connect, e.read, e.write, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Server:
    label: str
    image: str
    port: int
    args: list[str] = field(default_factory=list)  # docker run options before the image
    command: list[str] = field(default_factory=list)
    seed: bool = False


@dataclass
class Result:
    server: str
    connections: int
    rows: int
    requests_s: float | None = None
    rows_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    memory_mib: float | None = None
    failure: str = ""


def slug(answers: dict[str, str]) -> str:
    text = "-".join(f"{k}-{v}" for k, v in answers.items()) or "default"
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-")


def parse_answers(items: list[str]) -> dict[str, str]:
    answers = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--answers takes key=value pairs (got {item!r})")
        answers[key] = value
    return answers


def build_render(answers: dict[str, str], work: Path) -> Server:
    """Render, lock, train and build the serve image, as a user of the template does (make lock, train, build)."""
    name = slug(answers)
    project = work / f"render-{name}" / "iris-classifier"
    flags = [a for k, v in answers.items() for a in ("-d", f"{k}={v}")]
    print(f"[{name}] copier copy {' '.join(flags)}", file=sys.stderr, flush=True)
    # --skip-tasks: `make env` and `make lock` below do what the copy's tasks would (lock.py, without --strict)
    result = copier_cli("copy", "--trust", "--defaults", "--vcs-ref", "HEAD", "--skip-tasks", *flags, str(REPO),
                        str(project))
    if result.returncode != 0:
        raise SystemExit(f"copier copy failed:\n{result.stderr[-4000:]}")
    image = f"{PREFIX}/serving-{name}"
    make = ["make", f"IMAGE={image}", "TAG=bench"]
    # a compose project of this run's own: other jobs on the engine render the same project name
    env = {"COMPOSE_PROJECT_NAME": f"{PREFIX}-serving-{os.getpid()}-{name}"[:60].rstrip("-.")}
    for targets in (["env"], ["lock"], ["train", "build-serve"]):
        print(f"[{name}] make {' '.join(targets)}", file=sys.stderr, flush=True)
        started = time.monotonic()
        run([*make, *targets], cwd=project, env=env, timeout=3600)
        print(f"[{name}]   {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    copied = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return Server(f"template ({name})", f"{image}:bench", int(copied.get("serve_port", 8000)),
                  ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true"])


def build_seed() -> Server:
    image = f"{PREFIX}/seed002:bench"
    print(f"[seed002] docker build -t {image} bench/seed002", file=sys.stderr, flush=True)
    run(["docker", "build", "-t", image, str(SEED_DIR)], env={"DOCKER_BUILDKIT": "1"}, timeout=3600)
    return Server("seed 002 app", image, SEED_PORT, command=SEED_COMMAND, seed=True)


def request_for(server: Server, rows: int) -> tuple[str, str, bytes | None]:
    """(method, path, body) of one request of `rows` rows; the seed app takes one row only."""
    batch = [ROWS[i % len(ROWS)][0] for i in range(rows)]
    if server.seed:
        return "GET", "/predict?" + urllib.parse.urlencode(dict(zip(SEED_PARAMS, batch[0]))), None
    body = {"features": batch[0]} if rows == 1 else {"instances": batch}
    return "POST", "/predict", json.dumps(body).encode()


def http(url: str, method: str, body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.read()[:500]


def check_answers(server: Server, base: str) -> None:
    """The server predicts the known classes (one row each, and a batch for the generated server)."""
    for features, index, name in ROWS:
        if server.seed:
            query = urllib.parse.urlencode(dict(zip(SEED_PARAMS, features)))
            status, answer = http(f"{base}/predict?{query}", "GET")
            ok = status == 200 and answer == {"prediction": index}
        else:
            status, answer = http(f"{base}/predict", "POST", json.dumps({"features": features}).encode())
            ok = status == 200 and (answer["predictions"][0] in (index, str(index), name)
                                    or (answer.get("labels") or [None])[0] == name)
        if not ok:
            raise SystemExit(f"{server.label}: wrong answer for {features}: {status} {answer}")
    if not server.seed:
        method, path, body = request_for(server, BATCH)
        status, answer = http(base + path, method, body)
        if status != 200 or len(answer["predictions"]) != BATCH:
            raise SystemExit(f"{server.label}: wrong answer for a {BATCH}-row batch: {status} {answer}")


def start(server: Server, cpu: str) -> tuple[str, str]:
    cid = run(["docker", "run", "-d", "--label", LABEL, "--cpus", "1", "--cpuset-cpus", cpu, *server.args,
               server.image, *server.command]).stdout.strip()
    address = run(["docker", "inspect", "--format", "{{.NetworkSettings.IPAddress}}", cid]).stdout.strip()
    if not address:
        raise SystemExit(f"{server.label}: the container has no bridge address (default bridge network needed)")
    base = f"http://{address}:{server.port}"
    probe = "/predict?" + urllib.parse.urlencode(dict(zip(SEED_PARAMS, ROWS[0][0]))) if server.seed else "/ready"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if http(base + probe, "GET")[0] == 200:
                return cid, base
        except (urllib.error.URLError, ConnectionError, OSError, ValueError):
            pass
        if json.loads(run(["docker", "inspect", "--format", "{{json .State}}", cid]).stdout)["Status"] == "exited":
            break
        time.sleep(0.3)
    logs = run(["docker", "logs", cid], check=False)
    raise SystemExit(f"{server.label} never became ready:\n{(logs.stdout + logs.stderr)[-3000:]}")


def wrk(script: Path, base: str, connections: int, seconds: int, cpu: str, threads: int) -> dict[str, int]:
    cmd = ["taskset", "-c", cpu, "wrk", f"-t{min(threads, connections)}", f"-c{connections}",
           f"-d{seconds}s", "--timeout", "10s", "-s", str(script), base]
    out = run(cmd, timeout=seconds + 120).stdout
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"no summary from wrk:\n{out}")
    return json.loads(line.removeprefix("BENCH "))


def memory_mib(cid: str) -> float:
    usage = run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", cid]).stdout.split("/")[0].strip()
    number, unit = re.fullmatch(r"([0-9.]+)\s*([KMGT]?i?B)", usage).groups()
    scale = {"B": 1 / 2**20, "KiB": 1 / 2**10, "kB": 1e3 / 2**20, "MiB": 1, "MB": 1e6 / 2**20, "GiB": 2**10,
             "GB": 1e9 / 2**20}
    return float(number) * scale[unit]


def measure(server: Server, args: argparse.Namespace, work: Path) -> list[Result]:
    results = []
    cid, base = start(server, args.server_cpu)
    try:
        check_answers(server, base)
        for connections in CONNECTIONS:
            for rows in (1, BATCH):
                result = Result(server.label, connections, rows)
                results.append(result)
                if server.seed and rows > 1:
                    result.failure = "n/a"
                    continue
                method, path, body = request_for(server, rows)
                script = work / f"wrk-{os.getpid()}-{len(results)}.lua"
                lua = [f'wrk.method = "{method}"', f'wrk.path = "{path}"',
                       'wrk.headers["Content-Type"] = "application/json"']
                if body is not None:
                    lua.append(f"wrk.body = [==[{body.decode()}]==]")
                script.write_text("\n".join(lua) + "\n" + WRK_DONE)
                print(f"[{server.label}] {connections} connections, {rows} rows/request", file=sys.stderr, flush=True)
                if args.warmup > 0:
                    wrk(script, base, connections, args.warmup, args.client_cpu, args.threads)
                stats = wrk(script, base, connections, args.duration, args.client_cpu, args.threads)
                result.memory_mib = memory_mib(cid)
                seconds = stats["duration_us"] / 1e6
                result.requests_s = stats["requests"] / seconds
                result.rows_s = result.requests_s * rows
                result.p50_ms, result.p99_ms = stats["p50_us"] / 1000, stats["p99_us"] / 1000
                errors = {k: stats[k] for k in ("non2xx", "connect", "read", "write", "timeout") if stats[k]}
                if errors or not stats["requests"]:
                    detail = ", ".join(f"{v} {k}" for k, v in errors.items()) or "no requests"
                    result.failure = f"FAILED ({detail})"
    finally:
        run(["docker", "rm", "-f", cid], check=False)
    return results


def versions(image: str) -> str:
    code = ("import importlib.metadata as m\nfor p in ('fastapi', 'uvicorn', 'scikit-learn', 'onnxruntime', "
            "'xgboost', 'xgboost-cpu', 'lightgbm', 'torch', 'tensorflow-cpu', 'numpy'):\n    try: print(p, m.version(p))\n    except Exception: pass")
    out = run(["docker", "run", "--rm", "--entrypoint", "python", image, "-c", code], check=False).stdout
    return ", ".join(out.splitlines())


def table(results: list[Result]) -> str:
    seed = {r.connections: r.rows_s for r in results if r.server == "seed 002 app" and r.rows == 1 and not r.failure}
    unbatched = {(r.server.removesuffix(", BATCHING=false"), r.connections, r.rows): r.rows_s for r in results
                 if r.server.endswith(", BATCHING=false") and not r.failure}
    lines = [
        ("| server | connections | rows/request | requests/s | rows/s | p50 ms | p99 ms | memory MiB | rows/s vs seed "
         "| vs unbatched |"),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        if r.failure == "n/a":
            lines.append(f"| {r.server} | {r.connections} | {r.rows} | n/a | n/a | n/a | n/a | n/a | n/a | n/a |")
            continue
        mark = "" if r.rows == 1 else " *"  # against the seed's one-row figure
        ratio = f"{r.rows_s / seed[r.connections]:.2f}x{mark}" if seed.get(r.connections) and r.rows_s else "-"
        if r.failure:
            ratio = r.failure
        base = unbatched.get((r.server, r.connections, r.rows))
        own = f"{r.rows_s / base:.2f}x" if base and r.rows_s and not r.failure else "-"
        lines.append(f"| {r.server} | {r.connections} | {r.rows} | {r.requests_s:.0f} | {r.rows_s:.0f} "
                     f"| {r.p50_ms:.1f} | {r.p99_ms:.1f} | {r.memory_mib:.0f} | {ratio} | {own} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds of measured load per scenario")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of unmeasured load before each scenario (0: none)")
    parser.add_argument("--framework", action="append", default=[], help="also a render with this framework")
    parser.add_argument("--answers", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                        help="also a render with these answers over the defaults (e.g. serve_runtime=onnx)")
    parser.add_argument("--no-default", action="store_true", help="skip the default render")
    parser.add_argument("--no-build", action="store_true", help="reuse the images of an earlier run")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (all on the client CPU)")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--keep", action="store_true", help="keep the rendered projects (their path is printed)")
    parser.add_argument("--unbatched", action="store_true",
                        help="also run each generated server with BATCHING=false (its own unbatched baseline)")
    args = parser.parse_args()
    for tool in ("wrk", "taskset", "docker", "make"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (wrk: apt-get install -y wrk)")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 CPUs: one for the server, one for the load generator")

    renders = [] if args.no_default else [{}]
    renders += [{"framework": f} for f in args.framework] + [parse_answers(items) for items in args.answers]
    work = Path(tempfile.mkdtemp(prefix="mldt-bench-serving-"))
    os.environ.setdefault("DOCKER_BUILDKIT", "1")
    try:
        servers = []
        if args.no_build:
            servers.append(Server("seed 002 app", f"{PREFIX}/seed002:bench", SEED_PORT, command=SEED_COMMAND,
                                  seed=True))
            for answers in renders:
                servers.append(Server(f"template ({slug(answers)})", f"{PREFIX}/serving-{slug(answers)}:bench",
                                      int(answers.get("serve_port", 8000)),
                                      ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt",
                                       "no-new-privileges:true"]))
        else:
            servers.append(build_seed())
            servers += [build_render(answers, work) for answers in renders]
        if args.unbatched:
            servers += [Server(f"{s.label}, BATCHING=false", s.image, s.port, [*s.args, "-e", "BATCHING=false"])
                        for s in servers if not s.seed]
        results = []
        for server in servers:
            results += measure(server, args, work)
    finally:
        # measure() removes its container; this catches one left by an interruption (this run's label only)
        for cid in run(["docker", "ps", "-aq", "--filter", f"label={LABEL}"], check=False).stdout.split():
            run(["docker", "rm", "-f", cid], check=False)
        if args.keep:
            print(f"rendered projects kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    engine = run(["docker", "version", "--format", "{{.Server.Version}}"]).stdout.strip()
    wrk_version = run(["wrk", "--version"], check=False).stdout.split(" [")[0]
    print(f"\n{time.strftime('%Y-%m-%d')}; {platform.machine()}, {os.cpu_count()} CPUs; Docker {engine}; "
          f"{wrk_version}, {args.threads} thread(s) on CPU {args.client_cpu}; each server alone with --cpus 1 "
          f"--cpuset-cpus {args.server_cpu}; {args.warmup:g} s warm-up then {args.duration:g} s per scenario.\n")
    for server in servers:
        print(f"- {server.label}: {server.image}; {versions(server.image)}")
    print()
    print(table(results))
    print(f"\nSeed 002's app takes one row per request: its {BATCH}-row rows are n/a; a ratio marked * divides by "
          "the seed's one-row rows/s at the same connections.")
    return 1 if any(r.failure.startswith("FAILED") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
