"""Helpers shared by the tests: the template's questions, the answer matrix, rendering and the Docker engine."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import copier
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_ANSWERS = {"project_name": "Iris Classifier"}

# What this machine (and CI) can build: the engine has local images for python:3.11/3.13-slim and distroless
# python3-debian13 only. Anything else is checked statically and says so in its test id.
BUILDABLE_PYTHONS = {"3.11", "3.13"}
BUILDABLE_BASES = {"slim", "distroless"}


def _load_copier_yml() -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        pass

    def include(loader: yaml.Loader, node: yaml.Node) -> list[Any]:
        docs: list[Any] = []
        for path in sorted(REPO.glob(str(loader.construct_scalar(node)))):
            docs.extend(yaml.load_all(path.read_text(), Loader=Loader))
        return docs

    Loader.add_constructor("!include", include)
    merged: dict[str, Any] = {}
    for doc in yaml.load_all((REPO / "copier.yml").read_text(), Loader=Loader):
        for part in doc if isinstance(doc, list) else [doc]:
            merged.update(part or {})
    return merged


CONFIG = _load_copier_yml()
QUESTIONS = {k: v for k, v in CONFIG.items() if not k.startswith("_") and v.get("when") is not False}
MATRIX = CONFIG["matrix"]["default"]


def choices(question: str) -> list[Any]:
    """The values a question offers, read from copier.yml (so new values join the matrix by themselves)."""
    offered = QUESTIONS[question].get("choices", {})
    return list(offered.values()) if isinstance(offered, dict) else list(offered)


@dataclass(frozen=True)
class Combo:
    python_version: str
    framework: str
    base_image: str
    model_source: str

    @property
    def answers(self) -> dict[str, Any]:
        return {**DEFAULT_ANSWERS, **self.__dict__}

    @property
    def buildable(self) -> bool:
        return self.python_version in BUILDABLE_PYTHONS and self.base_image in BUILDABLE_BASES

    @property
    def id(self) -> str:
        kind = "built" if self.buildable else "static-only"
        return f"{self.framework}-{self.base_image}-{self.model_source}-py{self.python_version}-{kind}"


def allowed(combo: Combo) -> bool:
    """Mirrors the validators: combinations the questions refuse are tested as refusals, not renders."""
    return (
        combo.python_version in MATRIX["base_image"][combo.base_image]["pythons"]
        and combo.python_version in MATRIX["framework"][combo.framework]["pythons"]
    )


ALL_COMBOS = [
    Combo(*values)
    for values in itertools.product(
        choices("python_version"), choices("framework"), choices("base_image"), choices("model_source")
    )
]
COMBOS = [c for c in ALL_COMBOS if allowed(c)]
REFUSED_COMBOS = [c for c in ALL_COMBOS if not allowed(c)]
DEFAULT_COMBO = Combo(
    QUESTIONS["python_version"]["default"],
    QUESTIONS["framework"]["default"],
    QUESTIONS["base_image"]["default"],
    QUESTIONS["model_source"]["default"],
)


def render(dst: Path, answers: dict[str, Any], *, tasks: bool = False) -> Path:
    """Render the working tree of the template (uncommitted changes included) into dst."""
    copier.run_copy(
        str(REPO),
        dst,
        data=answers,
        defaults=True,
        unsafe=True,
        vcs_ref="HEAD",
        skip_tasks=not tasks,
        quiet=True,
    )
    return dst


def copier_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "copier"), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900
    )


def docker_available() -> tuple[bool, str]:
    if not shutil.which("docker"):
        return False, "no docker CLI on PATH"
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False, "`docker info` timed out"
    if result.returncode != 0:
        return False, "no Docker engine answers (`docker info` failed)"
    return True, ""


def engine_required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or os.environ.get("REQUIRE_ENGINE") == "1"


def run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 900, check: bool = True,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
            f"--- stderr\n{result.stderr[-4000:]}"
        )
    return result
