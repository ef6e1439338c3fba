"""The arm64 images built on this (amd64) machine: venvs installed by this machine's pip (the cross stages, the
`--build-arg VENV=cross`, what make passes) next to pip under emulation (`VENV=native`, the Dockerfile's default). Figures for
BENCHMARKS.md.

    .venv/bin/python bench/cross_build.py [--runs N] [--targets serve,train]   (emulated: ~10 minutes a build)

The default render (both platforms), its base images from a registry on 127.0.0.1 holding the amd64 and arm64
stand-ins under one tag (tests/helpers/registry.py; needs `container-engine bases-arm64 3.13`), locked once. Each
run builds each target both ways, alternating, with the venv stages' layers rebuilt (`--no-cache-filter`) and pip's
download cache warm: the difference is pip's own work (resolving the lock, unpacking, compiling bytecode) and the
image steps, not the network.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.answers import DEFAULT_ANSWERS
from helpers.registry import Registry
from helpers.render import render

BASE = "python:3.13-slim-trixie"
WAYS = {"cross (VENV=cross: this machine's pip)": ["--build-arg", "VENV=cross"],
        "emulated (VENV=native)": ["--build-arg", "VENV=native"]}


def build(project: Path, target: str, extra: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(["docker", "buildx", "build", "--platform", "linux/arm64", "--target", target, "--quiet",
                    "--no-cache-filter", f"cross-build,cross-{target}-venv,native-{target}-venv", *extra, "."], cwd=project, check=True,
                   stdout=subprocess.DEVNULL, timeout=3600)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--targets", default="serve,train")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "registry").mkdir()
        registry = Registry(Path(tmp) / "registry")
        try:
            base = registry.index_of(BASE)
            project = render(Path(tmp) / "project", {**DEFAULT_ANSWERS, "dev_environment": False,
                                                     "platforms": ["linux/amd64", "linux/arm64"]})
            dockerfile = project / "Dockerfile"
            dockerfile.write_text(dockerfile.read_text().replace(f"={BASE}\n", f"={base}\n"))
            subprocess.run([sys.executable, "scripts/lock.py", "--strict"], cwd=project, check=True, timeout=3600)
            (project / "models").mkdir(exist_ok=True)
            (project / "models" / "metadata.json").write_text("{}")  # the serve image bakes a model: any will do
            times: dict[tuple[str, str], list[float]] = {}
            for target in args.targets.split(","):
                build(project, target, WAYS["emulated (VENV=native)"])  # fills pip's download cache (one cache for both ways) and the other layers
                for _ in range(args.runs):
                    for way, extra in WAYS.items():
                        times.setdefault((target, way), []).append(build(project, target, extra))
        finally:
            registry.close()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    print(f"linux/arm64 images built on {cpu}, {args.runs} runs, median seconds:\n")
    print("| image | cross s | emulated s | emulated / cross |\n| --- | ---: | ---: | ---: |")
    for target in args.targets.split(","):
        cross, emulated = (statistics.median(times[(target, way)]) for way in WAYS)
        print(f"| {target} | {cross:.0f} | {emulated:.0f} | {emulated / cross:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
