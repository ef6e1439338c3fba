"""Running the lock tool, pip-compile (pip-tools) or `uv pip compile`, on requirements/*.in: inside the Dockerfile's
`lock` stage (`python scripts/lock.py compile`), or on this machine when no engine answers (`--engine local`)."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lock_files import UNCONSTRAINED, locks, log, platform_view
from lock_index import pip_settings, uv_env

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
# uv's equivalents (it never emits index URLs, trusted hosts or find-links, and strips extras). `unsafe-best-match`
# resolves across all indexes as pip does: uv's default takes a package from the first index that has it, so
# PyTorch's extra index would decide numpy's version too.
UV_COMPILE_FLAGS = [
    "--quiet",
    "--generate-hashes",
    "--index-strategy",
    "unsafe-best-match",
    "--custom-compile-command",
    "make lock",
]
# pip-compile's note on packages left out (`# lock-exclude:`) assumes pip resolves dependencies; the images install
# with --no-deps: uv's words instead
PIP_TOOLS_UNPINNED = (
    "# WARNING: The following packages were not pinned, but pip requires them to be\n"
    "# pinned when the requirements file includes hashes and the requirement is not\n"
    "# satisfied by a package already installed. Consider using the --allow-unsafe flag.\n"
)
EXCLUDED = "# The following packages were excluded from the output:\n"
PIP_TOOLS_REJECTED = "The generated requirements file may be rejected by pip install."


def excluded(path: Path) -> list[str]:
    """`# lock-exclude: name ...` in a lock's own .in file (not in those it includes): packages its dependencies
    declare that the lock leaves out."""
    return [package for line in re.findall(r"^#\s*lock-exclude:(.*)$", path.read_text(), re.MULTILINE)
            for package in line.split()]


def compile_locks(workdir: Path, compiler: list[str], upgrade: bool = False, tool: str = "pip-tools") -> None:
    """Compile train, then serve and dev (at the same time) in workdir/requirements, constrained by train.

    `compiler` is pip-compile's command, or uv's for tool="uv". Paths stay relative to workdir, so the locks read the
    same wherever they are made. Existing locks there are the starting point (both tools change only what they must).
    """
    env = {**os.environ, "CUSTOM_COMPILE_COMMAND": "make lock"}
    if tool == "uv":
        flags = [*UV_COMPILE_FLAGS, "--python-version", f"{sys.version_info[0]}.{sys.version_info[1]}"]
        # like pip (which uses the system trust store), trust the system's CAs: a company proxy's CA is installed there
        env.update(uv_env(pip_settings()), UV_SYSTEM_CERTS="1")
    else:
        flags = COMPILE_FLAGS
    if os.environ.get("LOCK_HASHES") == "0":  # several platforms: scripts/lock.py adds the hashes from the indexes
        flags = [flag for flag in flags if flag != "--generate-hashes"]

    def compile_one(name: str) -> None:
        left_out = excluded(workdir / "requirements" / f"{name}.in")
        cmd = [*compiler, *flags, "--output-file", f"requirements/{name}.txt"]
        if upgrade:
            cmd.append("--upgrade")
        if name not in UNCONSTRAINED:
            cmd += ["--constraint", "requirements/train.txt"]
        if tool != "uv":  # pip-tools' own cache, one per lock: two compiles at once would write the same file
            cache = os.path.expanduser(os.environ.get("XDG_CACHE_HOME") or "~/.cache")
            cmd += ["--cache-dir", str(Path(cache, "pip-tools", name))]
        if left_out and tool == "uv":
            cmd += [arg for package in left_out for arg in ("--no-emit-package", package)]
        elif left_out:  # these replace pip-compile's default unsafe set: setuptools and pip are pinned as usual
            cmd = [arg for arg in cmd if arg != "--allow-unsafe"]
            cmd += [arg for package in left_out for arg in ("--unsafe-package", package)]
        cmd.append(f"requirements/{name}.in")
        if left_out and tool != "uv":
            pip_compile_leaving_out(cmd, workdir, env, workdir / "requirements" / f"{name}.txt")
        else:
            subprocess.run(cmd, check=True, cwd=workdir, env=env)

    names = locks(workdir)
    if not names:
        return
    first, *rest = names  # train first: the others are constrained by it
    compile_one(first)
    # then the others at the same time: each is a resolver's minutes under emulation, on one core
    with ThreadPoolExecutor(max_workers=max(len(rest), 1)) as pool:
        for compiled in [pool.submit(compile_one, name) for name in rest]:
            compiled.result()


def pip_compile_leaving_out(cmd: list[str], workdir: Path, env: dict[str, str], lock: Path) -> None:
    """pip-compile with --unsafe-package: its warnings that pip would refuse the lock do not hold for --no-deps
    installs, so the lock says what uv says, and the warning on stderr is dropped (the rest of stderr is kept)."""
    result = subprocess.run(cmd, check=False, cwd=workdir, env=env, stderr=subprocess.PIPE, text=True)
    sys.stderr.write("".join(line for line in result.stderr.splitlines(keepends=True)
                             if not line.startswith(PIP_TOOLS_REJECTED)))
    result.check_returncode()
    lock.write_text(lock.read_text().replace(PIP_TOOLS_UNPINNED, EXCLUDED))


def compile_in_image(project: Path) -> None:
    """The Dockerfile's lock stage, with its LOCK_TOOL, LOCK_UPGRADE and LOCK_HASHES: a merged lock's pins for this
    platform are the starting point."""
    tool = os.environ.get("LOCK_TOOL", "pip-tools")
    for name in locks(project):
        path = project / "requirements" / f"{name}.txt"
        if path.is_file():
            path.write_text(platform_view(path.read_text(), platform.machine()))
    compiler = ["uv", "pip", "compile"] if tool == "uv" else ["pip-compile"]
    compile_locks(project, compiler, upgrade=os.environ.get("LOCK_UPGRADE") == "1", tool=tool)


def local_compiler(tmp: Path, tool: str, version: str) -> list[str]:
    """pip-compile from this Python if it has pip-tools; uv if the one on PATH is the pinned version; otherwise the
    pinned version installed into a temporary virtual environment."""
    if tool == "uv":
        found = shutil.which("uv")
        answer = subprocess.run([found, "--version"], capture_output=True, text=True).stdout if found else ""
        if answer.split()[1:2] == [version]:
            return [found, "pip", "compile"]
    else:
        try:
            import piptools  # noqa: F401

            return [sys.executable, "-m", "piptools", "compile"]
        except ImportError:
            pass
    log(f"installing {tool}=={version} into a temporary virtual environment")
    venv.create(tmp / "venv", with_pip=True)
    python = str(tmp / "venv" / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", f"{tool}=={version}"], check=True)
    if tool == "uv":
        return [str(tmp / "venv" / "bin" / "uv"), "pip", "compile"]
    return [python, "-m", "piptools", "compile"]


def lock_locally(project: Path, out: Path, tool: str, version: str, upgrade: bool) -> bool:
    """The locks compiled on this machine into out/ (a copy of requirements/ is the starting point)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "project"
        shutil.copytree(project / "requirements", work / "requirements")
        try:
            compile_locks(work, local_compiler(Path(tmp), tool, version), upgrade, tool)
            for name in locks(work):
                shutil.copyfile(work / "requirements" / f"{name}.txt", out / f"{name}.txt")
        except (OSError, subprocess.CalledProcessError) as error:
            log(f"local {tool} compile failed: {error}")
            return False
    return True
