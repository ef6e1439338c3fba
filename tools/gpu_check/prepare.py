#!/usr/bin/env python3
"""Prepare the GPU check: render the GPU variant that a GPU machine can run, list its dependencies, and optionally
fetch their wheels for that machine's Python (it has no network; torch it has already).

    python tools/gpu_check/prepare.py                      # for this machine's Python (the CPU run, CI)
    python tools/gpu_check/prepare.py --python 3.12 --cuda 13.0 --wheels   # for the GPU machine (no network there)

Writes BUILD/project (framework=pytorch, gpu=true), BUILD/requirements.txt (what the check imports: serve.in +
train.in, less LEFT_OUT) and with --wheels BUILD/wheels (manylinux x86_64 wheels for CPython X.Y, less --have). BUILD (default
tools/gpu_check/build) is git-ignored; it travels to the GPU machine with the working tree (64 MiB at most, which
the wheels must fit: their size is printed). Then `python3 tools/gpu_check/run.py` there.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import copier
import yaml

REPO = Path(__file__).resolve().parents[2]
CARRY_LIMIT_MB = 64
# Left out of the check's requirements: torch (the machine's own build), the generated tests' tools (pytest, httpx2)
# and pandas (read only for a CSV in data/; the check trains on the iris data that scikit-learn ships)
LEFT_OUT = {"torch", "pytest", "httpx2", "pandas"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=f"{sys.version_info[0]}.{sys.version_info[1]}")
    parser.add_argument("--cuda", default=None, help="CUDA release of the render (default: the matrix's newest)")
    parser.add_argument("--wheels", action="store_true", help="download the dependencies' wheels for --python")
    parser.add_argument("--have", nargs="*", default=["numpy"],
                        help="packages the GPU machine already has (their wheels stay out of the bundle; default: "
                             "numpy, which a PyTorch machine has); pip finds them in its system site-packages")
    parser.add_argument("--build", type=Path, default=REPO / "tools" / "gpu_check" / "build")
    args = parser.parse_args()
    build = args.build.resolve()
    shutil.rmtree(build, ignore_errors=True)
    answers = {"project_name": "GPU Check", "framework": "pytorch", "gpu": True, "python_version": args.python,
               "base_image": "slim", "model_source": "baked", "dev_environment": False, "ci": "none",
               "kubernetes": False, **({"cuda_version": args.cuda} if args.cuda else {})}
    copier.run_copy(str(REPO), build / "project", data=answers, defaults=True, unsafe=True, vcs_ref="HEAD",
                    skip_tasks=True, quiet=True)
    chosen = yaml.safe_load((build / "project" / ".copier-answers.yml").read_text())
    requirements = []
    for name in ("serve.in", "train.in"):
        for line in (build / "project" / "requirements" / name).read_text().splitlines():
            requirement = line.split("#", 1)[0].strip()
            if requirement and not requirement.startswith("-") and re.split(r"[<>=!~ \[]", requirement)[0] not in LEFT_OUT:
                requirements.append(requirement)
    (build / "requirements.txt").write_text("\n".join(dict.fromkeys(requirements)) + "\n")
    print(f"gpu_check: rendered {build / 'project'} (Python {args.python}, CUDA {chosen['cuda_version']}); "
          f"{len(requirements)} requirements besides torch in {build / 'requirements.txt'}")
    if args.wheels:
        wheels = build / "wheels"
        platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                     for a in ("--platform", p)]
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--implementation",
                        "cp", "--python-version", args.python, *platforms, "-d", str(wheels), "-r",
                        str(build / "requirements.txt")], check=True, timeout=3600)
        have = {re.sub(r"[-_.]+", "_", name).lower() for name in args.have}
        for wheel in wheels.iterdir():
            if wheel.name.split("-")[0].lower() in have:
                wheel.unlink()
        size = sum(p.stat().st_size for p in wheels.iterdir()) / 2**20
        print(f"gpu_check: {len(list(wheels.iterdir()))} wheels, {size:.1f} MiB in {wheels}"
              + (f": over the {CARRY_LIMIT_MB} MiB the GPU machine receives" if size > CARRY_LIMIT_MB else ""))
        if size > CARRY_LIMIT_MB:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
