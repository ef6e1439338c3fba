"""Promise: the serve venv loses what serving never reads, by a reviewed list, and nothing else (the engine tests
prove every built framework still imports and serves from the pruned venv)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from helpers.answers import REPO

spec = importlib.util.spec_from_file_location("prune_venv", REPO / "template" / "scripts" / "prune_venv.py")
prune_venv = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prune_venv)

SITE = "lib/python3.13/site-packages"
PRUNED = ["numpy/_core/tests/test_a.py", "joblib/test/test_b.py", "numpy/__init__.pyi", "sklearn/tree/_tree.pyx",
          "sklearn/tree/_tree.pxd", "sklearn/_loss/_loss.pyx.tp", "numpy/_core/include/numpy/ndarraytypes.h",
          "numpy/random/lib/libnpyrandom.a", "numpy/_core/_simd.cpython-313-x86_64-linux-gnu.so",
          "numpy/_core/_umath_tests.cpython-313-x86_64-linux-gnu.so", "onnxruntime/capi/libonnxruntime.so.1.32.0",
          "onnxruntime/tools/symbolic_shape_infer.py", "onnxruntime/quantization/quantize.py",
          "onnxruntime/transformers/optimizer.py", "torch/test/op_registration_test", "torch/bin/test_api",
          "torch/bin/TCPStoreTest", "torch/bin/protoc-3.13.0.0"]
KEPT = ["numpy/__init__.py", "numpy/_core/_multiarray_umath.cpython-313-x86_64-linux-gnu.so",
        "numpy/f2py/__init__.py", "numpy/testing/__init__.py", "sklearn/utils/_testing.py", "sklearn/tree/_tree.py",
        "onnxruntime/capi/onnxruntime_pybind11_state.cpython-313-x86_64-linux-gnu.so",
        "onnxruntime/capi/libonnxruntime_providers_shared.so", "onnxruntime/__init__.py",
        "scipy.libs/libscipy_openblas-5f890258.so", "joblib/testing.py",
        "torch/bin/torch_shm_manager", "torch/testing/_comparison.py", "torch/lib/libtorch_cpu.so"]


def test_every_entry_says_why() -> None:
    patterns = [pattern for pattern, _ in prune_venv.PRUNE]
    assert len(set(patterns)) == len(patterns)
    assert all(len(why.split()) >= 3 for _, why in prune_venv.PRUNE)


def test_prunes_the_listed_and_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    for name in PRUNED + KEPT:
        path = tmp_path / SITE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
    assert prune_venv.main([str(tmp_path)]) == 0
    left = {p.relative_to(tmp_path / SITE).as_posix() for p in (tmp_path / SITE).rglob("*") if p.is_file()}
    assert left == set(KEPT)
    assert not (tmp_path / SITE / "numpy/_core/tests").exists(), "a pruned folder goes with its contents"


def test_refuses_what_is_not_a_venv(tmp_path: Path) -> None:
    assert prune_venv.main([str(tmp_path)]) == 2
