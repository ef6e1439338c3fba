#!/usr/bin/env python3
"""Install a hashed lock into /opt/venv: what every install step of the Dockerfile runs.

    python venv.py split LOCK FOLDER     # LOCK's largest packages -> FOLDER/1.txt, the others -> FOLDER/2.txt
    python venv.py LOCK [--python PATH] [--arch ARCH] [--prune] [--move-to FOLDER]

- The venv (no pip inside: the runtime images carry no installer) points at --python, the image's interpreter: by
  default this one; a path this machine lacks (distroless keeps Python in /usr/bin) is linked to this Python.
- pip installs the lock's pins only, by hash, nothing resolved (`--require-hashes --no-deps`), with the build's
  `pipconf` secret as its pip.conf when given, and EXTRA_INDEX_URL (the framework's wheel index) when set.
- --arch: the image's architecture (TARGETARCH). When it is not this machine's, pip installs that architecture's
  wheels natively instead of under emulation (30 times faster): the lock's entries for that machine, wheels only. A
  package with no wheel for it builds under emulation instead: `--build-arg VENV=native`.
- --prune: scripts/prune_venv.py, for the serve image. --move-to: the venv is moved there once installed (the cross
  stage keeps each image's venv apart until it is copied to /opt/venv).
- split: the serve image's venv goes in two layers, each under 200 MB, and a change of the small packages reuses
  the layer of the large ones (the split files are copied into the install stage, and Docker and Buildah key a copy
  by its content).

Standard library only: it runs with the image's own Python (beside scripts/lock_files.py where it splits a lock or
installs for another architecture).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VENV = Path("/opt/venv")
PIPCONF = Path("/run/secrets/pipconf")
# The packages of tens of MB (compiled libraries): the first layer of the serve venv. The rest (the server, pydantic,
# their dependencies) is the second.
LARGE = {"numpy", "scipy", "scikit-learn", "xgboost", "xgboost-cpu", "xgboost-cu12", "lightgbm", "onnxruntime",
         "pandas", "pyarrow", "torch", "tensorflow", "tensorflow-cpu", "transformers", "tokenizers"}
OLDEST_GLIBC = {"x86_64": 5, "aarch64": 17}  # the oldest manylinux of each (manylinux1; manylinux2014)
LEGACY = {"x86_64": {5: "manylinux1", 12: "manylinux2010", 17: "manylinux2014"}, "aarch64": {17: "manylinux2014"}}
DATA_DIRS = ("bin", "share", "etc", "include")  # what pip --target puts beside the packages: the venv's, not theirs


class VenvError(Exception):
    pass


def machines() -> dict[str, str]:
    """Docker's architecture names (TARGETARCH) -> what `uname -m` says there (the locks' platform_machine)."""
    from lock_files import MACHINES

    return {name.split("/")[1]: machine for name, machine in MACHINES.items()}


def split(lock: Path, folder: Path) -> None:
    """The lock's entries in two files (its heading in both): LARGE's packages, then the others."""
    from lock_files import (  # beside this script where it splits or cross-installs
        canonical,
        parse_lock,
        requirement,
    )
    parts: tuple[list[str], list[str]] = ([], [])
    for heading, entries in parse_lock(lock.read_text()):
        for part in parts:
            part.extend(heading)
        for entry in entries:
            parts[canonical(requirement(entry)[0].split("==")[0]) not in LARGE].extend(entry)
    folder.mkdir(parents=True, exist_ok=True)
    for number, lines in enumerate(parts, 1):
        (folder / f"{number}.txt").write_text("\n".join(lines).rstrip("\n") + "\n")


def platform_tags(machine: str, glibc: str) -> list[str]:
    """The wheel platforms a glibc of this version runs on this machine, newest first (what pip would accept there)."""
    major, minor = (int(part) for part in glibc.split(".")[:2])
    if major != 2:
        raise VenvError(f"glibc {glibc} is not a 2.x release")
    tags = []
    for version in range(minor, OLDEST_GLIBC[machine] - 1, -1):
        tags.append(f"manylinux_2_{version}_{machine}")
        if version in LEGACY[machine]:
            tags.append(f"{LEGACY[machine][version]}_{machine}")
    return [*tags, f"linux_{machine}"]


def check_stamp(lock_text: str, lock: Path, arch: str) -> None:
    """A lock whose stamp names its platforms must name this one: an entry for another machine is not this one's."""
    first = lock_text.split("\n", 1)[0]
    if "(linux/" in first and f"linux/{arch}" not in first:
        raise VenvError(f"{lock.name} was not locked for linux/{arch}: add it to PLATFORMS in the Dockerfile "
                        "and run `make lock`")


def cross_args(lock: Path, arch: str, machine: str | None, tmp: Path) -> list[str]:
    """pip's options for another machine's wheels, and the lock as that machine sees it (pip evaluates a lock's
    platform_machine markers for the machine it runs on)."""
    from lock_files import platform_view

    if machine is None:
        raise VenvError(f"no cross install for linux/{arch}: build it with --build-arg VENV=native")
    libc, glibc = platform.libc_ver()
    if libc != "glibc":
        raise VenvError(f"the builder's C library is {libc or 'unknown'}, not glibc: build linux/{arch} "
                        "with --build-arg VENV=native")
    text = lock.read_text()
    check_stamp(text, lock, arch)
    view = tmp / lock.name
    view.write_text(platform_view(text, machine))
    return ["--only-binary=:all:", "--target", str(site_packages()),
            *(f"--platform={tag}" for tag in platform_tags(machine, glibc)), "-r", str(view)]


def install(lock: Path, python: str | None, arch: str | None, prune: bool) -> None:
    if python and not Path(python).exists():
        Path(python).symlink_to(os.path.realpath(sys.executable))
    if not VENV.exists():
        subprocess.run([python or sys.executable, "-m", "venv", "--without-pip", VENV], check=True)
    env = dict(os.environ, PIP_CACHE_DIR="/var/cache", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_ROOT_USER_ACTION="ignore")
    if PIPCONF.is_file() and PIPCONF.stat().st_size:
        env["PIP_CONFIG_FILE"] = str(PIPCONF)
    index = ["--extra-index-url", env["EXTRA_INDEX_URL"]] if env.get("EXTRA_INDEX_URL") else []
    machine = machines().get(arch) if arch else None
    cross = arch and machine != platform.machine()
    if not any(line[:1].isalnum() for line in lock.read_text().splitlines()):
        return  # no package in this part: the other holds them all
    with tempfile.TemporaryDirectory() as tmp:
        # --python: the scripts' first line names the venv's interpreter, as a plain install in the venv writes it
        cmd = [sys.executable, "-m", "pip", "--python", str(VENV / "bin" / "python"), "install", "--require-hashes",
               "--no-deps", *index, *(cross_args(lock, arch, machine, Path(tmp)) if cross else ["-r", str(lock)])]
        if subprocess.run(cmd, env=env, check=False).returncode:
            raise VenvError(f"pip could not install {lock.name} (above: the package)" + (
                f": a package without a linux/{arch} wheel builds under emulation with --build-arg VENV=native"
                if cross else ""))
    if cross:
        move_data_dirs()
    if prune:
        subprocess.run([sys.executable, Path(__file__).with_name("prune_venv.py"), VENV], check=True)


def site_packages() -> Path:
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    return Path(subprocess.run([VENV / "bin" / "python", "-c", code], check=True, capture_output=True,
                               text=True).stdout.strip())


def move_data_dirs() -> None:
    """pip --target puts scripts and data files beside the packages: into the venv's own folders."""
    site = site_packages()
    for name in DATA_DIRS:
        data = site / name
        if data.is_dir() and not (data / "__init__.py").exists():
            for item in data.iterdir():
                target = VENV / name / item.name
                target.parent.mkdir(exist_ok=True)
                shutil.move(item, target)
            data.rmdir()


def main(argv: list[str]) -> int:
    if argv[:1] == ["split"]:
        if len(argv) != 3:
            print(__doc__.split("\n\n")[1], file=sys.stderr)
            return 2
        split(Path(argv[1]), Path(argv[2]))
        return 0
    parser = argparse.ArgumentParser(prog="venv.py", usage=__doc__.split("\n\n")[1])
    parser.add_argument("lock", type=Path)
    parser.add_argument("--python")
    parser.add_argument("--arch")
    parser.add_argument("--prune", action="store_true")
    parser.add_argument("--move-to", type=Path)
    args = parser.parse_args(argv)
    try:
        install(args.lock, args.python, args.arch, args.prune)
    except VenvError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.move_to:
        shutil.move(VENV, args.move_to)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
