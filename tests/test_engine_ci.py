"""Promise: on a real engine, the make targets the generated pipeline runs (lint, lock-check, build, train, test,
smoke) pass for the default render, in the pipeline's order; `make lock-check` and the pre-commit hook pass on a
fresh copy, fail with one line after an edit to train.in, and pass again after `make lock`.
Scanning, SBOM, pushing and attestations need a vulnerability database or a registry: tests/test_ci.py checks them
statically (`static-only` ids)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

from helpers.answers import MATRIX
from helpers.combos import Combo, DEFAULT_COMBO, ENGINE_COMBOS
from helpers.engine import IMAGE_PREFIX, remove_images, run
from helpers.render import BIN

pytestmark = pytest.mark.engine

# what cannot run here: no vulnerability database (scan, sbom), no registry (release)
STATIC_ONLY = {"scan", "sbom", "release"}


@pytest.fixture(scope="module")
def ci_project(locked_project: Callable[[Combo], Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh copy of the locked default project (as `copier copy` left it), rendered with ci=github."""
    locked = locked_project(DEFAULT_COMBO)
    dst = tmp_path_factory.mktemp("ci-project") / "project"
    shutil.copytree(locked, dst)
    assert (dst / ".github/workflows/ci.yml").is_file(), "the default answers render the GitHub workflow"
    yield dst
    remove_images(f"{IMAGE_PREFIX}/ci-{DEFAULT_COMBO.id}")


def env_for(project: Path, pypi_tool: Callable[[str, str], str]) -> dict[str, str]:
    """PATH with the test tools (hadolint next to the interpreter, ruff from PyPI); images named for this run."""
    ruff = Path(pypi_tool("ruff", f"ruff=={MATRIX['tools']['ruff']}")).parent
    return {"PATH": os.pathsep.join([str(BIN), str(ruff), os.environ["PATH"]]),
            "IMAGE": f"{IMAGE_PREFIX}/ci-{DEFAULT_COMBO.id}", "TAG": "ci"}


def test_the_pipeline_make_targets_run_in_order_on_the_default_render(ci_project: Path,
                                                                      pypi_tool: Callable[[str, str], str]) -> None:
    flow = yaml.safe_load((ci_project / ".github/workflows/ci.yml").read_text())
    # the build-test job of the render's one platform (PLATFORM is its matrix entry's, which the job's env sets)
    platform = flow["jobs"]["build-test"]["strategy"]["matrix"]["include"][0]["platform"]
    steps = [step["run"].replace('PLATFORM="$PLATFORM"', f"PLATFORM={platform}")
             for job in ("lint", "lock-check", "build-test") for step in flow["jobs"][job]["steps"]
             if step.get("run", "").startswith("make ")]
    targets = [[word for word in s.split() if "=" not in word][-1] for s in steps]
    assert targets == ["lint", "lock-check", "image-train", "train", "test", "image-serve", "smoke", "scan", "sbom"]
    env = env_for(ci_project, pypi_tool)
    ran = []
    for step, target in zip(steps, targets, strict=True):
        if target in STATIC_ONLY:
            continue
        result = run(step.split(), cwd=ci_project, env=env, timeout=1800, check=False)
        assert result.returncode == 0, f"{step}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        ran.append((step, result.stdout + result.stderr))
    outputs = {step.split(" PLATFORM=")[0]: output for step, output in ran}
    assert platform == "linux/amd64" and all(f"PLATFORM={platform}" in step for step, _ in ran[2:])
    assert "passed" in outputs["make -o build-train test"]
    assert "stopped on SIGTERM with exit 0" in outputs["make smoke"]
    assert (ci_project / "models/metadata.json").is_file()
    # -o build-train: the train image came from `make image-train`, compose did not build it again
    assert "Building" not in outputs["make -o build-train train"]


def test_smoke_fails_with_one_line_when_the_image_cannot_serve(ci_project: Path) -> None:
    result = run([sys.executable, "scripts/smoke.py", f"{IMAGE_PREFIX}/no-such-image:none"], cwd=ci_project,
                 check=False, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    expected = f"smoke: {IMAGE_PREFIX}/no-such-image:none: docker run failed"
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_lock_check_and_pre_commit_follow_an_edit_to_train_in(ci_project: Path,
                                                             tmp_path_factory: pytest.TempPathFactory,
                                                             pypi_tool: Callable[[str, str], str]) -> None:
    pre_commit = BIN / "pre-commit"
    assert pre_commit.is_file(), f"pre-commit is a test dependency, not found next to {sys.executable}"
    project = tmp_path_factory.mktemp("lock-check") / "project"
    shutil.copytree(ci_project, project, ignore=shutil.ignore_patterns("models", "dist"))
    (project / "models").mkdir()
    env = {**env_for(project, pypi_tool), "PRE_COMMIT_HOME": str(tmp_path_factory.getbasetemp() / "pre-commit")}
    run(["git", "init", "-q"], cwd=project)
    run(["git", "add", "-A"], cwd=project)

    def hooks() -> tuple[int, str]:
        result = run([str(pre_commit), "run", "--all-files"], cwd=project, env=env, check=False, timeout=900)
        return result.returncode, result.stdout + result.stderr

    assert run(["make", "lock-check"], cwd=project, env=env, check=False).returncode == 0
    code, output = hooks()
    assert code == 0, output

    with (project / "requirements/train.in").open("a") as f:
        f.write("packaging>=23\n")
    stale = "requirements/train.txt is stale against train.in: run make lock"
    result = run(["make", "lock-check"], cwd=project, env=env, check=False)
    assert result.returncode != 0 and stale in result.stderr.splitlines(), result.stderr
    code, output = hooks()
    assert code != 0 and stale in output.splitlines(), output

    run(["make", "lock"], cwd=project, env=env, timeout=1800)
    assert "packaging==" in (project / "requirements/train.txt").read_text()
    assert run(["make", "lock-check"], cwd=project, env=env, check=False).returncode == 0
    run(["git", "add", "-A"], cwd=project)
    code, output = hooks()
    assert code == 0, output


@pytest.mark.parametrize("combo", [c for c in ENGINE_COMBOS if c.model_source != DEFAULT_COMBO.model_source],
                         ids=lambda c: c.id)
def test_make_smoke_serves_every_model_source(built_project, combo: Combo) -> None:
    """mounted: models/ reaches the container through a volume; downloaded: the bundle of `make publish` is served
    as a file:// MODEL_URI with its sha256. Both without bind mounts, as on a remote CI engine."""
    built = built_project(combo)
    image, tag = built.serve_image.rsplit(":", 1)
    result = run(["make", "smoke", f"IMAGE={image}", f"TAG={tag}"], cwd=built.project, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "stopped on SIGTERM with exit 0" in result.stdout
