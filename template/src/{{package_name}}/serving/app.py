"""The model server's ASGI app; `python -m <package>.serve` runs it (serve.py).

The model loads in the background: /health answers at once, /ready once the model is verified (in every worker,
when there are several). The routes: routes/ (predict, health, oip for /v2, metrics); what they share: state.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .. import __version__, _project
from ..config import ServeSettings
from .batching import CountArrivals
from .limits import BodyLimit
from .metrics import Instrument
from .routes import health, metrics, oip, predict
from .schemas import json_safe
from .state import ServingState
from .workers import Peers


def create_app(settings: ServeSettings, on_fatal: Callable[[], None] | None = None,
               peers: Peers | None = None) -> FastAPI:
    """The ASGI app. on_fatal is called when the model cannot be served; peers are the other worker processes."""
    state = ServingState(settings, peers=peers, on_fatal=on_fatal)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(state.load())
        yield
        loading.cancel()
        await state.close()

    app = FastAPI(title=_project.PROJECT_NAME, version=__version__, lifespan=lifespan)
    app.state.serving = state
    app.add_middleware(CountArrivals, arrivals=state.arrivals)
    app.add_middleware(BodyLimit, limit=state.max_body_bytes)
    app.add_middleware(Instrument, metrics=state.metrics)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(predict.create_router(state))  # first: FastAPI tries the included routers in order
    app.include_router(health.router)
    app.include_router(oip.router)
    app.include_router(metrics.router)
    return app


async def validation_error(request: Request, error: Exception) -> JSONResponse:
    """422 with what is wrong; NaN and infinity in the echoed input as strings (FastAPI's own handler would 500)."""
    assert isinstance(error, RequestValidationError)
    problems = jsonable_encoder(error.errors())
    max_batch_size = request.app.state.serving.settings.max_batch_size
    for problem in problems:
        if problem.get("type") == "too_long" and problem.get("loc", [])[-1:] in (["instances"], ["inputs"]):
            problem["msg"] = f"batch is over MAX_BATCH_SIZE={max_batch_size} rows"
    return JSONResponse({"detail": json_safe(problems)}, status_code=422)
