"""model.onnx from the fitted scikit-learn model (serve_runtime=onnx): skl2onnx, the converter scikit-learn's
developers maintain. Training only: runtime.save() imports this module, checks the result against scikit-learn on
the training rows, and writes it only if both agree. A model.py with another estimator needs a converter skl2onnx
knows (most of scikit-learn's); see runtime.py for what the graph must look like.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skl2onnx import to_onnx


def convert(fitted: Any, sample: np.ndarray, opset: int) -> Any:
    """The ONNX ModelProto: float32 rows in, "probabilities" (rows x classes) out."""
    return to_onnx(
        fitted,
        sample[:1].astype(np.float32),  # the input type and width; the batch axis stays dynamic
        target_opset=opset,
        options={"zipmap": False},  # a plain probability matrix, not one dict per row
    )
