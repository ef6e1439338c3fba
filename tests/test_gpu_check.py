"""Promise: the GPU check (tools/gpu_check) runs the generated PyTorch GPU render's own training and server and
checks them; here, without a GPU, it runs on the CPU, says so, and passes, so it is ready whenever a GPU is at hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


from helpers.answers import REPO
from helpers.torch_index import required_torch_wheel


def test_the_gpu_check_passes_on_the_cpu_and_says_so(tmp_path: Path) -> None:
    wheel = required_torch_wheel("the GPU check's CPU run")
    build = tmp_path / "build"
    tools = REPO / "tools" / "gpu_check"
    subprocess.run([sys.executable, str(tools / "prepare.py"), "--build", str(build)], check=True, timeout=300,
                   capture_output=True)
    result = subprocess.run([sys.executable, str(tools / "run.py"), "--build", str(build), "--torch-wheel", str(wheel),
                             "--", "--requests", "500"], capture_output=True, text=True, timeout=900)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("no CUDA device: CPU run"), lines[0]
    checks = {line.split(":")[0].split()[-1]: line.split()[0] for line in lines[1:] if line[:4].strip() in
              ("ok", "FAIL", "skip")}
    assert checks == {"train-on-cpu": "ok", "train-reproducible": "ok", "model-device": "ok", "serve-workers": "ok",
                      "predict-equals-cpu": "ok", "v2-infer": "ok", "one-cuda-context": "skip",
                      "memory-bounded": "ok", "sigterm": "ok"}, out
    assert lines[-1] == "all checks passed" and lines[-2].startswith("summary: rows/s ")


def test_a_failing_check_fails_the_run_with_its_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "tools" / "gpu_check" / "run.py"), "--build",
                             str(tmp_path / "nothing")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"gpu_check: {tmp_path / 'nothing' / 'project'} missing: run tools/gpu_check/prepare.py first"]
