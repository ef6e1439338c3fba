#!/usr/bin/env python3
"""Docker and rootless Podman side by side on the default render (figures for BENCHMARKS.md, issue 21).

    .venv/bin/python bench/podman.py        # as root, with Docker and Podman installed (the engine tests' setup)

Renders and locks the default project (copy task, through Docker), trains it once, then for each engine: a cold
build of train and serve (`--no-cache`; pip's cache mount as the engine has it), a rebuild with nothing changed, and
a rebuild after a code change (a line appended to serve.py), medians of 3; Podman as uid 1000, rootless, `--format docker`.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.combos import DEFAULT_COMBO
from helpers.engine import run
from helpers.podman import USER, PodmanUser
from helpers.render import copier_cli
from helpers.answers import REPO


def build(engine: list[str], project: Path, target: str, *extra: str) -> float:
    fmt = ["--format", "docker"] if "podman" in engine[-1] else []
    start = time.monotonic()
    run([*engine, "build", "-q", *fmt, *extra, "--target", target, "--secret", "id=pipconf,src=/dev/null",
         "-t", f"bench-podman-{target}", "."], cwd=project, timeout=1800)
    return time.monotonic() - start


def rounds(engine: list[str], project: Path) -> dict[str, str]:
    figures = {}
    for target in ("train", "serve"):
        figures[f"cold {target}"] = build(engine, project, target, "--no-cache")
    serve_py = next((project / "src").glob("*/serve.py"))
    for target in ("train", "serve"):
        figures[f"nothing changed {target}"] = statistics.median(build(engine, project, target) for _ in range(3))
        times = []
        for _ in range(3):
            serve_py.write_text(serve_py.read_text() + f"\n# a code change {time.time()}\n")
            times.append(build(engine, project, target))
        figures[f"code change {target}"] = statistics.median(times)
    return {k: f"{v:.2f}" for k, v in figures.items()}


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-podman-"))
    work.chmod(0o755)
    project = work / "project"
    args = [a for k, v in DEFAULT_COMBO.answers.items() for a in ("-d", f"{k}={v}")]
    result = copier_cli("copy", "--trust", "--defaults", "--vcs-ref", "HEAD", *args, str(REPO), str(project))
    assert result.returncode == 0, result.stderr[-3000:]
    run(["make", "train"], cwd=project, timeout=1800)
    docker = rounds(["docker"], project)
    user = PodmanUser(sorted({DEFAULT_COMBO.image("builder"), DEFAULT_COMBO.image("runtime")}), [])
    try:
        mine = user.root / "project"
        shutil.copytree(project, mine, symlinks=True)
        run(["chown", "-R", f"{USER}:{USER}", str(mine)])
        podman = rounds([*user.command([]), "podman"], mine)
    finally:
        user.close()
        shutil.rmtree(work, ignore_errors=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    print(f"CPU: {cpu}; Docker {subprocess.run(['docker', 'version', '-f', '{{.Server.Version}}'], capture_output=True, text=True, timeout=30).stdout.strip()}")
    print("| s | Docker | rootless Podman | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for key in docker:
        print(f"| {key} | {docker[key]} | {podman[key]} | {float(podman[key]) / max(float(docker[key]), 0.01):.1f}x |")


if __name__ == "__main__":
    main()
