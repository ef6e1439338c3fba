#!/usr/bin/env python3
"""Install a hashed lock into a venv for another architecture's image, with this machine's own pip.

    python cross_install.py LOCK VENV TARGETARCH [pip install options]   # the Dockerfile's *-cross stages

An image for another architecture (linux/arm64 built on an amd64 runner, linux/amd64 on an Apple Silicon laptop)
runs its RUN steps under emulation, where pip is most of a build (the arm64 serve image: 593 s; 17 s natively).
The Dockerfile's cross stages run on the build machine's own platform (`FROM --platform=$BUILDPLATFORM`) and call
this, so pip, the unpacking and the bytecode compile run natively, and the venv is copied into the target's image
(same Python version and paths: the builder and runtime images are one family). pip installs the target's wheels
(`--platform`, wheels only), from the lock's entries for the target machine (pip evaluates a lock's
`platform_machine` markers for the machine it runs on, so the lock is cut to the target's first: scripts/lock.py's
view). A package without a wheel for the target fails here in one line; it can still be built under emulation
(`--build-arg INSTALL_ARCH=<the target's>`).

Standard library only: it runs with the builder image's Python, beside scripts/lock.py.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lock import MACHINES as PLATFORM_MACHINES
from lock import platform_view

# Docker's architecture names (TARGETARCH) -> what `uname -m` says: the lock's platforms, by their last part
MACHINES = {name.split("/")[1]: machine for name, machine in PLATFORM_MACHINES.items()}
OLDEST_GLIBC = {"x86_64": 5, "aarch64": 17}  # the oldest manylinux of each (manylinux1; manylinux2014)
LEGACY = {"x86_64": {5: "manylinux1", 12: "manylinux2010", 17: "manylinux2014"}, "aarch64": {17: "manylinux2014"}}
DATA_DIRS = ("bin", "share", "etc", "include")  # what pip --target puts beside the packages: the venv's, not theirs


class CrossInstallError(Exception):
    pass


def platform_tags(machine: str, glibc: str) -> list[str]:
    """The wheel platforms a glibc of this version runs on this machine, newest first (what pip would accept there)."""
    major, minor = (int(part) for part in glibc.split(".")[:2])
    if major != 2:
        raise CrossInstallError(f"glibc {glibc} is not a 2.x release")
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
        raise CrossInstallError(f"{lock.name} was not locked for linux/{arch}: add it to PLATFORMS in the Dockerfile "
                                "and run `make lock`")


def install(lock: Path, venv: Path, arch: str, pip_args: list[str]) -> None:
    if arch not in MACHINES:
        raise CrossInstallError(f"no cross install for linux/{arch}: build it on a {arch} machine, or with "
                                f"--build-arg INSTALL_ARCH={arch} under emulation")
    machine = MACHINES[arch]
    libc, glibc = platform.libc_ver()
    if libc != "glibc":
        raise CrossInstallError(f"the builder's C library is {libc or 'unknown'}, not glibc: build linux/{arch} "
                                f"with --build-arg INSTALL_ARCH={arch}")
    text = lock.read_text()
    check_stamp(text, lock, arch)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as tmp:
        view = Path(tmp) / lock.name
        view.write_text(platform_view(text, machine))
        # --python: the scripts' first line names the venv's interpreter, as a plain install in the venv writes it
        cmd = [sys.executable, "-m", "pip", "--python", str(python), "install", "--require-hashes", "--no-deps",
               "--only-binary=:all:", "--target", str(site),
               *(f"--platform={tag}" for tag in platform_tags(machine, glibc)), *pip_args, "-r", str(view)]
        if subprocess.run(cmd, check=False).returncode:
            raise CrossInstallError(
                f"pip could not install {lock.name}'s wheels for linux/{arch} (above: the package): a package "
                f"without a {machine} wheel builds under emulation with --build-arg INSTALL_ARCH={arch}")
    for name in DATA_DIRS:
        data = site / name
        if data.is_dir() and not (data / "__init__.py").exists():
            for item in data.iterdir():
                target = venv / name / item.name
                target.parent.mkdir(exist_ok=True)
                shutil.move(item, target)
            data.rmdir()


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        install(Path(argv[0]), Path(argv[1]), argv[2], argv[3:])
    except CrossInstallError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
