"""The model: the one module to rewrite for your own model; train.py and the server call only what is here.

TensorFlow / Keras 3, a small dense network. Format: the native `.keras` archive (architecture, weights and
preprocessing in one zip), loaded with `safe_mode=True`, which refuses arbitrary code such as lambda layers.
CPU images install `tensorflow-cpu`; GPU images install `tensorflow[and-cuda]`, whose CUDA libraries come from pip.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up banner out of the logs

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

FRAMEWORK = "tensorflow"
FRAMEWORK_VERSION = tf.__version__
ARTIFACT = "model.keras"
PICKLE_BASED = False

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    tf.keras.backend.clear_session()  # fresh state and name counters: a second run in one process is identical
    random.seed(seed)
    np.random.seed(seed)
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def fit(features: np.ndarray, target: np.ndarray, *, seed: int, n_jobs: int) -> Any:
    try:
        tf.config.threading.set_inter_op_parallelism_threads(n_jobs)
        tf.config.threading.set_intra_op_parallelism_threads(n_jobs)
    except RuntimeError:  # TensorFlow is already running in this process: its pools are set for good
        pass
    if not tf.config.list_physical_devices("GPU"):
        log.info("tensorflow: no GPU visible (tensorflow %s), running on the CPU", tf.__version__)
    normalizer = tf.keras.layers.Normalization(name="normalize")
    normalizer.adapt(features.astype("float32"))
    model = tf.keras.Sequential([
        tf.keras.Input(shape=(features.shape[1],), name="features"),
        normalizer,
        tf.keras.layers.Dense(32, activation="relu", name="hidden"),
        tf.keras.layers.Dense(int(target.max()) + 1, name="logits"),
    ], name="classifier")
    model.compile(optimizer=tf.keras.optimizers.Adam(0.02),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(features.astype("float32"), target, epochs=100, batch_size=32, shuffle=True, verbose=0)
    return model


def _renumber_shared_objects(node: Any, ids: dict[int, int]) -> Any:
    """Keras writes Python object ids (memory addresses) as `shared_object_id`; number them in order instead."""
    if isinstance(node, dict):
        return {
            key: ids.setdefault(value, len(ids)) if key == "shared_object_id" else _renumber_shared_objects(value, ids)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_renumber_shared_objects(item, ids) for item in node]
    return node


def save(model: Any, path: Path) -> None:
    # Keras insists on the .keras suffix (train.py writes to a temporary name), and its archive records the save
    # time and memory addresses: rewrite it with fixed timestamps, no date and numbered shared objects, so the same
    # weights give the same bytes and sha256.
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / ARTIFACT
        model.save(saved)
        with zipfile.ZipFile(saved) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
            for name in sorted(source.namelist()):
                data = source.read(name)
                if name == "metadata.json":
                    metadata = json.loads(data)
                    metadata.pop("date_saved", None)
                    data = json.dumps(metadata, sort_keys=True).encode()
                elif name == "config.json":
                    data = json.dumps(_renumber_shared_objects(json.loads(data), {})).encode()
                target.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)


def load(path: Path) -> Any:
    with tempfile.TemporaryDirectory() as tmp:  # same suffix rule on load; /tmp is writable in read-only containers
        copy = Path(tmp) / ARTIFACT
        shutil.copyfile(path, copy)
        return tf.keras.models.load_model(copy, safe_mode=True, compile=False)


def predict(model: Any, rows: np.ndarray) -> np.ndarray:
    """Class indices (0 .. n_classes-1)."""
    return predict_proba(model, rows).argmax(axis=1)


def predict_proba(model: Any, rows: np.ndarray) -> np.ndarray:
    """Class probabilities (softmax of the logits), one column per class index."""
    return np.asarray(tf.nn.softmax(model(rows.astype("float32"), training=False), axis=1))
