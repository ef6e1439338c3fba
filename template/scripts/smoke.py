#!/usr/bin/env python3
"""Smoke test of the serve image (make smoke; CI runs it): start, /ready, one /predict, SIGTERM, exit 0.

    python scripts/smoke.py IMAGE [--models DIR] [--bundle FILE] [--uid UID] [--port PORT]

--models DIR    the model directory is put on a volume mounted read-only at /app/models (model_source=mounted;
                registry, whose server CI does not have: MODEL_URI is emptied)
--bundle FILE   the bundle `make publish` wrote is put on a volume and served as MODEL_URI=file://... with its
                sha256 (model_source=downloaded)

The requests are made from inside the container (its own Python), and models go in through a volume filled from a
tar stream, not a bind mount: the same test works on a laptop, on Docker Desktop and against a remote engine (a CI
service such as docker:dind) where neither the container's ports nor this folder are reachable.
Standard library only. Exits 1 with one line saying what failed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

READY_TIMEOUT = 120  # seconds: a large framework imports slowly on a busy CI machine
# the engine's CLI: docker, or podman (make passes its ENGINE; the commands below are the same for both)
ENGINE = os.environ.get("ENGINE") or "docker"
STOP_TIMEOUT = 10  # seconds docker waits after SIGTERM, as compose.yaml's stop_grace_period

REQUEST = """
import json, os, sys, urllib.request
url = "http://127.0.0.1:" + os.environ.get("PORT", "8000") + sys.argv[1]
data = sys.argv[2].encode() if len(sys.argv) > 2 else None
request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=10) as response:
        print(json.dumps([response.status, json.loads(response.read() or b"null")]))
except urllib.error.HTTPError as error:
    print(json.dumps([error.code, json.loads(error.read() or b"null")]))
"""


class SmokeError(Exception):
    pass


def docker(*args: str, stdin: bytes | None = None, check: bool = True) -> str:
    result = subprocess.run([ENGINE, *args], input=stdin, capture_output=True, timeout=300)
    if check and result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
        raise SmokeError(f"{ENGINE} {args[0]} failed: {lines[-1][-300:]}")
    return result.stdout.decode(errors="replace").strip()


def owned_tmpfs(path: str, uid: int) -> str:
    """--tmpfs for a folder the image's user writes: Docker takes uid/gid options, Podman its U flag (which chowns
    to the container's user) and refuses uid=."""
    return f"{path}:U" if Path(ENGINE).name == "podman" else f"{path}:uid={uid},gid={uid}"


def fill_volume(volume: str, image: str, files: dict[str, Path]) -> None:
    """Copy files into a named volume through a tar stream, using the image's own Python (no helper image)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, path in files.items():
            tar.add(path, arcname=name)
    extract = "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode='r|').extractall('/fill')"
    docker("run", "--rm", "-i", "--pull", "never", "--user", "0", "--entrypoint", "python", "-v", f"{volume}:/fill",
           image, "-c", extract, stdin=buffer.getvalue())


def request(container: str, path: str, body: object = None) -> tuple[int, object]:
    args = ["exec", container, "python", "-c", REQUEST, path] + ([json.dumps(body)] if body is not None else [])
    status, payload = json.loads(docker(*args))
    return status, payload


def wait_ready(container: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if docker("inspect", "--format", "{{.State.Running}}", container) != "true":
            logs = docker("logs", "--tail", "5", container, check=False)
            raise SmokeError(f"the server exited before it was ready; last log lines:\n{logs}")
        try:
            if request(container, "/ready")[0] == 200:
                return
        except (SmokeError, ValueError):
            pass  # not listening yet
        time.sleep(1)
    raise SmokeError(f"/ready did not answer 200 within {READY_TIMEOUT} s")


def smoke(image: str, models: Path | None, bundle: Path | None, uid: int) -> str:
    name = f"smoke-{uuid.uuid4().hex[:12]}"
    # --pull never: the image under test is the one just built here, never one from a registry
    run = ["run", "-d", "--pull", "never", "--name", name, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
           "--security-opt", "no-new-privileges:true",
           # the prediction log's folder (log_predictions), a volume in compose and Kubernetes
           "--tmpfs", owned_tmpfs("/app/var/log", uid)]
    volumes = []
    try:
        if models is not None:
            if not (models / "metadata.json").is_file():
                raise SmokeError(f"{models}/metadata.json not found: run 'make train' first")
            volumes.append(f"{name}-models")
            fill_volume(volumes[-1], image, {p.name: p for p in models.iterdir() if not p.name.startswith(".")})
            run += ["-v", f"{volumes[-1]}:/app/models:ro", "-e", "MODEL_URI="]  # registry source: this folder
        if bundle is not None:
            if not bundle.is_file():
                raise SmokeError(f"{bundle} not found: run 'make publish' first")
            volumes.append(f"{name}-bundle")
            fill_volume(volumes[-1], image, {"model.tar.gz": bundle})
            sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
            run += ["-v", f"{volumes[-1]}:/bundle:ro", "-e", "MODEL_URI=file:///bundle/model.tar.gz",
                    "-e", f"MODEL_SHA256={sha}", "--tmpfs", owned_tmpfs("/app/var/cache", uid)]
        docker(*run, image)
        wait_ready(name)
        status, metadata = request(name, "/metadata")
        if status != 200 or not isinstance(metadata, dict):
            raise SmokeError(f"/metadata answered {status}")
        row = [0.5] * len(metadata.get("feature_names") or [0])
        status, answer = request(name, "/predict", {"features": row})
        if status != 200 or not isinstance(answer, dict) or len(answer.get("predictions", [])) != 1:
            raise SmokeError(f"/predict answered {status}: {json.dumps(answer)[:300]}")
        started = time.monotonic()
        docker("stop", "--time", str(STOP_TIMEOUT), name)  # SIGTERM, then SIGKILL after the grace period
        code = docker("inspect", "--format", "{{.State.ExitCode}}", name)
        if code != "0" or time.monotonic() - started >= STOP_TIMEOUT:
            raise SmokeError(f"the server did not stop cleanly on SIGTERM (exit code {code})")
        return f"smoke: {image} ready, /predict {answer['predictions']}, stopped on SIGTERM with exit 0"
    finally:
        docker("rm", "-f", name, check=False)
        for volume in volumes:
            docker("volume", "rm", "-f", volume, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image")
    parser.add_argument("--models", type=Path)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--uid", type=int, default=10001, help="the serve image's user (owns the download cache)")
    args = parser.parse_args(argv)
    try:
        print(smoke(args.image, args.models, args.bundle, args.uid))
    except (SmokeError, subprocess.TimeoutExpired, FileNotFoundError) as error:
        print(f"smoke: {args.image}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
