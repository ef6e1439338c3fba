"""Promise: each model source serves only a model it can verify; every failure is one clear line and exit 1."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

from helpers.answers import MATRIX
from helpers.builds import Built
from helpers.combos import Combo, ENGINE_COMBOS
from helpers.containers import Container
from helpers.engine import run

pytestmark = pytest.mark.engine
HARDENED = ("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL")
MOUNTED = [c for c in ENGINE_COMBOS if c.model_source == "mounted"]
DOWNLOADED = [c for c in ENGINE_COMBOS if c.model_source == "downloaded"]


def exits_with(container: Container, message: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while container.state()["Status"] != "exited":
        assert time.monotonic() < deadline, container.logs()
        time.sleep(0.3)
    logs = container.logs()
    assert container.state()["ExitCode"] == 1, logs
    assert message in logs, logs
    assert "Traceback" not in logs, "a failure must be one clear line, not a traceback"
    return logs


@pytest.mark.parametrize("combo", MOUNTED, ids=lambda c: c.id)
def test_mounted_missing_or_empty_model_exits_1_naming_the_path(
    built_project: Callable[[Combo], Built], combo: Combo, tmp_path: Path
) -> None:
    built = built_project(combo)
    image = built.serve_image
    with Container(image, *HARDENED, *built.state_args(), wait_ready=False) as container:
        exits_with(container, "/app/models: no such directory")
    empty = tmp_path / "empty"
    empty.mkdir()
    with Container(image, *HARDENED, *built.state_args(), "-v", f"{empty}:/app/models:ro",
                   wait_ready=False) as container:
        exits_with(container, "/app/models/metadata.json: missing")


@pytest.fixture()
def published(built_project: Callable[[Combo], Built], bundle_server, request: pytest.FixtureRequest):
    combo = request.param
    built = built_project(combo)
    uri, sha = bundle_server.publish(built)
    return combo, built, uri, sha


@pytest.mark.parametrize("published", DOWNLOADED, ids=lambda c: c.id, indirect=True)
def test_downloaded_is_cached_and_restarts_without_the_server(published, bundle_server, tmp_path: Path) -> None:
    combo, built, uri, sha = published
    volume = f"mldt-cache-{uuid.uuid4().hex[:8]}"
    env = ["-e", f"MODEL_URI={uri}", "-e", f"MODEL_SHA256={sha}", "-v", f"{volume}:/app/var/cache"]
    try:
        with Container(built.serve_image, *HARDENED, *env, host_network=True) as first:
            assert first.http("POST", "/predict", {"features": [5.1, 3.5, 1.4, 0.2]})[1]["labels"] == ["setosa"]
        gone = f"http://127.0.0.1:9/{Path(uri).name}"  # nothing listens there: any download attempt fails
        with Container(built.serve_image, *HARDENED, "-e", f"MODEL_URI={gone}", "-e", f"MODEL_SHA256={sha}",
                       "-v", f"{volume}:/app/var/cache", host_network=True) as second:
            assert f"model bundle {sha[:12]} found in cache" in second.logs()
            assert second.http("GET", "/ready")[0] == 200
    finally:
        run(["docker", "volume", "rm", "-f", volume], check=False)


@pytest.mark.parametrize("published", DOWNLOADED, ids=lambda c: c.id, indirect=True)
def test_downloaded_refuses_what_it_cannot_verify(published) -> None:
    combo, built, uri, sha = published
    uid = MATRIX["base_image"][combo.base_image]["uid"]
    cache = ("--tmpfs", f"/app/var/cache:uid={uid},gid={uid}")
    cases = [
        (["-e", f"MODEL_URI={uri}", "-e", f"MODEL_SHA256={'0' * 64}"], "does not match MODEL_SHA256"),
        (["-e", f"MODEL_URI={uri}", "-e", "MODEL_SHA256="], "MODEL_SHA256 is required"),
        (["-e", f"MODEL_URI={uri}-missing", "-e", f"MODEL_SHA256={sha}"], "HTTP 404"),
    ]
    for args, message in cases:
        with Container(built.serve_image, *HARDENED, *cache, *args, "-e", "DOWNLOAD_RETRIES=0", wait_ready=False,
                       host_network=True) as container:
            exits_with(container, message)
    with Container(built.serve_image, *HARDENED, *cache, "-e", f"MODEL_URI={uri}", "-e", "MODEL_SHA256=",
                   "-e", "ALLOW_UNVERIFIED_MODEL=true", host_network=True) as container:
        assert "NOT VERIFIED" in container.logs()


@pytest.mark.parametrize("combo", [c for c in ENGINE_COMBOS if c.log_predictions], ids=lambda c: c.id)
def test_prediction_log_writes_json_lines(serve_container, built_project: Callable[[Combo], Built],
                                          combo: Combo) -> None:
    """log_predictions=true: one JSON line per request in the prediction-log volume."""
    image = built_project(combo).serve_image
    volume = f"mldt-log-{uuid.uuid4().hex[:8]}"
    try:
        with serve_container(combo, *HARDENED, log_volume=volume) as server:
            for _ in range(3):
                assert server.http("POST", "/predict", {"instances": [[5.1, 3.5, 1.4, 0.2]] * 2})[0] == 200
            run(["docker", "stop", server.id])  # flushes the log on shutdown
            out = run(["docker", "run", "--rm", "-v", f"{volume}:/log", "--entrypoint", "cat",
                       image, "/log/predictions.jsonl"]).stdout
    finally:
        run(["docker", "volume", "rm", "-f", volume], check=False)
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3
    assert lines[0]["input_shape"] == [2, 4] and lines[0]["output"] == [0, 0]
    assert lines[0]["model_sha256"] and lines[0]["latency_ms"] >= 0 and lines[0]["time"].endswith("Z")
