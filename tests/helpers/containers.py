"""A detached container of the tests (labelled for clean-up) and HTTP to its published port on 127.0.0.1."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from helpers.engine import SESSION_LABEL, free_port, run


class Container:
    """A detached container, with its published port on 127.0.0.1 (or the host network)."""

    def __init__(self, image: str, *docker_args: str, port: int = 8000, wait_ready: bool = True,
                 host_network: bool = False):
        if host_network:  # to reach servers of the tests on 127.0.0.1; the server listens on a free port
            host_port = free_port()
            publish = ["--network", "host", "-e", f"PORT={host_port}"]
        else:
            publish = ["-p", f"127.0.0.1::{port}"]
        self.id = run(["docker", "run", "-d", "--label", SESSION_LABEL, *publish, *docker_args, image]).stdout.strip()
        if not host_network:
            host_port = int(run(["docker", "port", self.id, f"{port}/tcp"]).stdout.split()[0].rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{host_port}"
        if wait_ready:
            self.wait_ready()

    def http(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.http("GET", "/ready")[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if self.state()["Status"] == "exited":
                raise AssertionError(f"container exited before ready:\n{self.logs()}")
            time.sleep(0.3)
        raise AssertionError(f"not ready after {timeout}s:\n{self.logs()}")

    def state(self) -> dict[str, Any]:
        return json.loads(run(["docker", "inspect", "--format", "{{json .State}}", self.id]).stdout)

    def logs(self) -> str:
        result = run(["docker", "logs", self.id], check=False)
        return result.stdout + result.stderr

    def exec(self, *cmd: str) -> str:
        return run(["docker", "exec", self.id, *cmd]).stdout.strip()

    def remove(self) -> None:
        run(["docker", "rm", "-f", self.id], check=False)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
