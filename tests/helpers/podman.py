"""Rootless Podman for a uid-1000 user, as a Fedora or Debian user has it: the engine's packages (installed in CI),
subordinate uid/gid ranges, an overlay store, podman-compose from PyPI, and the stand-in base images loaded from
Docker's store (no registry is reachable here). Then a copy of a locked project driven by plain make as that user,
with no access to Docker's socket."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from helpers.engine import engine_required, free_port, run

USER = 1000
# the oldest podman-compose that honours `depends_on: condition: service_healthy` is 1.3; a recent one is tested
PODMAN_COMPOSE = "podman-compose==1.5.0"
# catatonit: kube play's pause process; podman only recommends it, and not at all where tini (Docker's) is installed
APT_PACKAGES = ["podman", "uidmap", "slirp4netns", "fuse-overlayfs", "catatonit"]
SUBORDINATE = "100000:65536"


def ensure_podman() -> None:
    """Podman on the machine: installed here in CI (a prerequisite the session can install), else a clear skip."""
    if shutil.which("podman") and shutil.which("newuidmap") and shutil.which("catatonit"):
        return
    if not engine_required():
        pytest.skip(f"rootless Podman tests skipped: podman, uidmap or catatonit not installed (apt-get install {' '.join(APT_PACKAGES)})")
    run(["apt-get", "update", "-q"], timeout=600)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES], timeout=900,
        env={"DEBIAN_FRONTEND": "noninteractive"})


def _subordinate_ranges(name: str) -> None:
    """newuidmap needs a range of subordinate ids for the user (useradd writes one on a workstation)."""
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        lines = path.read_text().splitlines() if path.exists() else []
        if not any(line.split(":")[0] in (name, str(USER)) for line in lines):
            with path.open("a") as f:
                f.write(f"{name}:{SUBORDINATE}\n")


def _tun_for_everyone() -> None:
    """slirp4netns (rootless networking) opens /dev/net/tun: 0666 on most distributions, 0600 on some machines."""
    tun = Path("/dev/net/tun")
    if tun.exists() and stat.S_IMODE(tun.stat().st_mode) != 0o666:
        tun.chmod(0o666)


def _podman_config(home: Path) -> None:
    """The user's containers config: the overlay driver (a fresh rootless store picks the slow vfs otherwise), and
    on a host with cgroup v1 or hybrid cgroups runc and cgroupfs (crun refuses hybrid mode; no systemd here)."""
    config = home / ".config" / "containers"
    config.mkdir(parents=True)
    (config / "storage.conf").write_text('[storage]\ndriver = "overlay"\n')
    hybrid = Path("/sys/fs/cgroup/unified").is_dir() or not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    runtime = 'runtime = "runc"\n' if hybrid and shutil.which("runc") else ""
    (config / "containers.conf").write_text(
        f'[engine]\n{runtime}cgroup_manager = "cgroupfs"\nevents_logger = "file"\n')


def error_line(text: str) -> str:
    """A command's one line of cause: its last `Error...` line (podman and docker start theirs so, and may list
    details after it), else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    return (errors or lines or ["(no output)"])[-1]


class PodmanUser:
    """uid 1000 with rootless Podman in a private home, store and runtime folder, and podman-compose on PATH."""

    def __init__(self, images: list[str], tools: list[Path]):
        if os.geteuid() != 0:
            pytest.skip("needs root to set up a uid-1000 Podman user (CI runs as root)")
        missing = [image for image in images
                   if run(["docker", "image", "inspect", image], check=False, timeout=60).returncode != 0]
        if missing:  # before the slow steps: the user's images come from Docker's store, nothing else has them
            pytest.fail(f"the Podman user's images are not in Docker's store: {', '.join(missing)} (load the stand-in "
                        "bases first: ../shared/tools/container-engine bases)", pytrace=False)
        ensure_podman()
        try:
            name = pwd.getpwuid(USER).pw_name
        except KeyError:
            run(["useradd", "--uid", str(USER), "--create-home", "mldt"])
            name = "mldt"
        _subordinate_ranges(name)
        _tun_for_everyone()
        self.root = Path(tempfile.mkdtemp(prefix="mldt-podman-"))  # pytest's own tmp folders are private to root
        self.root.chmod(0o755)
        self.home, self.runtime_dir = self.root / "home", self.root / "run"
        self.home.mkdir()
        self.runtime_dir.mkdir(mode=0o700)
        try:
            self._set_up(images, tools)
        except BaseException:
            self._discard()  # the fixture never gets a user to close: nothing of it stays behind
            raise

    def _set_up(self, images: list[str], tools: list[Path]) -> None:
        _podman_config(self.home)
        venv = self.root / "podman-compose"
        uv = Path(sys.executable).parent / "uv"
        run([str(uv), "venv", "--quiet", "--python", "/usr/bin/python3", str(venv)], timeout=300)
        run([str(uv), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), PODMAN_COMPOSE],
            timeout=600)
        run(["chown", "-R", f"{USER}:{USER}", str(self.home), str(self.runtime_dir)])
        self.compose_bin = venv / "bin"
        self.path = ":".join([*map(str, tools), "/usr/local/bin", "/usr/bin", "/bin"])
        self.require_readable([self.root, self.home, self.compose_bin, *tools])
        for image in images:  # the stand-in bases, as a pull would bring them
            self.load(image)

    def require_readable(self, folders: list[Path]) -> None:
        """Fail in one line unless the user can list and enter each folder (and so every folder above it)."""
        check = self.run(["sh", "-c", 'for d; do [ -r "$d" ] && [ -x "$d" ] || echo "$d"; done', "sh",
                          *map(str, folders)], cwd=Path("/"), check=False, timeout=60)
        unreadable = check.stdout.split() or ([] if check.returncode == 0 else [error_line(check.stderr)])
        if unreadable:  # the first: the others are often below it
            pytest.fail(f"uid {USER} (the Podman user) cannot read {unreadable[0]}: give it o+rx on that folder and "
                        "every folder above it (TMPDIR included)", pytrace=False)

    def load(self, image: str) -> None:
        """`image` from Docker's store into the user's: `docker save` into a file of the user's root, then `podman
        load` of that file as the user. Two steps, no pipe between them: a step that fails ends at once with its own
        line, and each has a timeout."""
        archive = self.root / f"image-{uuid.uuid4().hex[:8]}.tar"
        try:
            saved = run(["docker", "save", "-o", str(archive), image], check=False, timeout=300)
            if saved.returncode != 0:
                pytest.fail(f"docker save {image} exited {saved.returncode}: {error_line(saved.stderr)}", pytrace=False)
            archive.chmod(0o644)
            loaded = self.run(["podman", "load", "-q", "-i", str(archive)], check=False, timeout=300)
            if loaded.returncode != 0:
                pytest.fail(f"podman load {image} as uid {USER} exited {loaded.returncode}: "
                            f"{error_line(loaded.stderr)}", pytrace=False)
        finally:
            archive.unlink(missing_ok=True)

    def command(self, cmd: list[str], *, compose: bool = True, env: dict[str, str] | None = None) -> list[str]:
        """cmd as the user in a clean environment: no Docker socket group, podman-compose on PATH unless not
        `compose` (then make uses docker compose on Podman's socket)."""
        path = f"{self.compose_bin}:{self.path}" if compose else self.path
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups", "--inh-caps=-all", "--",
                "env", "-i", f"HOME={self.home}", f"XDG_RUNTIME_DIR={self.runtime_dir}", f"PATH={path}", *extra, *cmd]

    def run(self, cmd: list[str], *, cwd: Path | None = None, check: bool = True, timeout: float = 900,
            compose: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """cmd as the user, in `cwd` or else the user's home: never the test's own folder, which the user may not be
        able to enter (podman then fails with "cannot chdir")."""
        return run(self.command(cmd, compose=compose, env=env), cwd=cwd or self.home, check=check, timeout=timeout)

    def close(self) -> None:
        """Remove the user's containers, stop Podman's pause process of this runtime folder, delete the store (as
        root: faster than `podman system reset`, which unmounts and removes layer by layer; in the background, as
        nothing waits for it: 20 s of the suite's time)."""
        self.run(["podman", "rm", "--all", "--force", "--time", "0"], check=False, timeout=120)
        self._discard()

    def _discard(self) -> None:
        pause = self.runtime_dir / "libpod" / "tmp" / "pause.pid"
        try:
            os.kill(int(pause.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass  # no pause process left
        subprocess.Popen(["rm", "-rf", str(self.root)], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class PodmanProject:
    """A copy of a locked project owned by the Podman user, with free ports and its own image names in .env."""

    def __init__(self, user: PodmanUser, locked: Path):
        self.user = user
        self.dir = user.root / "project"
        shutil.copytree(locked, self.dir, symlinks=True)
        (self.dir / ".env").unlink(missing_ok=True)
        run(["chown", "-R", f"{USER}:{USER}", str(self.dir)])
        self.user.run(["python3", "scripts/dotenv.py"], cwd=self.dir)
        self.ports = {k: free_port() for k in ("SERVE_PORT", "NOTEBOOK_PORT", "DEV_PORT", "KUBE_PLAY_PORT")}
        self.image = f"mldt-podman-{uuid.uuid4().hex[:8]}"
        env = (self.dir / ".env").read_text() + "".join(f"{k}={v}\n" for k, v in self.ports.items())
        (self.dir / ".env").write_text(env + f"IMAGE={self.image}\nTAG=t\n")
        self.token = next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith("JUPYTER_TOKEN="))

    def make(self, *args: str, check: bool = True, compose: bool = True, env: dict[str, str] | None = None,
             timeout: float = 900) -> subprocess.CompletedProcess:
        """`ENGINE=podman make ...` as the user types it."""
        return self.user.run(["make", "--no-print-directory", "ENGINE=podman", *args, f"IMAGE={self.image}", "TAG=t",
                              f"KUBE_PLAY_PORT={self.ports['KUBE_PLAY_PORT']}"],
                             cwd=self.dir, check=check, compose=compose, env=env, timeout=timeout)

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.user.run(["podman", *args], cwd=self.dir, check=check)

    def url(self, port: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[port]}{path}"
