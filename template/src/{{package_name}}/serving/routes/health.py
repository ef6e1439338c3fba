"""GET /health (the process is alive), GET /ready (200 once the model is loaded and verified, 503 before),
GET /metadata (the model's metadata.json)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ..state import State

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(state: State) -> JSONResponse:
    loaded = state.serving()
    if loaded is None:
        status = "failed" if state.load_error else "loading"
        return JSONResponse({"status": status, "error": state.load_error}, status_code=503)
    return JSONResponse({"status": "ready", "model_sha256": loaded.metadata["sha256"]})


@router.get("/metadata")
async def metadata(state: State) -> JSONResponse:
    loaded = state.serving()
    if loaded is None:
        return JSONResponse({"detail": "model not loaded yet"}, status_code=503)
    served_from = {"served_from": loaded.served_from} if loaded.served_from else {}  # registry name, version, alias
    return JSONResponse({**loaded.metadata, **served_from})
