"""Commands and the Docker engine: running a command with its output in the failure, whether an engine answers
(and whether one is required), image names of this run, and the time of every image build for the CI summary."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

# Containers of this test session carry this label, so clean-up never touches another session's containers.
SESSION_LABEL = f"mldt-test={os.getpid()}-{os.urandom(4).hex()}"
# Image names of this test run; MLDT_IMAGE_PREFIX keeps two runs on one engine from building over each other's tags
IMAGE_PREFIX = os.environ.get("MLDT_IMAGE_PREFIX", "mldt-test")
# Where the build timings go (one JSON line per build): .ci/run's summary reads it
BUILD_LOG = Path(os.environ.get("MLDT_BUILD_LOG", Path(__file__).resolve().parents[2] / "build" / "build-times.jsonl"))


def run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 900, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """cmd with its output captured, in a process group of its own: past `timeout` the whole group is killed (make,
    and the docker compose it started, not only make), and an AssertionError names the command, the timeout and the
    tail of what it wrote so far. No stdin: a command that would read it gets end of file, not a wait."""
    with subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, **(env or {})}, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except BaseException as error:  # the timeout, or the test run interrupted: nothing of the group may outlive it
            kill_group(process)
            stdout, stderr = _rest_of_output(process)
            if not isinstance(error, subprocess.TimeoutExpired):
                raise
            raise AssertionError(f"{' '.join(cmd)} timed out after {timeout:g} s (its process group killed)\n"
                                 f"--- stdout so far\n{stdout[-4000:]}\n--- stderr so far\n{stderr[-4000:]}") from None
    result = subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
            f"--- stderr\n{result.stderr[-12000:]}"
        )
    return result


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group of `process` (started with start_new_session=True), then reap `process`."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the group is gone already
    process.wait(timeout=30)


def _rest_of_output(process: subprocess.Popen) -> tuple[str, str]:
    """What a killed process wrote, collected up to end of file; if something that left its group (a daemon that
    called setsid) still holds the pipes, what arrived within 5 s."""
    try:
        return process.communicate(timeout=5)
    except subprocess.TimeoutExpired as again:
        return _text(again.stdout), _text(again.stderr)
    except ValueError:  # communicate() was interrupted before it began reading
        return "", ""


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def record_time(what: str, seconds: float) -> None:
    """Append the wall time of `what` (an image build, a lock) to BUILD_LOG."""
    BUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with BUILD_LOG.open("a") as log:
        log.write(json.dumps({"what": what, "seconds": round(seconds, 1)}) + "\n")


def timed(what: str, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """run(), its wall time recorded as `what`."""
    start = time.monotonic()
    try:
        return run(cmd, **kwargs)
    finally:
        record_time(what, time.monotonic() - start)


def docker_available() -> tuple[bool, str]:
    if not shutil.which("docker"):
        return False, "no docker CLI on PATH"
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False, "`docker info` timed out"
    if result.returncode != 0:
        return False, "no Docker engine answers (`docker info` failed)"
    return True, ""


def engine_required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("REQUIRE_ENGINE") == "1"


def image_tag(combo, target: str) -> str:
    return f"{IMAGE_PREFIX}/{combo.id}:{target}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remove_images(repository: str) -> None:
    """Untag every image of `repository` (by tag: an image id may be shared with a chain's image); what no other
    tag or container holds is deleted. An image a container still runs stays."""
    if not shutil.which("docker"):
        return
    tags = run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"reference={repository}"],
               check=False).stdout.split()
    if tags:
        run(["docker", "rmi", *tags], check=False)
