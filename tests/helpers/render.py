"""Rendering the template as users do: Copier's API for static checks, its CLI where the copy task must run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import copier

from helpers.answers import REPO

BIN = Path(sys.executable).parent


def render(dst: Path, answers: dict[str, Any], *, tasks: bool = False) -> Path:
    """Render the working tree of the template (uncommitted changes included) into dst."""
    copier.run_copy(str(REPO), dst, data=answers, defaults=True, unsafe=True, vcs_ref="HEAD", skip_tasks=not tasks,
                    quiet=True)
    return dst


def copier_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "copier"), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900)
