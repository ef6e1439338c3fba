"""Compiling in the images: `docker build --target lock` (or Podman, ENGINE=podman) once per platform of the
Dockerfile's PLATFORMS, all at the same time, the user's pip settings passed as a BuildKit secret; the results merged
into one lock per .in (with several platforms the builds resolve only, and the hashes come from the indexes)."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lock_files import LockError, locks, log, merge_locks, parse_lock, requirement
from lock_index import IndexHashes, is_loopback, pip_settings, requirement_urls, write_pip_conf

# the engine's CLI: docker, or podman (whose builds take the same arguments and make the same locks)
ENGINE = os.environ.get("ENGINE") or "docker"


def engine_answers() -> bool:
    if not shutil.which(ENGINE):
        return False
    try:
        return subprocess.run([ENGINE, "info"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def host_platform() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "linux/amd64", "amd64": "linux/amd64", "aarch64": "linux/arm64", "arm64": "linux/arm64"}.get(
        machine, machine)


def lock_with_docker(project: Path, out: Path, upgrade: bool, platforms: list[str]) -> bool:
    """The lock stage once per platform (the host's where none is named), each into out/<platform>/, then merged
    into out/. Raises LockError when a platform's containers cannot run here."""
    with tempfile.TemporaryDirectory() as tmp:
        pip_conf = Path(tmp) / "pip.conf"
        loopback = write_pip_conf(pip_settings(), pip_conf) or any(map(is_loopback, requirement_urls(project)))
        builds: dict[str, list[str]] = {}
        made: dict[str, Path] = {}
        for target in platforms or [""]:
            dest = out / (target.replace("/", "-") or "host")
            cmd = [ENGINE, "build", "--target", "lock", "--output", f"type=local,dest={dest}"]
            cmd += ["--platform", target] if target else []
            cmd += ["--secret", f"id=pipconf,src={pip_conf}"]
            if upgrade:
                cmd += ["--build-arg", "LOCK_UPGRADE=1"]
            if len(platforms) > 1:
                cmd += ["--build-arg", "LOCK_HASHES=0"]
            if loopback:  # a mirror on 127.0.0.1 is only reachable from the host's network namespace
                cmd += ["--network", "host"]
            cmd.append(str(project))
            log(f"compiling inside the {target or 'host platform'}'s image: " + " ".join(cmd[:5]) + " ...")
            builds[target], made[target] = cmd, dest
        ended = run_builds(builds)
        for target, (status, tail) in ended.items():  # in PLATFORMS' order, whichever failed first
            if status != 0 and target and target != host_platform() and "exec format error" in tail:
                raise LockError(f"this machine cannot run {target} containers to compile their locks: enable "
                                "emulation (Linux: `docker run --privileged --rm tonistiigi/binfmt --install "
                                f"all`; Docker Desktop has it), or remove {target} from the Dockerfile's PLATFORMS")
        if any(status != 0 for status, _ in ended.values()):
            return False  # the build's own output, passed on above, says why
        hashes = IndexHashes.of(project) if len(made) > 1 else None
        for name in locks(project):
            texts = {target: (dest / f"{name}.txt").read_text() for target, dest in made.items()
                     if (dest / f"{name}.txt").is_file()}
            if len(texts) == len(made):
                if hashes:
                    log(f"hashes of requirements/{name}.txt from the indexes")
                    hashes.fetch([requirement(e)[0].split("==")[0] for text in texts.values()
                                  for _, entries in parse_lock(text) for e in entries])
                (out / f"{name}.txt").write_text(merge_locks(texts, name, hashes))
        return True


def run_builds(builds: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    """Every platform's lock build at once, their output passed on as it comes (after the platform's name when there
    are several). The first to fail stops the others. Each one's exit status and the end of its output, in order."""
    several = len(builds) > 1
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    # each in its own process group: stopping one stops what its CLI started too (a buildx plugin)
    running = {target: subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, errors="replace",
                                        start_new_session=True)
               for target, cmd in builds.items()}

    def follow(target: str) -> tuple[int, str]:
        build = running[target]
        tail: list[str] = []
        assert build.stderr is not None
        with build.stderr:
            for line in build.stderr:
                sys.stderr.write(f"[{target}] {line}" if several else line)
                tail = [*tail[-199:], line]
        if build.wait() != 0:
            for other in running.values():
                stop(other)
        return build.returncode, "".join(tail)

    pool = ThreadPoolExecutor(max_workers=len(running))
    try:
        futures = {target: pool.submit(follow, target) for target in running}
        return {target: future.result() for target, future in futures.items()}
    finally:  # interrupted (Ctrl-C) or not: no build left behind
        for build in running.values():
            stop(build)
        pool.shutdown()


def stop(build: subprocess.Popen[str]) -> None:
    if build.poll() is not None:
        return
    if hasattr(os, "killpg"):
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.killpg(build.pid, signal.SIGTERM)
    else:
        build.terminate()
