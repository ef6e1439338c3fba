"""Configuration from environment variables (and .env), validated once at start-up."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import _project
from ._cpu import available_cpus

# At most this many server processes by default; with a GPU one process owns it (each would hold its own CUDA context
# and copy of the model in GPU memory, and contend for the device)
DEFAULT_MAX_WORKERS = 1 if _project.GPU else 4


class Settings(BaseSettings):
    # MODEL_DIR, LOG_LEVEL, ... (case-insensitive); `model_` is a field prefix here, not pydantic's namespace
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", protected_namespaces=())

    model_dir: Path = Path("models")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class TrainSettings(Settings):
    data_path: Path | None = None  # CSV with a header row; None trains on the iris data shipped with scikit-learn
    target_column: str = "target"
    seed: int = 42
    test_size: float = Field(0.2, gt=0, lt=1)
    n_jobs: int = Field(default_factory=available_cpus, ge=1)


class ServeSettings(Settings):
    host: str = "0.0.0.0"
    access_log: bool = False  # a line per request (about 4% of a busy worker); /metrics counts requests anyway
    port: int = Field(_project.SERVE_PORT, ge=1, le=65535)
    model_name: str = Field(_project.MODEL_NAME, min_length=1)  # the model's name in the V2 protocol's URLs
    max_batch_size: int = Field(1024, ge=1, le=100_000)
    # Micro-batching (batching.py): concurrent requests share one model call of at most MAX_BATCH_ROWS rows; while
    # traffic flows, a call waits up to BATCH_WAIT_MS for more (a lone request never waits). BATCHING=false: off.
    batching: bool = True
    max_batch_rows: int = Field(256, ge=1, le=100_000)
    batch_wait_ms: float = Field(2.0, ge=0, le=1000)
    # Server processes: one per CPU of the container's quota by default, at most DEFAULT_MAX_WORKERS (without a CPU
    # limit on a large host, a copy of the model per core would exhaust memory); WORKERS=n sets it
    workers: int = Field(default_factory=lambda: min(available_cpus(), DEFAULT_MAX_WORKERS), ge=1, le=256)
    # Larger request bodies get a 413 before they are read; None: MAX_BATCH_SIZE rows of the model's features
    max_body_bytes: int | None = Field(None, ge=1024)
    # Text models: the longest text accepted, in characters (a 422 above it); MAX_BODY_BYTES derives from it
    max_text_chars: int = Field(10_000, ge=1, le=1_000_000)
    allow_version_mismatch: bool = False
    # Where the model comes from: MODEL_DIR, or, when MODEL_URI is set, a bundle downloaded into MODEL_CACHE_DIR
    # and checked against MODEL_SHA256 (credentials: MODEL_TOKEN or MODEL_TOKEN_FILE, read at start, never baked).
    model_uri: str | None = None
    model_sha256: str | None = None
    model_cache_dir: Path = Path("var/cache")
    allow_unverified_model: bool = False
    # A public key (PEM): only a model folder signed by it loads, whatever its source (model.sig; docs/signing.md);
    # empty: none
    model_public_key: Annotated[Path | None, BeforeValidator(lambda v: v or None)] = None
    download_timeout: float = Field(30, gt=0)
    download_retries: int = Field(3, ge=0, le=10)
    # One JSON line per prediction, appended to a size-rotated file
    log_predictions: bool = _project.LOG_PREDICTIONS
    prediction_log: Path = Path("var/log/predictions.jsonl")
    prediction_log_max_bytes: int = Field(10_000_000, ge=1000)


S = TypeVar("S", bound=Settings)


def load_settings(cls: type[S]) -> S:
    """Read settings or exit with one line per bad variable (never a traceback)."""
    try:
        return cls()
    except ValidationError as error:
        for problem in error.errors():
            name = str(problem["loc"][0]).upper() if problem["loc"] else cls.__name__
            print(f"configuration error: {name}={problem.get('input')!r}: {problem['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
        force=True,
    )
