"""The model: the one module to rewrite for your own model; train.py and the server call only what is here.

PyTorch, a small multi-layer perceptron. Format: the weights as safetensors (`model.safetensors`): tensors only, so
loading never runs code (unlike a pickle), and the bytes are the same for the same weights (torch.save embeds a
random id), so the artifact hash is reproducible. The architecture lives here, in `build()`. TorchScript would let
serving skip this module, but it needs the same `torch` runtime (no smaller image) and PyTorch has deprecated it in
favour of `torch.export`.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

FRAMEWORK = "pytorch"
FRAMEWORK_VERSION = torch.__version__
ARTIFACT = "model.safetensors"
PICKLE_BASED = False

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True)


def device() -> torch.device:
    if torch.cuda.is_available():
        log.info("pytorch: running on cuda: %s (torch %s, CUDA %s)", torch.cuda.get_device_name(), torch.__version__,
                 torch.version.cuda)
        return torch.device("cuda")
    log.info("pytorch: no GPU visible (torch %s), running on the CPU", torch.__version__)
    return torch.device("cpu")


def build(n_features: int, n_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_features, 32), nn.ReLU(), nn.Linear(32, n_classes))


class Classifier:
    """The network plus what it needs to run: input scaling and sizes (all saved in the state_dict)."""

    def __init__(self, net: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        self.net, self.mean, self.std = net, mean, std

    def tensors(self) -> dict[str, torch.Tensor]:
        state = {f"net.{name}": value.contiguous() for name, value in self.net.state_dict().items()}
        return {**state, "input.mean": self.mean.contiguous(), "input.std": self.std.contiguous()}


def fit(features: np.ndarray, target: np.ndarray, *, seed: int, n_jobs: int) -> Classifier:
    torch.set_num_threads(n_jobs)
    dev = device()
    x = torch.tensor(features, dtype=torch.float32)
    y = torch.tensor(target, dtype=torch.long)
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    net = build(x.shape[1], int(y.max()) + 1).to(dev)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    xs, ys = ((x - mean) / std).to(dev), y.to(dev)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(200):
        for batch in torch.randperm(len(xs), generator=generator).split(32):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(net(xs[batch]), ys[batch])
            loss.backward()
            optimizer.step()
    return Classifier(net.cpu().eval(), mean, std)


def save(model: Classifier, path: Path) -> None:
    save_file(model.tensors(), str(path))


def load(path: Path) -> Classifier:
    dev = device()
    tensors = load_file(str(path), device=str(dev))
    weights = {name.removeprefix("net."): value for name, value in tensors.items() if name.startswith("net.")}
    net = build(weights["0.weight"].shape[1], weights["2.weight"].shape[0]).to(dev)
    net.load_state_dict(weights)
    return Classifier(net.eval(), tensors["input.mean"], tensors["input.std"])


@torch.inference_mode()
def predict(model: Classifier, rows: np.ndarray) -> np.ndarray:
    """Class indices (0 .. n_classes-1)."""
    return predict_proba(model, rows).argmax(axis=1)


def predict_proba(model: Classifier, rows: np.ndarray) -> np.ndarray:
    """Class probabilities (softmax of the logits), one column per class index."""
    x = (torch.as_tensor(rows, dtype=torch.float32, device=model.mean.device) - model.mean) / model.std
    with torch.no_grad():
        return torch.softmax(model.net(x), dim=1).cpu().numpy()
