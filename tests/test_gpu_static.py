"""Promise: GPU renders are what an expert would write. None of this is built: there is no GPU, no nvidia/cuda
image and no CUDA wheel index here, so these checks are static (render, parse, lock inputs, compose config) and
their ids say `static-only`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from helpers.dockerfile import Dockerfile
from helpers.answers import MATRIX, QUESTIONS, choices
from helpers.combos import Combo, COMBOS
from helpers.engine import run
from helpers.render import render
from test_dockerfile_lint import hadolint_findings

GPU = [c for c in COMBOS if c.gpu]
CPU = [c for c in COMBOS if not c.gpu]
RenderCombo = Callable[[Combo], Path]


def default_max_workers(project: Path) -> int:
    """config.DEFAULT_MAX_WORKERS of a render: server processes by default, at most (imported, as the server does)."""
    package = next(project.glob("src/*/config.py")).parent.name
    result = subprocess.run([sys.executable, "-c", f"from {package}.config import DEFAULT_MAX_WORKERS as n; print(n)"],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(project / "src")},
                            check=True, timeout=600)
    return int(result.stdout)


def test_cuda_choices_are_the_matrix_releases() -> None:
    assert choices("cuda_version") == list(MATRIX["cuda"])
    for name, spec in MATRIX["framework"].items():
        if spec["gpu"]:
            assert set(spec["gpu"]["cuda"]) <= set(MATRIX["cuda"]), name


@pytest.mark.static
@pytest.mark.parametrize("combo", GPU, ids=lambda c: c.id)
def test_gpu_render_static_only_images_wheels_and_env(render_combo: RenderCombo, combo: Combo) -> None:
    project = render_combo(combo)
    answers = (project / ".copier-answers.yml").read_text()
    cuda_version = next(line.split(": ")[1].strip("'") for line in answers.splitlines() if line.startswith("cuda_version:"))
    cuda = MATRIX["cuda"][cuda_version]
    assert cuda_version in MATRIX["framework"][combo.framework]["gpu"]["cuda"]
    dockerfile = Dockerfile.read(project / "Dockerfile")
    if combo.base_image == "nvidia-cuda":
        flavor = combo.cuda_flavor or MATRIX["framework"][combo.framework]["gpu"]["flavor"]
        tag = f"nvidia/cuda:{cuda['image']}-{flavor}-ubuntu24.04"
        assert dockerfile.global_args["RUNTIME_IMAGE"] == tag == dockerfile.global_args["BUILDER_IMAGE"]
        python_apt = dockerfile.stages["base"].all("RUN")[0].args
        assert '"python3.12=3.12.*"' in python_apt and "/usr/local/bin/python" in python_apt
        # apt's Python on the builder: no cross install (VENV), each venv made by and for Ubuntu's python3.12
        assert "VENV" not in dockerfile.global_args and "cross-build" not in dockerfile.stages
        for stage, lock in (("train-venv", "train.txt"), ("serve-venv", "1.txt"), ("serve-venv", "2.txt")):
            call = next(c for c in dockerfile.stages[stage].venv_calls() if c[2] == f"/tmp/{lock}")
            assert call[0] == "/usr/bin/python3.12", call
            if stage == "serve-venv":  # the serve image's interpreter, on the serve image's own python3.12
                assert call[call.index("--python") + 1] == "/usr/bin/python3.12", call
        assert '"python3.12=3.12.*"' in dockerfile.stages["serve-runtime"].all("RUN")[0].args
    for reading in Dockerfile.each(project / "Dockerfile"):  # both images, however their venvs are installed
        for target in ("train", "serve"):
            env = " ".join(i.args for stage in reading.chain(target) for i in stage.all("ENV"))
            assert "NVIDIA_VISIBLE_DEVICES=all" in env and "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env
    serve_in = (project / "requirements/serve.in").read_text()
    if combo.framework == "pytorch":
        assert f"--extra-index-url {combo.answers['torch_index_url']}/{cuda['torch_index']}" in serve_in
        assert dockerfile.global_args["EXTRA_INDEX_URL"].endswith(f"/{cuda['torch_index']}")
    if combo.framework == "xgboost":  # CUDA 12 builds are a package of their own since xgboost 3.4
        package = "xgboost-cu12>=" if cuda["major"] == "12" else "\nxgboost>="
        assert package in serve_in and "xgboost-cpu" not in serve_in, serve_in
    if combo.framework == "tensorflow":
        assert "tensorflow[and-cuda]" in serve_in and "tensorflow-cpu" not in serve_in
    page = (project / "docs/gpu.md").read_text()
    driver = cuda["driver"] if combo.base_image == "nvidia-cuda" else cuda["driver_pip"]
    assert driver in page and "NVIDIA Container Toolkit" in page
    assert "(docs/gpu.md)" in (project / "README.md").read_text()
    assert default_max_workers(project) == 1  # one process owns the GPU: no CUDA context and model copy per CPU


@pytest.mark.parametrize("combo", CPU, ids=lambda c: c.id)
def test_cpu_render_never_asks_for_cuda(render_combo: RenderCombo, combo: Combo) -> None:
    project = render_combo(combo)
    # serve.in, and train.in where serve_runtime=onnx moved the framework and its index there
    requirements = "".join((project / "requirements" / f"{n}.in").read_text() for n in ("serve", "train"))
    assert "/cu1" not in requirements and "and-cuda" not in requirements
    if combo.framework == "xgboost":
        assert "xgboost-cpu" in requirements
    if combo.framework == "pytorch":
        assert f"{combo.answers['torch_index_url']}/cpu" in requirements
    assert "NVIDIA" not in (project / "Dockerfile").read_text()
    assert "nvidia" not in (project / "compose.yaml").read_text()
    assert not (project / "docs/gpu.md").exists() and "docs/gpu.md" not in (project / "README.md").read_text()
    assert default_max_workers(project) == 4


@pytest.mark.static
@pytest.mark.parametrize("combo", GPU, ids=lambda c: c.id)
def test_gpu_compose_stanza_static_only(render_combo: RenderCombo, combo: Combo) -> None:
    if not shutil.which("docker") or run(["docker", "compose", "version"], check=False).returncode != 0:
        pytest.skip("docker compose CLI not installed")
    config = json.loads(run(["docker", "compose", "--profile", "train", "config", "--format", "json"],
                            cwd=render_combo(combo)).stdout)
    for name in ("serve", "train"):
        service = config["services"][name]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": -1, "capabilities": ["gpu"]}], devices  # count: all
        assert service["shm_size"]


CUDA_VARIANTS = [
    (framework, version, flavor)
    for framework, spec in MATRIX["framework"].items() if spec["gpu"]
    for version in spec["gpu"]["cuda"]
    for flavor in QUESTIONS["cuda_flavor"]["choices"].values()
]


@pytest.mark.static
@pytest.mark.parametrize(("framework", "version", "flavor"), CUDA_VARIANTS,
                         ids=[f"{f}-cuda{v}-{fl}-static-only" for f, v, fl in CUDA_VARIANTS])
def test_every_cuda_release_and_flavor_renders_static_only(tmp_path: Path, framework: str, version: str,
                                                           flavor: str) -> None:
    """Every cuda_version a framework offers and every cuda_flavor: the image tag comes from the data file, the
    Dockerfile lints clean, and compose takes explicit device ids."""
    combo = Combo("3.12", framework, "nvidia-cuda", "baked", gpu=True)
    project = render(tmp_path / "p", {**combo.answers, "cuda_version": version, "cuda_flavor": flavor,
                                      "gpu_device_ids": "0,GPU-8f6e2b1c-0000-4000-8000-000000000000"})
    dockerfile = Dockerfile.read(project / "Dockerfile")
    tag = f"nvidia/cuda:{MATRIX['cuda'][version]['image']}-{flavor}-ubuntu24.04"
    assert dockerfile.global_args["RUNTIME_IMAGE"] == tag
    assert hadolint_findings(project / "Dockerfile") == []
    if shutil.which("docker") and run(["docker", "compose", "version"], check=False).returncode == 0:
        config = json.loads(run(["docker", "compose", "config", "--format", "json"], cwd=project).stdout)
        devices = config["services"]["serve"]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "capabilities": ["gpu"],
                            "device_ids": ["0", "GPU-8f6e2b1c-0000-4000-8000-000000000000"]}], devices
