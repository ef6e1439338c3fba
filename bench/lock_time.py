"""Lock time of pip-tools and uv (figures for BENCHMARKS.md): `make lock`'s script on the default render and on
PyTorch, cold and warm, through the Docker engine.

    .venv/bin/python bench/lock_time.py [--runs N]

cold: the lock stage's layers and its pip/uv cache mounts are new (unique cache ids in a copy of the Dockerfile, a
      unique line before the tool's install), so the tool is installed and every package downloaded again;
warm: the same project again after a comment was added to train.in: the layers before compiling and the download
      caches are reused, the compile runs again.
Leaves the engine's shared build cache alone (nothing is pruned). PyTorch's wheel comes from the tests' local index.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.answers import DEFAULT_ANSWERS, host_platform
from helpers.combos import LOCK_PINS, TORCH_INDEX_PORT, TORCH_INDEX_URL
from helpers.render import render
from helpers.torch_index import TorchIndex, find_torch_wheel

# this machine's platform only: the other one's lock needs its images (tests/helpers/registry.py)
HERE = {**DEFAULT_ANSWERS, "platforms": [host_platform()]}
CASES = {
    "default (sklearn, 3.13)": HERE,
    "pytorch (3.11)": {**HERE, "framework": "pytorch", "python_version": "3.11", "torch_index_url": TORCH_INDEX_URL},
}


def make_cold(project: Path) -> None:
    nonce = uuid.uuid4().hex[:12]
    dockerfile = project / "Dockerfile"
    text = re.sub(r"(--mount=type=cache,target=/root/\.cache/(pip|uv))", rf"\1,id=lockbench-{nonce}-\2",
                  dockerfile.read_text())
    assert "FROM base AS lock-compile\n" in text, "the Dockerfile's lock stage moved: update bench/lock_time.py"
    text = text.replace("FROM base AS lock-compile\n", f"FROM base AS lock-compile\nRUN echo {nonce}\n")
    dockerfile.write_text(text)


def lock(project: Path) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "scripts/lock.py", "--strict"], cwd=project, check=True,
                   capture_output=True, timeout=3600)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    wheel = find_torch_wheel()
    with tempfile.TemporaryDirectory() as tmp:
        index = TorchIndex(Path(tmp) / "index", TORCH_INDEX_PORT, wheel) if wheel else None
        print("| render | lock tool | cold (s) | warm (s) |\n| --- | --- | --- | --- |")
        for label, answers in CASES.items():
            if answers.get("framework") == "pytorch" and index is None:
                print(f"| {label} | - | no local torch wheel | |")
                continue
            for tool in ("pip-tools", "uv"):
                cold, warm = [], []
                for run in range(args.runs):
                    project = render(Path(tmp) / f"{tool}-{run}-{len(cold)}-{uuid.uuid4().hex[:6]}",
                                     {**answers, "lock_tool": tool})
                    pin = LOCK_PINS.get(answers.get("framework", ""))
                    if pin:
                        serve_in = project / "requirements/serve.in"
                        serve_in.write_text(serve_in.read_text().replace(*pin))
                    make_cold(project)
                    cold.append(lock(project))
                    with (project / "requirements/train.in").open("a") as f:
                        f.write("# warm run\n")
                    warm.append(lock(project))
                print(f"| {label} | {tool} | {statistics.median(cold):.1f} | {statistics.median(warm):.1f} |",
                      flush=True)
        if index:
            index.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DOCKER_BUILDKIT", "1")
    sys.exit(main())
