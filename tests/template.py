"""Helpers shared by the tests: the template's questions, the answer matrix, rendering and the Docker engine."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import copier
import yaml

REPO = Path(__file__).resolve().parents[1]
# Containers of this test session carry this label, so clean-up never touches another session's containers.
SESSION_LABEL = f"mldt-test={os.getpid()}-{os.urandom(4).hex()}"
BIN = Path(sys.executable).parent
DEFAULT_ANSWERS = {"project_name": "Iris Classifier"}

# What this machine (and CI) can build: the engine has local images for python:3.11/3.13-slim and distroless
# python3-debian13 only, and PyTorch's CPU index is out of reach: its wheel is served from the local disk, where
# it exists for CPython 3.11 only. Anything else is checked statically and says so in its test id.
BUILDABLE_PYTHONS = {"3.11", "3.13"}
BUILDABLE_BASES = {"slim", "distroless"}
BUILDABLE_FRAMEWORK_PYTHONS = {"pytorch": {"3.11"}}
# A local PEP 503 index for the torch wheel (tests/torch_index.py); the port is fixed for the session so that
# every render of a PyTorch combination names the same URL.
TORCH_INDEX_PORT = int(os.environ.get("MLDT_TORCH_INDEX_PORT", "0")) or 20000 + os.getpid() % 20000
TORCH_INDEX_URL = f"http://127.0.0.1:{TORCH_INDEX_PORT}/whl"
# The local index holds torch 2.13.0 only; left open, PyPI's newer (CUDA) torch would win the resolution.
LOCK_PINS = {"pytorch": ("torch>=2.6", "torch==2.13.0")}


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
    gpu: bool = False
    lock_tool: str = "pip-tools"  # the default: ids and renders of pip-tools combinations stay as they were
    serve_runtime: str = "native"  # likewise: native ids are unchanged

    @property
    def answers(self) -> dict[str, Any]:
        extra = {"torch_index_url": TORCH_INDEX_URL} if self.framework == "pytorch" else {}
        return {**DEFAULT_ANSWERS, **self.__dict__, **extra}

    @property
    def buildable(self) -> bool:
        return (
            not self.gpu  # no GPU, no CUDA images and no CUDA wheels here
            and self.python_version in BUILDABLE_PYTHONS
            and self.base_image in BUILDABLE_BASES
            and self.python_version in BUILDABLE_FRAMEWORK_PYTHONS.get(self.framework, BUILDABLE_PYTHONS)
        )

    def image(self, role: str) -> str:
        """The `runtime` or `builder` image of a CPU combination, as the matrix names it."""
        debian = MATRIX["python"][self.python_version]["debian"]
        return MATRIX["base_image"][self.base_image][role].format(python=self.python_version, debian=debian)

    @property
    def id(self) -> str:
        if self in BUILT_COMBOS or self in LOCK_TOOL_COMBOS or self in ONNX_BUILDS:
            kind = "built"
        elif self.buildable:
            kind = "rendered"  # buildable, but each of its answers is already built in another combination
        else:
            kind = "static-only"
        gpu = "-gpu" if self.gpu else ""
        tool = "" if self.lock_tool == "pip-tools" else f"-{self.lock_tool}"
        onnx = "" if self.serve_runtime == "native" else f"-{self.serve_runtime}"
        return f"{self.framework}-{self.base_image}{gpu}-{self.model_source}-py{self.python_version}{tool}{onnx}-{kind}"


def refusals(combo: Combo) -> tuple[str, ...]:
    """Mirrors the validators: why the questions refuse a combination (empty: it renders)."""
    reasons = []
    if combo.python_version not in MATRIX["base_image"][combo.base_image]["pythons"]:
        reasons.append(f"python-for-{combo.base_image}")
    if combo.python_version not in MATRIX["framework"][combo.framework]["pythons"]:
        reasons.append(f"python-for-{combo.framework}")
    if combo.base_image == "nvidia-cuda" and not combo.gpu:
        reasons.append("cuda-without-gpu")
    if combo.gpu and not MATRIX["framework"][combo.framework]["gpu"]:
        reasons.append("gpu-without-cuda-build")
    elif combo.gpu and combo.python_version not in MATRIX["framework"][combo.framework]["gpu"].get(
            "pythons", MATRIX["framework"][combo.framework]["pythons"]):
        reasons.append(f"python-for-{combo.framework}-gpu")
    elif combo.gpu and combo.base_image == "distroless":
        reasons.append("gpu-on-distroless")
    if combo.serve_runtime == "onnx" and not MATRIX["framework"][combo.framework]["onnx"]:
        reasons.append(f"onnx-for-{combo.framework}")
    elif combo.serve_runtime == "onnx" and combo.gpu:
        reasons.append("onnx-with-gpu")
    return tuple(reasons)


def allowed(combo: Combo) -> bool:
    return not refusals(combo)


ALL_COMBOS = [
    Combo(*values)
    for values in itertools.product(
        choices("python_version"), choices("framework"), choices("base_image"), choices("model_source"), [False, True]
    )
]
DEFAULT_COMBO = Combo(
    QUESTIONS["python_version"]["default"],
    QUESTIONS["framework"]["default"],
    QUESTIONS["base_image"]["default"],
    QUESTIONS["model_source"]["default"],
)
# serve_runtime=onnx, statically: each framework with a converter on the default image (pytorch on the Python whose
# wheel is here), plus distroless once; and the refused ones (tensorflow, gpu)
ONNX_COMBOS = [
    replace(DEFAULT_COMBO, framework=name, serve_runtime="onnx",
            python_version="3.11" if name == "pytorch" else DEFAULT_COMBO.python_version)
    for name in choices("framework") if MATRIX["framework"][name]["onnx"]
] + [replace(DEFAULT_COMBO, base_image="distroless", model_source="mounted", serve_runtime="onnx")]
ONNX_REFUSED = [replace(DEFAULT_COMBO, framework="tensorflow", serve_runtime="onnx"),
                replace(DEFAULT_COMBO, framework="pytorch", gpu=True, serve_runtime="onnx")]
COMBOS = [c for c in ALL_COMBOS if allowed(c)] + [c for c in ONNX_COMBOS if allowed(c)]
# one refused combination per distinct set of reasons (each costs a copier run)
REFUSED_COMBOS = list({refusals(c): c for c in [*reversed(ALL_COMBOS), *ONNX_REFUSED] if not allowed(c)}.values())


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


def covering_builds() -> list[Combo]:
    """The combinations to build and run: every offered value of every question at least once. Each is the default
    combination with one answer changed (and, where that cannot be built here, the Python moved to one that can).
    A new choice in copier.yml joins this list by itself."""
    chosen: list[Combo] = [DEFAULT_COMBO]
    pythons = [DEFAULT_COMBO.python_version] + [p for p in choices("python_version") if p != DEFAULT_COMBO.python_version]
    for name in ("python_version", "framework", "base_image", "model_source"):
        for value in choices(name):
            candidates = [replace(DEFAULT_COMBO, **{name: value})]
            if name != "python_version":
                candidates += [replace(candidates[0], python_version=p) for p in pythons]
            combo = next((c for c in candidates if c in COMBOS and c.buildable), None)
            if combo and combo not in chosen:
                chosen.append(combo)
    return chosen


BUILT_COMBOS = covering_builds()
# The dev environment (on by default) adds a third lock; the engine builds it for these two only
# (tests/test_engine_dev.py), and the other built combinations are copied with dev_environment=false to keep CI short.
DEV_BUILDS = {DEFAULT_COMBO, replace(DEFAULT_COMBO, framework="lightgbm")}
# lock_tool=uv: the default combination and PyTorch (a framework with its own wheel index) lock, build, train and
# serve with uv's locks (tests/test_lock_tools.py); their pip-tools twins are in BUILT_COMBOS
LOCK_TOOL_COMBOS = [replace(c, lock_tool="uv") for c in BUILT_COMBOS if c == DEFAULT_COMBO or
                    (c.framework == "pytorch" and c.base_image == DEFAULT_COMBO.base_image
                     and c.model_source == DEFAULT_COMBO.model_source)]
STATIC_COMBOS = [c for c in COMBOS if not c.buildable]
# serve_runtime=onnx on the engine: one chain (lock, train with the parity check, serve), tests/test_onnx.py
ONNX_BUILDS = [replace(DEFAULT_COMBO, serve_runtime="onnx")]


# Image names of this test run; MLDT_IMAGE_PREFIX keeps two runs on one engine from building over each other's tags
IMAGE_PREFIX = os.environ.get("MLDT_IMAGE_PREFIX", "mldt-test")


def image_tag(combo: Combo, target: str) -> str:
    return f"{IMAGE_PREFIX}/{combo.id}:{target}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Container:
    """A detached container of the tests (labelled for clean-up), with its published port on 127.0.0.1."""

    def __init__(self, image: str, *docker_args: str, port: int = 8000, wait_ready: bool = True,
                 host_network: bool = False):
        if host_network:  # to reach servers of the tests on 127.0.0.1; the server listens on a free port
            host_port = free_port()
            publish = ["--network", "host", "-e", f"PORT={host_port}"]
        else:
            publish = ["-p", f"127.0.0.1::{port}"]
        self.id = run(["docker", "run", "-d", "--label", SESSION_LABEL, *publish, *docker_args, image]).stdout.strip()
        if not host_network:
            host_port = int(run(["docker", "port", self.id, f"{port}/tcp"]).stdout.split()[0].rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{host_port}"
        if wait_ready:
            self.wait_ready()

    def http(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        import json
        import urllib.error
        import urllib.request

        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def wait_ready(self, timeout: float = 90) -> None:
        import time
        import urllib.error

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.http("GET", "/ready")[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if self.state()["Status"] == "exited":
                raise AssertionError(f"container exited before ready:\n{self.logs()}")
            time.sleep(0.3)
        raise AssertionError(f"not ready after {timeout}s:\n{self.logs()}")

    def state(self) -> dict[str, Any]:
        import json

        return json.loads(run(["docker", "inspect", "--format", "{{json .State}}", self.id]).stdout)

    def logs(self) -> str:
        result = run(["docker", "logs", self.id], check=False)
        return result.stdout + result.stderr

    def exec(self, *cmd: str) -> str:
        return run(["docker", "exec", self.id, *cmd]).stdout.strip()

    def remove(self) -> None:
        run(["docker", "rm", "-f", self.id], check=False)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
