"""Promise: a code-only change rebuilds only the last layers; every dependency layer comes from the cache."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Callable

import pytest

from helpers.builds import Built
from helpers.combos import Combo, DEFAULT_COMBO
from helpers.engine import run

pytestmark = pytest.mark.engine


def step_status(log: str) -> dict[str, str]:
    """'[stage n/m] INSTRUCTION' -> 'CACHED' or 'DONE', from BuildKit's plain progress output."""
    names = {step: f"[{stage}] {text}" for step, stage, text in
             re.findall(r"^(#\d+) \[([^\]]+)\] (.*)$", log, re.MULTILINE)
             if not text.startswith("FROM ")}  # resolving a base image is not a layer of ours
    status = {}
    for step, name in names.items():
        if re.search(rf"^{step} CACHED$", log, re.MULTILINE):
            status[name] = "CACHED"
        elif re.search(rf"^{step} DONE", log, re.MULTILINE):
            status[name] = "DONE"
    return status


def test_code_change_reuses_dependency_layers(built_project: Callable[[Combo], Built], tmp_path: Path) -> None:
    built = built_project(DEFAULT_COMBO)
    project = tmp_path / "project"
    run(["cp", "-a", str(built.project), str(project)])
    app_py = next((project / "src").glob("*/serving/app.py"))
    app_py.write_text(app_py.read_text() + f"\n# a code-only change {uuid.uuid4()}\n")  # new on every run
    copy = Built(built.combo, project, built.train_image, built.serve_image + "-cache", {})
    log = copy.build("serve")
    status = step_status(log)
    deps = {k: v for k, v in status.items() if k.startswith(("[serve-lock", "[serve-venv", "[runtime", "[base"))}
    assert deps and all(v == "CACHED" for v in deps.values()), deps
    rebuilt = [k for k, v in status.items() if v == "DONE" and k.startswith("[serve")]
    assert any("COPY src/" in k for k in rebuilt), status
    assert not any("opt/venv" in k for k in rebuilt), f"the venv layer was rebuilt: {rebuilt}"
