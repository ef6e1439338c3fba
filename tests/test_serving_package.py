"""Promise: the generated package reads like a codebase a newcomer can extend. The user's files on top, the
template's serving plumbing under serving/ (one APIRouter per concern around one ServingState); the Python the
template ships is plain Python that ruff reads in this repository, and the serving code passes mypy --strict."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest

from helpers.answers import REPO
from helpers.combos import DEFAULT_COMBO, ONNX_BUILDS, REGISTRY_COMBOS, Combo

PACKAGE_SOURCE = REPO / "template/src/{{package_name}}"
# Render-time choices of whole modules (the framework's model, the serve runtime, the converter) and the one module
# of answers; everything else is plain Python.
JINJA_MODULES = {"model.py.jinja", "runtime.py.jinja", "_project.py.jinja",
                 "{% if serve_runtime == 'onnx' %}onnx_export.py{% endif %}.jinja"}
USER_FILES = {"model.py", "train.py", "config.py", "artifacts.py"}
SERVING = {"app.py", "state.py", "schemas.py", "batching.py", "workers.py", "limits.py", "metrics.py", "predlog.py",
           "source.py", "routes/predict.py", "routes/health.py", "routes/oip.py", "routes/metrics.py"}
TYPED = [DEFAULT_COMBO, ONNX_BUILDS[0], replace(DEFAULT_COMBO, framework="xgboost", gpu=True), REGISTRY_COMBOS[0]]
OPTIONAL_MODULES = ("registry.py", "promote.py")  # tracking=mlflow: whole modules, by copier's conditional file names


def package(project: Path) -> Path:
    return next(p for p in (project / "src").iterdir() if (p / "__init__.py").is_file())


def test_python_modules_are_plain_python_where_they_can_be() -> None:
    jinja = {str(p.relative_to(PACKAGE_SOURCE)) for p in PACKAGE_SOURCE.rglob("*.jinja")}
    assert jinja == JINJA_MODULES, "a module became a template: pass the answer through _project.py instead"
    for path in PACKAGE_SOURCE.rglob("*.py"):
        assert "{{" not in path.read_text() and "{%" not in path.read_text(), path


def test_layout_puts_the_users_files_on_top(render_combo: Callable[[Combo], Path]) -> None:
    root = package(render_combo(DEFAULT_COMBO))
    assert USER_FILES <= {p.name for p in root.glob("*.py")}
    assert {str(p.relative_to(root / "serving")) for p in (root / "serving").rglob("*.py")} >= SERVING
    app = (root / "serving/app.py").read_text()
    assert len(app.splitlines()) <= 80, "serving/app.py is the factory: state, middleware, routers, error handlers"
    assert "def load_model" in (root / "artifacts.py").read_text(), "artifacts.py owns loading and verification"
    for route in (root / "serving/routes").glob("*.py"):
        if route.name != "__init__.py":
            assert re.search(r"APIRouter\(", route.read_text()), f"{route.name}: one APIRouter per module"


def test_ruff_reads_the_template_source_itself(render_combo: Callable[[Combo], Path]) -> None:
    config = render_combo(DEFAULT_COMBO) / "pyproject.toml"
    optional = package(render_combo(REGISTRY_COMBOS[0]))  # the conditional file names end in {% endif %}, not .py
    sources = [str(p) for p in PACKAGE_SOURCE.rglob("*.py")] + [str(optional / name) for name in OPTIONAL_MODULES]
    result = subprocess.run([str(Path(sys.executable).parent / "ruff"), "check", "--no-cache", "--config", str(config),
                             *sources], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("combo", TYPED, ids=lambda c: c.id)
def test_serving_code_passes_mypy_strict(render_combo: Callable[[Combo], Path], combo: Combo, tmp_path: Path) -> None:
    root = package(render_combo(combo))
    name = root.name
    # model.py is the user's, runtime.py imports the framework (or ONNX Runtime): outside the strict check
    config = tmp_path / "mypy.ini"
    config.write_text(f"[mypy]\nstrict = True\ncache_dir = {tmp_path / 'cache'}\n"
                      f"[mypy-{name}.model,{name}.runtime,{name}.onnx_export]\nfollow_imports = skip\n")
    files = [str(root / "serving"), *(str(root / f) for f in ("artifacts.py", "config.py", "serve.py", "_cpu.py",
                                                              "_project.py", "healthcheck.py", "__init__.py",
                                                              "signing.py", *OPTIONAL_MODULES) if (root / f).is_file())]
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config), *files],
                            capture_output=True, text=True, cwd=root.parent.parent, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
