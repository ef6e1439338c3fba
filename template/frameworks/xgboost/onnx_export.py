"""model.onnx from the fitted XGBoost Booster (serve_runtime=onnx): onnxmltools, the ONNX project's converter.
Training only: runtime.save() imports this module, checks the result against XGBoost on the training rows, and
writes it only if both agree. See runtime.py for what the graph must look like.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnxmltools.convert import convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType


def convert(fitted: Any, sample: np.ndarray, opset: int) -> Any:
    """The ONNX ModelProto: float32 rows in (dynamic batch), "probabilities" (rows x classes) out (multi:softprob)."""
    return convert_xgboost(fitted, initial_types=[("input", FloatTensorType([None, sample.shape[1]]))],
                           target_opset=opset)
