"""Promise: the development environment works as a uid-1000 user runs it with plain `docker compose`: JupyterLab
behind its token, the starter notebook runs headless on exactly the training versions, files land owned by the
user, and the dev server reloads an edited source file. Also plain `compose run train` as that user (no HOST_UID in
the environment): models/ written as them, or one line saying what to run when it cannot be."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

import pytest

from helpers.builds import Built
from helpers.combos import Combo, DEFAULT_COMBO, DEV_BUILDS
from helpers.engine import free_port, IMAGE_PREFIX, run, SESSION_LABEL, timed

pytestmark = pytest.mark.engine
USER = 1000
OTHER_FRAMEWORK = next(c for c in DEV_BUILDS if c != DEFAULT_COMBO)  # lightgbm


def as_user(cmd: list[str], home: Path) -> list[str]:
    """Run cmd as uid/gid 1000 with access to the engine's socket only (the way a user in the docker group has it)."""
    socket_gid = os.stat("/var/run/docker.sock").st_gid
    return ["setpriv", f"--reuid={USER}", f"--regid={USER}", f"--groups={socket_gid}", "--inh-caps=-all", "--",
            "env", "-i", f"HOME={home}", "PATH=/usr/local/bin:/usr/bin:/bin", "DOCKER_BUILDKIT=1", *cmd]


def http(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class UserProject:
    """A copy of a locked project owned by uid 1000, driven by plain compose as that user."""

    def __init__(self, built: Built, root: Path):
        if os.geteuid() != 0:
            pytest.skip("needs root to act as uid 1000 (CI runs as root)")
        self.dir = root / "project"
        self.home = root / "home"
        shutil.copytree(built.project, self.dir, symlinks=True)
        self.home.mkdir()
        (self.dir / ".env").unlink(missing_ok=True)
        run(["chown", "-R", f"{USER}:{USER}", str(self.dir), str(self.home)])
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
        return run(as_user(cmd, self.home), cwd=self.dir, check=check, timeout=timeout)

    def compose(self, *args: str, check: bool = True, timeout: float = 900):
        return self.run(["docker", "compose", *args], check=check, timeout=timeout)

    def down(self) -> None:
        self.compose("--profile", "dev", "--profile", "train", "down", "-v", "--remove-orphans", check=False)


@pytest.fixture(scope="module")
def user_project(built_project: Callable[[Combo], Built]):
    built = built_project(DEFAULT_COMBO)
    root = Path(tempfile.mkdtemp(prefix="mldt-dev-user-"))  # pytest's own tmp folders are private to root
    try:
        project = UserProject(built, root)
        yield project
        project.down()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_env_holds_the_users_uid_and_a_token(user_project: UserProject) -> None:
    env = (user_project.dir / ".env").read_text()
    assert f"HOST_UID={USER}\n" in env and f"HOST_GID={USER}\n" in env
    assert len(user_project.token) >= 32 and (user_project.dir / ".env").stat().st_mode & 0o077 == 0


def test_compose_train_as_the_user_writes_models_they_own(user_project: UserProject) -> None:
    models = user_project.dir / "models"
    for item in models.iterdir():
        item.unlink()
    user_project.compose("--profile", "train", "run", "--rm", "train")
    metadata = json.loads((models / "metadata.json").read_text())
    for item in models.iterdir():
        assert item.stat().st_uid == USER, f"{item} is owned by {item.stat().st_uid}"
    assert metadata["sha256"]


def test_train_into_a_folder_it_cannot_write_is_one_line(user_project: UserProject, tmp_path: Path) -> None:
    locked = tmp_path / "locked-models"
    locked.mkdir()  # root-owned 0755: uid 1000 cannot write there
    (user_project.dir / "compose.locked.yaml").write_text(
        f"services:\n  train:\n    volumes: !override\n      - {locked}:/app/models\n")
    result = user_project.compose("-f", "compose.yaml", "-f", "compose.locked.yaml", "--profile", "train", "run",
                                  "--rm", "train", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in (result.stdout + result.stderr).splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "/app/models is not writable by uid 1000" in errors[0] and "make env" in errors[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_notebook_answers_with_its_token_only(user_project: UserProject) -> None:
    user_project.compose("--profile", "dev", "up", "-d", "--build", "--wait", "--wait-timeout", "180", "notebook")
    base = f"http://127.0.0.1:{user_project.ports['NOTEBOOK_PORT']}"
    assert http(f"{base}/api/contents?token={user_project.token}")[0] == 200
    assert http(f"{base}/api/contents")[0] in (401, 403)
    assert http(f"{base}/api/contents?token=wrong{user_project.token}")[0] in (401, 403)


def test_the_starter_notebook_runs_headless_on_the_training_versions(user_project: UserProject) -> None:
    out = user_project.compose("--profile", "dev", "exec", "-T", "notebook", "jupyter", "nbconvert", "--to",
                               "notebook", "--execute", "notebooks/01-explore.ipynb", "--output",
                               "/tmp/executed.ipynb", timeout=600)
    executed = json.loads(user_project.compose("--profile", "dev", "exec", "-T", "notebook", "cat",
                                               "/tmp/executed.ipynb").stdout)
    outputs = [o for cell in executed["cells"] for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"], out.stderr
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook draws its plots"
    pins = dict(re.findall(r"^([a-z0-9_.-]+)==(\S+)", (user_project.dir / "requirements/train.txt").read_text(),
                           flags=re.MULTILINE))
    names = ["numpy", "scikit-learn", "pandas"]
    code = f"import importlib.metadata as m, json; print(json.dumps({{n: m.version(n) for n in {names!r}}}))"
    seen = json.loads(user_project.compose("--profile", "dev", "exec", "-T", "notebook", "python", "-c",
                                           code).stdout)
    assert seen == {name: pins[name] for name in names}


def test_files_written_from_the_notebook_belong_to_the_user(user_project: UserProject) -> None:
    user_project.compose("--profile", "dev", "exec", "-T", "notebook", "python", "-c",
                         "open('/app/notebooks/scratch.txt', 'w').write('hi')")
    assert (user_project.dir / "notebooks" / "scratch.txt").stat().st_uid == USER


def test_dev_server_reloads_an_edited_source_file(user_project: UserProject) -> None:
    if not (user_project.dir / "models" / "metadata.json").exists():
        user_project.compose("--profile", "train", "run", "--rm", "train")
    user_project.compose("--profile", "dev", "up", "-d", "--build", "--wait", "--wait-timeout", "180", "serve-dev")
    base = f"http://127.0.0.1:{user_project.ports['DEV_PORT']}"
    request = urllib.request.Request(f"{base}/predict", data=b'{"features": [5.1, 3.5, 1.4, 0.2]}', method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["labels"] == ["setosa"]
    container = user_project.compose("--profile", "dev", "ps", "-q", "serve-dev").stdout.strip()
    app_py = next((user_project.dir / "src").glob("*/app.py"))
    text = app_py.read_text()
    assert '{"status": "ok"}' in text
    app_py.write_text(text.replace('{"status": "ok"}', '{"status": "edited"}'))
    deadline = time.monotonic() + 15
    body = b""
    while time.monotonic() < deadline:
        try:
            status, body = http(f"{base}/health", timeout=2)
            if b"edited" in body:
                break
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.3)
    assert b"edited" in body, f"the edit did not show within 15 s: {body!r}"
    assert user_project.compose("--profile", "dev", "ps", "-q", "serve-dev").stdout.strip() == container, \
        "the container must not have been restarted"


def test_another_framework_runs_the_notebook_too(built_project: Callable[[Combo], Built], tmp_path: Path) -> None:
    built = built_project(OTHER_FRAMEWORK)
    image = f"{IMAGE_PREFIX}/{OTHER_FRAMEWORK.id}:dev"
    timed(f"{OTHER_FRAMEWORK.id} dev", ["docker", "build", "--target", "dev", "-t", image, "."], cwd=built.project,
          env={"DOCKER_BUILDKIT": "1"})
    mounts = [a for name in ("notebooks", "src") for a in ("-v", f"{built.project / name}:/app/{name}:ro")]
    result = run(["docker", "run", "--rm", "--label", SESSION_LABEL, "--user", f"{USER}:{USER}", "--read-only",
                  "--tmpfs", "/tmp", "--cap-drop", "ALL", *mounts, image,  # as compose mounts them
                  "jupyter", "nbconvert", "--to", "notebook", "--execute", "--stdout",
                  "notebooks/01-explore.ipynb"], timeout=600)
    executed = json.loads(result.stdout)
    outputs = [o for cell in executed["cells"] for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o["output_type"] == "error"]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "lightgbm" in text, text  # the notebook prints the framework it trained with
