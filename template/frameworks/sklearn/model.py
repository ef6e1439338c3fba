"""The model: the one module to rewrite for your own model; train.py and the server call only what is here.

scikit-learn, a RandomForestClassifier. Format: joblib (a pickle). Unpickling runs code, so artifacts.py loads the
artifact only after its sha256 matches metadata.json, and refuses a model made by another scikit-learn version.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from sklearn.ensemble import RandomForestClassifier

FRAMEWORK = "scikit-learn"
FRAMEWORK_VERSION = sklearn.__version__
ARTIFACT = "model.joblib"
PICKLE_BASED = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)


def fit(features: np.ndarray, target: np.ndarray, *, seed: int, n_jobs: int) -> Any:
    model = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=n_jobs)
    return model.fit(features, target)


def save(model: Any, path: Path) -> None:
    # Serving runs one request per thread: a model that spawns its own workers per call only adds overhead.
    model.set_params(n_jobs=1)
    joblib.dump(model, path)


def load(path: Path) -> Any:
    return joblib.load(path)


def predict(model: Any, rows: np.ndarray) -> np.ndarray:
    return model.predict(rows)


def predict_proba(model: Any, rows: np.ndarray) -> np.ndarray:
    """Class probabilities, one column per class index."""
    return model.predict_proba(rows)
