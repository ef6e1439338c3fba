"""Promise: a container that dies under a make target leaves its reason on the user's terminal: its last log lines,
then one line naming the target and what to do, instead of compose's bare "exited (1)" or "unhealthy". `make dev` runs
the same macro as `make notebook` (its reloader keeps the container up on a bad setting, so compose only gives up
after the health check's 60 s start period: not repeated here)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

import pytest

from helpers.builds import Built
from helpers.combos import Combo, DEFAULT_COMBO
from helpers.users import UserProject

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def project(built_project: Callable[[Combo], Built]):
    root = Path(tempfile.mkdtemp(prefix="mldt-fail-"))
    try:
        project = UserProject(built_project(DEFAULT_COMBO), root, 0)
        yield project
        project.down()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(("target", "setting", "says"), [
    ("serve", "MAX_BATCH_SIZE=0", "configuration error: MAX_BATCH_SIZE="),
    ("train", "TEST_SIZE=2", "configuration error: TEST_SIZE="),
    ("notebook", "JUPYTER_PORT_RETRIES=not-a-number", "not-a-number"),
])
def test_a_container_that_dies_under_make_says_why(project: UserProject, target: str, setting: str,
                                                   says: str) -> None:
    env = project.dir / ".env"
    saved = env.read_text()
    env.write_text(saved + setting + "\n")
    try:
        result = project.make(target, check=False, timeout=600)
    finally:
        env.write_text(saved)
        project.down()
    assert result.returncode != 0, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert any(says in line for line in lines), result.stderr[-3000:]
    # then our line, and after it only make's own "make: *** [...] Error N"
    ours = [n for n, line in enumerate(lines) if line.startswith(f"make {target}: ")]
    assert len(ours) == 1 and f"then run make {target} again" in lines[ours[0]], result.stderr[-3000:]
    assert all(line.startswith("make: *** ") for line in lines[ours[0] + 1:]), lines[ours[0]:]
    assert ours[0] > lines.index(next(line for line in lines if says in line)), "the reason comes before what to do"
