#!/usr/bin/env python3
"""Delete from a virtual environment the files a server never reads, before it is copied into the serve image.

    python scripts/prune_venv.py /opt/venv      # scripts/venv.py --prune, right after the serve venv's install

The list is reviewed by hand: each entry says why serving never reads what it matches. A pattern matches the end
of a path (`tests` is any folder named tests); entries that match nothing are skipped, so one list covers every
framework and runtime the template offers. The train and dev images are never pruned. To add an entry of your
own, check the serve image still answers afterwards (`make smoke`).

Standard library only: it runs with the builder image's Python.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path, PurePosixPath

PRUNE = [
    # any library
    ("tests", "the libraries' own test suites"),
    ("*.pyi", "type stubs: read by type checkers, never imported"),
    ("*.pyx", "Cython sources: the compiled extension modules are installed next to them"),
    ("*.pxd", "Cython declarations: read only when compiling Cython code against the library"),
    ("*.pxi", "Cython include files: the same"),
    ("*.tp", "templates the build expands into Cython sources (scikit-learn's *.pyx.tp)"),
    ("*.c", "C sources of extension modules that are installed compiled"),
    ("*.cpp", "C++ sources: the same"),
    ("*.h", "C headers: for compiling against the library; the serve image has no compiler"),
    ("*.hpp", "C++ headers: the same"),
    ("*.a", "static libraries: linked when building other extensions, never loaded"),
    # per library
    ("joblib/test", "joblib's test suite (a folder named test)"),
    ("numpy/_core/_simd.*.so", "an extension module for NumPy's SIMD tests only"),
    ("numpy/_core/_*_tests.*.so", "extension modules for NumPy's own tests only"),
    ("onnxruntime/capi/libonnxruntime.so*",
     ("ONNX Runtime's C library for native programs: the Python module carries its own copy "
      "(onnxruntime_pybind11_state)")),
    ("onnxruntime/tools", "ONNX Runtime's offline tools (model conversion, symbolic shapes): never imported to infer"),
    ("onnxruntime/quantization", "its model quantization tools: the same"),
    ("onnxruntime/transformers", "its transformer model optimizer and benchmarks: the same"),
    ("torch/test", "PyTorch's C++ test programs (about 86 MB): executables, never loaded by the library"),
    ("torch/bin/test_*", "more of PyTorch's C++ test programs (about 37 MB): the same"),
    ("torch/bin/*StoreTest", "PyTorch's C++ tests of its distributed key-value stores: the same"),
    ("torch/bin/protoc*", "the protobuf compiler, for building C++ code against PyTorch"),
]
# Kept on purpose: torch/bin/torch_shm_manager (torch.multiprocessing shares CPU tensors through it).
# Tried and kept: numpy/f2py (a build tool, but `from numpy import *`, which scipy's array API layer runs, imports
# every name in numpy.__all__, f2py included).


def matches(path: PurePosixPath) -> bool:
    return any(path.match(pattern) for pattern, _ in PRUNE)


def size_of(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


def prune(venv: Path) -> tuple[int, int]:
    """Delete what PRUNE matches under venv; return (entries deleted, bytes freed)."""
    count = freed = 0
    for root, dirs, files in os.walk(venv):
        here = Path(root)
        for name in [*dirs, *files]:
            path = here / name
            if not matches(PurePosixPath(path.relative_to(venv).as_posix())):
                continue
            freed += size_of(path)
            count += 1
            if name in dirs and not path.is_symlink():
                shutil.rmtree(path)
                dirs.remove(name)  # os.walk does not descend into it
            else:
                path.unlink()
    return count, freed


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not (Path(argv[0]) / "bin").is_dir():
        print("usage: prune_venv.py VENV (a virtual environment's folder)", file=sys.stderr)
        return 2
    count, freed = prune(Path(argv[0]))
    print(f"prune_venv: deleted {count} files and folders, {freed / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
