"""Promise: every buildable render builds, trains reproducibly and serves /predict from a hardened container."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Callable

import pytest

from helpers.answers import MATRIX
from helpers.builds import LABELS, Built, train_into
from helpers.combos import Combo, ENGINE_COMBOS
from helpers.containers import Container
from helpers.engine import run

pytestmark = pytest.mark.engine
each_built = pytest.mark.parametrize("combo", ENGINE_COMBOS, ids=lambda c: c.id)
DISTROLESS = [c for c in ENGINE_COMBOS if not MATRIX["base_image"][c.base_image]["shell"]]
BAKED = [c for c in ENGINE_COMBOS if c.model_source == "baked"]

ROW = [5.1, 3.5, 1.4, 0.2]
HARDENED = ("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")


@pytest.fixture()
def built(built_project: Callable[[Combo], Built], combo: Combo) -> Built:
    return built_project(combo)


@pytest.fixture(scope="module")
def servers(serve_container):
    """One hardened server per combination, started once and shared by the tests that only send it requests."""
    running: dict[Combo, Container] = {}

    def _server(combo: Combo) -> Container:
        if combo not in running:
            running[combo] = serve_container(combo, *HARDENED)
        return running[combo]

    yield _server
    for container in running.values():
        container.remove()


@pytest.fixture()
def server(servers, combo: Combo) -> Container:
    return servers(combo)


@each_built
def test_training_is_reproducible(built: Built, tmp_path: Path) -> None:
    again = train_into(built.train_image, tmp_path / "again")
    assert again["sha256"] == built.metadata["sha256"]
    assert again["framework_version"] == built.metadata["framework_version"]
    assert (built.project / "models" / built.metadata["artifact"]).is_file()


@each_built
def test_labels_come_from_the_build_and_the_dockerfile(built: Built) -> None:
    for image in (built.train_image, built.serve_image):
        labels = json.loads(run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", image]).stdout)
        for key, value in LABELS.items():  # the build's --label
            assert labels[key] == value, (image, key)
        # the Dockerfile's own, per image (not the base image's, which the build inherits)
        name = next((built.project / "src").iterdir()).name.replace("_", "-")  # copier.yml's image_name
        title = name + ("-train" if image == built.train_image else "")
        assert labels["org.opencontainers.image.title"] == title, (image, labels)
        assert labels["org.opencontainers.image.description"]


@each_built
def test_predict_single_and_batch(server: Container, built: Built) -> None:
    status, body = server.http("POST", "/predict", {"features": ROW})
    assert status == 200, body
    assert body["predictions"] == [0] and body["labels"] == ["setosa"]
    assert body["model_sha256"] == built.metadata["sha256"]
    status, body = server.http("POST", "/predict", {"instances": [ROW, [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]})
    assert status == 200 and len(body["predictions"]) == 3
    assert set(body["labels"]) <= {"setosa", "versicolor", "virginica"}


@pytest.mark.parametrize(
    "payload",
    [b'{"features": [1, 2]}', b'{"features": ["a", 1, 2, 3]}', b'{"features": [NaN, 1, 2, 3]}',
     b'{"instances": []}', b'{"instances": [[1,2,3,4]], "features": [1,2,3,4]}', b"{broken", b"[]", b"null",
     b'{"instances": [[1e400, 1, 2, 3]]}', b'{"features": {"a": 1}}'],
)
@each_built
def test_bad_payloads_are_4xx_never_5xx(server: Container, combo: Combo, payload: bytes) -> None:
    status, body = server.http("POST", "/predict", raw=payload)
    assert 400 <= status < 500, (status, body)
    assert body["detail"]


@each_built
def test_ready_health_metadata(server: Container, built: Built) -> None:
    assert server.http("GET", "/health") == (200, {"status": "ok"})
    assert server.http("GET", "/ready")[1]["model_sha256"] == built.metadata["sha256"]
    assert server.http("GET", "/metadata")[1]["sha256"] == built.metadata["sha256"]


@each_built
def test_runs_as_non_root_user(server: Container, built: Built, combo: Combo) -> None:
    base = MATRIX["base_image"][combo.base_image]
    uid = base["uid"]
    user = run(["docker", "image", "inspect", "--format", "{{.Config.User}}", built.serve_image]).stdout.strip()
    assert user == f"{uid}:{uid}"
    assert server.exec("python", "-c", "import os; print(os.getuid(), os.getgid())") == f"{uid} {uid}"
    if base["shell"]:
        assert server.exec("id", "-un") == base["user"] == "app"
    train_user = run(["docker", "run", "--rm", built.train_image, "id", "-un"]).stdout.strip()
    assert train_user == "app"


@each_built
def test_hardened_runtime_flags_hold(server: Container) -> None:
    config = json.loads(run(["docker", "inspect", "--format", "{{json .HostConfig}}", server.id]).stdout)
    assert config["ReadonlyRootfs"] is True and config["CapDrop"] == ["ALL"]
    # the server answered while read-only with no capabilities; writing outside /tmp must fail, /tmp must work
    write = "import sys; open(sys.argv[1], 'w').write('x')"
    assert run(["docker", "exec", server.id, "python", "-c", write, "/app/x"], check=False).returncode != 0
    assert run(["docker", "exec", server.id, "python", "-c", write, "/tmp/x"], check=False).returncode == 0


@pytest.mark.parametrize("combo", DISTROLESS, ids=lambda c: c.id)
def test_distroless_serve_image_has_no_shell(built: Built, combo: Combo) -> None:
    for shell in ("/bin/sh", "/bin/bash", "/busybox/sh"):
        result = run(["docker", "run", "--rm", "--entrypoint", shell, built.serve_image, "-c", "true"], check=False)
        assert result.returncode != 0, f"{shell} ran in the distroless serve image"


@each_built
def test_sigterm_stops_within_10s_with_exit_0(serve_container, combo: Combo) -> None:
    with serve_container(combo, *HARDENED) as server:
        started = time.monotonic()
        run(["docker", "stop", "--time", "10", server.id])
        elapsed = time.monotonic() - started
        assert server.state()["ExitCode"] == 0, server.logs()
    assert elapsed < 10, f"docker stop took {elapsed:.1f}s: SIGTERM was not handled, Docker had to SIGKILL"


@each_built
def test_sigterm_exits_0_when_the_server_is_not_pid_1(serve_container, combo: Combo) -> None:
    """Under an init (docker run --init, tini, a shell), SIGTERM's default action would be exit 143: a graceful
    stop must still be exit 0. One worker: the server process itself gets the signal (no supervisor)."""
    with serve_container(combo, *HARDENED, "--init", "-e", "WORKERS=1") as container:
        run(["docker", "stop", "--time", "10", container.id])
        assert container.state()["ExitCode"] == 0, container.logs()


@each_built
def test_healthcheck_turns_healthy(serve_container, combo: Combo) -> None:
    with serve_container(combo, *HARDENED, "--health-interval", "1s") as container:
        deadline = time.monotonic() + 60
        while container.state().get("Health", {}).get("Status") != "healthy":
            assert time.monotonic() < deadline, container.state().get("Health")
            time.sleep(0.5)


@each_built
def test_tampered_model_never_becomes_ready_and_exits_1(built: Built, tmp_path: Path) -> None:
    models = built.tampered_models(tmp_path / "models")
    artifact = models / built.metadata["artifact"]
    # every model source can be pointed at a directory: MODEL_URI empty means MODEL_DIR
    container = Container(built.serve_image, *HARDENED, *built.state_args(), "-e", "MODEL_URI=",
                          "-v", f"{models}:/app/models:ro", wait_ready=False)
    with container:
        deadline = time.monotonic() + 30
        while container.state()["Status"] != "exited":
            assert time.monotonic() < deadline, container.logs()
            time.sleep(0.3)
        assert container.state()["ExitCode"] == 1
        logs = container.logs()
        assert "does not match metadata.json" in logs and str(Path("/app/models") / artifact.name) in logs


@pytest.mark.parametrize("combo", BAKED, ids=lambda c: c.id)
def test_serve_build_without_a_model_fails_early_and_says_why(built: Built, combo: Combo, tmp_path: Path) -> None:
    project = tmp_path / "no-model"
    run(["cp", "-a", str(built.project), str(project)])
    for item in (project / "models").iterdir():
        if item.name != ".gitkeep":
            item.unlink()
    result = run(["docker", "build", "--progress=plain", "--target", "serve", "."], cwd=project, check=False,
                 env={"DOCKER_BUILDKIT": "1"})
    assert result.returncode != 0
    # the check's own output (a step's line: "#11 0.26 error: ..."), not the echo of the command that holds it
    assert re.search(r"^#\d+ [\d.]+ error: models/metadata.json not found: run 'make train' first", result.stderr,
                     re.MULTILINE), result.stderr[-3000:]


@each_built
def test_generated_project_tests_pass_in_the_train_image(built: Built) -> None:
    result = run(["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "-v", f"{built.project / 'tests'}:/app/tests:ro",
                  built.train_image, "python", "-m", "pytest", "-p", "no:cacheprovider", "tests"])
    summary = result.stdout.strip().splitlines()[-1]  # e.g. "==== 64 passed, 28 warnings in 14.19s ===="
    assert re.search(r"\b\d+ passed\b", summary) and not re.search(r"failed|error", summary), result.stdout[-3000:]
