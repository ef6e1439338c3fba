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
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

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
    if _is_forest(model):  # what RandomForestClassifier.predict does, on the faster probabilities below
        return model.classes_.take(np.argmax(_forest_proba(model, rows), axis=1), axis=0)
    return model.predict(rows)


def predict_proba(model: Any, rows: np.ndarray) -> np.ndarray:
    """Class probabilities, one column per class index."""
    if _is_forest(model):
        return _forest_proba(model, rows)
    return model.predict_proba(rows)


def _is_forest(model: Any) -> bool:
    # single-output forests, where scikit-learn still validates rows as below (else: its own, slower, path)
    return (type(model) in (RandomForestClassifier, ExtraTreesClassifier) and model.n_outputs_ == 1
            and hasattr(model, "_validate_X_predict"))


def _forest_proba(forest: Any, rows: np.ndarray) -> np.ndarray:
    """The forest's predict_proba without its per-tree bookkeeping: scikit-learn runs each tree as a joblib task
    that re-installs the warning filters, three quarters of a 100-tree call on a few rows (about 4.5 ms against 1 ms
    on one CPU). The same trees in the same order, summed and divided as scikit-learn does: the same numbers, bit
    for bit (tests/test_model_forest.py checks it)."""
    rows = forest._validate_X_predict(rows)  # the forest's own checks and float32 conversion
    total = np.zeros((rows.shape[0], forest.n_classes_), dtype=np.float64)
    for tree in forest.estimators_:
        total += tree.predict_proba(rows, check_input=False)
    total /= len(forest.estimators_)
    return total
