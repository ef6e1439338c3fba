"""A PEP 503 index on 127.0.0.1 for the PyTorch CPU wheel that lies on this machine's disk.

PyTorch's own CPU index cannot be reached here, so the PyTorch renders point `torch_index_url` at this server;
the lock and the builds reach it through the host network (scripts/lock.py adds `--network host` by itself for a
loopback index, the tests do the same for their builds).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path


def find_torch_wheel() -> Path | None:
    """The CPU torch wheel for this Python, in pip's find-links directories (PIP_FIND_LINKS or pip config)."""
    places = os.environ.get("PIP_FIND_LINKS", "").split()
    config = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=600).stdout
    for line in config.splitlines():
        if "find-links=" in line:
            places += line.split("=", 1)[1].strip("'\"").split()
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    for place in places:
        folder = Path(place.removeprefix("file://"))
        if folder.is_dir():
            wheels = sorted(folder.glob(f"torch-*+cpu-{tag}-{tag}-*linux*_x86_64.whl"))
            if wheels:
                return wheels[-1]
    return None


def required_torch_wheel(needed_by: str) -> Path:
    """find_torch_wheel(), or the test fails (CI) or skips (elsewhere) with one line saying what needs it."""
    import pytest

    from helpers.engine import engine_required

    wheel = find_torch_wheel()
    if wheel is None:
        message = f"no torch CPU wheel for this Python in pip's find-links: {needed_by} needs one here"
        if engine_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return wheel


class TorchIndex:
    def __init__(self, root: Path, port: int, wheel: Path):
        simple = root / "whl" / "cpu" / "torch"
        simple.mkdir(parents=True)
        (simple / wheel.name).symlink_to(wheel)
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        (simple / "index.html").write_text(
            f'<!DOCTYPE html><html><body><a href="{wheel.name}#sha256={digest}">{wheel.name}</a></body></html>\n'
        )
        (root / "whl" / "cpu" / "index.html").write_text('<html><body><a href="torch/">torch</a></body></html>\n')
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass
