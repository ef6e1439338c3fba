"""How the server runs the model (serve_runtime=onnx): ONNX Runtime on model.onnx, without {{ fw.label }}.

Training converts the fitted model (onnx_export.py, {{ fw.label }}'s converter) and writes model.onnx only when
ONNX Runtime answers like the framework on every training row: the same class, and each probability within
PARITY_ATOL. Otherwise no artifact is written and training exits 1 naming the difference. The serve image holds
onnxruntime and numpy only: this module imports model.py and the converter inside save(), never at import, and
nothing in it unpickles. The exported graph takes float32 rows named by its one input and returns an output named
"probabilities" (rows x classes); the predicted class is its argmax, as in the framework's predict.
Interface: see native.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Read when onnxruntime loads: its Linux wheels send usage telemetry and store a device id under ~/.cache (a
# read-only container logs a warning for it). A server phones nobody; set ORT_DISABLE_TELEMETRY=0 to allow it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from ._cpu import available_cpus
from .artifacts import ArtifactRefused

NAME = "onnx"
FRAMEWORK = "{{ fw.name }}"  # model.FRAMEWORK of the training image; save() checks they agree
ARTIFACT = "{{ artifact }}"
PICKLE_BASED = False
INPUT = "numbers"
OPSET = {{ fw.onnx.opset }}  # the ai.onnx opset the export targets
# float32 inference against the framework's float64: differences are around 1e-7; 1e-4 leaves room, and still
# catches a wrong conversion, which moves probabilities by whole percent
PARITY_ATOL = 1e-4
OUTPUT = "probabilities"


def save(fitted: Any, path: Path, sample: np.ndarray) -> None:
    """Convert, check against the framework on `sample` (the training rows), then write; refuse on any difference."""
    from . import model, onnx_export  # training only: the serve image has neither the framework nor the converter

    if model.FRAMEWORK != FRAMEWORK:
        raise ArtifactRefused(
            f"{ARTIFACT} not written: model.py is {model.FRAMEWORK} but onnx_export.py converts {FRAMEWORK} "
            "(re-render the project for the new framework, or set serve_runtime=native)"
        )
    sample = np.asarray(sample, dtype=np.float64)
    proto = onnx_export.convert(fitted, sample, OPSET)
    too_new = [f"{o.domain or 'ai.onnx'} {o.version}" for o in proto.opset_import
               if o.domain in ("", "ai.onnx") and o.version > OPSET]
    if too_new:
        raise ArtifactRefused(
            f"{ARTIFACT} not written: the converter used opset {', '.join(too_new)}, over OPSET {OPSET} "
            "(pass the opset to the converter in onnx_export.py)"
        )
    proto.graph.name = "model"  # onnxmltools names it with a random id: the artifact's sha256 would never repeat
    data = proto.SerializeToString()
    problem = parity_problem(
        np.asarray(model.predict(fitted, sample)),
        np.asarray(model.predict_proba(fitted, sample), dtype=np.float64),
        predict_proba(load(data, threads=1), sample),
    )
    if problem:
        raise ArtifactRefused(
            f"{ARTIFACT} not written: ONNX Runtime disagrees with {FRAMEWORK} on the {len(sample)} training rows: "
            f"{problem} (fix onnx_export.py, or serve this model with serve_runtime=native)"
        )
    path.write_bytes(data)


def parity_problem(classes: np.ndarray, proba: np.ndarray, onnx_proba: np.ndarray) -> str | None:
    """What differs between the framework's answers and ONNX Runtime's, in one phrase; None when they agree."""
    if onnx_proba.shape != proba.shape:
        return f"probabilities of shape {onnx_proba.shape} instead of {proba.shape}"
    onnx_classes = onnx_proba.argmax(axis=1)
    wrong = np.flatnonzero(onnx_classes != classes)
    if wrong.size:
        row = wrong[0]
        return (f"{wrong.size} rows get another class (row {row}: class {onnx_classes[row]} instead of "
                f"{classes[row]})")
    gap = float(np.abs(onnx_proba - proba).max())
    if not gap <= PARITY_ATOL:  # also NaN
        return f"probabilities differ by up to {gap:.3g} (tolerance {PARITY_ATOL:g})"
    return None


def metadata() -> dict[str, Any]:
    # framework and framework_version are recorded by train.py from model.py; the serve image has no framework to
    # compare them with. The server compares these with its own (ALLOW_VERSION_MISMATCH=true overrides).
    return {"onnxruntime_version": ort.__version__, "onnx_opset": OPSET}


def load(path: Path | bytes, threads: int | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # ONNX Runtime sizes its pool by the host's cores: follow the container's CPU quota instead
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: converters' shape hints of unused outputs warn on every run
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def predict(loaded: ort.InferenceSession, rows: np.ndarray) -> np.ndarray:
    return predict_proba(loaded, rows).argmax(axis=1)


def predict_proba(loaded: ort.InferenceSession, rows: np.ndarray) -> np.ndarray:
    feed = {loaded.get_inputs()[0].name: np.asarray(rows, dtype=np.float32)}
    return np.asarray(loaded.run([OUTPUT], feed)[0], dtype=np.float64)
