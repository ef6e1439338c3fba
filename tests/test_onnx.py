"""Promise: serve_runtime=onnx trains a model.onnx that answers like the framework (or writes nothing and exits 1),
and serves it from an image holding onnxruntime and numpy, not the training framework.

Static checks cover every framework with a converter; the engine builds one chain (sklearn, slim, Python 3.13) and
compares its answers with the native default build's on all of iris.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import pytest

from helpers.answers import MATRIX
from helpers.builds import Built
from helpers.combos import Combo, DEFAULT_COMBO, ONNX_BUILDS, ONNX_COMBOS
from helpers.containers import Container
from helpers.engine import run
from helpers.dockerfile import Dockerfile

RenderCombo = Callable[[Combo], Path]
ROW = [5.1, 3.5, 1.4, 0.2]
# distributions that must never reach an ONNX serve image: the frameworks, their converters, the scientific stack
TRAINING_ONLY = ("scikit-learn", "scipy", "joblib", "xgboost", "xgboost-cpu", "lightgbm", "torch", "safetensors",
                 "pandas", "skl2onnx", "onnxmltools", "onnx", "onnxscript")


def requirement_names(text: str) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", line.strip(), maxsplit=1)[0].lower()
            for line in text.splitlines() if line.strip() and not line.startswith(("#", "-"))}


@pytest.mark.parametrize("combo", ONNX_COMBOS, ids=lambda c: c.id)
def test_serve_requirements_hold_no_framework(render_combo: RenderCombo, combo: Combo) -> None:
    project = render_combo(combo)
    onnx = MATRIX["framework"][combo.framework]["onnx"]
    serve = (project / "requirements/serve.in").read_text()
    train = (project / "requirements/train.in").read_text()
    assert requirement_names(serve) & set(TRAINING_ONLY) == set(), serve
    assert "--extra-index-url" not in serve, "the serve image needs no framework index"
    for requirement in onnx["serve"]:
        assert requirement in serve.splitlines()
    for requirement in MATRIX["framework"][combo.framework]["serve"] + onnx["train"]:  # train.in has -r serve.in
        assert requirement in (serve + train).splitlines(), f"{requirement} missing from train.in"
    if combo.framework == "pytorch":
        assert "--extra-index-url" in train, "torch still comes from its own index for training"


@pytest.mark.parametrize("combo", ONNX_COMBOS, ids=lambda c: c.id)
def test_serve_lock_leaves_out_what_only_onnxruntime_tools_need(render_combo: RenderCombo, combo: Combo) -> None:
    """serve.in names them for scripts/lock.py, which hands them to the lock tool; train.in does not."""
    project = render_combo(combo)
    exclude = MATRIX["runtime"]["onnx"]["serve_exclude"]
    assert {"protobuf", "sympy", "mpmath"} <= set(exclude)
    assert f"# lock-exclude: {' '.join(exclude)}" in (project / "requirements/serve.in").read_text().splitlines()
    assert "lock-exclude" not in (project / "requirements/train.in").read_text()


@pytest.mark.parametrize("combo", ONNX_COMBOS, ids=lambda c: c.id)
def test_serve_stage_needs_nothing_of_the_framework(render_combo: RenderCombo, combo: Combo) -> None:
    project = render_combo(combo)
    dockerfile = Dockerfile.read(project / "Dockerfile")
    # the image, its venv's install and whatever it copies from (one platform: no cross stage shared with train)
    assert dockerfile.venv is None and "serve-venv" in dockerfile.reachable("serve")
    serve_stages = [dockerfile.stages[name] for name in dockerfile.reachable("serve")]
    serve_chain = " ".join(i.args for stage in serve_stages for i in stage.instructions)
    assert "EXTRA_INDEX_URL" not in serve_chain and "extra-index-url" not in serve_chain
    assert "libgomp1" not in serve_chain
    if combo.framework == "lightgbm":  # training still needs OpenMP
        assert "libgomp1" in " ".join(i.args for s in dockerfile.chain("train") for i in s.instructions)
    package = next((project / "src").iterdir())
    runtime = (package / "runtime.py").read_text()
    assert 'ARTIFACT = "model.onnx"' in runtime and "PICKLE_BASED = False" in runtime
    # the framework and its converter are imported inside save() only
    top_level = [line for line in runtime.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in top_level if re.search(r"\b(model|onnx_export|sklearn|torch|xgboost|lightgbm)\b",
                                                           line)], top_level
    assert f"OPSET = {MATRIX['framework'][combo.framework]['onnx']['opset']}" in runtime
    assert (package / "onnx_export.py").is_file()


def test_native_projects_have_no_onnx_export(render_combo: RenderCombo) -> None:
    package = next((render_combo(DEFAULT_COMBO) / "src").iterdir())
    assert not (package / "onnx_export.py").exists()
    assert "onnxruntime" not in (package.parents[1] / "requirements/serve.in").read_text()
    assert "lock-exclude" not in (package.parents[1] / "requirements/serve.in").read_text()


# ---- engine: one built chain ------------------------------------------------------------------------------------

ONNX = ONNX_BUILDS[0]
HARDENED = ("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")
# A converter that answers unlike the model: a one-split forest cannot tell three iris classes apart
BAD_CONVERTER = '''
from sklearn.ensemble import RandomForestClassifier
from skl2onnx import to_onnx


def convert(fitted, sample, opset):
    stump = RandomForestClassifier(n_estimators=1, max_depth=1, random_state=0).fit(sample, fitted.predict(sample))
    return to_onnx(stump, sample[:1].astype("float32"), target_opset=opset, options={"zipmap": False})
'''


@pytest.fixture(scope="module")
def onnx_built(built_project: Callable[[Combo], Built]) -> Built:
    return built_project(ONNX)


@pytest.fixture(scope="module")
def onnx_server(onnx_built: Built):
    with Container(onnx_built.serve_image, *HARDENED) as container:
        yield container


@pytest.mark.engine
@pytest.mark.chain(ONNX)
def test_metadata_records_onnxruntime_and_opset(onnx_built: Built) -> None:
    meta = onnx_built.metadata
    assert meta["serve_runtime"] == "onnx" and meta["artifact"] == "model.onnx" and meta["pickle_based"] is False
    assert meta["framework"] == "scikit-learn" and meta["framework_version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["onnxruntime_version"]), meta
    assert meta["onnx_opset"] == MATRIX["framework"]["sklearn"]["onnx"]["opset"]
    assert sorted(p.name for p in (onnx_built.project / "models").iterdir() if not p.name.startswith(".")) == [
        "metadata.json", "model.onnx"]


@pytest.mark.engine
@pytest.mark.chain(ONNX)
def test_serve_image_has_onnxruntime_and_no_framework(onnx_built: Built) -> None:
    code = "import importlib.metadata as m; print(' '.join(sorted(d.metadata['Name'].lower() for d in m.distributions())))"
    installed = set(run(["docker", "run", "--rm", onnx_built.serve_image, "python", "-c", code]).stdout.split())
    assert "onnxruntime" in installed and "numpy" in installed
    assert installed & set(TRAINING_ONLY) == set(), sorted(installed & set(TRAINING_ONLY))
    # nor what only onnxruntime's offline tools use: left out of the lock, not deleted after the install
    exclude = set(MATRIX["runtime"]["onnx"]["serve_exclude"])
    assert installed & exclude == set(), sorted(installed & exclude)
    serve = (onnx_built.project / "requirements/serve.txt").read_text()
    train = (onnx_built.project / "requirements/train.txt").read_text()
    assert not [name for name in exclude if re.search(rf"^{name}==", serve, re.MULTILINE)], serve[-500:]
    assert re.search(r"^protobuf==", train, re.MULTILINE), "the ONNX export still needs protobuf"
    # and no offline tools or C library for native programs in the image (scripts/prune_venv.py)
    code = ("import pathlib, onnxruntime as o; d = pathlib.Path(o.__file__).parent; "
            "print(sorted(p.name for p in d.glob('capi/libonnxruntime.so*')), "
            "[m for m in ('tools', 'quantization', 'transformers') if (d / m).exists()])")
    assert run(["docker", "run", "--rm", onnx_built.serve_image, "python", "-c", code]).stdout.split() == ["[]", "[]"]


@pytest.mark.engine
@pytest.mark.chain(ONNX)
def test_ready_predict_and_metadata(onnx_server: Container, onnx_built: Built) -> None:
    assert onnx_server.http("GET", "/ready")[0] == 200
    status, body = onnx_server.http("POST", "/predict", {"features": ROW, "return_probabilities": True})
    assert status == 200, body
    assert body["labels"] == ["setosa"] and body["model_sha256"] == onnx_built.metadata["sha256"]
    assert abs(sum(body["probabilities"][0]) - 1) < 1e-5
    status, meta = onnx_server.http("GET", "/metadata")
    assert status == 200 and meta["serve_runtime"] == "onnx"
    assert "telemetry" not in onnx_server.logs(), "ONNX Runtime's telemetry is off in the server"


@pytest.mark.engine
@pytest.mark.chain(DEFAULT_COMBO, ONNX)
def test_predictions_equal_the_native_runtime(onnx_server: Container, onnx_built: Built,
                                              serve_container, built_project: Callable[[Combo], Built]) -> None:
    native = built_project(DEFAULT_COMBO)
    assert native.metadata["framework_version"] == onnx_built.metadata["framework_version"], "same locks expected"
    code = "import json; from sklearn.datasets import load_iris; print(json.dumps(load_iris().data.tolist()))"
    rows = json.loads(run(["docker", "run", "--rm", onnx_built.train_image, "python", "-c", code]).stdout)
    request = {"instances": rows, "return_probabilities": True}
    with serve_container(DEFAULT_COMBO) as native_server:
        status, expected = native_server.http("POST", "/predict", request)
        assert status == 200, expected
    status, got = onnx_server.http("POST", "/predict", request)
    assert status == 200, got
    assert got["predictions"] == expected["predictions"]
    gap = max(abs(a - b) for r, s in zip(got["probabilities"], expected["probabilities"]) for a, b in zip(r, s))
    assert gap <= 1e-4, f"probabilities differ by {gap}"


@pytest.mark.engine
@pytest.mark.chain(ONNX)
def test_parity_failure_writes_no_artifact_and_exits_1(onnx_built: Built, tmp_path: Path) -> None:
    package = next((onnx_built.project / "src").iterdir()).name
    converter = tmp_path / "onnx_export.py"
    converter.write_text(BAD_CONVERTER)
    converter.chmod(0o644)
    models = tmp_path / "models"
    models.mkdir()
    models.chmod(0o777)
    result = run(["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
                  "-v", f"{converter}:/app/src/{package}/onnx_export.py:ro", "-v", f"{models}:/app/models",
                  onnx_built.train_image], check=False)
    output = result.stdout + result.stderr  # the log goes to stdout
    assert result.returncode == 1, output[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert "ERROR" in last and "model.onnx not written: ONNX Runtime disagrees with scikit-learn" in last, output
    assert "rows get another class" in last and "serve_runtime=native" in last
    assert "Traceback" not in output and "onnxruntime" not in result.stderr, "one line, and no telemetry warning"
    assert [p.name for p in models.iterdir()] == [], "nothing may be written when parity fails"


@pytest.mark.engine
@pytest.mark.chain(ONNX)
def test_project_tests_pass_in_the_train_image(onnx_built: Built) -> None:
    """The generated tests (training, serving, the runtime's own metadata) on the locked onnxruntime and framework."""
    result = run(["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "-e", "HOME=/tmp",
                  "-v", f"{onnx_built.project / 'tests'}:/app/tests:ro", onnx_built.train_image,
                  "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], check=False, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
