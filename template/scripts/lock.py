#!/usr/bin/env python3
"""Compile requirements/*.in into hashed locks for the Python and platform of the project's images.

Copier runs it once after `copier copy`; `make lock` runs it afterwards. Standard library only (Python 3.9+).

    python scripts/lock.py            # Docker if an engine answers, else a local compile, else instructions
    ENGINE=podman python scripts/lock.py   # the same with Podman (make passes its ENGINE)
    python scripts/lock.py --engine docker|local
    python scripts/lock.py --strict   # exit 1, not 0, when no lock could be made (make lock)
    python scripts/lock.py --upgrade  # move every pin to the newest allowed version (make lock-upgrade)
    python scripts/lock.py --check    # offline: is every lock up to date with its inputs? (make lock-check)
    python scripts/lock.py --check --report   # the same, said after `make update`, exit 0 (stale or not)
    python scripts/lock.py compile    # what the Dockerfile's `lock` stage runs (inside the image)

The lock tool is the Dockerfile's LOCK_TOOL (pip-tools, the default, or uv) at LOCK_TOOL_VERSION. Order of preference:
1. `docker build --target lock` once per platform of the Dockerfile's PLATFORMS, in that platform's image, then merged
   into one lock per .in (lock_engine.py).
2. A local pip-compile (or uv): only on Linux, with the images' Python, for a single platform (lock_compile.py).
3. Otherwise, instructions, and exit 0 (1 with --strict): a project is never left broken by locking.

Each lock starts with a stamp of its inputs, which `--check` compares (lock_stamp.py). Why it works this way:
docs/locks.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from lock_compile import compile_in_image, lock_locally
from lock_engine import ENGINE, engine_answers, host_platform, lock_with_docker
from lock_files import LOCKS, MACHINES, LockError, locks, log
from lock_stamp import check_locks, dockerfile_args, stamp_lock


def lock_platforms(project: Path) -> list[str]:
    """The Dockerfile's PLATFORMS (none in older Dockerfiles: the host's platform, whichever it is)."""
    named = [p.strip() for p in dockerfile_args(project).get("PLATFORMS", "").split(",") if p.strip()]
    for name in named:
        if name not in MACHINES:
            raise LockError(f"PLATFORMS in the Dockerfile names {name}: the locks can be made for "
                            f"{' and '.join(MACHINES)} only; fix that line")
    return named


def install_locks(staged: Path, req_dir: Path) -> None:
    """Replace the locks only once all were produced: never leave a half-updated set."""
    names = [name for name in LOCKS if name in ("train", "serve") or name in locks(req_dir.parent)]
    for name in names:
        if not (staged / f"{name}.txt").is_file():
            raise FileNotFoundError(f"{name}.txt was not produced")
    for name in names:
        shutil.copyfile(staged / f"{name}.txt", req_dir / f"{name}.txt")


def instructions(python: str, local: bool) -> str:
    """What to do next; `local`: this machine could compile without an engine (it tried, and said why it failed)."""
    also = "; or fix what the local compile said above" if local else ""
    return (
        "lock: requirements/train.txt and requirements/serve.txt were NOT written.\n"
        "      The project is complete otherwise; to lock, start Docker (or Podman: ENGINE=podman) and run\n"
        f"      `make lock` (it compiles inside the python:{python} image{also}).\n"
        "      Private index? Export PIP_INDEX_URL / PIP_EXTRA_INDEX_URL first; they reach the build as a secret."
    )


def check(project: Path, report: bool) -> int:
    """--check: each stale lock on stderr, exit 1; --report: said on stdout after `make update`, exit 0."""
    problems = check_locks(project)
    if report:
        print("update: make lock needed:" if problems else "update: every lock is up to date with its inputs "
              "(no make lock needed)")
        for line in problems:
            print(f"  {line}")
        return 0
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", nargs="?", choices=["lock", "compile"], default="lock")
    parser.add_argument("--engine", choices=["auto", "docker", "local"], default="auto")
    parser.add_argument("--upgrade", action="store_true", help="move every pin to the newest allowed version")
    parser.add_argument("--strict", action="store_true", help="exit 1 when no lock could be made")
    parser.add_argument("--check", action="store_true", help="exit 1 naming each lock stale against its inputs")
    parser.add_argument("--report", action="store_true",
                        help="with --check: say which locks are stale and why, or that none are; exit 0 (make update)")
    args = parser.parse_args(argv)
    project = Path.cwd()
    if args.action == "compile":  # inside the Dockerfile's lock stage
        compile_in_image(project)
        return 0
    if not (project / "requirements" / "train.in").is_file():
        log("run me from the project root (requirements/train.in not found)")
        return 2
    if args.check:
        return check(project, args.report)
    versions = dockerfile_args(project)
    python, tool = versions["PYTHON_VERSION"], versions.get("LOCK_TOOL", "pip-tools")
    failed = 1 if args.strict else 0  # the copy task never fails: the project is complete without its locks
    try:
        platforms = lock_platforms(project)
    except LockError as error:
        log(str(error))
        return failed
    version = versions.get("LOCK_TOOL_VERSION") or versions["PIP_TOOLS_VERSION"]  # the latter: older Dockerfiles

    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging)
        done = False
        if args.engine in ("auto", "docker"):
            if engine_answers():
                try:
                    done = lock_with_docker(project, staged, args.upgrade, platforms)
                except LockError as error:
                    log(str(error))
                    return failed
            else:
                log(f"no {'Docker' if ENGINE == 'docker' else ENGINE} engine answers")
        local_python = f"{sys.version_info.major}.{sys.version_info.minor}"
        local = False
        if not done and args.engine in ("auto", "local"):
            if platforms and platforms != [host_platform()]:
                log(f"no local fallback: the locks are for {' and '.join(platforms)}, compiled in each one's image; "
                    "this needs a container engine")
            elif sys.platform.startswith("linux") and local_python == python:
                log(f"compiling with a local {'uv' if tool == 'uv' else 'pip-compile'} (Linux, Python {local_python})")
                local = True
                done = lock_locally(project, staged, tool, version, args.upgrade)
            else:
                log(f"no local fallback: this is {sys.platform} with Python {local_python}, the images use {python}")
        if done:
            install_locks(staged, project / "requirements")
            for name in locks(project):
                stamp_lock(project, name)
            log("wrote " + " and ".join(f"requirements/{name}.txt" for name in locks(project)))
            return 0
    print(instructions(python, local), file=sys.stderr)
    return failed


if __name__ == "__main__":
    sys.exit(main())
