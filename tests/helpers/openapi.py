"""The OpenAPI document a render's server publishes, read without a model, an engine or the ML framework."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers.answers import REPO

FIXTURES = REPO / "tests/fixtures/openapi"

# Runs in the render's src/: the app factory wherever the release keeps it (serving/app.py, formerly app.py), with a
# stand-in for runtime.py (which imports the framework; the API does not depend on it).
DUMP = """
import importlib, json, sys, types
package = sys.argv[1]
runtime = types.ModuleType(package + ".runtime")
runtime.NAME = "native"; runtime.FRAMEWORK = "stand-in"; runtime.metadata = lambda: {}
runtime.INPUT = sys.argv[2]  # "text" (framework=transformers) or "numbers": the request schemas differ
sys.modules[runtime.__name__] = runtime
try:
    factory = importlib.import_module(package + ".serving.app")
except ModuleNotFoundError:
    factory = importlib.import_module(package + ".app")
from importlib import import_module
settings = import_module(package + ".config").ServeSettings(_env_file=None)
print(json.dumps(factory.create_app(settings).openapi(), indent=2, sort_keys=True))
"""


def openapi_of(project: Path) -> dict[str, Any]:
    package = next(p.name for p in (project / "src").iterdir() if (p / "__init__.py").is_file())
    answers = (project / ".copier-answers.yml").read_text()
    kind = "text" if "\nframework: transformers\n" in answers else "numbers"
    env = {key: value for key, value in os.environ.items() if key not in ("MODEL_DIR", "MAX_BATCH_SIZE", "PORT")}
    result = subprocess.run([sys.executable, "-c", DUMP, package, kind], cwd=project, capture_output=True, text=True,
                            env={**env, "PYTHONPATH": str(project / "src")}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def digest(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]
