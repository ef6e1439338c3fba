"""model.onnx from the trained network (serve_runtime=onnx): torch.onnx.export with the dynamo exporter (torch.export
plus onnxscript, PyTorch's maintained path; it runs offline). The graph includes what model.predict_proba does
around the network: input scaling and the softmax. Training only: runtime.save() imports this module, checks the
result against PyTorch on the training rows, and writes it only if both agree. A model.py whose Classifier changes
shape needs the same change in Exported below.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

for noisy in ("torch.onnx", "torch.export", "onnxscript"):  # the exporter logs every step at INFO and WARNING
    logging.getLogger(noisy).setLevel(logging.ERROR)


class Exported(nn.Module):
    """model.predict_proba as one module: scale the rows, run the network, softmax."""

    def __init__(self, fitted: Any):
        super().__init__()
        self.net = fitted.net
        self.register_buffer("mean", fitted.mean.detach().cpu())
        self.register_buffer("std", fitted.std.detach().cpu())

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net((rows - self.mean) / self.std), dim=1)


def convert(fitted: Any, sample: np.ndarray, opset: int) -> Any:
    """The ONNX ModelProto: float32 rows in (dynamic batch), "probabilities" (rows x classes) out."""
    module = Exported(fitted).cpu().eval()
    rows = torch.as_tensor(sample[:2], dtype=torch.float32)  # two rows: a batch of one would be specialised to 1
    program = torch.onnx.export(
        module,
        (rows,),
        dynamo=True,
        opset_version=opset,
        input_names=["input"],
        output_names=["probabilities"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    return program.model_proto
