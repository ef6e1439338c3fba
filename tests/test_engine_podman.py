"""Promise: a uid-1000 user with rootless Podman and no Docker gets what a Docker user gets, through the same make
targets with ENGINE=podman: locks byte-identical to Docker's, images that keep the health check and the labels,
training that writes files the user owns, a healthy server that answers /predict and stops cleanly on SIGTERM (with
podman-compose, and with docker compose on Podman's socket), the notebook and the dev server, and `make kube-play`
of the dev overlay. Where Podman cannot do what make is asked, one line says what to do instead.

One chain, the default render; the static refusals need no engine."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import k8s_tools
from helpers.combos import DEFAULT_COMBO, Combo
from helpers.engine import kill_group, record_time, run
from helpers.podman import USER, PodmanProject, PodmanUser


def http(url: str, body: dict | None = None, timeout: float = 10) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


# ---- refusals: read at parse time, before anything runs (no engine needed) ------------------------------------------

@pytest.fixture(scope="module")
def rendered(render_combo: Callable[[Combo], Path]) -> Path:
    return render_combo(DEFAULT_COMBO)


def make_here(project: Path, *args: str, path: str = "/usr/bin:/bin", **env: str) -> subprocess.CompletedProcess:
    return run(["env", "-i", f"PATH={path}", *[f"{k}={v}" for k, v in env.items()], "make", "--no-print-directory",
                *args], cwd=project, check=False)


def test_podman_compose_older_than_1_3_is_refused_naming_its_version(rendered: Path, tmp_path: Path) -> None:
    (tmp_path / "podman-compose").write_text("#!/bin/sh\necho 'podman version 4.3.1'\necho 'podman-compose version 1.0.6'\n")
    (tmp_path / "podman-compose").chmod(0o755)
    line = one_line_error(make_here(rendered, "ENGINE=podman", "serve", path=f"{tmp_path}:/usr/bin:/bin"))
    assert "podman-compose 1.0.6" in line and ">= 1.3" in line


def test_without_podman_compose_or_the_socket_make_says_how_to_start_it(rendered: Path) -> None:
    line = one_line_error(make_here(rendered, "ENGINE=podman", "train", XDG_RUNTIME_DIR="/nonexistent"))
    assert "/nonexistent/podman/podman.sock is missing" in line and "podman system service" in line


def test_release_and_kube_play_name_the_engine_they_need(rendered: Path) -> None:
    assert "ENGINE=docker" in one_line_error(make_here(rendered, "ENGINE=podman", "release"))
    assert "ENGINE=podman make kube-play" in one_line_error(make_here(rendered, "ENGINE=docker", "kube-play"))


def test_podman_is_the_default_where_only_podman_is_installed(rendered: Path, tmp_path: Path) -> None:
    """A machine with the usual tools and Podman but no Docker: make builds with Podman without being told; with
    both installed, Docker stays the default."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for folder in (Path("/bin"), Path("/usr/bin")):
        for tool in folder.iterdir():
            if tool.name not in ("docker", "podman", "podman-compose") and not (tools / tool.name).exists():
                (tools / tool.name).symlink_to(tool)
    (tools / "podman").write_text("#!/bin/sh\necho 'podman version 4.3.1'\n")
    (tools / "podman").chmod(0o755)
    only_podman = make_here(rendered, "-n", "build-serve", path=str(tools))
    assert only_podman.returncode == 0, only_podman.stderr
    assert only_podman.stdout.splitlines()[-1].startswith("podman build --format docker "), only_podman.stdout
    (tools / "docker").symlink_to(tools / "podman")
    both = make_here(rendered, "-n", "build-serve", path=str(tools))
    assert both.returncode == 0 and both.stdout.splitlines()[-1].startswith("docker "), both.stdout + both.stderr


# ---- the chain, on the engine, as uid 1000 ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def podman_project(locked_project: Callable[[Combo], Path]):
    """The default render, locked by the copy task through Docker; then, as the Podman user: `make lock` (kept aside
    to compare) and `make train`."""
    locked = locked_project(DEFAULT_COMBO)
    try:
        tools = [k8s_tools.install()]
    except (k8s_tools.ToolError, OSError, subprocess.SubprocessError):
        tools = []  # kube-play then says which tool is missing, and its test fails with that line
    user = PodmanUser(sorted({DEFAULT_COMBO.image("builder"), DEFAULT_COMBO.image("runtime")}), tools)
    project = None
    try:
        project = PodmanProject(user, locked)
        project.docker_locks = {p.name: p.read_bytes() for p in (project.dir / "requirements").glob("*.txt")}
        for target in ("lock", "train"):
            start = time.monotonic()
            project.make(target)
            record_time(f"{DEFAULT_COMBO.id} make {target} (podman)", time.monotonic() - start)
        yield project
    finally:
        if project is not None:
            project.make("down", check=False)
            project.make("kube-down", check=False)
        user.close()


@pytest.mark.engine
def test_locks_made_with_podman_are_byte_identical_to_dockers(podman_project: PodmanProject) -> None:
    made = {p.name: p.read_bytes() for p in (podman_project.dir / "requirements").glob("*.txt")}
    assert made == podman_project.docker_locks


@pytest.mark.engine
def test_training_writes_models_the_user_owns(podman_project: PodmanProject) -> None:
    models = podman_project.dir / "models"
    written = [p for p in models.iterdir() if p.name != ".gitkeep"]
    assert {p.name for p in written} >= {"metadata.json"}
    assert {p.stat().st_uid for p in written} == {USER}, [(p.name, p.stat().st_uid) for p in written]


@pytest.mark.engine
def test_serve_is_healthy_answers_predict_and_stops_cleanly(podman_project: PodmanProject) -> None:
    project = podman_project
    project.make("serve")
    image = json.loads(project.podman("image", "inspect", f"{project.image}:t").stdout)[0]
    assert (image.get("Healthcheck") or {}).get("Test", [""])[0] == "CMD", \
        "the image lost its HEALTHCHECK (built without --format docker?)"
    assert image["Labels"]["org.opencontainers.image.title"]
    status, body = http(project.url("SERVE_PORT", "/predict"), {"features": [5.1, 3.5, 1.4, 0.2]})
    assert status == 200, body
    name = project.podman("ps", "--format", "{{.Names}}").stdout.split()[0]  # the only one in the user's store
    project.podman("healthcheck", "run", name)  # what a systemd timer would run: now "healthy"
    assert json.loads(project.podman("inspect", name).stdout)[0]["State"]["Health"]["Status"] == "healthy"
    project.podman("stop", "--time", "10", name)  # SIGTERM
    assert json.loads(project.podman("inspect", name).stdout)[0]["State"]["ExitCode"] == 0
    project.make("down")


@pytest.mark.engine
def test_docker_compose_on_podmans_socket_trains_and_serves_too(podman_project: PodmanProject) -> None:
    """No podman-compose on PATH: make drives docker compose through Podman's API socket, started as the docs say."""
    project, user = podman_project, podman_project.user
    socket = user.runtime_dir / "podman" / "podman.sock"
    log = user.root / "podman-service.log"
    with log.open("w") as output:  # a file, not a pipe: nothing the service writes can fill a buffer and block it
        service = subprocess.Popen(user.command(["podman", "system", "service", "--time=0"]), cwd=user.home,
                                   stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not socket.exists() and time.monotonic() < deadline and service.poll() is None:
            time.sleep(0.2)
        if not socket.exists():
            kill_group(service)
            pytest.fail(f"podman system service made no socket in 30 s (exit {service.returncode}): "
                        f"{log.read_text().strip()[-500:]}", pytrace=False)
        models = project.dir / "models"
        (models / "metadata.json").unlink()
        project.make("train", compose=False)
        assert (models / "metadata.json").stat().st_uid == USER
        project.make("serve", compose=False)
        assert http(project.url("SERVE_PORT", "/ready"))[0] == 200
        project.make("down", compose=False)
    finally:
        if service.poll() is None:
            service.terminate()
            try:
                service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill_group(service)


@pytest.mark.engine
def test_notebook_and_dev_server_work_and_the_notebooks_files_are_the_users(podman_project: PodmanProject) -> None:
    project = podman_project
    project.make("notebook")
    assert http(project.url("NOTEBOOK_PORT", "/api/contents"))[0] == 403
    created = urllib.request.Request(project.url("NOTEBOOK_PORT", f"/api/contents/notebooks/podman.ipynb?token={project.token}"),
                                     data=b'{"type": "notebook"}', method="PUT",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(created, timeout=10) as response:
        assert response.status == 201
    assert (project.dir / "notebooks" / "podman.ipynb").stat().st_uid == USER
    project.make("dev")
    assert http(project.url("DEV_PORT", "/ready"))[0] == 200
    project.make("down")


@pytest.mark.engine
def test_kube_play_runs_the_dev_overlays_deployment(podman_project: PodmanProject) -> None:
    project = podman_project
    project.make("kube-play")
    assert http(project.url("KUBE_PLAY_PORT", "/ready"))[0] == 200
    project.make("kube-down")


@pytest.mark.engine
def test_make_test_and_make_smoke_run_under_podman(podman_project: PodmanProject) -> None:
    assert " passed" in podman_project.make("test").stdout
    assert "stopped on SIGTERM with exit 0" in podman_project.make("build-serve", "smoke").stdout
