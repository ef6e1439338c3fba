"""A copy of a locked project owned by a given user (1000, or root), driven by plain compose and make as that user
types them: a clean environment, and for uid 1000 only the engine's socket group."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import pytest

from helpers.builds import Built
from helpers.engine import IMAGE_PREFIX, free_port, remove_images, run

USER = 1000


def as_user(cmd: list[str], home: Path, uid: int = USER) -> list[str]:
    """Run cmd in a clean environment as `uid`: 1000 with access to the engine's socket only (the way a user in the
    docker group has it), or root as is (a cloud VM, a CI job)."""
    env = ["env", "-i", f"HOME={home}", "PATH=/usr/local/bin:/usr/bin:/bin", "DOCKER_BUILDKIT=1", *cmd]
    if uid == 0:
        return env
    socket_gid = os.stat("/var/run/docker.sock").st_gid
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", f"--groups={socket_gid}", "--inh-caps=-all", "--", *env]


class UserProject:
    """A copy of a locked project owned by `uid` (1000, or root), driven by plain compose and make as that user."""

    def __init__(self, built: Built, root: Path, uid: int = USER):
        if os.geteuid() != 0:
            pytest.skip("needs root to act as uid 1000 and as root (CI runs as root)")
        self.uid = uid
        self.dir = root / "project"
        self.home = root / "home"
        shutil.copytree(built.project, self.dir, symlinks=True)
        self.home.mkdir()
        (self.dir / ".env").unlink(missing_ok=True)
        run(["chown", "-R", f"{uid}:{uid}", str(self.dir), str(self.home)])
        root.chmod(0o755)
        self.name = f"mldt-dev-{uuid.uuid4().hex[:8]}"
        self.ports = {"NOTEBOOK_PORT": free_port(), "DEV_PORT": free_port()}
        # the user's one-time step on a fresh clone (copier runs it at copy time): .env with their uid and a token
        self.run(["python3", "scripts/dotenv.py"])
        env = (self.dir / ".env").read_text()
        env += "".join(f"{k}={v}\n" for k, v in self.ports.items())
        env += f"COMPOSE_PROJECT_NAME={self.name}\nIMAGE={IMAGE_PREFIX}/{self.name}\nTAG=t\n"
        (self.dir / ".env").write_text(env)
        self.token = re.search(r"^JUPYTER_TOKEN=(\w+)$", env, flags=re.MULTILINE).group(1)

    def run(self, cmd: list[str], *, check: bool = True, timeout: float = 900):
        return run(as_user(cmd, self.home, self.uid), cwd=self.dir, check=check, timeout=timeout)

    def compose(self, *args: str, check: bool = True, timeout: float = 900):
        return self.run(["docker", "compose", *args], check=check, timeout=timeout)

    def make(self, *args: str, check: bool = True, timeout: float = 900):
        """make as the user types it; the images named for this run, as .env names them for compose."""
        return self.run(["make", "--no-print-directory", *args, f"IMAGE={IMAGE_PREFIX}/{self.name}", "TAG=t"],
                        check=check, timeout=timeout)

    def down(self) -> None:
        self.compose("--profile", "dev", "--profile", "train", "down", "-v", "--remove-orphans", check=False)
        remove_images(f"{IMAGE_PREFIX}/{self.name}")  # a user's builds: only disk once the project is down
