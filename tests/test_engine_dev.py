"""Promise: the development environment works as a uid-1000 user and as root run it, with plain `docker compose` and
with make: JupyterLab behind its token, the starter notebook runs headless on exactly the training versions, files
land owned by the user, and the dev server reloads an edited source file. Also plain `compose run train` as that user (no HOST_UID in
the environment): models/ written as them, or one line saying what to run when it cannot be."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import pytest

from helpers.builds import Built
from helpers.combos import Combo, DEFAULT_COMBO, DEV_BUILDS
from helpers.engine import IMAGE_PREFIX, run, SESSION_LABEL, timed
from helpers.users import USER, UserProject

pytestmark = pytest.mark.engine
OTHER_FRAMEWORK = next(c for c in DEV_BUILDS if c != DEFAULT_COMBO)  # lightgbm


def http(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def project_as(built: Built, uid: int):
    root = Path(tempfile.mkdtemp(prefix=f"mldt-dev-{uid}-"))  # pytest's own tmp folders are private to root
    try:
        project = UserProject(built, root, uid)
        yield project
        project.down()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def user_project(built_project: Callable[[Combo], Built]):
    yield from project_as(built_project(DEFAULT_COMBO), USER)


@pytest.fixture(scope="module")
def root_project(built_project: Callable[[Combo], Built]):
    """The same as root: copier's task wrote HOST_UID=0 into .env, and the Makefile passes the caller's uid."""
    yield from project_as(built_project(DEFAULT_COMBO), 0)


def make_notebook_and_dev(project: UserProject) -> None:
    out = project.make("notebook").stdout
    base = f"http://127.0.0.1:{project.ports['NOTEBOOK_PORT']}"
    assert f"JupyterLab: {base}/lab?token={project.token}" in out, out
    assert http(f"{base}/api/contents?token={project.token}")[0] == 200
    out = project.make("dev").stdout
    dev = f"http://127.0.0.1:{project.ports['DEV_PORT']}"
    assert f"{dev}/docs" in out, out
    assert http(f"{dev}/health")[0] == 200


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
    health_py = next((user_project.dir / "src").glob("*/serving/routes/health.py"))
    text = health_py.read_text()
    assert '{"status": "ok"}' in text
    health_py.write_text(text.replace('{"status": "ok"}', '{"status": "edited"}'))
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


@pytest.mark.chain(OTHER_FRAMEWORK)
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


def test_make_notebook_and_make_dev_work_as_the_user(user_project: UserProject) -> None:
    make_notebook_and_dev(user_project)


def test_the_notebook_and_the_dev_server_work_as_root_with_plain_compose_and_with_make(root_project: UserProject) -> None:
    assert "HOST_UID=0\n" in (root_project.dir / ".env").read_text()
    root_project.compose("--profile", "dev", "up", "-d", "--build", "--wait", "--wait-timeout", "180", "notebook")
    base = f"http://127.0.0.1:{root_project.ports['NOTEBOOK_PORT']}"
    assert http(f"{base}/api/contents?token={root_project.token}")[0] == 200
    assert http(f"{base}/api/contents")[0] in (401, 403)
    root_project.compose("--profile", "dev", "exec", "-T", "notebook", "python", "-c",
                         "open('/app/notebooks/scratch.txt', 'w').write('hi')")
    assert (root_project.dir / "notebooks" / "scratch.txt").stat().st_uid == 0, "files stay the caller's (root's)"
    root_project.compose("--profile", "dev", "down")
    make_notebook_and_dev(root_project)


def test_jupyter_allows_root_only_when_the_user_is_root(user_project: UserProject) -> None:
    user_project.compose("--profile", "dev", "up", "-d", "--wait", "--wait-timeout", "180", "notebook")
    code = "import os, runpy; print(runpy.run_path('/etc/jupyter/jupyter_server_config.py', {'get_config': lambda: __import__('traitlets.config').config.Config()})['c'].ServerApp.allow_root, os.getuid())"
    assert user_project.compose("--profile", "dev", "exec", "-T", "notebook", "python", "-c", code).stdout.split() == [
        "False", str(USER)]
