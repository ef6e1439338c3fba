"""Promise: the rendered compose.yaml trains (profile `train`), serves healthy with `up --wait`, and `down -v`
leaves nothing behind. Every pair of answers (the pairwise renders, static-only ones included) passes `docker compose
config`."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Callable

import pytest
import yaml

from helpers.builds import Built
from helpers.combos import Combo, COMBOS, ENGINE_COMBOS, PAIRWISE_COMBOS
from helpers.engine import free_port, IMAGE_PREFIX, remove_images, run



@pytest.mark.parametrize("combo", PAIRWISE_COMBOS, ids=lambda c: c.id)
def test_compose_config_is_valid(render_combo: Callable[[Combo], Path], combo: Combo) -> None:
    if not shutil.which("docker") or run(["docker", "compose", "version"], check=False).returncode != 0:
        pytest.skip("docker compose CLI not installed")
    project = render_combo(combo)
    result = run(["docker", "compose", "--profile", "train", "config", "--format", "json"], cwd=project)
    config = json.loads(result.stdout)
    assert {"serve", "train"} <= set(config["services"])
    assert "healthcheck" not in config["services"]["serve"], "the serve image's HEALTHCHECK is the one"
    for name, service in config["services"].items():  # the x-hardened anchor, merged by compose itself
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert service["security_opt"] == ["no-new-privileges:true"] and service["tmpfs"] == ["/tmp"], name
        assert "org.opencontainers.image.revision" in service["build"]["labels"], name


@pytest.mark.engine
@pytest.mark.parametrize("combo", ENGINE_COMBOS, ids=lambda c: c.id)
def test_compose_train_then_up_wait_healthy_then_down_clean(
    built_project: Callable[[Combo], Built], combo: Combo, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    built = built_project(combo)
    project = tmp_path / "project"
    run(["cp", "-a", str(built.project), str(project)])
    name = f"mldt-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {"COMPOSE_PROJECT_NAME": name, "SERVE_PORT": str(port), "IMAGE": f"{IMAGE_PREFIX}/{name}", "TAG": "t",
           "HOST_UID": "10001", "HOST_GID": "10001"}
    (project / "models").chmod(0o777)
    files = ["compose.yaml"]
    if combo.framework == "pytorch":
        # the test's wheel index is on this machine's loopback: builds must use the host network, as the cached
        # layers of the first builds did (the network mode is part of BuildKit's cache key)
        (project / "compose.build.yaml").write_text(
            "services:\n  serve:\n    build:\n      network: host\n"
            "  train:\n    build:\n      network: host\n"
        )
        files.append("compose.build.yaml")
    env["COMPOSE_FILE"] = ":".join(files)
    try:
        # train through compose: writes models/ on the host through the bind mount
        for item in (project / "models").glob("*.json"):
            item.unlink()
        run(["docker", "compose", "--profile", "train", "run", "--rm", "train"], cwd=project, env=env)
        metadata = json.loads((project / "models/metadata.json").read_text())
        assert metadata["sha256"] == built.metadata["sha256"], "compose training differs from docker run training"

        if combo.model_source == "downloaded":
            # the bundle server of the tests listens on 127.0.0.1: the service joins the host network for it
            uri, sha = request.getfixturevalue("bundle_server").publish(Built(combo, project, "", "", {}))
            (project / "compose.test.yaml").write_text(
                "services:\n  serve:\n    network_mode: host\n    ports: !reset []\n    environment:\n"
                f"      PORT: '{port}'\n      MODEL_URI: '{uri}'\n      MODEL_SHA256: '{sha}'\n"
            )
            files.append("compose.test.yaml")
            env["COMPOSE_FILE"] = ":".join(files)
        run(["docker", "compose", "up", "--build", "--wait", "--wait-timeout", "120", "serve"], cwd=project, env=env)
        ps = json.loads("[" + ",".join(run(["docker", "compose", "ps", "--format", "json"], cwd=project,
                                           env=env).stdout.split("\n")[:-1]) + "]")
        assert [c["Health"] for c in ps if c["Service"] == "serve"] == ["healthy"], ps
        import urllib.request

        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", method="POST",
                                         data=b'{"features": [5.1, 3.5, 1.4, 0.2]}',
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["labels"] == ["setosa"]
    finally:
        run(["docker", "compose", "--profile", "train", "down", "-v", "--remove-orphans"], cwd=project, env=env,
            check=False)
        remove_images(env["IMAGE"])
    label = f"label=com.docker.compose.project={name}"
    for kind in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
        left = run(["docker", *kind, "-q", "--filter", label]).stdout.split()
        assert left == [], f"docker {' '.join(kind)} still lists {left} after down -v"


def test_compose_file_is_plain_compose_spec(render_combo: Callable[[Combo], Path]) -> None:
    compose = yaml.safe_load((render_combo(COMBOS[0]) / "compose.yaml").read_text())
    assert "version" not in compose and set(compose) <= {"name", "include", "services", "secrets", "volumes", "x-build",
                                                         "x-hardened", "x-gpu", "x-dev", "x-dev-check"}
