#!/usr/bin/env python3
"""Run a rendered PyTorch GPU project's own code on whatever device this machine has, and check it.

    python tools/gpu_check/check.py PROJECT [--requests 2000] [--batch 4096]

PROJECT is a render with framework=pytorch and gpu=true (tools/gpu_check/prepare.py makes one). The interpreter that
runs this must have the project's dependencies and torch (a CUDA build on a GPU machine, the CPU wheel elsewhere).
One line per check (`ok`, `FAIL`, or `skip` with the reason), then a summary; exit 1 when a check failed. Without
a CUDA device it says `no CUDA device: CPU run` and runs every check that does not need one, so that the script
cannot rot between the times a GPU is at hand. Everything it starts listens on 127.0.0.1 and is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

PROB_TOLERANCE = 1e-4  # float32 on a GPU vs the CPU: cuBLAS and MKL sum in other orders
GROWTH_LIMIT_MB = 64  # device (or resident) memory a few thousand requests may add: caches warming, not leaks
MODEL_NAME = "gpu-check"

failures: list[str] = []


def say(status: str, name: str, detail: str) -> None:
    print(f"{status:4} {name}: {detail}", flush=True)
    if status == "FAIL":
        failures.append(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def nvidia_smi(*query: str) -> list[list[str]]:
    out = subprocess.run(["nvidia-smi", *query, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return [[field.strip() for field in line.split(",")] for line in out.splitlines() if line.strip()]


class Server:
    """The project's server (`python -m <package>.serve`) on a free loopback port, WORKERS left at its default."""

    def __init__(self, project: Path, package: str, models: Path, env: dict[str, str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("w") as output:  # the child's; the parent closes its copy
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"{package}.serve"], cwd=project, stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, env={**env, "HOST": "127.0.0.1", "PORT": str(self.port),
                                               "MODEL_DIR": str(models), "MODEL_URI": "", "MODEL_NAME": MODEL_NAME},
                start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if http(f"{self.url}/ready", timeout=2)[0] == 200:
                    return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        return False

    def pids(self) -> list[int]:
        """The server's processes: the one started and its children (the workers, if any)."""
        found = [self.process.pid]
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            except OSError:
                continue
            if int(fields.get("PPid", "0")) in found:
                found.append(int(status.parent.name))
        return found

    def resident_mb(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                text = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            total += next(int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS:"))
        return total / 1024

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        return self.process.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--requests", type=int, default=2000, help="requests of the memory check (bounded)")
    parser.add_argument("--batch", type=int, default=4096, help="rows per request of the throughput figure")
    args = parser.parse_args()
    project = args.project.resolve()
    (package,) = [p.name for p in (project / "src").iterdir() if (p / "__init__.py").is_file()]
    sys.path.insert(0, str(project / "src"))
    import numpy as np
    import torch
    from sklearn.datasets import load_iris

    env = {**os.environ, "PYTHONPATH": str(project / "src"), "LOG_LEVEL": "info"}
    cpu_env = {**env, "CUDA_VISIBLE_DEVICES": ""}
    cuda = torch.cuda.is_available()
    if cuda:
        (gpu, driver), *_ = nvidia_smi("--query-gpu=name,driver_version")
        print(f"device: {gpu}, driver {driver}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    else:
        print(f"no CUDA device: CPU run (torch {torch.__version__})", flush=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    figures: dict[str, str] = {}

    # ---- training, twice with the same seed -----------------------------------------------------------------------
    metadata = []
    for name in ("a", "b"):
        models = work / name
        models.mkdir()
        result = subprocess.run([sys.executable, "-m", f"{package}.train"], cwd=project, capture_output=True,
                                text=True, timeout=900, env={**env, "MODEL_DIR": str(models)})
        if result.returncode != 0:
            say("FAIL", "train", f"exit {result.returncode}: {(result.stdout + result.stderr).strip()[-800:]}")
            return 1
        metadata.append(json.loads((models / "metadata.json").read_text()))
        log = result.stdout + result.stderr
    on_cuda = "pytorch: running on cuda" in log
    if cuda:
        say("ok" if on_cuda else "FAIL", "train-on-cuda",
            "training ran on cuda" if on_cuda else "a GPU is visible but training did not say it ran on cuda")
    else:
        say("ok" if "running on the CPU" in log else "FAIL", "train-on-cpu", "no GPU visible: training ran on the CPU")
    same = metadata[0]["sha256"] == metadata[1]["sha256"]
    say("ok" if same else "FAIL", "train-reproducible",
        f"artifact sha256 {metadata[0]['sha256'][:12]} in both seeded runs" if same else
        f"two seeded runs differ ({metadata[0]['sha256'][:12]} vs {metadata[1]['sha256'][:12]}): a nondeterministic "
        "kernel; model.seed_everything sets torch.use_deterministic_algorithms and CUBLAS_WORKSPACE_CONFIG")
    model_module = __import__(f"{package}.model", fromlist=["load"])
    loaded = model_module.load(work / "a" / metadata[0]["artifact"])
    where = loaded.mean.device.type
    say("ok" if where == ("cuda" if cuda else "cpu") else "FAIL", "model-device", f"loaded tensors are on {where}")

    # ---- the CPU answers, for comparison --------------------------------------------------------------------------
    rows = load_iris().data.tolist()
    probe = (f"import json, sys; sys.path.insert(0, {str(project / 'src')!r}); import numpy as np; "
             f"from {package} import model; m = model.load(__import__('pathlib').Path({str(work / 'a' / metadata[0]['artifact'])!r})); "
             f"print(json.dumps(model.predict_proba(m, np.asarray({rows!r}, dtype=np.float64)).tolist()))")
    expected = np.asarray(json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                                    check=True, timeout=300, env=cpu_env).stdout))

    # ---- the server, WORKERS left at the render's default ---------------------------------------------------------
    server = Server(project, package, work / "a", {**env, "MAX_BATCH_SIZE": str(max(args.batch, 1024))},
                    work / "server.log")
    try:
        if not server.wait_ready():
            say("FAIL", "serve", f"not ready (exit {server.process.poll()}):\n{server.tail()}")
            return 1
        processes = server.pids()
        say("ok" if len(processes) == 1 else "FAIL", "serve-workers",
            f"{len(processes)} server process(es) with WORKERS at its default (GPU renders: one)")
        status, body = http(f"{server.url}/predict", {"instances": rows, "return_probabilities": True})
        got = np.asarray(body.get("probabilities", [])) if status == 200 else None
        if got is None or got.shape != expected.shape:
            say("FAIL", "predict", f"HTTP {status}: {str(body)[:300]}")
        else:
            gap = float(np.abs(got - expected).max())
            agree = body["predictions"] == expected.argmax(axis=1).tolist()
            say("ok" if agree and gap <= PROB_TOLERANCE else "FAIL", "predict-equals-cpu",
                f"{len(rows)} rows: classes {'equal' if agree else 'DIFFER'}, probabilities within {gap:.1e} of the "
                f"CPU model's (tolerance {PROB_TOLERANCE:.0e})")
            tensor = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [len(rows), len(rows[0])],
                                  "data": [v for row in rows for v in row]}]}
            status, v2 = http(f"{server.url}/v2/models/{MODEL_NAME}/infer", tensor)
            outputs = {o["name"]: o["data"] for o in v2.get("outputs", [])} if status == 200 else {}
            same_v2 = outputs.get("predictions") == body["predictions"]
            say("ok" if same_v2 else "FAIL", "v2-infer",
                "V2 predictions equal /predict's" if same_v2 else f"HTTP {status}: {str(v2)[:300]}")

        if cuda:
            apps = nvidia_smi("--query-compute-apps=pid,used_memory")
            ours = [(int(pid), float(mb)) for pid, mb in apps if int(pid) in processes]
            say("ok" if len(ours) == 1 else "FAIL", "one-cuda-context", f"{len(ours)} CUDA context(s) in the server")
            before = sum(mb for _, mb in ours)
        else:
            say("skip", "one-cuda-context", "no CUDA device: no context to count")
            before = server.resident_mb()

        deadline = time.monotonic() + 120
        sent = 0
        for i in range(args.requests):  # bounded in count and time
            if time.monotonic() > deadline:
                break
            size = 1 + i % 64
            status, _ = http(f"{server.url}/predict", {"instances": rows[:size]})
            if status != 200:
                say("FAIL", "memory", f"request {i} answered {status}")
                break
            sent += 1
        if cuda:
            after = sum(float(mb) for pid, mb in nvidia_smi("--query-compute-apps=pid,used_memory")
                        if int(pid) in processes)
            kind = "GPU memory"
        else:
            after, kind = server.resident_mb(), "resident memory"
        grew = after - before
        say("ok" if grew <= GROWTH_LIMIT_MB else "FAIL", "memory-bounded",
            f"{kind} {before:.0f} -> {after:.0f} MB over {sent} requests (limit +{GROWTH_LIMIT_MB} MB)")

        batch = {"instances": (rows * (args.batch // len(rows) + 1))[: args.batch]}
        figures["rows/s"] = f"{throughput(server.url, batch):.0f} ({'cuda' if cuda else 'cpu'})"
    finally:
        code = server.stop()
        say("ok" if code == 0 else "FAIL", "sigterm", f"the server exited {code} on SIGTERM")

    if cuda:  # the same batch on the CPU, for the figure beside it
        cpu = Server(project, package, work / "a", {**cpu_env, "MAX_BATCH_SIZE": str(max(args.batch, 1024))},
                     work / "cpu.log")
        try:
            if cpu.wait_ready():
                figures["rows/s on cpu"] = f"{throughput(cpu.url, batch):.0f}"
        finally:
            cpu.stop()
    print("summary: " + ", ".join(f"{k} {v}" for k, v in figures.items()) + f", batch {args.batch} rows", flush=True)
    print(f"{'FAILED: ' + ', '.join(failures) if failures else 'all checks passed'}", flush=True)
    return 1 if failures else 0


def throughput(url: str, batch: dict[str, Any], requests: int = 20) -> float:
    http(f"{url}/predict", batch)  # warm-up
    started = time.monotonic()
    for _ in range(requests):
        status, body = http(f"{url}/predict", batch, timeout=120)
        if status != 200:
            raise SystemExit(f"gpu_check: the throughput batch answered {status}: {str(body)[:200]}")
    return requests * len(batch["instances"]) / (time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
