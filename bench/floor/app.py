"""The floor of bench/serving.py: what FastAPI itself answers for the generated server's request, with no model.

POST /predict parses {"features": [...]} (one row) or {"instances": [[...], ...]} (a batch) with pydantic in an async
route and answers one prediction per row; GET /ready answers 200. No middleware, no metrics, no logging per request.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel


class PredictRequest(BaseModel):
    features: list[float] | None = None
    instances: list[list[float]] | None = None


class PredictResponse(BaseModel):
    predictions: list[int]


app = FastAPI()


@app.post("/predict")
async def predict(request: PredictRequest) -> PredictResponse:
    rows = 1 if request.features is not None else len(request.instances or ())
    return PredictResponse(predictions=[0] * rows)


@app.get("/ready")
async def ready() -> dict[str, str]:
    return {"status": "ready"}
