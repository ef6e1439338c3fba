from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from torch_index import TorchIndex, find_torch_wheel
from template import DEV_BUILDS, LOCK_PINS, MATRIX, REPO, SESSION_LABEL, Container, TORCH_INDEX_PORT, TORCH_INDEX_URL, Combo, copier_cli, docker_available, engine_required, image_tag, render, run


# The suite runs commands as a user at a shell does: `make test` must not hand its own level and flags down to the
# make runs of generated projects (their messages would read "make[1]: ..." and differ from what users see).
for _name in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def render_combo(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Combo], Path]:
    """Render a combination once per session, without the lock task (static checks need no locks)."""
    cache: dict[Combo, Path] = {}

    def _render(combo: Combo) -> Path:
        if combo not in cache:
            cache[combo] = render(tmp_path_factory.mktemp(combo.id), combo.answers)
        return cache[combo]

    return _render


@pytest.fixture(scope="session")
def pypi_tool(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], str]:
    """A command-line tool from PyPI (ruff, shellcheck): the one next to the test interpreter if requirements-dev.txt
    has it, else the pinned requirement installed once per session with uv into a folder of the session."""
    folder = tmp_path_factory.mktemp("pypi-tools")

    def _tool(command: str, requirement: str) -> str:
        here = Path(sys.executable).parent / command
        if here.is_file():
            return str(here)
        if not (folder / "bin" / command).is_file():
            uv = Path(sys.executable).parent / "uv"
            assert uv.is_file(), f"{command} is not next to {sys.executable} and uv, to install {requirement}, is not either"
            run([str(uv), "pip", "install", "--quiet", "--target", str(folder), requirement], timeout=600)
        return str(folder / "bin" / command)

    return _tool


@pytest.fixture(scope="session")
def engine() -> None:
    """A Docker engine that answers. In CI (CI=true or REQUIRE_ENGINE=1) its absence fails the run."""
    ok, why = docker_available()
    if ok:
        return
    if engine_required():
        pytest.fail(f"engine tests are required here (CI) but {why}", pytrace=False)
    pytest.skip(f"engine tests skipped: {why} (start Docker to run them)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test marked `engine` gets the engine fixture, so none can run (or silently pass) without one.
    for item in items:
        if item.get_closest_marker("engine") and "engine" not in getattr(item, "fixturenames", []):
            item.fixturenames.insert(0, "engine")


# ---- engine fixtures: one locked, built and trained project per buildable combination, shared by the e2e tests --

BUILD_ARGS = {"VERSION": "1.2.3", "REVISION": "0123456789abcdef", "CREATED": "2026-01-02T03:04:05Z",
              "SOURCE": "https://example.org/iris.git"}


@dataclass
class Built:
    combo: Combo
    project: Path
    train_image: str
    serve_image: str
    metadata: dict

    def build(self, target: str, *extra: str) -> str:
        args = [a for k, v in BUILD_ARGS.items() for a in ("--build-arg", f"{k}={v}")]
        if self.combo.framework == "pytorch":  # the wheel index of the tests is on this machine's loopback
            args += ["--network", "host"]
        tag = image_tag(self.combo, target)
        result = run(["docker", "build", "--progress=plain", "--target", target, "-t", tag, *args, *extra, "."],
                     cwd=self.project, env={"DOCKER_BUILDKIT": "1"})
        return result.stderr + result.stdout

    def tampered_models(self, folder: Path) -> Path:
        """A copy of the trained model folder in `folder`, its artifact cut short (its sha256 no longer matches)."""
        folder.mkdir()
        for item in (self.project / "models").iterdir():
            folder.joinpath(item.name).write_bytes(item.read_bytes())
        artifact = folder / self.metadata["artifact"]
        artifact.write_bytes(artifact.read_bytes()[:-10])
        return folder


@pytest.fixture(scope="session")
def torch_index(tmp_path_factory: pytest.TempPathFactory):
    """Serve the local torch CPU wheel at TORCH_INDEX_URL for as long as the session needs it."""
    wheel = find_torch_wheel()
    if wheel is None:
        message = "no torch CPU wheel for this Python in pip's find-links: PyTorch builds need one here"
        if engine_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    index = TorchIndex(tmp_path_factory.mktemp("torch-index"), TORCH_INDEX_PORT, wheel)
    yield TORCH_INDEX_URL
    index.close()


@pytest.fixture(scope="session")
def locked_project(tmp_path_factory: pytest.TempPathFactory, engine: None,
                   request: pytest.FixtureRequest) -> Callable[[Combo], Path]:
    """`copier copy --trust` through the CLI, as a user runs it: the copy task locks through Docker.

    Where a test pin is needed (LOCK_PINS), the copy skips its task, the pin is made, and `make lock`'s script
    runs instead, as a user who pins a version would do."""
    cache: dict[Combo, Path] = {}

    def _locked(combo: Combo) -> Path:
        if combo not in cache:
            if combo.framework == "pytorch":
                request.getfixturevalue("torch_index")
            dst = tmp_path_factory.mktemp(f"locked-{combo.id}") / "project"
            answers = combo.answers if combo in DEV_BUILDS else {**combo.answers, "dev_environment": False}
            args = [a for k, v in answers.items() for a in ("-d", f"{k}={v}")]
            pin = LOCK_PINS.get(combo.framework)
            skip = ["--skip-tasks"] if pin else []
            result = copier_cli("copy", "--trust", "--defaults", *skip, "--vcs-ref", "HEAD", *args, str(REPO),
                                str(dst))
            assert result.returncode == 0, result.stderr[-3000:]
            if pin:  # in serve.in, or in train.in where serve_runtime=onnx keeps the framework for training only
                pinned = [p for p in sorted((dst / "requirements").glob("*.in")) if pin[0] in p.read_text()]
                assert pinned, f"{pin[0]} in no requirements/*.in"
                for path in pinned:
                    path.write_text(path.read_text().replace(pin[0], pin[1]))
                run([sys.executable, "scripts/lock.py", "--strict"], cwd=dst, timeout=1800)
            for name in ("train", "serve"):
                assert (dst / "requirements" / f"{name}.txt").is_file(), f"copy did not lock {name}\n{result.stderr[-3000:]}"
            cache[combo] = dst
        return cache[combo]

    return _locked


def train_into(image: str, models: Path, *extra: str) -> dict:
    """Run the train image as its own non-root user, writing into a host folder."""
    models.mkdir(parents=True, exist_ok=True)
    models.chmod(0o777)  # the container's user (uid 10001 or 65532) writes here
    run(["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", *extra,
         "-v", f"{models}:/app/models", image])
    return json.loads((models / "metadata.json").read_text())


@pytest.fixture(scope="session")
def built_project(locked_project: Callable[[Combo], Path]) -> Callable[[Combo], Built]:
    """Build train, train the model into models/ (baked mode), then build serve."""
    cache: dict[Combo, Built] = {}

    def _built(combo: Combo) -> Built:
        if combo not in cache:
            project = locked_project(combo)
            built = Built(combo, project, image_tag(combo, "train"), image_tag(combo, "serve"), {})
            built.build("train")
            models = project / "models"
            built.metadata = train_into(built.train_image, models)
            built.build("serve")
            cache[combo] = built
        return cache[combo]

    return _built


class BundleServer:
    """Model bundles (make publish) served over HTTP on 127.0.0.1, for the `downloaded` model source."""

    def __init__(self, root: Path):
        import functools
        import http.server
        import threading

        self.root = root
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a: None
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, built: Built) -> tuple[str, str]:
        """`make publish` in the project; returns (MODEL_URI, MODEL_SHA256) of the bundle."""
        out = run(["make", "publish"], cwd=built.project).stdout
        sha = out.split("MODEL_SHA256=")[1].split()[0]
        name = f"{built.combo.id}.tar.gz"
        shutil.copyfile(built.project / "dist" / "model.tar.gz", self.root / name)
        return f"{self.url}/{name}", sha

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def bundle_server(tmp_path_factory: pytest.TempPathFactory):
    server = BundleServer(tmp_path_factory.mktemp("bundles"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def serve_container(built_project: Callable[[Combo], Built], request: pytest.FixtureRequest):
    """Run a combination's serve image the way its model source requires:
    baked as is; mounted with models/ mounted read-only; downloaded from a bundle server on 127.0.0.1 (host
    network), its cache on a tmpfs."""

    def _start(combo: Combo, *docker_args: str, wait_ready: bool = True) -> Container:
        built = built_project(combo)
        if combo.model_source == "mounted":
            return Container(built.serve_image, "-v", f"{built.project / 'models'}:/app/models:ro", *docker_args,
                             wait_ready=wait_ready)
        if combo.model_source == "downloaded":
            uri, sha = request.getfixturevalue("bundle_server").publish(built)
            uid = MATRIX["base_image"][combo.base_image]["uid"]
            return Container(built.serve_image, "-e", f"MODEL_URI={uri}", "-e", f"MODEL_SHA256={sha}",
                             "--tmpfs", f"/app/var/cache:uid={uid},gid={uid}", *docker_args, wait_ready=wait_ready,
                             host_network=True)
        return Container(built.serve_image, *docker_args, wait_ready=wait_ready)

    return _start


@pytest.fixture(scope="session", autouse=True)
def _remove_test_containers():
    yield
    if shutil.which("docker") and os.environ.get("KEEP_TEST_CONTAINERS") != "1":
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={SESSION_LABEL}"], capture_output=True,
                             text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
