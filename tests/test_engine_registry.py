"""Promise: with tracking=mlflow and model_source=registry a user runs `make mlflow`, `make train`, `make promote`
and `make serve` and gets the champion served from MLflow's registry by a serve image without MLflow in it,
answering as the same training served from its folder; promoting a new version and restarting serves it; a tampered
file, the server down or an unknown alias each end the server with exit 1 and one line. The MLflow server is the
project's own (compose profile mlflow, built from requirements/mlflow.txt), as the user starts it."""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from helpers.combos import REGISTRY_COMBOS, Combo
from helpers.engine import IMAGE_PREFIX, free_port, remove_images, run, timed

COMBO = REGISTRY_COMBOS[0]
# the registered model's name: the image name, from the project name as copier derives it
NAME = re.sub(r"[^a-z0-9]+", "-", COMBO.answers["project_name"].lower()).strip("-")
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]

pytestmark = [pytest.mark.engine, pytest.mark.chain(COMBO)]


class Project:
    def __init__(self, path: Path):
        self.path = path
        self.name = f"mldt-{uuid.uuid4().hex[:8]}"
        self.port, self.mlflow_port = free_port(), free_port()
        self.image = f"{IMAGE_PREFIX}/{self.name}"
        self.env = {"COMPOSE_PROJECT_NAME": self.name, "IMAGE": self.image, "TAG": "t"}

    def make(self, *args: str, check: bool = True, timeout: float = 1800):
        cmd = ["make", *args]
        if not check:
            return run(cmd, cwd=self.path, env=self.env, check=False, timeout=timeout)
        return timed(f"{COMBO.id} make {' '.join(args)}", cmd, cwd=self.path, env=self.env, timeout=timeout)

    def compose(self, *args: str, check: bool = True, timeout: float = 600):
        return run(["docker", "compose", *args], cwd=self.path, env=self.env, check=check, timeout=timeout)

    def predict(self, rows: list[list[float]]) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/predict", method="POST",
                                         data=json.dumps({"instances": rows, "return_probabilities": True}).encode(),
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def metadata(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metadata", timeout=10) as response:
            return json.loads(response.read())

    def serve_fails(self, **env: str) -> str:
        """Start serve with a fresh cache and these settings; it must exit 1: its one error line."""
        self.compose("rm", "-sfv", "serve")
        run(["docker", "volume", "rm", "-f", f"{self.name}_model-cache"], check=False)
        settings = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        started = time.monotonic()
        result = self.compose("run", "--rm", "--no-deps", "-T", *settings, "serve", check=False, timeout=300)
        elapsed = time.monotonic() - started
        assert result.returncode == 1, f"serve exited {result.returncode}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        errors = [line for line in (result.stdout + result.stderr).splitlines() if " ERROR " in line]
        assert len(errors) == 1, f"one error line expected:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        assert "Traceback" not in result.stdout + result.stderr
        assert elapsed < 90, f"serve took {elapsed:.0f} s to give up"
        return errors[0]


@pytest.fixture(scope="module")
def project(locked_project: Callable[[Combo], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    where = tmp_path_factory.mktemp("registry") / "project"
    run(["cp", "-a", str(locked_project(COMBO)), str(where)])
    assert (where / "requirements" / "mlflow.txt").is_file(), "copier copy did not lock the MLflow server"
    found = Project(where)
    env_file = where / ".env"
    env_file.write_text(env_file.read_text() + f"SERVE_PORT={found.port}\nMLFLOW_PORT={found.mlflow_port}\n"
                        "DOWNLOAD_TIMEOUT=3\nDOWNLOAD_RETRIES=1\n")
    try:
        yield found
    finally:
        found.compose("--profile", "train", "--profile", "mlflow", "down", "-v", "--remove-orphans", check=False)
        remove_images(found.image)


def test_train_promote_serve_the_champion_without_mlflow_in_the_serve_image(project: Project) -> None:
    project.make("keys")  # model_signing: training signs, the serve image verifies (test_engine_model_signing.py)
    out = project.make("mlflow")
    assert f"MLflow on http://127.0.0.1:{project.mlflow_port}" in out.stdout
    with urllib.request.urlopen(f"http://127.0.0.1:{project.mlflow_port}/health", timeout=5) as response:
        assert response.status == 200

    trained = project.make("train")
    assert re.search(rf"registered {NAME} version 1 as @candidate", trained.stdout + trained.stderr), trained.stderr
    metadata = json.loads((project.path / "models" / "metadata.json").read_text())
    promoted = project.make("promote")
    assert "champion" in promoted.stdout + promoted.stderr and "1" in promoted.stdout + promoted.stderr

    project.make("serve")
    served = project.metadata()
    assert served["sha256"] == metadata["sha256"]
    assert served["served_from"]["name"] == NAME and str(served["served_from"]["version"]) == "1"
    assert served["served_from"]["alias"] == "champion"
    from_registry = project.predict(ROWS)

    # the serve image holds no MLflow, nothing beyond its lock, and no model
    image = f"{project.image}:t"
    probe = ("import importlib.util, importlib.metadata as m, pathlib; "
             "print(importlib.util.find_spec('mlflow') is None, pathlib.Path('/app/models/metadata.json').exists()); "
             "print(*sorted(d.metadata['Name'].lower().replace('_', '-') for d in m.distributions()))")
    lines = run(["docker", "run", "--rm", "--entrypoint", "python", image, "-c", probe]).stdout.splitlines()
    assert lines[0] == "True False", lines[0]
    lock = (project.path / "requirements" / "serve.txt").read_text()
    locked = {m.lower().replace("_", "-") for m in re.findall(r"^([A-Za-z0-9_.-]+)==", lock, re.MULTILINE)}
    assert set(lines[1].split()) <= locked, set(lines[1].split()) - locked

    # the same training served from its folder answers the same
    project.compose("rm", "-sf", "serve")
    port = free_port()
    local = run(["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{port}:8000", "-e", "MODEL_URI=",
                 "-v", f"{project.path / 'models'}:/app/models:ro", image]).stdout.strip()
    try:
        project_port, project.port = project.port, port
        deadline = time.monotonic() + 60
        while True:
            try:
                from_folder = project.predict(ROWS)
                break
            except OSError:
                assert time.monotonic() < deadline, "the serve image did not answer from the model folder"
                time.sleep(0.5)
        project.port = project_port
    finally:
        run(["docker", "rm", "-f", local], check=False)
    assert from_registry == from_folder


def test_a_new_version_promoted_is_served_after_a_restart(project: Project) -> None:
    trained = project.make("train")
    assert f"registered {NAME} version 2 as @candidate" in trained.stdout + trained.stderr
    project.make("promote")
    project.compose("restart", "serve")
    run(["docker", "compose", "up", "--wait", "--wait-timeout", "120", "serve"], cwd=project.path, env=project.env)
    assert str(project.metadata()["served_from"]["version"]) == "2"
    # rollback: the alias back to version 1
    project.make("promote", 'PROMOTE_ARGS=--version 1 --force')
    project.compose("restart", "serve")
    run(["docker", "compose", "up", "--wait", "--wait-timeout", "120", "serve"], cwd=project.path, env=project.env)
    assert str(project.metadata()["served_from"]["version"]) == "1"


def test_each_registry_failure_is_one_line_and_exit_1(project: Project) -> None:
    line = project.serve_fails(MODEL_URI=f"models:/{NAME}@nosuchalias")
    assert "nosuchalias" in line, line
    line = project.serve_fails(MODEL_URI="models:/nosuchmodel@champion")
    assert "nosuchmodel" in line, line

    # a file changed in the server's store: refused, the file named
    artifact = json.loads((project.path / "models" / "metadata.json").read_text())["artifact"]
    tamper = ("import pathlib\nfor p in pathlib.Path('/data/artifacts').rglob('" + artifact + "'):\n"
              "    p.write_bytes(p.read_bytes()[:-16])")
    project.compose("exec", "-T", "mlflow", "python", "-c", tamper)
    line = project.serve_fails()
    assert artifact in line and "sha256" in line, line

    project.make("mlflow-down")
    line = project.serve_fails()
    assert "mlflow:5000" in line or "unreachable" in line, line
