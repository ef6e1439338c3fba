"""checkov, from its own venv (its dependencies clash with the dev tools'), run offline over a folder."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from helpers.answers import REPO

CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"


def run_checkov(directory: Path, framework: str) -> dict[str, Any]:
    if not CHECKOV.is_file():
        pytest.fail(f"{CHECKOV} missing: `make .venv-checkov/.installed` installs checkov (requirements-checkov.txt)",
                    pytrace=False)
    result = subprocess.run([str(CHECKOV), "--directory", str(directory), "--framework", framework, "--output", "json",
                             "--skip-download"], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"})
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report
