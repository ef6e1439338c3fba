"""A real image registry on 127.0.0.1 (Debian's docker-registry, the CNCF distribution server), and multi-platform
indexes of the local stand-in bases in it.

The engine's own image store keeps one platform per tag (the amd64 stand-ins keep the real names, the arm64 ones
live under arm64v8/), so a `FROM python:3.13-slim-trixie` built for linux/arm64 would try to pull. In the registry,
`<registry>/python:3.13-slim-trixie` is an index of both stand-ins, as the real tag is on Docker Hub: a project whose
Dockerfile names it (as a project on a company mirror does) builds either platform with `--platform` alone."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from helpers.answers import REPO
from helpers.engine import run

ARM64_PREFIX = "arm64v8/"  # ../shared/tools/container-engine bases-arm64


# The registry's address is in the rendered Dockerfile (its base images) and so in the locks' stamps: a port that stays
# the same for a checkout lets a second run reuse the build cache. MLDT_REGISTRY_PORT chooses another; a busy one, any.
PORT = (int(os.environ.get("MLDT_REGISTRY_PORT", "0"))
        or 20000 + int(hashlib.sha256(f"registry {REPO}".encode()).hexdigest(), 16) % 20000)


def require_docker_registry() -> None:
    """Debian's docker-registry on PATH: installed where the engine tests must run (CI), else the test skips."""
    import pytest

    if shutil.which("docker-registry"):
        return
    if os.environ.get("CI") != "true":
        pytest.skip("no docker-registry: apt-get install docker-registry")
    run(["apt-get", "update", "-q"], timeout=600)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "docker-registry"], timeout=900)


class Registry:
    def __init__(self, root: Path):
        binary = shutil.which("docker-registry")
        if not binary:
            raise RuntimeError("no docker-registry on PATH: apt-get install docker-registry")
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", PORT))
            except OSError:
                probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.host = f"127.0.0.1:{port}"
        config = root / "config.yml"
        config.write_text(f"version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {root}/data}},"
                          f" delete: {{enabled: true}}}}\nhttp: {{addr: '{self.host}'}}\n")
        self.log = (root / "registry.log").open("w")
        self.process = subprocess.Popen([binary, "serve", str(config)], stdin=subprocess.DEVNULL, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2)
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"docker-registry did not start: {(root / 'registry.log').read_text()[-2000:]}")
                time.sleep(0.2)

    def index_of(self, image: str) -> str:
        """`<registry>/<image>`: an index of the amd64 stand-in `image` and its arm64 one (arm64v8/<image>)."""
        name = f"{self.host}/{image}"
        parts = []
        for source, arch in ((image, "amd64"), (ARM64_PREFIX + image, "arm64")):
            tag = f"{name}-{arch}"
            run(["docker", "tag", source, tag])
            run(["docker", "push", "--quiet", tag], timeout=600)
            parts.append(tag)
        run(["docker", "buildx", "imagetools", "create", "-t", name, *parts], timeout=300)
        return name

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()
