"""ServingState: what the routes share (settings, the loaded model, the batcher, metrics, prediction log, peer
workers), created once per process by create_app and handed to the routes: /predict's by its router factory, the
others' by the `State` dependency."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import Depends, Request

from .. import _project, runtime
from ..artifacts import LoadedModel, ModelError, load_model
from ..config import ServeSettings
from ..signing import SignatureError, load_public_key, verify_model
from .batching import Arrivals, Batcher
from .limits import OVERHEAD, default_max_body_bytes
from .metrics import Metrics
from .predlog import PredictionLog
from .source import COMPLETE, SourceError, fetch_bundle, read_token
from .workers import Peers

log = logging.getLogger(__name__)
CACHE_MARKERS = (COMPLETE,)  # written into a downloaded model's cache folder after its checks: not the model's


def locate_and_load(settings: ServeSettings) -> LoadedModel:
    """MODEL_DIR, or the verified, cached download of MODEL_URI when it is set, loaded and verified (and its
    signature checked first, with MODEL_PUBLIC_KEY)."""
    where = settings.model_uri or settings.model_dir
    try:
        model_dir = settings.model_dir
        if settings.model_uri and settings.model_uri.startswith("models:"):
            model_dir, served_from = fetch_registered(settings)
            loaded = load_signed(model_dir, settings)
            loaded.served_from = {**served_from, **loaded.served_from}
            return loaded
        if settings.model_uri:
            model_dir = fetch_bundle(
                settings.model_uri,
                settings.model_sha256,
                settings.model_cache_dir,
                allow_unverified=settings.allow_unverified_model,
                token=read_token(os.environ),
                timeout=settings.download_timeout,
                retries=settings.download_retries,
            )
        return load_signed(model_dir, settings)
    except (ModelError, SourceError, SignatureError):
        raise
    except OSError as error:  # unreadable folder or file: say which, as whom
        path = error.filename or where
        raise ModelError(
            f"{path}: {error.strerror or error} (the server runs as uid {os.getuid()}: make the model readable by it)"
        ) from None
    except Exception as error:  # noqa: BLE001 (whatever the model code raises, the server cannot serve)
        raise ModelError(f"{where}: {type(error).__name__}: {error}") from None


def load_signed(model_dir: Path, settings: ServeSettings) -> LoadedModel:
    """load_model, after the folder's signature is checked when MODEL_PUBLIC_KEY names a key (nothing is unpickled
    before); /metadata then names the key."""
    verified = None
    if settings.model_public_key is not None:
        key = load_public_key(settings.model_public_key)
        verified = verify_model(model_dir, key, ignore=CACHE_MARKERS)
    loaded = load_model(model_dir, allow_version_mismatch=settings.allow_version_mismatch)
    if verified is not None:
        loaded.served_from["signed_by"] = verified.key_fingerprint
    return loaded


def fetch_registered(settings: ServeSettings) -> tuple[Path, dict[str, str]]:
    """MODEL_URI=models:/<name>@<alias> (or /<version>): the version MLflow's registry names, verified and cached."""
    assert settings.model_uri is not None
    if _project.TRACKING != "mlflow":
        raise SourceError(f"MODEL_URI {settings.model_uri}: a models:/ URI reads MLflow's registry, which this project "
                          "was not generated for (copier update with tracking=mlflow)")
    from .. import registry  # type: ignore[attr-defined, unused-ignore]  # (tracking=mlflow projects only)

    client = registry.Registry.from_env(os.environ, timeout=settings.download_timeout,
                                        retries=settings.download_retries)
    if client is None:
        raise SourceError(f"MODEL_URI {settings.model_uri}: MLFLOW_TRACKING_URI is not set (the MLflow server "
                          "whose registry holds the model)")
    found: tuple[Path, dict[str, str]] = registry.fetch(client, settings.model_uri,
                                                         settings.model_cache_dir / "registry",
                                                         sha256=settings.model_sha256)
    return found


@dataclass(eq=False)
class ServingState:
    settings: ServeSettings
    peers: Peers | None = None  # the other worker processes, when there are several
    on_fatal: Callable[[], None] | None = None  # called when the model cannot be served: the process must end
    model: LoadedModel | None = None  # set once loaded and verified
    load_error: str | None = None  # why it was not
    metrics: Metrics = field(default_factory=Metrics)
    arrivals: Arrivals = field(default_factory=Arrivals)  # requests on their way to the batcher (CountArrivals)
    predictions: PredictionLog | None = field(init=False)
    batcher: Batcher = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        self.predictions = None
        if settings.log_predictions:  # OSError here (unwritable folder) stops the start with the path in the message
            self.predictions = PredictionLog(settings.prediction_log, max_bytes=settings.prediction_log_max_bytes)
        self.batcher = Batcher(self.infer, max_rows=settings.max_batch_rows, wait_s=settings.batch_wait_ms / 1000,
                               enabled=settings.batching, metrics=self.metrics, arrivals=self.arrivals)

    def serving(self) -> LoadedModel | None:
        """The model, once loaded here and (with several workers) in every worker: one answer whichever answers."""
        if self.model is None or (self.peers is not None and not self.peers.all_loaded()):
            return None
        return self.model

    def max_body_bytes(self) -> int:
        if self.settings.max_body_bytes:
            return self.settings.max_body_bytes
        if runtime.INPUT == "text":  # each text at most MAX_TEXT_CHARS, each char at most 6 bytes in JSON (\uXXXX)
            return self.settings.max_batch_size * (self.settings.max_text_chars * 6 + 4) + OVERHEAD
        n_features = self.model.n_features if self.model is not None else 1000
        return default_max_body_bytes(self.settings.max_batch_size, n_features)

    def infer(self, rows: np.ndarray, probabilities: bool) -> tuple[list[int], np.ndarray | None]:
        """The model call behind /predict and /v2 infer (in the batcher's thread): class indices, and
        probabilities when asked for."""
        assert self.model is not None, "the routes call the model only once it is loaded"
        started = time.perf_counter()
        proba: np.ndarray | None = None
        if probabilities:
            proba = np.asarray(runtime.predict_proba(self.model.model, rows), dtype=np.float64)
            indices = proba.argmax(axis=1)
        else:
            indices = runtime.predict(self.model.model, rows)
        self.metrics.observe_inference(len(rows), time.perf_counter() - started)
        return [int(i) for i in indices], proba

    async def load(self) -> None:
        """Locate, verify and load the model off the event loop; a failure is logged once and ends the process."""
        started = time.perf_counter()
        try:
            self.model = await asyncio.to_thread(locate_and_load, self.settings)
        except Exception as error:  # noqa: BLE001 (any failure: a server that can never be ready must exit)
            known = (ModelError, SourceError, SignatureError)
            message = str(error) if isinstance(error, known) else f"{type(error).__name__}: {error}"
            self.load_error = message
            if self.peers is None or self.peers.first_failure():  # one line, however many workers fail alike
                log.error("model not loaded: %s", message.replace("\n", " "))
            if self.on_fatal is not None:
                self.on_fatal()
            return
        # The framework and the model are hundreds of thousands of long-lived objects: every full collection walked
        # them all (tens of ms, the p99 of a busy server). Frozen, collections see only what requests allocate. (No
        # gc.collect() first: it cost 90 ms of start for the little garbage that loading leaves.)
        gc.freeze()
        if self.peers is not None:
            self.peers.mark_loaded()
        meta = self.model.metadata
        self.metrics.model_loaded(meta, time.perf_counter() - started)
        log.info("model ready: %s %s, sha256 %s, trained on %s, serving on %s%s", meta["framework"],
                 meta["framework_version"], meta["sha256"][:12], meta.get("platform", "an unrecorded platform"),
                 platform.machine(), "".join(f", {key} {value}" for key, value in self.model.served_from.items()))

    async def close(self) -> None:
        await self.batcher.close()  # uvicorn has let in-flight requests finish; anything left is cancelled
        if self.predictions is not None:
            self.predictions.close()


async def get_state(request: Request) -> ServingState:  # async: resolved on the event loop, no thread hop
    state: ServingState = request.app.state.serving
    return state


State = Annotated[ServingState, Depends(get_state)]
