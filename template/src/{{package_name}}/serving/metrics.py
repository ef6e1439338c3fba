"""Prometheus metrics, with the maintained client library and the usual names (GET /metrics: routes/metrics.py).

http_requests_total{method,route,status}          requests answered, by route template (not raw path)
http_request_duration_seconds{method,route}       latency histogram
model_batch_rows                                  rows per model call
model_batch_requests                              requests merged into one model call (micro-batching)
model_batch_queue_wait_seconds                    time a request waited for its model call
model_inference_duration_seconds                  time inside the model
model_load_duration_seconds                       how long locating, verifying and loading the model took
model_info{framework,framework_version,sha256,serve_runtime}   the model being served (value 1)

/metrics, /health and /ready are not counted: scrapes and probes would drown the traffic they describe.
With several worker processes (PROMETHEUS_MULTIPROC_DIR set by workers.py) /metrics adds up every worker's values.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

NOT_COUNTED = {"/metrics", "/health", "/ready", "/v2/health/live", "/v2/health/ready"}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)


def route_template(app: Any, scope: Scope) -> str:
    """The matched route's template (/v2/models/{model_name}/infer), never the raw path (unbounded label values)."""
    route = scope.get("route")  # set by the router while it handled the request
    if route is None:
        route = next((r for r in app.router.routes if hasattr(r, "path") and r.matches(scope)[0] == Match.FULL), None)
    return getattr(route, "path", "unmatched")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()  # one per app: tests and reloads never collide
        self.requests = Counter("http_requests_total", "HTTP requests answered", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("http_request_duration_seconds", "HTTP request latency", ["method", "route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_rows = Histogram("model_batch_rows", "Rows per model call", buckets=ROW_BUCKETS,
                                    registry=self.registry)
        self.batch_requests = Histogram("model_batch_requests", "Requests merged into one model call",
                                        buckets=ROW_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram("model_batch_queue_wait_seconds", "Time a request waited for its model call",
                                    buckets=WAIT_BUCKETS, registry=self.registry)
        self.inference = Histogram("model_inference_duration_seconds", "Time spent in the model per call",
                                   buckets=LATENCY_BUCKETS, registry=self.registry)
        # Gauges across worker processes: the slowest load (the server is ready when the last worker is), info 1
        self.load_seconds = Gauge("model_load_duration_seconds", "Time to locate, verify and load the model",
                                  registry=self.registry, multiprocess_mode="max")
        self.model_info = Gauge("model_info", "The model being served",
                                ["framework", "framework_version", "sha256", "serve_runtime"], registry=self.registry,
                                multiprocess_mode="max")

    def model_loaded(self, metadata: dict[str, Any], seconds: float) -> None:
        self.load_seconds.set(seconds)
        self.model_info.labels(str(metadata.get("framework")), str(metadata.get("framework_version")),
                               str(metadata.get("sha256")), str(metadata.get("serve_runtime", "native"))).set(1)

    def observe_inference(self, rows: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.inference.observe(seconds)

    def observe_queue_wait(self, seconds: float) -> None:
        self.queue_wait.observe(seconds)

    def observe_batch_requests(self, requests: int) -> None:
        self.batch_requests.observe(requests)

    def scrape(self) -> bytes:
        """The exposition text: this process's values, or every worker's (PROMETHEUS_MULTIPROC_DIR, workers.py)."""
        registry = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


class Instrument:
    """ASGI middleware: count requests and their latency by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in NOT_COUNTED:
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            counted, timed = self.series(scope["method"], route_template(scope["app"], scope), status)
            counted.inc()
            timed.observe(elapsed)

    def series(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        """The request counter's and latency histogram's children for these labels, looked up once (labels() costs
        more than the observation itself); as many as there are label values."""
        key = (method, route, status)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = (self.metrics.requests.labels(method, route, str(status)),
                                         self.metrics.latency.labels(method, route))
        return found
