"""Promise: dev_environment renders a complete development environment on the project's own locks (dev image,
compose profile `dev`, make targets, starter notebook, dev container), leaves train and serve exactly as they
were, and a render without it has none of it. The engine side is tests/test_engine_dev.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Callable

import jsonschema
import nbformat
import pytest

from helpers.dockerfile import Dockerfile
from helpers.answers import REPO
from helpers.combos import Combo, DEFAULT_COMBO
from helpers.render import render

SCHEMA = json.loads((REPO / "tests" / "schemas" / "devContainer.base.schema.json").read_text())
GPU_COMBO = Combo("3.12", "pytorch", "nvidia-cuda", "baked", gpu=True)
RenderCombo = Callable[[Combo], Path]


@pytest.fixture(scope="module")
def without_dev(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("no-dev"), {**DEFAULT_COMBO.answers, "dev_environment": False})


def compose_config(project: Path, *files: str) -> dict:
    args = [a for f in files or ("compose.yaml",) for a in ("-f", f)]
    result = subprocess.run(["docker", "compose", *args, "--profile", "dev", "--profile", "train", "config",
                             "--format", "json"], cwd=project, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(project)})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_dev_services_run_as_the_host_user_on_loopback(render_combo: RenderCombo) -> None:
    project = render_combo(DEFAULT_COMBO)
    services = compose_config(project)["services"]
    for name in ("notebook", "serve-dev"):
        service = services[name]
        assert service["profiles"] == ["dev"] and service["build"]["target"] == "dev", service
        assert service["user"] == "1000:1000"  # ${HOST_UID:-1000}: .env sets the real one
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert all(port["host_ip"] == "127.0.0.1" for port in service["ports"]), service["ports"]
    notebook = services["notebook"]
    assert {v["target"] for v in notebook["volumes"]} == {"/app/notebooks", "/app/src", "/app/data", "/app/models"}
    assert notebook["environment"]["JUPYTER_TOKEN"] == ""  # from .env only, never a default in a committed file
    serve_dev = services["serve-dev"]
    assert "--reload" in serve_dev["command"] and f"{DEFAULT_COMBO.answers['project_name']}" not in str(serve_dev)
    assert {v["target"]: v.get("read_only", False) for v in serve_dev["volumes"]} == {"/app/src": True,
                                                                                      "/app/models": True}


def test_gpu_render_gives_the_notebook_the_train_gpu_settings(render_combo: RenderCombo) -> None:
    services = compose_config(render_combo(GPU_COMBO))["services"]
    for key in ("deploy", "shm_size"):
        assert services["notebook"][key] == services["train"][key], key


def test_dev_lock_extends_train_and_the_dev_image_reuses_the_train_venv(render_combo: RenderCombo) -> None:
    project = render_combo(DEFAULT_COMBO)
    dev_in = (project / "requirements" / "dev.in").read_text().splitlines()
    assert "-r train.in" in dev_in and any(line.startswith("jupyterlab") for line in dev_in)
    assert any(line.startswith("matplotlib") for line in dev_in)
    dockerfile = Dockerfile.read(project / "Dockerfile")
    # on the train image's runtime (its user, its apt packages), its venv from the hashed dev lock, as train's
    assert dockerfile.stages["dev"].base == dockerfile.stages["train-venv"].base
    dev = dockerfile.stages["dev"]
    assert dev.index("COPY", "requirements/dev.txt") < dev.index("RUN", "/tmp/venv.py /tmp/dev.txt")
    assert [call[1:] for call in dev.venv_calls()] == [["/tmp/venv.py", "/tmp/dev.txt"]]
    install = next(run for run in dev.all("RUN") if run.venv_calls())
    assert {"type=secret,id=pipconf", "type=cache,id=/root/.cache/pip,target=/var/cache"} <= set(install.mounts())
    assert list(dockerfile.stages)[-1] == "serve", "a plain `docker build .` must still build serve"
    assert "JUPYTER_TOKEN" not in (project / "Dockerfile").read_text()


def test_train_and_serve_are_unchanged_by_the_dev_environment(render_combo: RenderCombo, without_dev: Path) -> None:
    with_dev = Dockerfile.read(render_combo(DEFAULT_COMBO) / "Dockerfile")
    plain = Dockerfile.read(without_dev / "Dockerfile")
    for target in ("train", "serve"):
        assert [(s.name, s.base, s.instructions) for s in with_dev.chain(target)] == \
               [(s.name, s.base, s.instructions) for s in plain.chain(target)], target
    assert "dev" not in plain.stages and set(with_dev.stages) - set(plain.stages) == {"dev"}


def test_without_dev_environment_nothing_of_it_renders(without_dev: Path) -> None:
    for path in ("requirements/dev.in", "notebooks", ".devcontainer", "make/dev.mk",
                 "src/iris_classifier/devserver.py"):
        assert not (without_dev / path).exists(), path
    services = compose_config(without_dev)["services"]
    assert not {"notebook", "serve-dev"} & set(services)
    assert "JUPYTER_TOKEN" not in (without_dev / ".env.example").read_text()
    assert not (without_dev / "docs/development.md").exists()
    for page in [without_dev / "README.md", *(without_dev / "docs").glob("*.md")]:
        assert "make notebook" not in page.read_text(), page.name


def test_starter_notebook_is_small_valid_and_has_no_outputs(render_combo: RenderCombo) -> None:
    project = render_combo(DEFAULT_COMBO)
    path = project / "notebooks" / "01-explore.ipynb"
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    source = "\n".join(cell.source for cell in code)
    # trains through the package's own code, not a copy of it
    assert "from iris_classifier.train import load_data, train" in source and "train(settings)" in source
    assert "plt." in source and path.stat().st_size < 20_000


def test_devcontainer_is_valid_and_points_at_what_exists(render_combo: RenderCombo) -> None:
    project = render_combo(DEFAULT_COMBO)
    # strict JSON (no comments): the generated pre-commit's check-json reads it too
    config = json.loads((project / ".devcontainer" / "devcontainer.json").read_text())
    jsonschema.validate(config, SCHEMA)
    files = config["dockerComposeFile"]
    for name in files:
        assert (project / ".devcontainer" / name).is_file(), name
    services = compose_config(project, *[str(Path(".devcontainer") / f) for f in files])["services"]
    assert config["service"] in services and set(config["runServices"]) <= set(services)
    workspace = [v for v in services[config["service"]]["volumes"] if v["target"] == config["workspaceFolder"]]
    assert workspace and Path(workspace[0]["source"]) == project, "the project must be mounted at workspaceFolder"
    assert config["customizations"]["vscode"]["settings"]["python.defaultInterpreterPath"] == "/opt/venv/bin/python"
    ports = {str(p) for p in config["forwardPorts"]}
    assert ports == {"8888", str(DEFAULT_COMBO.answers.get("serve_port", 8000) + 1)}


def test_a_bad_devcontainer_fails_the_schema(render_combo: RenderCombo) -> None:
    config = json.loads((render_combo(DEFAULT_COMBO) / ".devcontainer" / "devcontainer.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**config, "shutdownAction": "sometimes"}, SCHEMA)


def test_notebooks_stay_out_of_the_build_context(render_combo: RenderCombo) -> None:
    ignored = (render_combo(DEFAULT_COMBO) / ".dockerignore").read_text().splitlines()
    for pattern in ("notebooks", "**/*.ipynb", "**/.ipynb_checkpoints", ".devcontainer"):
        assert pattern in ignored, pattern


def test_make_targets_and_readme(render_combo: RenderCombo) -> None:
    project = render_combo(DEFAULT_COMBO)
    targets = subprocess.run(["make", "-C", str(project), "help"], capture_output=True, text=True, timeout=600).stdout
    for target in ("notebook", "dev", "down", "env"):
        assert re.search(rf"^\s+{target}\s", targets, flags=re.MULTILINE), targets
    readme = (project / "README.md").read_text()
    assert "`make notebook`" in readme and "`make dev`" in readme and "(docs/development.md)" in readme
    page = (project / "docs/development.md").read_text()
    assert "make notebook" in page and "make dev" in page and ".devcontainer" in page


def test_precommit_strips_notebook_outputs(render_combo: RenderCombo, tmp_path: Path, without_dev: Path) -> None:
    """The README's promise: `pre-commit install`, and notebooks are committed without outputs (real pre-commit)."""
    import shutil
    import sys

    assert "nbstripout" not in (without_dev / ".pre-commit-config.yaml").read_text()
    project = tmp_path / "project"
    shutil.copytree(render_combo(DEFAULT_COMBO), project)
    path = project / "notebooks" / "01-explore.ipynb"
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="secret row 42\n")]
    notebook.cells[1].execution_count = 1
    nbformat.write(notebook, path)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path),
           "PRE_COMMIT_HOME": str(tmp_path / "pre-commit")}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"]):
        subprocess.run(cmd, cwd=project, check=True, env=env, timeout=600)
    result = subprocess.run([str(Path(sys.executable).parent / "pre-commit"), "run", "nbstripout", "--files",
                             str(path.relative_to(project))], cwd=project, capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 1, result.stdout + result.stderr  # it changed the file
    stripped = nbformat.read(path, as_version=4)
    assert all(cell.get("outputs", []) == [] for cell in stripped.cells) and "secret row" not in path.read_text()
