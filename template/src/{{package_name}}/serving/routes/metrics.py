"""GET /metrics: Prometheus metrics (serving/metrics.py), left out of the OpenAPI document."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..state import State

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def scrape(state: State) -> Response:
    return Response(state.metrics.scrape(), media_type=CONTENT_TYPE_LATEST)
