"""model.onnx from the fitted LightGBM Booster (serve_runtime=onnx): onnxmltools, the ONNX project's converter.
Training only: runtime.save() imports this module, checks the result against LightGBM on the training rows, and
writes it only if both agree. ONNX Runtime needs no OpenMP: the serve image skips libgomp1.
See runtime.py for what the graph must look like.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnxmltools.convert import convert_lightgbm
from onnxmltools.convert.common.data_types import FloatTensorType


def convert(fitted: Any, sample: np.ndarray, opset: int) -> Any:
    """The ONNX ModelProto: float32 rows in (dynamic batch), "probabilities" (rows x classes) out."""
    return convert_lightgbm(fitted, initial_types=[("input", FloatTensorType([None, sample.shape[1]]))],
                            target_opset=opset, zipmap=False)  # a plain probability matrix, not one dict per row
