#!/usr/bin/env python3
"""Serving throughput side by side: the template's generated server, the floor (FastAPI with no model) and seed
002's lesson app (bench/seed002/), optionally beside prebuilt serve images (another version of the template).

    make bench-serving          # or: .venv/bin/python bench/serving.py [--duration 15] [--warmup 5] [--runs 3]
    .venv/bin/python bench/serving.py --framework xgboost --answers serve_runtime=onnx   # more servers
    .venv/bin/python bench/serving.py --runs 3 --baseline-image mldt-bench/serving-before:bench=before
                                # the fresh render beside an image built from an earlier commit

What it does, in one run on one engine:
1. renders the template's default answers (copier copy --trust --defaults --vcs-ref HEAD, into a temporary
   folder), plus one render per --framework / --answers; locks each (`make lock`), trains and builds the serve image
   with the model baked (`make train build-serve`), tagged mldt-bench/serving-<render>:bench;
2. builds the floor (bench/floor/, tagged mldt-bench/floor:bench): the same request parsed by pydantic in an async
   FastAPI route on uvicorn with uvloop and httptools, no model, no middleware, on the python slim image of the
   render's Python, with fastapi/uvicorn/uvloop/httptools/pydantic at the versions of the first render's serve lock
   (requirements/serve.txt; every other pin of that lock as a constraint). With --no-build, or no render, the pins
   are read from the first generated or baseline image's installed packages instead;
3. builds the seed 002 app as its lesson writes it (bench/seed002/), tagged mldt-bench/seed002:bench, and runs it
   with the lesson's docker-compose command (uvicorn main:app --host 0.0.0.0 --port 80 --reload);
4. runs each server alone, in a container limited to `--cpus 1 --cpuset-cpus 0` (the generated ones, baselines and
   the floor with the compose file's read-only root, tmpfs /tmp and no capabilities); the load generator, wrk from
   Debian's packages, is pinned to the other CPU (`taskset -c 1`) and enters the container's network namespace
   (nsenter --net): the load goes to the container's own loopback, with no bridge, no port publishing and no
   docker-proxy in the path (so this script runs as root);
5. per scenario (8 and 32 keep-alive connections x one row and 64-row batches): a warm-up, then --duration seconds
   of load; requests/s, rows/s, p50 and p99 from wrk, the container's memory from `docker stats` at the end.
   For the generated servers also the model-bound limit: rows per second of model time and rows per model call,
   from the deltas of /metrics' model_batch_rows and model_inference_duration_seconds over the measured load.
   --runs N interleaves N rounds (every server in turn: A, B, C, A, B, C, ...; a fresh container per server and
   round) and reports the median of each figure; "of floor" is the median of each round's requests/s over the
   floor's in the same round, same connections and rows per request.

Before the load, each server's answers are checked (the right iris classes for known rows; the floor: one answer
per row); a scenario with any non-2xx answer or socket error in wrk's count (in any round) is marked FAILED. The
seed app takes one row per request (GET /predict?sepal_length=...): its batch scenarios are n/a, and a batch row's
ratio divides by the seed's one-row rows/s at the same connection count. Prints a Markdown table for BENCHMARKS.md.
Needs `apt-get install -y wrk`, root, 2 CPUs or more, and the python:*-slim images the renders and the seed use.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.answers import MATRIX, REPO, host_platform
from helpers.engine import run
from helpers.render import copier_cli

BENCH = Path(__file__).resolve().parent
SEED_DIR = BENCH / "seed002"
FLOOR_DIR = BENCH / "floor"
# docker-compose.yml of the lesson: `command: ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "80",
# "--reload"]`, ports "8000:80" (here: the container's own loopback, port 80). Its `./app:/app` bind mount is left
# out: the lesson's files sit at the build context's root, so that mount would hide main.py; the image has them.
SEED_COMMAND = ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "80", "--reload"]
SEED_PORT = 80
SEED_LABEL = "seed 002 app"
FLOOR_LABEL = "floor (FastAPI, no model)"
FLOOR_PORT = 8000
# the floor's own requirements, each at the serve lock's version (bench/floor/Dockerfile)
FLOOR_REQUIREMENTS = ("fastapi", "uvicorn", "uvloop", "httptools", "pydantic")
PREFIX = "mldt-bench"
LABEL = f"mldt-bench-serving={os.getpid()}"
# the generated project's compose file runs the serve image so; the floor and the baselines run the same way
HARDENED = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true"]
BATCH = 64
CONNECTIONS = (8, 32)
SCENARIOS = [f"{c}x{r}" for c in CONNECTIONS for r in (1, BATCH)]
# Known iris rows (one per class, from the data set) and their class index; batches cycle through them.
ROWS = [([5.1, 3.5, 1.4, 0.2], 0, "setosa"), ([7.0, 3.2, 4.7, 1.4], 1, "versicolor"),
        ([6.3, 3.3, 6.0, 2.5], 2, "virginica")]
SEED_PARAMS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
# the versions printed under the table (those an image has)
SHOWN = ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "pydantic-core", "scikit-learn",
         "onnxruntime", "xgboost", "xgboost-cpu", "lightgbm", "torch", "tensorflow-cpu", "numpy")
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\\n', summary.requests, summary.duration, e.status,
    e.connect, e.read, e.write, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""
WRK_ERRORS = ("non2xx", "connect", "read", "write", "timeout")  # WRK_DONE's error counts
CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)


@dataclass
class Server:
    label: str
    image: str
    port: int
    args: list[str] = field(default_factory=list)  # docker run options before the image
    command: list[str] = field(default_factory=list)
    kind: str = "template"  # template (a fresh render or a baseline image), floor or seed

    @property
    def seed(self) -> bool:
        return self.kind == "seed"


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
    of_floor: float | None = None  # requests/s over the floor's (same round, connections and rows)
    spread: tuple[float, float] | None = None  # lowest and highest requests/s over the rounds
    model_rows_s: float | None = None  # rows per second of model time: the model-bound limit on one CPU
    rows_per_call: float | None = None


@contextmanager
def network_of(pid: int) -> Iterator[None]:
    """This thread inside the network namespace of process `pid` (a container's): 127.0.0.1 is its loopback."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if _LIBC.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into the network namespace of pid {pid} (needs root)")
        try:
            yield
        finally:
            if _LIBC.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back into this process's network namespace")
    finally:
        os.close(target)
        os.close(own)


@dataclass
class Running:
    """A started server: its container, the host pid of its first process, its port on the container's loopback."""

    server: Server
    cid: str
    pid: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def http(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        with network_of(self.pid):
            return http(self.base + path, method, body)

    def nsenter(self) -> list[str]:
        """The prefix of a host command run inside the container's network namespace (wrk)."""
        return ["nsenter", f"--net=/proc/{self.pid}/ns/net"]


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


def render_image(answers: dict[str, str]) -> str:
    return f"{PREFIX}/serving-{slug(answers)}:bench"


def render_server(answers: dict[str, str], port: int = 8000) -> Server:
    return Server(f"template ({slug(answers)})", render_image(answers), port, list(HARDENED))


def build_render(answers: dict[str, str], work: Path) -> tuple[Server, Path]:
    """Render, lock, train and build the serve image, as a user of the template does (make lock, train, build).
    Returns the server and the rendered project."""
    name = slug(answers)
    project = work / f"render-{name}" / "iris-classifier"
    # this machine's platform only, unless asked: the other one's lock needs its images (tests/helpers/registry.py)
    flags = [a for k, v in {"platforms": f"[{host_platform()}]", **answers}.items() for a in ("-d", f"{k}={v}")]
    print(f"[{name}] copier copy {' '.join(flags)}", file=sys.stderr, flush=True)
    # --skip-tasks: `make env` and `make lock` below do what the copy's tasks would (lock.py, without --strict)
    result = copier_cli("copy", "--trust", "--defaults", "--vcs-ref", "HEAD", "--skip-tasks", *flags, str(REPO),
                        str(project))
    if result.returncode != 0:
        raise SystemExit(f"copier copy failed:\n{result.stderr[-4000:]}")
    image = render_image(answers).rsplit(":", 1)[0]
    make = ["make", f"IMAGE={image}", "TAG=bench"]
    # a compose project of this run's own: other jobs on the engine render the same project name
    env = {"COMPOSE_PROJECT_NAME": f"{PREFIX}-serving-{os.getpid()}-{name}"[:60].rstrip("-.")}
    for targets in (["env"], ["lock"], ["train", "build-serve"]):
        print(f"[{name}] make {' '.join(targets)}", file=sys.stderr, flush=True)
        started = time.monotonic()
        run([*make, *targets], cwd=project, env=env, timeout=3600)
        print(f"[{name}]   {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    copied = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return render_server(answers, int(copied.get("serve_port", 8000))), project


def render_or_build(answers: dict[str, str], work: Path) -> Server:
    """The render's serve image as an earlier run built it, or built now (build_render): for the tools beside this
    one (profile_serving.py, tail.py), which measure what `make bench-serving` built."""
    image = render_image(answers)
    if run(["docker", "image", "inspect", image], check=False).returncode != 0:
        return build_render(answers, work)[0]
    server = baseline_server(image)
    server.label = f"template ({slug(answers)})"
    return server


def seed_server() -> Server:
    return Server(SEED_LABEL, f"{PREFIX}/seed002:bench", SEED_PORT, command=SEED_COMMAND, kind="seed")


def build_seed() -> Server:
    server = seed_server()
    print(f"[seed002] docker build -t {server.image} bench/seed002", file=sys.stderr, flush=True)
    run(["docker", "build", "-t", server.image, str(SEED_DIR)], env={"DOCKER_BUILDKIT": "1"}, timeout=3600)
    return server


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(lock: Path) -> dict[str, str]:
    """name -> version of every `name==version` line of a lock file (hashes and markers left out)."""
    pins = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", line)
        if match:
            pins[normalize(match[1])] = match[2]
    return pins


IMAGE_FACTS = """
import importlib.metadata as m, json, sys
print(json.dumps({"python": "%d.%d" % sys.version_info[:2],
                  "packages": {d.metadata["Name"]: d.version for d in m.distributions()}}))
"""


@functools.cache
def image_facts(image: str) -> dict[str, Any]:
    """The Python version of an image and its installed distributions (name -> version)."""
    out = run(["docker", "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", IMAGE_FACTS],
              timeout=120).stdout
    facts = json.loads(out.strip().splitlines()[-1])
    facts["packages"] = {normalize(k): v for k, v in facts["packages"].items()}
    return facts


def build_floor(pins: dict[str, str], python: str, origin: str, work: Path) -> Server:
    """Build bench/floor/ with the floor's requirements at `pins`' versions (every other pin as a constraint)."""
    missing = [name for name in FLOOR_REQUIREMENTS if name not in pins]
    if missing:
        raise SystemExit(f"the floor's pins come from {origin}, which has no {', '.join(missing)}")
    if python not in MATRIX["python"]:
        raise SystemExit(f"the floor: no python slim image for Python {python} (from {origin}) in the matrix")
    base = MATRIX["base_image"]["slim"]["runtime"].format(python=python, debian=MATRIX["python"][python]["debian"])
    context = work / "floor"
    shutil.copytree(FLOOR_DIR, context, dirs_exist_ok=True)
    (context / "requirements.txt").write_text("".join(f"{name}=={pins[name]}\n" for name in FLOOR_REQUIREMENTS))
    (context / "constraints.txt").write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())
                                                     if name not in ("pip", "setuptools", "wheel")))
    server = Server(FLOOR_LABEL, f"{PREFIX}/floor:bench", FLOOR_PORT, list(HARDENED), kind="floor")
    shown = ", ".join(f"{name} {pins[name]}" for name in FLOOR_REQUIREMENTS)
    print(f"[floor] docker build -t {server.image} on {base}: {shown} (from {origin})", file=sys.stderr, flush=True)
    run(["docker", "build", "--build-arg", f"PYTHON_IMAGE={base}", "-t", server.image, str(context)],
        env={"DOCKER_BUILDKIT": "1"}, timeout=3600)
    return server


def baseline_server(spec: str) -> Server:
    """--baseline-image NAME[=LABEL]: a prebuilt serve image, run as the fresh render is."""
    image, _, label = spec.partition("=")
    inspected = run(["docker", "image", "inspect", "--format", "{{json .Config.ExposedPorts}}", image], check=False)
    if inspected.returncode != 0:
        raise SystemExit(f"--baseline-image: no image {image} on this engine")
    ports = sorted(int(p.split("/")[0]) for p in (json.loads(inspected.stdout) or {}) if p.endswith("/tcp"))
    return Server(label or f"baseline ({image})", image, ports[0] if ports else 8000, list(HARDENED))


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


def check_answers(running: Running) -> None:
    """The server predicts the known classes (one row each, and a batch but for the seed); the floor answers one
    prediction per row."""
    server = running.server
    for features, index, name in ROWS:
        if server.seed:
            query = urllib.parse.urlencode(dict(zip(SEED_PARAMS, features)))
            status, answer = running.http("GET", f"/predict?{query}")
            ok = status == 200 and answer == {"prediction": index}
        else:
            status, answer = running.http("POST", "/predict", json.dumps({"features": features}).encode())
            ok = status == 200 and isinstance(answer, dict) and len(answer.get("predictions") or ()) == 1
            if server.kind != "floor":
                ok = ok and (answer["predictions"][0] in (index, str(index), name)
                             or (answer.get("labels") or [None])[0] == name)
        if not ok:
            raise SystemExit(f"{server.label}: wrong answer for {features}: {status} {answer}")
    if not server.seed:
        method, path, body = request_for(server, BATCH)
        status, answer = running.http(method, path, body)
        if status != 200 or not isinstance(answer, dict) or len(answer.get("predictions") or ()) != BATCH:
            raise SystemExit(f"{server.label}: wrong answer for a {BATCH}-row batch: {status} {answer}")


def start(server: Server, cpu: str) -> Running:
    cid = run(["docker", "run", "-d", "--label", LABEL, "--cpus", "1", "--cpuset-cpus", cpu, *server.args,
               server.image, *server.command]).stdout.strip()
    running = Running(server, cid, int(run(["docker", "inspect", "--format", "{{.State.Pid}}", cid]).stdout))
    probe = "/predict?" + urllib.parse.urlencode(dict(zip(SEED_PARAMS, ROWS[0][0]))) if server.seed else "/ready"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if running.http("GET", probe)[0] == 200:
                return running
        except (urllib.error.URLError, ConnectionError, OSError, ValueError):
            pass
        if json.loads(run(["docker", "inspect", "--format", "{{json .State}}", cid]).stdout)["Status"] == "exited":
            break
        time.sleep(0.3)
    logs = run(["docker", "logs", cid], check=False)
    run(["docker", "rm", "-f", cid], check=False)
    raise SystemExit(f"{server.label} never became ready:\n{(logs.stdout + logs.stderr)[-3000:]}")


def wrk_script(server: Server, rows: int, path: Path, done: str = WRK_DONE) -> Path:
    """A wrk Lua script sending the request of `rows` rows and printing wrk's summary as one JSON line (`done`: the
    Lua that prints it)."""
    method, target, body = request_for(server, rows)
    lua = [f'wrk.method = "{method}"', f'wrk.path = "{target}"', 'wrk.headers["Content-Type"] = "application/json"']
    if body is not None:
        lua.append(f"wrk.body = [==[{body.decode()}]==]")
    path.write_text("\n".join(lua) + "\n" + done)
    return path


def wrk_command(running: Running, script: Path, connections: int, seconds: int, cpu: str, threads: int) -> list[str]:
    return [*running.nsenter(), "taskset", "-c", cpu, "wrk", f"-t{min(threads, connections)}", f"-c{connections}",
            f"-d{seconds}s", "--timeout", "10s", "-s", str(script), running.base]


def wrk_summary(out: str) -> dict[str, int]:
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"no summary from wrk:\n{out}")
    return json.loads(line.removeprefix("BENCH "))


def wrk(running: Running, script: Path, connections: int, seconds: int, cpu: str, threads: int) -> dict[str, int]:
    cmd = wrk_command(running, script, connections, seconds, cpu, threads)
    return wrk_summary(run(cmd, timeout=seconds + 120).stdout)


def model_counters(running: Running) -> tuple[float, float, float] | None:
    """(rows, model calls, seconds in the model) so far, from a generated server's /metrics (every worker's)."""
    if running.server.kind != "template":
        return None
    with network_of(running.pid), urllib.request.urlopen(running.base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for name in ("model_batch_rows_sum", "model_batch_rows_count", "model_inference_duration_seconds_sum"):
        found = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.MULTILINE)
        if found is None:
            return None
        values[name] = float(found.group(1))
    return tuple(values.values())


def memory_mib(cid: str) -> float:
    usage = run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", cid]).stdout.split("/")[0].strip()
    number, unit = re.fullmatch(r"([0-9.]+)\s*([KMGT]?i?B)", usage).groups()
    scale = {"B": 1 / 2**20, "KiB": 1 / 2**10, "kB": 1e3 / 2**20, "MiB": 1, "MB": 1e6 / 2**20, "GiB": 2**10,
             "GB": 1e9 / 2**20}
    return float(number) * scale[unit]


def measure(server: Server, args: argparse.Namespace, work: Path, tag: str) -> list[Result]:
    """One round of one server: a fresh container, its answers checked, then every scenario."""
    results = []
    running = start(server, args.server_cpu)
    try:
        check_answers(running)
        for connections in CONNECTIONS:
            for rows in (1, BATCH):
                if args.scenario and f"{connections}x{rows}" not in args.scenario:
                    continue
                result = Result(server.label, connections, rows)
                results.append(result)
                if server.seed and rows > 1:
                    result.failure = "n/a"
                    continue
                script = wrk_script(server, rows, work / f"wrk-{os.getpid()}-{len(results)}.lua")
                print(f"{tag}[{server.label}] {connections} connections, {rows} rows/request", file=sys.stderr,
                      flush=True)
                if args.warmup > 0:
                    wrk(running, script, connections, args.warmup, args.client_cpu, args.threads)
                before = model_counters(running)
                stats = wrk(running, script, connections, args.duration, args.client_cpu, args.threads)
                after = model_counters(running)
                if before and after and after[2] > before[2]:  # the model-bound limit: rows per call / time per call
                    result.model_rows_s = (after[0] - before[0]) / (after[2] - before[2])
                    result.rows_per_call = (after[0] - before[0]) / max(after[1] - before[1], 1)
                result.memory_mib = memory_mib(running.cid)
                seconds = stats["duration_us"] / 1e6
                result.requests_s = stats["requests"] / seconds
                result.rows_s = result.requests_s * rows
                result.p50_ms, result.p99_ms = stats["p50_us"] / 1000, stats["p99_us"] / 1000
                errors = {k: stats[k] for k in WRK_ERRORS if stats[k]}
                if errors or not stats["requests"]:
                    detail = ", ".join(f"{v} {k}" for k, v in errors.items()) or "no requests"
                    result.failure = f"FAILED ({detail})"
    finally:
        run(["docker", "rm", "-f", running.cid], check=False)
    return results


def combine(rounds: list[list[Result]]) -> list[Result]:
    """Per scenario, the median of each figure over the rounds; "of floor" is the median of each round's ratio to the
    floor (same connections and rows). A scenario that failed in any round is FAILED."""
    for results in rounds:
        floor = {(r.connections, r.rows): r.requests_s for r in results
                 if r.server == FLOOR_LABEL and not r.failure and r.requests_s}
        for r in results:
            base = floor.get((r.connections, r.rows))
            if base and r.requests_s and not r.failure:
                r.of_floor = r.requests_s / base
    combined = []
    for first in rounds[0]:
        same = [r for results in rounds for r in results
                if (r.server, r.connections, r.rows) == (first.server, first.connections, first.rows)]
        merged = Result(first.server, first.connections, first.rows)
        failures = [r.failure for r in same if r.failure]
        if failures:
            merged.failure = failures[0]
        else:
            for name in ("requests_s", "rows_s", "p50_ms", "p99_ms", "memory_mib", "of_floor", "model_rows_s",
                         "rows_per_call"):
                values = [getattr(r, name) for r in same if getattr(r, name) is not None]
                setattr(merged, name, statistics.median(values) if values else None)
            rates = [r.requests_s for r in same]
            merged.spread = (min(rates), max(rates))
        combined.append(merged)
    return combined


def table(results: list[Result], runs: int) -> str:
    seed = {r.connections: r.rows_s for r in results if r.server == SEED_LABEL and r.rows == 1 and not r.failure}
    unbatched = {(r.server.removesuffix(", BATCHING=false"), r.connections, r.rows): r.rows_s for r in results
                 if r.server.endswith(", BATCHING=false") and not r.failure}
    spread = runs > 1
    head = ["server", "connections", "rows/request", "requests/s", *(["requests/s range"] if spread else []),
            "p50 ms", "p99 ms", "of floor", "rows/s", "model-bound rows/s (rows/call)", "memory MiB", "rows/s vs seed",
            "vs unbatched"]
    lines = ["| " + " | ".join(head) + " |", "| --- | " + " | ".join("---:" for _ in head[1:]) + " |"]
    for r in results:
        cells: list[str] = [r.server, str(r.connections), str(r.rows)]
        if r.failure:  # n/a in every column, or FAILED in the "vs seed" column (as before) and "-" elsewhere
            rest = ["n/a" if r.failure == "n/a" else "-"] * (len(head) - 3)
            if r.failure != "n/a":
                rest[-2] = r.failure
            lines.append("| " + " | ".join(cells + rest) + " |")
            continue
        mark = "" if r.rows == 1 else " *"  # against the seed's one-row figure
        vs_seed = f"{r.rows_s / seed[r.connections]:.2f}x{mark}" if seed.get(r.connections) and r.rows_s else "-"
        base = unbatched.get((r.server, r.connections, r.rows))
        own = f"{r.rows_s / base:.2f}x" if base and r.rows_s else "-"
        cells.append(f"{r.requests_s:.0f}")
        if spread:
            cells.append(f"{r.spread[0]:.0f}-{r.spread[1]:.0f}" if r.spread else "-")
        cells += [f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}", f"{r.of_floor:.2f}" if r.of_floor is not None else "-",
                  f"{r.rows_s:.0f}", model_bound(r), f"{r.memory_mib:.0f}", vs_seed, own]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_bound(r: Result) -> str:
    return f"{r.model_rows_s:.0f} ({r.rows_per_call:.1f})" if r.model_rows_s and r.rows_per_call else "-"


def describe(server: Server) -> str:
    image_id = run(["docker", "image", "inspect", "--format", "{{.Id}}", server.image], check=False).stdout.strip()
    facts = image_facts(server.image)
    shown = ", ".join(f"{name} {facts['packages'][name]}" for name in SHOWN if name in facts["packages"])
    short = image_id.removeprefix("sha256:")[:12]
    return f"{server.label}: {server.image} ({short}); Python {facts['python']}, {shown}"


def floor_source(rendered: list[Path], servers: list[Server]) -> tuple[dict[str, str], str, str]:
    """(pins, Python version, where they come from) for the floor: the first fresh render's serve lock, else the
    installed packages of the first generated or baseline image."""
    reference = next((s for s in servers if s.kind == "template"), None)
    if reference is None:
        raise SystemExit("the floor takes its pins from a render or a baseline image: give one, or --no-floor")
    facts = image_facts(reference.image)
    if rendered:
        lock = rendered[0] / "requirements" / "serve.txt"
        return lock_pins(lock), facts["python"], f"{reference.label}'s requirements/serve.txt"
    return facts["packages"], facts["python"], f"the packages installed in {reference.image}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds of measured load per scenario")
    parser.add_argument("--warmup", type=int, default=5,
                        help="seconds of unmeasured load before each scenario (0: none)")
    parser.add_argument("--runs", type=int, default=1,
                        help="interleaved rounds (every server in turn, N times); the table shows the medians")
    parser.add_argument("--framework", action="append", default=[], help="also a render with this framework")
    parser.add_argument("--answers", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                        help="also a render with these answers over the defaults (e.g. serve_runtime=onnx)")
    parser.add_argument("--baseline-image", action="append", default=[], metavar="NAME[=LABEL]",
                        help="also this prebuilt serve image (e.g. one built from an earlier commit), run as the "
                             "renders are; repeatable")
    parser.add_argument("--no-default", action="store_true", help="skip the default render")
    parser.add_argument("--no-seed", action="store_true", help="skip seed 002's app")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor")
    parser.add_argument("--no-build", action="store_true",
                        help="reuse the images of an earlier run (the floor is rebuilt from the layer cache)")
    parser.add_argument("--scenario", action="append", default=[], choices=SCENARIOS, metavar="CONNxROWS",
                        help=f"only this scenario ({', '.join(SCENARIOS)}); repeatable; default: all")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (all on the client CPU)")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--keep", action="store_true", help="keep the rendered projects (their path is printed)")
    parser.add_argument("--unbatched", action="store_true",
                        help="also run each generated and baseline server with BATCHING=false (its own unbatched "
                             "baseline)")
    args = parser.parse_args()
    if args.runs < 1:
        raise SystemExit("--runs takes 1 or more")
    for tool in ("wrk", "taskset", "nsenter", "docker", "make"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found (wrk: apt-get install -y wrk)")
    if os.geteuid() != 0:
        raise SystemExit("needs root: wrk and the checks enter each container's network namespace (its loopback)")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 CPUs: one for the server, one for the load generator")

    renders = [] if args.no_default else [{}]
    renders += [{"framework": f} for f in args.framework] + [parse_answers(items) for items in args.answers]
    baselines = [baseline_server(spec) for spec in args.baseline_image]
    work = Path(tempfile.mkdtemp(prefix="mldt-bench-serving-"))
    os.environ.setdefault("DOCKER_BUILDKIT", "1")
    try:
        generated: list[Server] = []
        rendered: list[Path] = []
        if args.no_build:
            generated = [render_server(answers) for answers in renders]
        else:
            for answers in renders:
                server, project = build_render(answers, work)
                generated.append(server)
                rendered.append(project)
        servers = []
        if not args.no_floor:
            pins, python, origin = floor_source(rendered, [*generated, *baselines])
            servers.append(build_floor(pins, python, origin, work))
        if not args.no_seed:
            servers.append(seed_server() if args.no_build else build_seed())
        servers += baselines + generated
        if args.unbatched:
            servers += [Server(f"{s.label}, BATCHING=false", s.image, s.port, [*s.args, "-e", "BATCHING=false"],
                               s.command, s.kind) for s in servers if s.kind == "template"]
        rounds = []
        for index in range(args.runs):
            tag = f"[round {index + 1}/{args.runs}]" if args.runs > 1 else ""
            rounds.append([result for server in servers for result in measure(server, args, work, tag)])
        results = combine(rounds)
        descriptions = [describe(server) for server in servers]
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
    rounds_text = (f"{args.runs} interleaved rounds, medians" if args.runs > 1 else "one round")
    print(f"\n{time.strftime('%Y-%m-%d')}; {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}); Docker "
          f"{engine}; {wrk_version}, {args.threads} thread(s) on CPU {args.client_cpu}, in each container's network "
          f"namespace (loopback); each server alone with --cpus 1 --cpuset-cpus {args.server_cpu}; "
          f"{args.warmup:g} s warm-up then {args.duration:g} s per scenario; {rounds_text}.\n")
    for description in descriptions:
        print(f"- {description}")
    print()
    print(table(results, args.runs))
    medians = " (the median of each round's ratio)" if args.runs > 1 else ""
    print(f'\n"of floor": requests/s over the floor\'s at the same connections and rows per request{medians}.')
    if not args.no_seed:
        print(f"Seed 002's app takes one row per request: its {BATCH}-row rows are n/a; a ratio marked * divides by "
              "the seed's one-row rows/s at the same connections.")
    return 1 if any(r.failure.startswith("FAILED") for r in results) else 0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
