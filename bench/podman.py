#!/usr/bin/env python3
"""Docker and rootless Podman side by side on the default render (figures for BENCHMARKS.md, issues 21 and 36).

    .venv/bin/python bench/podman.py                    # as root, with Docker and Podman installed (the engine tests' setup)
    .venv/bin/python bench/podman.py --refs 891707a HEAD    # two template commits side by side, same locks and model
    ... --from DIR    # the locks and model of a project rendered with the same answers before (no lock, no training)

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


def project_at(ref: str, work: Path, first: Path | None) -> Path:
    """The default render at template commit `ref`; after the first, with the first's locks and model (the same
    inputs, so only the Dockerfile differs)."""
    project = work / f"project-{ref}"
    args = [a for k, v in DEFAULT_COMBO.answers.items() for a in ("-d", f"{k}={v}")]
    skip = ["--skip-tasks"] if first else []
    result = copier_cli("copy", "--trust", "--defaults", *skip, "--vcs-ref", ref, *args, str(REPO), str(project))
    assert result.returncode == 0, result.stderr[-3000:]
    if first:
        for lock in (first / "requirements").glob("*.txt"):
            shutil.copy2(lock, project / "requirements" / lock.name)
        shutil.copytree(first / "models", project / "models", dirs_exist_ok=True)
    else:
        run(["make", "train"], cwd=project, timeout=1800)
    return project


def main() -> None:
    args = sys.argv[1:]
    given = Path(args.pop(args.index("--from") + 1)) if "--from" in args else None
    args = [a for a in args if a != "--from"]
    refs = args[args.index("--refs") + 1:] if "--refs" in args else ["HEAD"]
    work = Path(tempfile.mkdtemp(prefix="bench-podman-"))
    work.chmod(0o755)
    projects: dict[str, Path] = {}
    for ref in refs:
        projects[ref] = project_at(ref, work, projects.get(refs[0], given))
    docker = {ref: rounds(["docker"], project) for ref, project in projects.items()}
    user = PodmanUser(sorted({DEFAULT_COMBO.image("builder"), DEFAULT_COMBO.image("runtime")}), [])
    podman = {}
    try:
        for ref, project in projects.items():
            mine = user.root / project.name
            shutil.copytree(project, mine, symlinks=True)
            run(["chown", "-R", f"{USER}:{USER}", str(mine)])
            podman[ref] = rounds([*user.command([]), "podman"], mine)
    finally:
        user.close()
        shutil.rmtree(work, ignore_errors=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    print(f"CPU: {cpu}; Docker {subprocess.run(['docker', 'version', '-f', '{{.Server.Version}}'], capture_output=True, text=True, timeout=30).stdout.strip()}")
    print("| s | " + " | ".join(f"Docker {ref} | Podman {ref}" for ref in refs) + " |")
    print("| --- |" + " ---: | ---: |" * len(refs))
    for key in docker[refs[0]]:
        print(f"| {key} | " + " | ".join(f"{docker[ref][key]} | {podman[ref][key]}" for ref in refs) + " |")


if __name__ == "__main__":
    main()
