"""Promise: `make check-matrix` (run by CI on the real matrix) notices when includes/matrix.yml stops matching the
package index: one line per drift, exit 1; an index that does not answer is one line and exit 2, never a hang.

These tests ask the real package index (through this machine's pip configuration), as the check itself does.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.answers import REPO

CHECK = REPO / "tools" / "check_matrix.py"
MATRIX_FILE = REPO / "includes" / "matrix.yml"


def run_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, str(CHECK), *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})


def write_matrix(tmp_path: Path, change) -> Path:  # noqa: ANN001
    data = yaml.safe_load(MATRIX_FILE.read_text())
    changed = copy.deepcopy(data)
    change(changed["matrix"]["default"])
    path = tmp_path / "matrix.yml"
    path.write_text(yaml.safe_dump(changed))
    return path


def _cuda12_xgboost_is_cuda13(m: dict) -> None:
    m["framework"]["xgboost"]["gpu"]["serve"]["12"] = ["xgboost>=3.4"]


def _cpu_image_pulls_cuda(m: dict) -> None:
    m["framework"]["xgboost"]["serve"] = ["xgboost>=3.4"]


def _no_wheel_for_python(m: dict) -> None:
    m["framework"]["xgboost"]["serve"] = ["xgboost-cpu>=3.3"]  # needs Python >= 3.12


def _superseded_tag(m: dict) -> None:
    m["cuda"]["13.0"]["image"] = "12.9.1"


def _mlflow_that_cannot_install(m: dict) -> None:
    m["tools"]["mlflow"] = "3.18.0"  # pins an mlflow-tracing 3.18.0 the index does not have (December 2026)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_cuda12_xgboost_is_cuda13, "gpu-cuda12.6: xgboost 3."),
        (_cpu_image_pulls_cuda, "pulls CUDA 13 libraries into a CPU image"),
        (_no_wheel_for_python, "framework=xgboost python=3.11 cpu: no Linux x86_64 wheel"),
        (_superseded_tag, "cuda 13.0: image tag 12.9.1 is not a 13.0.x release"),
        (_mlflow_that_cannot_install, "framework=mlflow python=3.13 server 3.18.0: no Linux x86_64 wheel"),
    ],
    ids=["cuda-major", "cuda-in-cpu-image", "no-wheel-for-python", "image-tag", "mlflow-pin"],
)
def test_drift_is_one_line_and_fails(tmp_path: Path, change, expected: str) -> None:  # noqa: ANN001
    only = "mlflow" if change is _mlflow_that_cannot_install else "xgboost"
    result = run_check("--matrix", str(write_matrix(tmp_path, change)), "--framework", only)
    assert result.returncode == 1, result.stdout + result.stderr
    drifts = [line for line in result.stdout.splitlines() if line.startswith("drift: ")]
    assert any(expected in line for line in drifts), result.stdout
    if expected.startswith("gpu-cuda12.6"):
        assert any("is built for CUDA 13, the matrix declares CUDA 12" in line for line in drifts), result.stdout


def test_an_unreachable_index_is_reported_not_hung(tmp_path: Path) -> None:
    result = run_check("--framework", "sklearn", "--retries", "1", "--timeout", "60",
                       env={"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_EXTRA_INDEX_URL": "",
                            "PIP_FIND_LINKS": "", "PIP_CONFIG_FILE": "/dev/null"})
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "did not answer after 2 tries" in lines[0], result.stderr


def _torch_index(root: Path, machines: tuple[str, ...]) -> str:
    """A stand-in laid out like PyTorch's CPU index (<base>/cpu/<project>/): torch as `X+cpu` for x86_64 and plain `X`
    for aarch64, as PyTorch names them, beside the framework's other packages (pure wheels)."""
    from helpers.wheels import make_wheel, sha256

    torch = {"x86_64": "2.9.0+cpu", "aarch64": "2.9.0"}
    wheels = [("torch", torch[machine], f"manylinux_2_28_{machine}") for machine in machines]
    wheels += [(name, "9.0", "any") for name in ("safetensors", "numpy", "scikit-learn", "pandas")]
    for name, version, platform in wheels:
        folder = root / "cpu" / name
        folder.mkdir(parents=True, exist_ok=True)
        make_wheel(folder, name.replace("-", "_"), version, platform)
    for folder in (root / "cpu").iterdir():
        links = "".join(f'<a href="{w.name}#sha256={sha256(w)}">{w.name}</a>\n' for w in sorted(folder.glob("*.whl")))
        (folder / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
    return root.as_uri()


@pytest.mark.parametrize("machines", [("x86_64", "aarch64"), ("x86_64",)], ids=["both-machines", "no-aarch64-wheel"])
def test_pytorchs_index_naming_is_checked_on_both_machines(tmp_path: Path, machines: tuple[str, ...]) -> None:
    """PyTorch's CPU index names its x86_64 wheels torch==X+cpu and its aarch64 wheels plain torch==X: against a
    stand-in laid out like it (--torch-index), the matrix's torch pin resolves on both machines; without the aarch64
    wheel, each aarch64 entry is a drift that names torch."""
    def cpu_only(m: dict) -> None:  # the stand-in has no CUDA indexes; the ONNX set comes from PyPI (tested above)
        m["framework"]["pytorch"].pop("gpu")
        m["framework"]["pytorch"].pop("onnx")

    index = _torch_index(tmp_path / "index", machines)
    result = run_check("--matrix", str(write_matrix(tmp_path, cpu_only)), "--framework", "pytorch",
                       "--torch-index", index, env={"PIP_CONFIG_FILE": "/dev/null", "PIP_FIND_LINKS": ""})
    pythons = yaml.safe_load(MATRIX_FILE.read_text())["matrix"]["default"]["framework"]["pytorch"]["pythons"]
    assert f"check-matrix: {2 * len(pythons)} entries resolved" in result.stdout, result.stdout + result.stderr
    drifts = [line for line in result.stdout.splitlines() if line.startswith("drift: ")]
    if "aarch64" in machines:
        assert result.returncode == 0 and not drifts, result.stdout + result.stderr
    else:
        assert result.returncode == 1, result.stdout + result.stderr
        found = [re.fullmatch(r"drift: aarch64 framework=pytorch python=(\S+) cpu: no Linux aarch64 wheel "
                              r"\(glibc 2\.\d+\) for 'torch[^',]*'", line) for line in drifts]
        assert all(found) and sorted(m.group(1) for m in found) == sorted(pythons), drifts
