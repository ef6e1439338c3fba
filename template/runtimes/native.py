"""How the server runs the model (serve_runtime=native): through the framework itself, by calling model.py.

The server (serving/) and train.py reach the model only through this module, so another runtime (ONNX Runtime) is
one file; the server never imports model.py itself (the ONNX serve image has no training framework):
    NAME, FRAMEWORK                the runtime (metadata.json "serve_runtime") and the training framework
    ARTIFACT                       file name of the served artifact inside the model directory
    save(fitted, path, sample)     write the artifact (sample: training rows, for runtimes that check parity)
    metadata()                     what metadata.json records about the runtime; the server refuses a model whose
                                   recorded values differ from its own (ALLOW_VERSION_MISMATCH=true overrides)
    load(path) / predict(loaded, rows) -> class indices / predict_proba(loaded, rows) -> (rows, classes)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import model

NAME = "native"
FRAMEWORK = model.FRAMEWORK  # the training framework (metadata.json "framework")
ARTIFACT = model.ARTIFACT
PICKLE_BASED = model.PICKLE_BASED
INPUT = getattr(model, "INPUT", "numbers")  # "text": rows are texts (framework=transformers)


def save(fitted: Any, path: Path, sample: np.ndarray) -> None:  # noqa: ARG001 (the framework's own format)
    model.save(fitted, path)


def metadata() -> dict[str, Any]:
    return {"framework": model.FRAMEWORK, "framework_version": model.FRAMEWORK_VERSION}


def load(path: Path) -> Any:
    return model.load(path)


def predict(loaded: Any, rows: np.ndarray) -> np.ndarray:
    return model.predict(loaded, rows)


def predict_proba(loaded: Any, rows: np.ndarray) -> np.ndarray:
    if not hasattr(model, "predict_proba"):  # a model.py written before probabilities existed
        raise NotImplementedError("model.py has no predict_proba(model, rows)")
    return model.predict_proba(loaded, rows)
