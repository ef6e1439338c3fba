"""The model: the one module to rewrite for your own model; train.py and the server call only what is here.

LightGBM, gradient-boosted trees through the native Booster API (serving needs neither scikit-learn nor pickle).
Format: LightGBM's own text model (`Booster.model_to_string`), never executed on load. LightGBM needs the OpenMP
runtime (libgomp1), which the Dockerfile installs on slim images (distroless images ship it).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

FRAMEWORK = "lightgbm"
FRAMEWORK_VERSION = lgb.__version__
ARTIFACT = "model.txt"
PICKLE_BASED = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)


def fit(features: np.ndarray, target: np.ndarray, *, seed: int, n_jobs: int) -> Any:
    params = {
        "objective": "multiclass",
        "num_class": int(target.max()) + 1,
        "num_leaves": 15,
        "learning_rate": 0.1,
        "min_data_in_leaf": 5,
        "seed": seed,
        "deterministic": True,  # with force_row_wise: the same model for the same seed and data
        "force_row_wise": True,
        "num_threads": n_jobs,
        "verbosity": -1,
    }
    return lgb.train(params, lgb.Dataset(features, label=target), num_boost_round=50)


def save(model: Any, path: Path) -> None:
    path.write_text(model.model_to_string())


def load(path: Path) -> Any:
    return lgb.Booster(model_str=path.read_text())


def predict(model: Any, rows: np.ndarray) -> np.ndarray:
    """Class indices (0 .. n_classes-1)."""
    return predict_proba(model, rows).argmax(axis=1)


def predict_proba(model: Any, rows: np.ndarray) -> np.ndarray:
    """Class probabilities, one column per class index (the multiclass objective's output)."""
    return model.predict(rows, num_threads=1)
