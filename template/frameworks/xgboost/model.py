"""The model: the one module to rewrite for your own model; train.py and the server call only what is here.

XGBoost, gradient-boosted trees through the native Booster API (serving needs neither scikit-learn nor pickle).
Format: XGBoost's own JSON model (`Booster.save_model`), readable by any XGBoost of the same major version and
never executed on load. CPU images install `xgboost-cpu` (no NCCL, no CUDA); GPU images install `xgboost`.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

FRAMEWORK = "xgboost"
FRAMEWORK_VERSION = xgb.__version__
ARTIFACT = "model.json"
PICKLE_BASED = False

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)


def device() -> str:
    """`cuda` when this XGBoost build has CUDA and a GPU is visible, else `cpu` (said once in the log)."""
    try:
        if xgb.build_info().get("USE_CUDA"):
            xgb.train({"device": "cuda", "tree_method": "hist"}, xgb.DMatrix(np.zeros((2, 1)), label=[0, 1]), 1)
            return "cuda"
    except xgb.core.XGBoostError:
        pass
    log.info("xgboost: no usable GPU, running on the CPU")
    return "cpu"


def fit(features: np.ndarray, target: np.ndarray, *, seed: int, n_jobs: int) -> Any:
    n_classes = int(target.max()) + 1
    params = {
        "objective": "multi:softprob",
        "num_class": n_classes,
        "max_depth": 4,
        "eta": 0.3,
        "seed": seed,
        "nthread": n_jobs,
        "tree_method": "hist",  # deterministic for a given seed and thread count
        "device": device(),
    }
    return xgb.train(params, xgb.DMatrix(features, label=target), num_boost_round=50)


def save(model: Any, path: Path) -> None:
    # the temporary file of train.py has no .json suffix: say the format explicitly
    path.write_bytes(model.save_raw(raw_format="json"))


def load(path: Path) -> Any:
    booster = xgb.Booster()
    booster.load_model(bytearray(path.read_bytes()))
    booster.set_param({"nthread": 1, "device": device()})  # one request per thread in the server
    return booster


def predict(model: Any, rows: np.ndarray) -> np.ndarray:
    """Class indices (0 .. n_classes-1)."""
    return predict_proba(model, rows).argmax(axis=1)


def predict_proba(model: Any, rows: np.ndarray) -> np.ndarray:
    """Class probabilities, one column per class index (multi:softprob)."""
    return model.predict(xgb.DMatrix(rows))
