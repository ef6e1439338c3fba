#!/usr/bin/env python3
"""Check includes/matrix.yml against the package index: `make check-matrix`, run in CI.

For every platform x framework x Python x variant (CPU, ONNX, GPU per CUDA release) the declared packages (those
whose platform_machine marker holds there) must resolve to a Linux wheel of that machine (x86_64, aarch64) for that
Python and the images' glibc, and their CUDA dependencies (nvidia-*-cuNN, including
those behind extras such as tensorflow[and-cuda]) must match the declared CUDA major; CPU and ONNX sets must pull
no CUDA at all. Image tags must follow the CUDA data. Prints one line per drift and exits 1; exits 2 when the index
cannot be asked (after bounded retries), 0 when everything matches.

Resolution is pip's own (`pip install --dry-run --report`, which reads wheel metadata without downloading wheels),
so it uses this machine's pip configuration (index, proxy, certificates). What cannot be checked from here is
printed as `unchecked:` and does not fail: PyTorch's own wheel index (pass --torch-index URL to check it) and the
nvidia/cuda registry (tags are checked against the data only).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
# glibc of the images each Python runs on: wheels must be manylinux_2_X with X at most this
GLIBC = {"bookworm": 36, "trixie": 41, "ubuntu24.04": 39}
CUDA_PACKAGE = re.compile(r"^nvidia-[a-z0-9-]+-cu(\d+)$")
TRANSIENT = ("timed out", "Connection", "connection", "Temporary failure", "Could not fetch", "503", "502")


@dataclass
class Check:
    framework: str
    python: str
    variant: str  # cpu, onnx, gpu-cuda12.6, ...
    requirements: list[str]
    glibc: int
    cuda_major: str | None = None  # expected CUDA major of the GPU variant; None: no CUDA allowed
    index: str | None = None
    machine: str = "x86_64"
    deps: bool = False  # resolve the dependencies too (a tool's pin must install whole, not only its own wheel)
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        where = "" if self.machine == "x86_64" else f"{self.machine} "
        return f"{where}framework={self.framework} python={self.python} {self.variant}"


def for_machine(requirements: list[str], machine: str, python: str) -> list[str]:
    """The requirements that apply on `machine`, without their markers: pip evaluates markers against the machine it
    runs on, not against --platform."""
    env = {**default_environment(), "python_version": python, "platform_system": "Linux", "sys_platform": "linux",
           "platform_machine": machine}
    kept = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate(env):
            requirement.marker = None
            kept.append(str(requirement))
    return kept


def load_matrix(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["matrix"]["default"]


def checks(matrix: dict, torch_index: str | None) -> tuple[list[Check], list[str]]:
    found, unchecked = [], []
    for platform, machine in ((p, spec["machine"]) for p, spec in matrix["platforms"].items()):
        for name, fw in matrix["framework"].items():
            for python in fw["pythons"]:
                glibc = GLIBC[matrix["python"][python]["debian"]]
                index = fw.get("index")
                if index and "{torch_index_url}" in index:
                    if not torch_index:
                        unchecked.append(f"{platform} framework={name} python={python}: {index.split('/')[-1]} "
                                         "wheels come from PyTorch's index, not reachable from here (--torch-index "
                                         "URL checks them)")
                        continue
                    index = index.replace("{torch_index_url}", torch_index)
                found.append(Check(name, python, "cpu", for_machine(fw["serve"] + fw["train"], machine, python), glibc,
                                   index=index, machine=machine))
                if fw.get("onnx"):
                    found.append(Check(name, python, "onnx", for_machine(fw["onnx"]["serve"] + fw["onnx"]["train"],
                                                                         machine, python), glibc, machine=machine))
                gpu = fw.get("gpu") or {}
                if platform not in gpu.get("platforms", [platform]) or python not in gpu.get("pythons", fw["pythons"]):
                    continue
                for release in gpu.get("cuda", []):
                    cuda = matrix["cuda"][release]
                    serve = fw["gpu"].get("serve", fw["serve"])
                    if isinstance(serve, dict):
                        serve = serve[cuda["major"]]
                    gpu_index = fw["gpu"].get("index")
                    if gpu_index:
                        gpu_index = gpu_index.replace("{torch_index_url}", torch_index or "").replace(
                            "{torch_cuda}", cuda["torch_index"])
                    found.append(Check(name, python, f"gpu-cuda{release}", for_machine(serve, machine, python), glibc,
                                       cuda["major"], gpu_index, machine=machine))
    return found, unchecked


def platforms(glibc: int, machine: str) -> list[str]:
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(17, glibc + 1)]
    return [*tags, f"manylinux2014_{machine}", f"linux_{machine}"]


def resolve(check: Check, retries: int, timeout: float) -> dict | str:
    """pip's report of the wheels it would install (no dependencies), or the error text."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               *([] if check.deps else ["--no-deps"]),
               "--only-binary", ":all:", "--python-version", check.python, "--implementation", "cp",
               "--target", str(Path(tmp) / "target"), "--report", str(report),
               "--retries", "2", "--timeout", "30"]
        for tag in platforms(check.glibc, check.machine):
            cmd += ["--platform", tag]
        if check.index:
            cmd += ["--index-url", check.index]
        cmd += check.requirements
        error = ""
        for attempt in range(retries + 1):
            try:
                result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                error = f"pip did not answer within {timeout:.0f} s"
            else:
                if result.returncode == 0:
                    return json.loads(report.read_text())
                error = result.stderr
                if not any(word in error for word in TRANSIENT):
                    return error  # a real answer: nothing matches
            time.sleep(2 ** attempt)
        raise ConnectionError(f"{check.name}: the package index did not answer after {retries + 1} tries: "
                              f"{error.strip().splitlines()[-1] if error.strip() else 'no output'}")


def cuda_majors(metadata: dict, extras: set[str], python: str, machine: str) -> set[str]:
    majors = set()
    for text in metadata.get("requires_dist") or []:
        requirement = Requirement(text)
        match = CUDA_PACKAGE.match(requirement.name.lower())
        if not match:
            continue
        env = {**default_environment(), "python_version": python, "platform_system": "Linux",
               "sys_platform": "linux", "platform_machine": machine}
        if requirement.marker is None or any(requirement.marker.evaluate({**env, "extra": e}) for e in extras | {""}):
            majors.add(match.group(1))
    return majors


def verify(check: Check, retries: int, timeout: float) -> Check:
    answer = resolve(check, retries, timeout)
    if isinstance(answer, str):
        missing = re.findall(r"No matching distribution found for (.+)", answer)
        what = ", ".join(repr(m.strip()) for m in missing) or answer.strip().splitlines()[-1]
        check.problems.append(f"{check.name}: no Linux {check.machine} wheel (glibc 2.{check.glibc}) for {what}")
        return check
    extras = {e for r in check.requirements for e in Requirement(r).extras}
    for item in answer["install"]:
        meta = item["metadata"]
        majors = cuda_majors(meta, extras, check.python, check.machine)
        label = f"{meta['name']} {meta['version']}"
        if check.cuda_major is None and majors:
            check.problems.append(f"{check.name}: {label} pulls CUDA {'/'.join(sorted(majors))} libraries into a "
                                  "CPU image")
        elif check.cuda_major is not None and majors and majors != {check.cuda_major}:
            check.problems.append(f"{check.name}: {label} is built for CUDA {'/'.join(sorted(majors))}, the "
                                  f"matrix declares CUDA {check.cuda_major}")
    return check


def mlflow_checks(matrix: dict) -> list[Check]:
    """tracking=mlflow: the server's pin (tools.mlflow) must install with its dependencies on the newest Python, and
    a newer release that installs is worth knowing of (3.18.0 pinned an mlflow-tracing the index did not have)."""
    python = max(matrix["python"], key=lambda v: tuple(map(int, v.split("."))))
    glibc = GLIBC[matrix["python"][python]["debian"]]
    pin = matrix["tools"]["mlflow"]
    return [Check("mlflow", python, f"server {pin}", [f"mlflow=={pin}"], glibc, deps=True),
            Check("mlflow", python, "newer", [f"mlflow>{pin}"], glibc, deps=True)]


def tag_problems(matrix: dict) -> list[str]:
    problems = []
    for release, cuda in matrix["cuda"].items():
        if not cuda["image"].startswith(release + "."):
            problems.append(f"cuda {release}: image tag {cuda['image']} is not a {release}.x release")
        if cuda["major"] != release.split(".")[0]:
            problems.append(f"cuda {release}: major {cuda['major']} does not match the release")
    for name, fw in matrix["framework"].items():
        for release in (fw.get("gpu") or {}).get("cuda", []):
            if release not in matrix["cuda"]:
                problems.append(f"framework={name}: gpu cuda {release} is not in the cuda table")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--matrix", type=Path, default=REPO / "includes" / "matrix.yml")
    parser.add_argument("--torch-index", help="base of PyTorch's wheel indexes (the part before /cpu)")
    parser.add_argument("--framework", action="append", help="check only these frameworks")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=240)
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args(argv)

    matrix = load_matrix(args.matrix)
    if args.framework:
        matrix["framework"] = {k: v for k, v in matrix["framework"].items() if k in args.framework}
    todo, unchecked = checks(matrix, args.torch_index)
    if not args.framework or "mlflow" in args.framework:
        todo += mlflow_checks(matrix)
    problems, notices = tag_problems(matrix), []
    try:
        with ThreadPoolExecutor(args.jobs) as pool:
            for done in pool.map(lambda c: verify(c, args.retries, args.timeout), todo):
                if done.variant == "newer":  # not a drift: the pin still installs
                    if not done.problems:
                        notices.append(f"a newer mlflow than tools.mlflow {matrix['tools']['mlflow']} installs now: "
                                       "move the pin (includes/matrix.yml), then make lock in a tracking=mlflow project")
                    continue
                problems += done.problems
    except ConnectionError as error:
        print(f"check-matrix: {error}; try again later", file=sys.stderr)
        return 2
    for line in notices:
        print(f"notice: {line}")
    for line in unchecked:
        print(f"unchecked: {line}")
    print("unchecked: nvidia/cuda image tags exist only in NVIDIA's registry, not reachable from here; "
          "checked against the cuda table only")
    for line in problems:
        print(f"drift: {line}")
    print(f"check-matrix: {len(todo)} entries resolved, {len(problems)} drift(s), {len(unchecked) + 1} unchecked")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
