"""Promise: the serve image stays small and holds only what serving needs (figures in the failure messages)."""

from __future__ import annotations

from typing import Callable

import pytest

from helpers.answers import MATRIX
from helpers.builds import Built
from helpers.combos import Combo, ENGINE_COMBOS
from helpers.engine import run

pytestmark = [pytest.mark.engine, pytest.mark.parametrize("combo", ENGINE_COMBOS, ids=lambda c: c.id)]
MB = 1_000_000
# The seed course's rule for a scikit-learn + FastAPI image: under 500 MB, no layer over 200 MB (the serve venv comes
# in two layers for it: scripts/venv.py split). The same for the other tree-model frameworks on CPU; the others (torch,
# tensorflow: one package is larger than that) keep their whole budget.
SEED_RULE = {"image": 500 * MB, "layer": 200 * MB}
TREE_FRAMEWORKS = {"sklearn", "xgboost", "lightgbm"}


def image_size(image: str) -> int:
    return int(run(["docker", "image", "inspect", "--format", "{{.Size}}", image]).stdout)


def layer_sizes(image: str) -> list[int]:
    out = run(["docker", "history", "--human=false", "--no-trunc", "--format", "{{.Size}}", image]).stdout
    return [int(line) for line in out.split()]


def test_serve_image_size_budget(built_project: Callable[[Combo], Built], combo: Combo) -> None:
    built = built_project(combo)
    base_image = combo.image("runtime")
    base = image_size(base_image)
    serve, train = image_size(built.serve_image), image_size(built.train_image)
    added = serve - base
    # serve_runtime=onnx serves without the framework: its runtime's budget
    budget = MATRIX["runtime"].get(combo.serve_runtime, MATRIX["framework"][combo.framework])["serve_budget_mb"]
    assert added <= budget * MB, f"serve adds {added / MB:.1f} MB over {base_image} (budget {budget} MB)"
    assert serve < train, f"serve {serve / MB:.1f} MB is not smaller than train {train / MB:.1f} MB"
    layers = layer_sizes(built.serve_image)  # the engine's own figures, the base image's layers included
    if combo.framework in TREE_FRAMEWORKS and not combo.gpu:
        assert serve < SEED_RULE["image"], f"serve image {serve / MB:.1f} MB (the rule: under 500 MB)"
        assert max(layers) <= SEED_RULE["layer"], f"largest serve layer {max(layers) / MB:.1f} MB (the rule: 200 MB)"
    else:
        assert max(layers) <= budget * MB, f"largest serve layer {max(layers) / MB:.1f} MB (budget {budget} MB)"


def test_serve_image_has_no_build_tools_caches_or_training_stack(
    built_project: Callable[[Combo], Built], combo: Combo
) -> None:
    built = built_project(combo)
    training_only = ["pip", "pandas", "pytest", "piptools"]
    if "setuptools==" not in (built.project / "requirements/serve.txt").read_text():
        training_only.append("setuptools")  # unless the framework declares it (torch, tensorflow do)
    if not any(r.startswith("scikit-learn") for r in MATRIX["framework"][combo.framework]["serve"]):
        training_only.append("sklearn")  # only training uses it (iris, split, metrics)
    probe = (
        "import importlib.util, pathlib, shutil\n"
        "print('tools', [t for t in ('gcc', 'cc', 'g++', 'make') if shutil.which(t)])\n"
        f"print('modules', [m for m in {training_only!r} if importlib.util.find_spec(m)])\n"
        "caches = [p for p in ('/root/.cache', '/app/.cache', '/tmp/pip', '/var/cache/http', '/var/cache/http-v2',\n"
        "                      '/var/cache/wheels') if pathlib.Path(p).exists()]\n"
        "print('caches', caches)\n"
    )
    # as root, to see into /root
    out = run(["docker", "run", "--rm", "--user", "0", "--entrypoint", "python", built.serve_image, "-c", probe]).stdout
    assert "tools []" in out and "modules []" in out and "caches []" in out, out
    out = run(["docker", "run", "--rm", "--user", "0", "--entrypoint", "python", built.train_image, "-c", probe]).stdout
    assert "'pandas'" in out and "'pytest'" in out, f"the train image lacks its training stack: {out}"
    assert "caches []" in out, f"pip's cache mount left files in the train image: {out}"

