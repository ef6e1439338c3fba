#!/usr/bin/env python3
"""Install what the GPU check needs into a throwaway venv and run it (on a GPU machine, or on the CPU in CI).

    python3 tools/gpu_check/run.py [--build tools/gpu_check/build] [--torch-wheel PATH]

The venv sees the system's packages (a GPU machine's CUDA build of torch); the rest comes from BUILD/wheels when
prepare.py fetched them (no network needed), else from the configured package index. --torch-wheel installs a
torch wheel file too (CI: the CPU wheel in pip's find-links). Standard library only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=HERE / "build")
    parser.add_argument("--torch-wheel", type=Path, default=None)
    parser.add_argument("check_args", nargs="*", help="passed to check.py (e.g. --requests 500)")
    args = parser.parse_args()
    build = args.build.resolve()
    if not (build / "project").is_dir():
        print(f"gpu_check: {build / 'project'} missing: run tools/gpu_check/prepare.py first", file=sys.stderr)
        return 1
    env_dir = build / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True, clear=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    source = (["--no-index", "--find-links", str(build / "wheels")] if (build / "wheels").is_dir() else [])
    extra = [str(args.torch_wheel)] if args.torch_wheel else []
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *source,
                              "-r", str(build / "requirements.txt"), *extra], capture_output=True, text=True, timeout=3600)
    if install.returncode != 0:
        last = (install.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(f"gpu_check: installing the check's dependencies failed: {last}", file=sys.stderr)
        return 1
    if subprocess.run([python, "-c", "import torch"], capture_output=True, timeout=300).returncode != 0:
        print("gpu_check: torch is not importable: on a GPU machine use its CUDA build (system site packages), "
              "elsewhere pass --torch-wheel", file=sys.stderr)
        return 1
    return subprocess.run([python, str(HERE / "check.py"), str(build / "project"), *args.check_args],
                          timeout=3600).returncode  # check.py bounds each of its own steps; this, the whole


if __name__ == "__main__":
    sys.exit(main())
