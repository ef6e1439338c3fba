"""Promise: whatever goes wrong while locating, reading, verifying or loading the model (an unreadable folder or
file, a truncated artifact, a model module raising something unexpected), the server logs one line naming the path
and the cause and exits 1 within seconds: never alive-but-never-ready."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import pytest

from helpers.answers import MATRIX
from helpers.builds import Built
from helpers.combos import Combo, ENGINE_COMBOS
from helpers.containers import Container

HARDENED = ("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL")
MOUNTED = next(c for c in ENGINE_COMBOS if c.model_source == "mounted")
pytestmark = [pytest.mark.engine, pytest.mark.chain(MOUNTED)]
DEADLINE_S = 60  # start-up included, on a loaded 2-core machine (11-15 s seen): a guard against hanging


def ends_with_one_line(container: Container, *expected: str) -> str:
    started = time.monotonic()
    while container.state()["Status"] != "exited":
        assert time.monotonic() - started < DEADLINE_S, f"still running after {DEADLINE_S} s:\n{container.logs()}"
        time.sleep(0.2)
    logs = container.logs()
    assert container.state()["ExitCode"] == 1, logs
    errors = [line for line in logs.splitlines() if " ERROR " in line]
    assert len(errors) == 1, logs
    for text in expected:
        assert text in errors[0], logs
    assert "Traceback" not in logs, logs
    return errors[0]


@pytest.fixture()
def model_copy(built_project: Callable[[Combo], Built], tmp_path: Path) -> tuple[Built, Path]:
    built = built_project(MOUNTED)
    models = tmp_path / "models"
    shutil.copytree(built.project / "models", models)
    for item in models.iterdir():
        item.chmod(0o644)
    models.chmod(0o755)
    return built, models


def serve(built: Built, models: Path, *extra: str) -> Container:
    return Container(built.serve_image, *HARDENED, *built.state_args(), "-v", f"{models}:/app/models:ro", *extra,
                     wait_ready=False)


def test_an_unreadable_model_folder(model_copy: tuple[Built, Path]) -> None:
    built, models = model_copy
    models.chmod(0o700)  # root's; the server runs as the image's user
    with serve(built, models) as container:
        ends_with_one_line(container, "/app/models", "Permission denied",
                           f"uid {MATRIX['base_image'][MOUNTED.base_image]['uid']}")


def test_an_unreadable_artifact(model_copy: tuple[Built, Path]) -> None:
    built, models = model_copy
    artifact = models / built.metadata["artifact"]
    artifact.chmod(0o600)
    with serve(built, models) as container:
        ends_with_one_line(container, f"/app/models/{artifact.name}", "Permission denied")


def test_a_truncated_artifact_whose_metadata_matches(model_copy: tuple[Built, Path]) -> None:
    built, models = model_copy
    artifact = models / built.metadata["artifact"]
    data = artifact.read_bytes()[: artifact.stat().st_size // 2]
    artifact.write_bytes(data)
    metadata = json.loads((models / "metadata.json").read_text())
    metadata["sha256"] = hashlib.sha256(data).hexdigest()  # so verification passes and the loader meets it
    (models / "metadata.json").write_text(json.dumps(metadata))
    with serve(built, models) as container:
        ends_with_one_line(container, f"/app/models/{artifact.name}", "cannot be loaded")


def test_a_model_module_raising_an_unexpected_error(model_copy: tuple[Built, Path], tmp_path: Path) -> None:
    built, models = model_copy
    src = tmp_path / "src"
    shutil.copytree(built.project / "src", src)
    runtime = next(src.glob("*/runtime.py"))
    runtime.write_text(runtime.read_text() + "\n\ndef load(path):\n    raise RuntimeError('boom from model code')\n")
    with serve(built, models, "-v", f"{src}:/app/src:ro") as container:
        ends_with_one_line(container, "RuntimeError: boom from model code")
