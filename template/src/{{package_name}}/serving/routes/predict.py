"""POST /predict: {"features": [...]} (one row) or {"instances": [[...], ...]} (a batch); "return_probabilities": true
adds each row's class probabilities. Concurrent requests share model calls (batching.py)."""

# No `from __future__ import annotations` here: the route's request type is the schema made for this app's
# MAX_BATCH_SIZE inside create_router, and FastAPI must see that class itself, not a name it cannot resolve.
import time
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ... import runtime
from ..batching import BatcherClosed
from ..schemas import PredictRequestBase, PredictResponse, TextRequestBase, invalid, request_model, text_request_model
from ..state import ServingState

RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"description": "model not loaded yet"},
    413: {"description": "over MAX_BODY_BYTES"},
    501: {"description": "no predict_proba"},
}


def create_router(state: ServingState) -> APIRouter:
    """The hot route takes the app's state from its factory, not from the `State` dependency the other routes use: a
    dependency is resolved per request, about a tenth of the server's own time per request (BENCHMARKS.md)."""
    router = APIRouter()
    settings = state.settings
    PredictRequest = (  # noqa: N806 (a class: this app's schema, with its MAX_BATCH_SIZE)
        text_request_model(settings.max_batch_size, settings.max_text_chars) if runtime.INPUT == "text"
        else request_model(settings.max_batch_size)
    )

    @router.post("/predict", response_model=PredictResponse, responses=RESPONSES)
    async def predict(request: PredictRequest) -> Any:  # type: ignore[valid-type]
        return await answer(request, state)

    return router


async def answer(request: PredictRequestBase | TextRequestBase, state: ServingState) -> Any:
    """Check the rows against the model, run them through the batcher (shared model calls), log the prediction."""
    loaded = state.serving()
    if loaded is None:
        return JSONResponse({"detail": "model not loaded yet"}, status_code=503)
    started = time.perf_counter()
    rows = request.rows()
    if isinstance(request, TextRequestBase):  # texts: the schema has checked them all
        field, batch = ("text" if request.text is not None else "inputs"), np.asarray(rows, dtype=object)
    else:
        field, batch = ("features" if request.features is not None else "instances"), None
    if len(rows) > state.settings.max_batch_size:
        raise invalid((field,), f"batch of {len(rows)} rows is over MAX_BATCH_SIZE={state.settings.max_batch_size}")
    if batch is None:
        for index, row in enumerate(rows):
            if len(row) != loaded.n_features:
                where = (field,) if field == "features" else (field, index)
                raise invalid(
                    where,
                    f"expected {loaded.n_features} features ({', '.join(loaded.metadata['feature_names'])}), "
                    f"got {len(row)}",
                )
        batch = np.asarray(rows, dtype=np.float64)
    try:
        indices, proba = await state.batcher.infer(batch, request.return_probabilities)
    except BatcherClosed:
        return JSONResponse({"detail": "the server is shutting down"}, status_code=503)
    except ValueError as error:  # the model's own input checks
        raise invalid((field,), str(error)) from None
    except NotImplementedError as error:  # a model.py without predict_proba
        return JSONResponse({"detail": f"probabilities are not available: {error}"}, status_code=501)
    classes = loaded.metadata["classes"]
    names = loaded.metadata.get("target_names")
    response = PredictResponse(
        predictions=[classes[i] for i in indices],
        labels=[names[i] for i in indices] if names else None,
        probabilities=proba.tolist() if proba is not None else None,
        model_sha256=loaded.metadata["sha256"],
    )
    if state.predictions is not None:  # queued, never blocks the request
        state.predictions.record(
            n_rows=len(rows),
            n_features=loaded.n_features,
            predictions=response.predictions,
            latency_ms=1000 * (time.perf_counter() - started),
            model_sha256=response.model_sha256,
        )
    return response
