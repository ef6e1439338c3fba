"""Train the model reproducibly and write it with its metadata: `python -m <package>.train`."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import _project, model, runtime
from .artifacts import (
    ArtifactRefused,
    NotWritable,
    check_writable,
    file_hashes,
    sha256_of,
    write_atomically,
    write_folder_atomically,
    write_metadata,
)
from .config import TrainSettings, load_settings, setup_logging
from .signing import SIGNATURE_FILE

log = logging.getLogger(__name__)


class DataError(Exception):
    """The training data cannot be used; the message says why."""


@dataclass
class Dataset:
    features: np.ndarray
    target: np.ndarray
    feature_names: list[str]
    target_names: list[str] | None
    source: str


def load_texts(settings: TrainSettings) -> Dataset:
    """Text models: a CSV of `text,label` (DATA_PATH, or the demo shipped in the package); labels are the names of
    model.LABELS (or their indices), in that order."""
    import pandas as pd

    path = settings.data_path or Path(__file__).with_name("demo_texts.csv")
    if not path.is_file():
        raise DataError(f"DATA_PATH {path}: no such file")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"text", "label"} - set(frame.columns)
    if missing:
        raise DataError(f"DATA_PATH {path}: needs the columns text and label; missing {sorted(missing)}")
    ids = {name: i for i, name in enumerate(model.LABELS)} | {str(i): i for i in range(len(model.LABELS))}
    unknown = sorted(set(frame["label"]) - set(ids))
    if unknown:
        raise DataError(f"DATA_PATH {path}: labels {unknown[:5]} are not in TEXT_LABELS {model.LABELS}")
    if len(frame) < 2 or (frame["text"].str.strip() == "").any():
        raise DataError(f"DATA_PATH {path}: needs at least 2 rows, each with a non-empty text")
    target = frame["label"].map(ids).to_numpy()
    return Dataset(frame["text"].to_numpy(dtype=object), target, ["text"], list(model.LABELS), str(path))


def load_data(settings: TrainSettings) -> Dataset:
    if getattr(model, "INPUT", "numbers") == "text":
        return load_texts(settings)
    if settings.data_path is None:
        from sklearn.datasets import load_iris  # ships inside scikit-learn: works offline

        iris = load_iris()
        names = [str(n) for n in iris.target_names]
        return Dataset(iris.data, iris.target, list(iris.feature_names), names, "sklearn.datasets.load_iris")

    import pandas as pd

    path = settings.data_path
    if not path.is_file():
        raise DataError(f"DATA_PATH {path}: no such file")
    frame = pd.read_csv(path)
    if settings.target_column not in frame.columns:
        raise DataError(
            f"DATA_PATH {path}: no column {settings.target_column!r} (TARGET_COLUMN); columns: {list(frame.columns)}"
        )
    features = frame.drop(columns=[settings.target_column])
    non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if non_numeric:
        raise DataError(f"DATA_PATH {path}: feature columns must be numeric; not numeric: {non_numeric}")
    if len(frame) < 2:
        raise DataError(f"DATA_PATH {path}: needs at least 2 rows, has {len(frame)}")
    return Dataset(
        features.to_numpy(dtype=np.float64),
        frame[settings.target_column].to_numpy(),
        [str(c) for c in features.columns],
        None,
        str(path),
    )


def train(settings: TrainSettings) -> dict[str, Any]:
    """Fit, evaluate on a seeded hold-out split, and write artifact + metadata.json into settings.model_dir."""
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import train_test_split

    model.seed_everything(settings.seed)
    data = load_data(settings)
    # Models see class indices 0..k-1; metadata.json maps them back to the original class values.
    classes, target, counts = np.unique(data.target, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise DataError(f"the target has a single class ({classes[0]!r}): nothing to learn")
    stratify = target if counts.min() >= 2 else None
    x_train, x_test, y_train, y_test = train_test_split(
        data.features, target, test_size=settings.test_size, random_state=settings.seed, stratify=stratify
    )
    fitted = model.fit(x_train, y_train, seed=settings.seed, n_jobs=settings.n_jobs)
    accuracy = float(accuracy_score(y_test, model.predict(fitted, x_test)))

    artifact = settings.model_dir / runtime.ARTIFACT
    (settings.model_dir / SIGNATURE_FILE).unlink(missing_ok=True)  # a previous model's signature: never this one's
    write = write_folder_atomically if getattr(model, "INPUT", "numbers") == "text" else write_atomically
    write(artifact, lambda tmp: runtime.save(fitted, tmp, x_train))
    metadata = {
        "framework": model.FRAMEWORK,
        "framework_version": model.FRAMEWORK_VERSION,
        **runtime.metadata(),
        "serve_runtime": runtime.NAME,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.machine(),  # x86_64 or aarch64: the server logs where it was trained and where it runs
        "artifact": runtime.ARTIFACT,
        "sha256": sha256_of(artifact),
        **({"files": file_hashes(artifact)} if artifact.is_dir() else {}),  # a folder: every file's sha256
        **({"base_model": fitted.base_model, "base_model_revision": fitted.base_revision}
           if hasattr(fitted, "base_revision") else {}),
        "pickle_based": runtime.PICKLE_BASED,
        "feature_names": data.feature_names,
        "target_names": data.target_names,
        "classes": classes.tolist(),  # predictions are indices into this list
        "metrics": {"accuracy": accuracy, "n_train": len(y_train), "n_test": len(y_test)},
        "seed": settings.seed,
        "data_source": data.source,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_metadata(settings.model_dir, metadata)
    return metadata


# model_signing: the train image's signer (its own venv, /opt/sign) and the private key's secret file
SIGNER = [Path("/opt/sign/bin/python"), Path("/opt/sign/sign_model.py")]
SIGNING_KEY = Path("/run/secrets/model_signing_key")


def signing_key() -> Path | None:
    """model_signing: the private key (MODEL_SIGNING_KEY_FILE, or compose's secret); exits at once without one."""
    if not _project.MODEL_SIGNING:
        return None
    key = Path(os.environ.get("MODEL_SIGNING_KEY_FILE") or SIGNING_KEY)
    if not key.is_file() or key.stat().st_size == 0:
        log.error("model_signing: no private key at %s (the server loads signed models only): run `make keys`, or "
                  "point MODEL_SIGNING_KEY in .env at your key file", key)
        raise SystemExit(1)
    return key


def sign(model_dir: Path, key: Path) -> None:
    """Sign the model folder (metadata.json and the artifact) into model.sig, with model_signing in its own venv."""
    result = subprocess.run([*map(str, SIGNER), str(model_dir), "--private-key", str(key)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:  # sign_model.py says why in one line, never the key
        log.error("%s", (result.stderr.strip() or f"the signer exited {result.returncode}").splitlines()[-1])
        raise SystemExit(1)
    log.info("%s", result.stdout.strip())


def track(settings: TrainSettings, metadata: dict[str, Any]) -> None:
    """tracking=mlflow: log the run and register the model where MLFLOW_TRACKING_URI points (unset: nothing)."""
    if _project.TRACKING != "mlflow":
        return
    from . import registry  # type: ignore[attr-defined, unused-ignore]  # (tracking=mlflow projects only)

    client = registry.Registry.from_env(os.environ)
    if client is None:
        log.info("MLFLOW_TRACKING_URI is not set: the model was not logged to MLflow")
        return
    params = {"seed": settings.seed, "test_size": settings.test_size, "data_source": metadata["data_source"],
              "framework": metadata["framework"], "framework_version": metadata["framework_version"],
              "serve_runtime": metadata["serve_runtime"]}
    try:
        logged = registry.log_training(
            client, settings.model_dir, metadata, params=params,
            experiment=os.environ.get("MLFLOW_EXPERIMENT_NAME") or _project.REGISTERED_MODEL,
            model_name=os.environ.get("REGISTERED_MODEL_NAME") or _project.REGISTERED_MODEL,
        )
    except registry.RegistryError as error:
        log.error("%s (the model is in %s, not registered)", error, settings.model_dir)
        raise SystemExit(1) from None
    log.info("registered %s version %s as @%s (run %s): `make promote` makes it the champion", logged["name"],
             logged["version"], logged["alias"], logged["run_id"])


def main() -> None:
    settings = load_settings(TrainSettings)
    setup_logging(settings.log_level)
    key = signing_key()  # before training: a model that cannot be signed would not be served
    try:
        check_writable(settings.model_dir)
        metadata = train(settings)
    except (DataError, NotWritable, ArtifactRefused, *getattr(model, "USER_ERRORS", ())) as error:
        log.error("%s", error)
        raise SystemExit(1) from None
    log.info(
        "trained %s %s on %s: accuracy %.3f, sha256 %s, written to %s",
        metadata["framework"],
        metadata["framework_version"],
        metadata["data_source"],
        metadata["metrics"]["accuracy"],
        metadata["sha256"][:12],
        settings.model_dir,
    )
    if key is not None:
        sign(settings.model_dir, key)
    track(settings, metadata)


if __name__ == "__main__":
    main()
