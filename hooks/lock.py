#!/usr/bin/env python3
"""Compile requirements/*.in into hashed locks for the Python and platform of the project's images.

Shipped into every generated project as scripts/lock.py: Copier runs it once after `copier copy`, and `make lock`
runs it afterwards. Standard library only, so it runs under any Python 3.9+.

    python scripts/lock.py            # Docker if an engine answers, else a local pip-compile, else instructions
    python scripts/lock.py --engine docker|local
    python scripts/lock.py compile    # what the Dockerfile's `lock` stage runs (inside the image)

Order of preference:
1. `docker build --target lock`: pip-compile runs inside the same Python image as the runtime, so markers and
   wheels match the container, not the laptop.
2. A local pip-compile, only on Linux with the same Python minor version as the images.
3. Otherwise, instructions, and exit 0 (`--strict` makes it exit 1): a project is never left broken by locking.

The user's pip settings (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_TRUSTED_HOST, and the same keys of
`pip config`) reach the build as a BuildKit secret, never as a build argument, and the locks never record index
URLs (they may carry credentials).
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from urllib.parse import urlsplit

# Order matters: train first; the others are compiled with `-c train.txt`, so a package they share with training
# has the training version (the model is served, and explored, with the library that trained it).
LOCKS = ("train", "serve", "dev")  # dev.in exists only in projects with the dev environment


def locks(root: Path) -> list[str]:
    """The locks this project has: one per requirements/<name>.in."""
    return [name for name in LOCKS if (root / "requirements" / f"{name}.in").is_file()]
PIP_KEYS = ("index-url", "extra-index-url", "find-links", "trusted-host")
COMPILE_FLAGS = [
    "--quiet",
    "--generate-hashes",
    "--allow-unsafe",
    "--strip-extras",
    "--no-emit-index-url",
    "--no-emit-trusted-host",
    "--no-emit-find-links",
    "--resolver=backtracking",
]


def log(msg: str) -> None:
    print(f"lock: {msg}", file=sys.stderr, flush=True)


def compile_locks(workdir: Path, pip_compile: list[str], upgrade: bool = False) -> None:
    """Run pip-compile for train, then serve (and dev) in workdir/requirements, constrained by train.

    Paths stay relative to workdir so the lock headers and annotations are the same wherever the lock is made.
    Existing locks in that folder are kept as the starting point (pip-compile only changes what it must).
    """
    for name in locks(workdir):
        cmd = [*pip_compile, *COMPILE_FLAGS, "--output-file", f"requirements/{name}.txt"]
        if upgrade:
            cmd.append("--upgrade")
        if name != "train":
            cmd += ["--constraint", "requirements/train.txt"]
        cmd.append(f"requirements/{name}.in")
        env = {**os.environ, "CUSTOM_COMPILE_COMMAND": "make lock"}
        subprocess.run(cmd, check=True, cwd=workdir, env=env)


def dockerfile_args(project: Path) -> dict[str, str]:
    """ARG defaults of the Dockerfile: the single place the Python and pip-tools versions are written."""
    text = (project / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG\s+([A-Z_]+)=(\S+)", text, flags=re.MULTILINE))


def pip_settings() -> dict[str, list[str]]:
    """The user's pip index settings: `pip config` first, environment variables on top (as pip itself does)."""
    found: dict[str, list[str]] = {}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        m = re.match(r"^[\w:.-]*?\.?([a-z-]+)='(.*)'$", line.strip())
        if m and m.group(1) in PIP_KEYS:
            found[m.group(1)] = m.group(2).split()
    for key in PIP_KEYS:
        value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            found[key] = value.split()
    return found


def usable_in_container(value: str) -> bool:
    """Local paths and file:// URLs of this machine do not exist inside the build."""
    return urlsplit(value).scheme in ("http", "https") or not value.startswith(("/", ".", "file:"))


def write_pip_conf(settings: dict[str, list[str]], path: Path) -> bool:
    """Write a pip.conf for the build secret; True if any setting points at this machine's loopback."""
    conf = configparser.ConfigParser()
    conf["global"] = {}
    loopback = False
    for key, values in settings.items():
        kept = [v for v in values if key == "trusted-host" or usable_in_container(v)]
        for dropped in set(values) - set(kept):
            log(f"not passing pip {key} {dropped!r} to the build: it is a path on this machine")
        if kept:
            conf["global"][key] = "\n".join(kept) if len(kept) > 1 else kept[0]
        loopback |= any(map(is_loopback, kept))
    with path.open("w") as f:
        conf.write(f)
    path.chmod(0o600)
    return loopback


def engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def requirement_urls(project: Path) -> list[str]:
    """Index URLs named inside requirements/*.in (a framework's own wheel index, say)."""
    found = []
    for path in sorted((project / "requirements").glob("*.in")):
        found += re.findall(r"^\s*--(?:extra-)?index-url[ =]\s*(\S+)", path.read_text(), flags=re.MULTILINE)
    return found


def is_loopback(url: str) -> bool:
    return urlsplit(url).hostname in ("localhost", "127.0.0.1", "::1")


def lock_with_docker(project: Path, out: Path, upgrade: bool) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        pip_conf = Path(tmp) / "pip.conf"
        loopback = write_pip_conf(pip_settings(), pip_conf) or any(map(is_loopback, requirement_urls(project)))
        cmd = ["docker", "build", "--target", "lock", "--output", f"type=local,dest={out}"]
        cmd += ["--secret", f"id=pipconf,src={pip_conf}"]
        if upgrade:
            cmd += ["--build-arg", "LOCK_UPGRADE=1"]
        if loopback:  # a mirror on 127.0.0.1 is only reachable from the host's network namespace
            cmd += ["--network", "host"]
        cmd.append(str(project))
        log("compiling inside the image: " + " ".join(cmd[:5]) + " ...")
        result = subprocess.run(cmd, env={**os.environ, "DOCKER_BUILDKIT": "1"})
        return result.returncode == 0


def local_pip_compile(tmp: Path, pip_tools: str) -> list[str]:
    try:
        import piptools  # noqa: F401

        return [sys.executable, "-m", "piptools", "compile"]
    except ImportError:
        pass
    log(f"installing pip-tools=={pip_tools} into a temporary virtual environment")
    venv.create(tmp / "venv", with_pip=True)
    python = str(tmp / "venv" / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", f"pip-tools=={pip_tools}"], check=True)
    return [python, "-m", "piptools", "compile"]


def lock_locally(project: Path, out: Path, pip_tools: str, upgrade: bool) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "project"
        shutil.copytree(project / "requirements", work / "requirements")
        try:
            compile_locks(work, local_pip_compile(Path(tmp), pip_tools), upgrade)
            for name in locks(work):
                shutil.copyfile(work / "requirements" / f"{name}.txt", out / f"{name}.txt")
        except (OSError, subprocess.CalledProcessError) as error:
            log(f"local pip-compile failed: {error}")
            return False
    return True


def install_locks(staged: Path, req_dir: Path) -> None:
    """Replace the locks only once all were produced: never leave a half-updated set."""
    names = locks(req_dir.parent)
    for name in names:
        if not (staged / f"{name}.txt").is_file():
            raise FileNotFoundError(f"{name}.txt was not produced")
    for name in names:
        shutil.copyfile(staged / f"{name}.txt", req_dir / f"{name}.txt")


def instructions(python: str) -> str:
    return (
        "lock: requirements/train.txt and requirements/serve.txt were NOT written.\n"
        "      The project is complete otherwise; to lock, do one of:\n"
        "        - start Docker and run `make lock` (compiles inside the python:" + python + " image), or\n"
        f"        - on Linux with Python {python}: `pip install pip-tools` then `make lock`.\n"
        "      Private index? Export PIP_INDEX_URL / PIP_EXTRA_INDEX_URL first; they reach the build as a secret."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", nargs="?", choices=["lock", "compile"], default="lock")
    parser.add_argument("--engine", choices=["auto", "docker", "local"], default="auto")
    parser.add_argument("--upgrade", action="store_true", help="move every pin to the newest allowed version")
    parser.add_argument("--strict", action="store_true", help="exit 1 when no lock could be made")
    args = parser.parse_args(argv)
    project = Path.cwd()

    if args.action == "compile":  # inside the Dockerfile's lock stage
        compile_locks(project, ["pip-compile"], upgrade=os.environ.get("LOCK_UPGRADE") == "1")
        return 0

    if not (project / "requirements" / "train.in").is_file():
        log("run me from the project root (requirements/train.in not found)")
        return 2
    versions = dockerfile_args(project)
    python, pip_tools = versions["PYTHON_VERSION"], versions["PIP_TOOLS_VERSION"]

    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging)
        done = False
        if args.engine in ("auto", "docker"):
            if engine_answers():
                done = lock_with_docker(project, staged, args.upgrade)
            else:
                log("no Docker engine answers")
        local_python = f"{sys.version_info.major}.{sys.version_info.minor}"
        if not done and args.engine in ("auto", "local"):
            if sys.platform.startswith("linux") and local_python == python:
                log(f"compiling with a local pip-compile (Linux, Python {local_python})")
                done = lock_locally(project, staged, pip_tools, args.upgrade)
            else:
                log(f"no local fallback: this is {sys.platform} with Python {local_python}, the images use {python}")
        if done:
            install_locks(staged, project / "requirements")
            log("wrote " + " and ".join(f"requirements/{name}.txt" for name in locks(project)))
            return 0
    print(instructions(python), file=sys.stderr)
    return 1 if args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
