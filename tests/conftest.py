"""Fixtures of the suite: renders, the engine, and one locked, built and trained project per engine chain, shared
by every test that needs it (nothing is built twice)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from helpers.answers import MATRIX, REPO
from helpers.builds import Built, BundleServer, train_into
from helpers.combos import LOCK_PINS, TORCH_FRAMEWORKS, TORCH_INDEX_PORT, TORCH_INDEX_URL, Combo
from helpers.containers import Container
from helpers.engine import BUILD_LOG, SESSION_LABEL, docker_available, engine_required, image_tag, record_time, run, timed
from helpers.footprint import Footprint, in_chain_order
from helpers.once import Once
from helpers.render import copier_cli, render
from helpers.report import build_lines, coverage_lines
from helpers.tiny_encoder import make_tiny_encoder, train_args
from helpers.torch_index import TorchIndex, required_torch_wheel


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


def pytest_sessionstart(session: pytest.Session) -> None:
    BUILD_LOG.unlink(missing_ok=True)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """The coverage tables (with the static level) and the time of every build and lock (with the engine level), in
    every CI log."""
    level = config.getoption("markexpr")
    sections = []
    if level != "engine":
        sections.append(("coverage", coverage_lines()))
    if level != "not engine":
        sections.append(("builds and locks", build_lines()))
    for title, lines in sections:
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)


PLANNED = pytest.StashKey[list]()
FOOTPRINT = pytest.StashKey[Footprint]()
BUILT = pytest.StashKey[Once]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every test marked `engine` gets the engine fixture, so none can run (or silently pass) without one.
    for item in items:
        # with pytest-xdist (--dist loadgroup), the tests of one render run in one process: it renders once
        params = getattr(getattr(item, "callspec", None), "params", {})
        renders = [v for v in params.values() if isinstance(v, Combo)] + [
            v.combo for v in params.values() if isinstance(getattr(v, "combo", None), Combo)]
        if renders:
            item.add_marker(pytest.mark.xdist_group(renders[0].id))
        if item.get_closest_marker("engine") and "engine" not in getattr(item, "fixturenames", []):
            item.fixturenames.insert(0, "engine")


@pytest.hookimpl(tryfirst=True)  # before --collect-only lists them
def pytest_collection_finish(session: pytest.Session) -> None:
    # the engine tests chain by chain (after the deselection of -m and -k), so that each chain's images and build
    # cache can go after its last test (helpers/footprint.py); the prefetch builds the chains in that order
    session.config.stash[PLANNED] = in_chain_order(session.items)
    session.config.stash[FOOTPRINT] = Footprint(session.items, int(os.environ.get("MLDT_BUILD_JOBS", "1")))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    yield  # the test's fixtures are torn down (a module's containers, when the module ends)
    built = item.config.stash.get(BUILT, None)
    if built is not None:
        item.config.stash[FOOTPRINT].finished(item.nodeid, built)


# ---- engine fixtures: one locked, built and trained project per engine chain, shared by the e2e tests -------------

@pytest.fixture(scope="session")
def torch_index(tmp_path_factory: pytest.TempPathFactory):
    """Serve the local torch CPU wheel at TORCH_INDEX_URL for as long as the session needs it."""
    wheel = required_torch_wheel("the PyTorch builds")
    index = TorchIndex(tmp_path_factory.mktemp("torch-index"), TORCH_INDEX_PORT, wheel)
    yield TORCH_INDEX_URL
    index.close()


@pytest.fixture(scope="session")
def locked_project(tmp_path_factory: pytest.TempPathFactory, engine: None,
                   request: pytest.FixtureRequest) -> Callable[[Combo], Path]:
    """`copier copy --trust` through the CLI, as a user runs it: the copy task locks through Docker.

    Where a test pin is needed (LOCK_PINS), the copy skips its task, the pin is made, and `make lock`'s script
    runs instead, as a user who pins a version would do."""
    if any(c.framework in TORCH_FRAMEWORKS for c in request.config.stash[PLANNED]):
        request.getfixturevalue("torch_index")  # in the main thread, before a prefetch needs it

    def _locked(combo: Combo) -> Path:
        if combo.framework in TORCH_FRAMEWORKS:
            request.getfixturevalue("torch_index")
        dst = tmp_path_factory.mktemp(f"locked-{combo.id}") / "project"
        args = [a for k, v in combo.answers.items() for a in ("-d", f"{k}={v}")]
        pin = LOCK_PINS.get(combo.framework)
        skip = ["--skip-tasks"] if pin else []
        start = time.monotonic()
        result = copier_cli("copy", "--trust", "--defaults", *skip, "--vcs-ref", "HEAD", *args, str(REPO), str(dst))
        assert result.returncode == 0, result.stderr[-3000:]
        if pin:  # in serve.in, or in train.in where serve_runtime=onnx keeps the framework for training only
            pinned = [p for p in sorted((dst / "requirements").glob("*.in")) if pin[0] in p.read_text()]
            assert pinned, f"{pin[0]} in no requirements/*.in"
            for path in pinned:
                path.write_text(path.read_text().replace(pin[0], pin[1]))
            timed(f"{combo.id} lock ({combo.lock_tool})", [sys.executable, "scripts/lock.py", "--strict"], cwd=dst,
                  timeout=1800)
        else:
            record_time(f"{combo.id} copy+lock ({combo.lock_tool})", time.monotonic() - start)
        for name in ("train", "serve"):
            assert (dst / "requirements" / f"{name}.txt").is_file(), f"copy did not lock {name}\n{result.stderr[-3000:]}"
        return dst

    return Once(_locked)


@pytest.fixture(scope="session")
def built_project(locked_project: Callable[[Combo], Path], request: pytest.FixtureRequest):
    """Build train, train the model into models/ (baked mode), then build serve: once per combination. With
    MLDT_BUILD_JOBS=N (N > 1) the chains the collected tests use are built N at a time, beside the tests."""

    footprint = request.config.stash[FOOTPRINT]

    def _built(combo: Combo) -> Built:
        footprint.building(combo)
        project = locked_project(combo)
        built = Built(combo, project, image_tag(combo, "train"), image_tag(combo, "serve"), {})
        if combo in footprint.released:  # a test that uses it without saying so (a `chain` marker says so)
            record_time(f"{combo.id}: built again after its release", 0)
        built.build("train")
        extra: list[str] = []
        if combo.framework == "transformers":  # fine-tuned from a tiny encoder the tests make (no Hub here)
            extra = train_args(make_tiny_encoder(built.train_image, project.parent / "tiny-encoder"))
        built.metadata = train_into(built.train_image, project / "models", *extra)
        built.build("serve")
        return built

    once = Once(_built)
    request.config.stash[BUILT] = once
    jobs = int(os.environ.get("MLDT_BUILD_JOBS", "1"))
    if jobs > 1:  # the tests mostly wait for the chain they need: N builders, not N - 1
        once.prefetch(request.config.stash[PLANNED], jobs, footprint.wait_for_room)
    yield once
    footprint.close()
    once.close()


@pytest.fixture(scope="session")
def bundle_server(tmp_path_factory: pytest.TempPathFactory):
    server = BundleServer(tmp_path_factory.mktemp("bundles"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def serve_container(built_project: Callable[[Combo], Built], request: pytest.FixtureRequest):
    """Run a combination's serve image the way its model source requires:
    baked as is; mounted with models/ mounted read-only; downloaded from a bundle server on 127.0.0.1 (host
    network), its cache on a tmpfs; with log_predictions, the log on a tmpfs (or on `log_volume`)."""

    def _start(combo: Combo, *docker_args: str, wait_ready: bool = True, log_volume: str | None = None) -> Container:
        built = built_project(combo)
        state = built.state_args(log_volume)
        if combo.model_source == "mounted":
            return Container(built.serve_image, "-v", f"{built.project / 'models'}:/app/models:ro", *state,
                             *docker_args, wait_ready=wait_ready)
        if combo.model_source == "downloaded":
            uri, sha = request.getfixturevalue("bundle_server").publish(built)
            uid = MATRIX["base_image"][combo.base_image]["uid"]
            return Container(built.serve_image, "-e", f"MODEL_URI={uri}", "-e", f"MODEL_SHA256={sha}",
                             "--tmpfs", f"/app/var/cache:uid={uid},gid={uid}", *state, *docker_args,
                             wait_ready=wait_ready, host_network=True)
        return Container(built.serve_image, *state, *docker_args, wait_ready=wait_ready)

    return _start


@pytest.fixture(scope="session", autouse=True)
def _remove_test_containers():
    yield
    if shutil.which("docker") and os.environ.get("KEEP_TEST_CONTAINERS") != "1":
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={SESSION_LABEL}"], capture_output=True,
                             text=True, timeout=600).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=600)
