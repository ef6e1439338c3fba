"""Answer combinations and the sets the suite renders, builds and runs. Every set is computed from copier.yml
(choices and validators) and checked for coverage by tests/test_coverage.py, which prints the tables."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import re
from dataclasses import dataclass, replace
from typing import Any

from helpers.answers import CHOICE_QUESTIONS, DEFAULT_ANSWERS, MATRIX, QUESTIONS, REPO, choices, refusals
from helpers.pairs import CONSTRAINED, constrained_rows, covering_rows

# What this machine (and CI) cannot build or run: no python:3.12 or nvidia/cuda image, no GPU, and PyTorch's wheel
# (served from the local disk, PyTorch's index being out of reach) exists for CPython 3.11 only. Combinations with
# such an answer are checked statically and say `static-only` in their ids. The one exemption list.
# The engine's stand-ins under the real image names are amd64 only: a chain with arm64 among its platforms cannot lock
# or build through them; tests/test_engine_platforms.py builds the default platforms (PLATFORM_COMBOS) through a
# registry that holds both, and arm64 alone is checked statically.
NOT_BUILDABLE: dict[str, set[Any]] = {"python_version": {"3.12"}, "base_image": {"nvidia-cuda"}, "gpu": {True},
                                      "platforms": {"linux/arm64"}}
NOT_BUILDABLE_PYTHONS = {"pytorch": {"3.12", "3.13"}, "transformers": {"3.12", "3.13"}}
# the frameworks whose torch comes from the tests' local index (helpers/torch_index.py)
TORCH_FRAMEWORKS = {"pytorch", "transformers"}
# A local PEP 503 index for the torch wheel (helpers/torch_index.py). Its URL is in the PyTorch renders' requirements
# and build arguments, so it must not change between runs of one checkout (a new port would miss every cached layer
# of the PyTorch chain): a port derived from the checkout's path, MLDT_TORCH_INDEX_PORT to choose another.
TORCH_INDEX_PORT = (int(os.environ.get("MLDT_TORCH_INDEX_PORT", "0"))
                    or 20000 + int(hashlib.sha256(str(REPO).encode()).hexdigest(), 16) % 20000)
TORCH_INDEX_URL = f"http://127.0.0.1:{TORCH_INDEX_PORT}/whl"
# The local index holds torch 2.13.0 only; left open, PyPI's newer (CUDA) torch would win the resolution.
LOCK_PINS = {name: ("torch>=2.6", "torch==2.13.0") for name in ("pytorch", "transformers")}


@dataclass(frozen=True)
class Combo:
    """One answer to each choice and boolean question (None: not asked, or Copier's default for it)."""

    python_version: str
    framework: str
    base_image: str
    model_source: str
    gpu: bool = False
    tracking: str = "none"
    model_signing: bool = False
    lock_tool: str = "pip-tools"
    serve_runtime: str = "native"
    # comma-joined, as helpers.answers.choices names a selection; not Copier's default (both): see NOT_BUILDABLE
    platforms: str = "linux/amd64"
    cuda_version: str | None = None
    cuda_flavor: str | None = None
    log_predictions: bool = False
    dev_environment: bool = True
    ci: str = "github"
    kubernetes: bool = True

    @property
    def answers(self) -> dict[str, Any]:
        given = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        given["platforms"] = self.platforms.split(",")
        extra = {"torch_index_url": TORCH_INDEX_URL} if self.framework in TORCH_FRAMEWORKS else {}
        return {**DEFAULT_ANSWERS, **given, **extra}

    @property
    def buildable(self) -> bool:
        return (all(getattr(self, q) not in values for q, values in NOT_BUILDABLE.items())
                and self.python_version not in NOT_BUILDABLE_PYTHONS.get(self.framework, set()))

    def image(self, role: str) -> str:
        """The `runtime` or `builder` image of a CPU combination, as the matrix names it."""
        debian = MATRIX["python"][self.python_version]["debian"]
        return MATRIX["base_image"][self.base_image][role].format(python=self.python_version, debian=debian)

    @property
    def id(self) -> str:
        if self in ENGINE_COMBOS or self in TEXT_COMBOS or self in LOCK_TOOL_TWINS or self in PLATFORM_COMBOS \
                or self in REGISTRY_COMBOS:
            kind = "built"
        elif self.buildable:
            kind = "rendered"  # buildable, but each of its answers is built in another combination
        else:
            kind = "static-only"
        parts = [
            self.framework, self.base_image, self.gpu and "gpu", self.cuda_version and f"cu{self.cuda_version}",
            self.cuda_flavor, self.model_source, self.tracking != "none" and self.tracking,
            self.model_signing and "signed", f"py{self.python_version}",
            self.lock_tool != "pip-tools" and self.lock_tool, self.serve_runtime != "native" and self.serve_runtime,
            self.log_predictions and "log", not self.dev_environment and "nodev",
            self.ci != "github" and f"ci{self.ci}", not self.kubernetes and "nok8s",
            self.platforms != "linux/amd64" and self.platforms.replace("linux/", "").replace(",", "+"), kind,
        ]
        return "-".join(p for p in parts if p)


# Combo's fields are the choice and boolean questions: a new question must be added there (and so joins every set)
assert {f.name for f in dataclasses.fields(Combo)} == set(CHOICE_QUESTIONS), \
    f"tests/helpers/combos.py: Combo's fields must be copier.yml's choice and boolean questions {CHOICE_QUESTIONS}"


def allowed(combo: Combo) -> bool:
    return not refusals(combo.answers)


# Copier's defaults, but for platforms: amd64, the one platform the engine's stand-ins have under the real names
DEFAULT_COMBO = Combo(*(QUESTIONS[q]["default"] for q in ("python_version", "framework", "base_image", "model_source")))
# The product of the answers that shape the images, each framework with serve_runtime=onnx on the default image
# (pytorch on the Python whose wheel is here) and distroless once: rendered and checked statically (hadolint,
# compose config, GPU details, Kubernetes)
ALL_COMBOS = [Combo(*values) for values in itertools.product(
    choices("python_version"), choices("framework"), choices("base_image"), choices("model_source"), [False, True])]
ONNX_COMBOS = [
    replace(DEFAULT_COMBO, framework=name, serve_runtime="onnx",
            python_version="3.11" if name in TORCH_FRAMEWORKS else DEFAULT_COMBO.python_version)
    for name in choices("framework") if MATRIX["framework"][name]["onnx"]
] + [replace(DEFAULT_COMBO, base_image="distroless", model_source="mounted", serve_runtime="onnx")]
ONNX_REFUSED = [replace(DEFAULT_COMBO, framework="tensorflow", serve_runtime="onnx"),
                replace(DEFAULT_COMBO, framework="pytorch", gpu=True, serve_runtime="onnx")]
# Static level: every allowed pair of values of the choice and boolean questions, in a few renders (the default
# first); with the product above, what every static check (hadolint, compose config, the render's own rules) reads
PAIRWISE_COMBOS = [Combo(**row) for row in covering_rows(start=[
    {q: getattr(DEFAULT_COMBO, q) for q in CHOICE_QUESTIONS}])]
COMBOS = list(dict.fromkeys([c for c in ALL_COMBOS if allowed(c)] + [c for c in ONNX_COMBOS if allowed(c)]
                            + PAIRWISE_COMBOS))


def _shape(combo: Combo) -> tuple[str, ...]:
    """A refusal's messages with the answers' values taken out: one refused combination per distinct shape."""
    said = refusals(combo.answers)
    named = {**combo.answers, "framework label": MATRIX["framework"][combo.framework]["label"]}  # as rules say it
    values = sorted(((str(v), q) for q, v in named.items() if str(v)), key=lambda x: -len(x[0]))
    shaped = []
    for question, message in said.items():
        for value, name in values:
            message = re.sub(rf"(?<![\w.]){re.escape(value)}(?![\w.])", f"<{name}>", message)
        shaped.append(f"{question}: {message}")
    return tuple(shaped)


# one refused combination per distinct refusal (each costs a copier run)
REFUSED_COMBOS = list({_shape(c): c for c in [*reversed(ALL_COMBOS), *ONNX_REFUSED] if not allowed(c)}.values())

# Engine level: every answer value that this machine can build is built, trained and served at least once. The
# default render as users get it (pip-tools, the copy task locking, the dev environment); PyTorch with pip-tools
# (its uv twin proves equal pins); every other chain locks with uv (proven equal on the default and PyTorch), and
# carries the remaining values between them. tests/test_coverage.py prints which chain carries which value.
ENGINE_COMBOS = [
    DEFAULT_COMBO,
    Combo("3.11", "pytorch", "slim", "baked", dev_environment=False, ci="gitlab"),
    Combo("3.13", "xgboost", "distroless", "mounted", lock_tool="uv", log_predictions=True, dev_environment=False,
          ci="none"),
    Combo("3.13", "lightgbm", "slim", "downloaded", lock_tool="uv", kubernetes=False),
    Combo("3.13", "tensorflow", "slim", "baked", lock_tool="uv", dev_environment=False),
    Combo("3.13", "sklearn", "slim", "baked", lock_tool="uv", serve_runtime="onnx", dev_environment=False),
]
# Text models (framework=transformers) take texts, not rows of numbers: their own chain and tests
# (tests/test_engine_transformers.py), trained from a tiny encoder the tests make; the chains above take numbers.
TEXT_COMBOS = [Combo("3.11", "transformers", "slim", "baked", lock_tool="uv", dev_environment=False, ci="none",
                     kubernetes=False)]
# Copier's default platforms, amd64 and arm64 (tests/test_engine_platforms.py): the default render, dev lock included
PLATFORM_COMBOS = [replace(DEFAULT_COMBO, platforms="linux/amd64,linux/arm64")]
# tracking=mlflow with model_source=registry and model_signing (tests/test_engine_registry.py: the registry;
# tests/test_engine_model_signing.py: signed models from every source), locked with uv (the MLflow server's lock
# resolves 88 distributions: seconds with uv, minutes with pip-compile)
REGISTRY_COMBOS = [replace(DEFAULT_COMBO, tracking="mlflow", model_source="registry", model_signing=True,
                           lock_tool="uv", dev_environment=False)]
DEV_BUILDS = [c for c in ENGINE_COMBOS if c.dev_environment]
ONNX_BUILDS = [c for c in ENGINE_COMBOS if c.serve_runtime == "onnx"]
# lock_tool=uv against pip-tools, pins and hashes, on the default and on PyTorch (a framework with its own wheel
# index): the uv twins are locked only (tests/test_lock_tools.py); the uv chains above build, train and serve
LOCK_TOOL_TWINS = [replace(c, lock_tool="uv") for c in ENGINE_COMBOS[:2]]


def engine_carriers() -> dict[tuple[str, Any], list[Combo]]:
    """Each offered value of each choice question -> the engine chains that build and run it."""
    chains = ENGINE_COMBOS + TEXT_COMBOS + PLATFORM_COMBOS + REGISTRY_COMBOS
    return {(q, v): [c for c in chains if getattr(c, q) == v] for q in CHOICE_QUESTIONS for v in choices(q)}


def unbuildable_values() -> set[tuple[str, Any]]:
    """The values that no buildable, allowed combination holds: what NOT_BUILDABLE rules out, directly or not."""
    allowed_rows, _ = constrained_rows()
    held = {(q, row[q]) for row in allowed_rows if Combo(**{"model_source": "baked", **row}).buildable
            for q in CONSTRAINED if row[q] is not None}
    return {(q, v) for q in CONSTRAINED for v in choices(q) if (q, v) not in held}
