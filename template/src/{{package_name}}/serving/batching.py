"""Adaptive micro-batching: concurrent requests share one model call.

A per-call cost dominates small requests (a 100-tree scikit-learn forest: about 1 ms per call for 1 to 64 rows), so
gathering the rows of concurrent requests into one call multiplies throughput under load. Adaptive: a lone request on
an idle server runs at once; requests that queue while the model is busy go together into the next call; the wait for
more (BATCH_WAIT_MS) only applies while traffic is flowing (more than one request queued, or the call that just ended
merged several), and never beyond BATCH_WAIT_MS after the oldest request arrived, nor once no other request is on its
way (Arrivals: with 8 clients whose 8 requests are all in the batch, waiting longer only adds latency).

A model call that takes longer than INLINE_MAX_S (a moving average) runs in one dedicated thread, off the event loop;
a shorter one (ONNX Runtime on a small forest: tens of microseconds; a 100-tree scikit-learn forest: about 1 ms) runs
on the loop itself. A thread buys little for a short call: the loop has only the next batch to gather meanwhile, and
the two threads' turns at the GIL (Python hands it over every 5 ms) became the p99 (8.3 ms against 4.9 ms inline, for
the scikit-learn default at 8 connections; BENCHMARKS.md). Plain and probability requests are batched apart
(predict and argmax(predict_proba) can differ), so every request gets what it would have got alone. When a batch
raises, each of its requests is run again alone: only the request that causes the error gets it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

import numpy as np

Result = tuple[list[int], "np.ndarray | None"]
ModelCall = Callable[[np.ndarray, bool], Result]
IDLE_S = 0.1  # no model call for this long: the next request is a lone one and runs at once
INLINE_MAX_S = 0.003  # model calls shorter than this on average run on the event loop (blocking it that long)


class BatchMetrics(Protocol):
    def observe_queue_wait(self, seconds: float) -> None: ...

    def observe_batch_requests(self, requests: int) -> None: ...


Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
_ON_ITS_WAY: ContextVar[list[bool]] = ContextVar("on_its_way")


class Arrivals:
    """How many POST requests are in the server and have not reached the batcher (being read, parsed, validated): a
    request counts from its first byte (CountArrivals) until it joins a batch or ends without one."""

    def __init__(self) -> None:
        self.on_their_way = 0

    def joined(self) -> None:
        counted = _ON_ITS_WAY.get(None)  # set by CountArrivals in this request's task
        if counted is not None and counted[0]:
            counted[0] = False
            self.on_their_way -= 1


class CountArrivals:
    """ASGI middleware: keeps Arrivals' count."""

    def __init__(self, app: ASGIApp, arrivals: Arrivals) -> None:
        self.app = app
        self.arrivals = arrivals

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        counted = [True]
        _ON_ITS_WAY.set(counted)
        self.arrivals.on_their_way += 1
        try:
            await self.app(scope, receive, send)
        finally:
            if counted[0]:  # it never reached the batcher (a 4xx, a 503)
                self.arrivals.on_their_way -= 1


class BatcherClosed(RuntimeError):
    """The server is shutting down: no new model calls."""


@dataclass
class _Pending:
    rows: np.ndarray
    probabilities: bool
    future: asyncio.Future[Result]
    queued: float = field(default_factory=time.perf_counter)


class Batcher:
    """`await batcher.infer(rows, probabilities)` returns what `call(rows, probabilities)` would: (class indices,
    probabilities or None), with the rows of concurrent requests gathered into calls of at most max_rows rows."""

    def __init__(self, call: ModelCall, *, max_rows: int = 256, wait_s: float = 0.002, enabled: bool = True,
                 metrics: BatchMetrics | None = None, arrivals: Arrivals | None = None) -> None:
        self.call = call
        self.arrivals = arrivals
        self.max_rows = max_rows
        self.wait_s = wait_s
        self.enabled = enabled
        self.metrics = metrics
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()  # bound to the serving loop on first use
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_end = 0.0  # perf_counter when the last model call ended
        self._last_requests = 0  # how many requests it served
        self._inflight: list[_Pending] = []  # taken from the queue, not settled yet
        self._call_s = float("inf")  # moving average of a model call's duration; unknown until the first one
        # One thread: model calls never overlap (they would only contend for the GIL and the cores)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")

    async def infer(self, rows: np.ndarray, probabilities: bool) -> Result:
        if self._closing:
            raise BatcherClosed("the server is shutting down")
        loop = asyncio.get_running_loop()
        if self.arrivals is not None:
            self.arrivals.joined()
        if not self.enabled:  # BATCHING=false: one model call per request
            return await self._model(loop, rows, probabilities)
        if self._task is None:  # started on first use, in the loop that serves the requests
            self._task = loop.create_task(self._run(), name="batcher")
        pending = _Pending(rows, probabilities, loop.create_future())
        self._queue.append(pending)
        self._arrived.set()
        result: Result = await pending.future
        return result

    async def close(self, timeout: float = 5.0) -> None:
        """Refuse new requests, finish the queued ones (or cancel them after timeout), stop the model thread."""
        self._closing = True
        if self._task is not None:
            self._arrived.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        for pending in [*self._inflight, *self._queue]:
            if not pending.future.done():
                pending.future.cancel()
        self._queue.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _take(self) -> tuple[list[_Pending], int]:
        """Queued requests, oldest first, up to max_rows rows (a request over max_rows goes alone, never split)."""
        batch: list[_Pending] = []
        rows = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # the client went away
                self._queue.popleft()
                continue
            if batch and rows + len(head.rows) > self.max_rows:
                break
            batch.append(self._queue.popleft())
            rows += len(head.rows)
        return batch, rows

    async def _fill(self, batch: list[_Pending], rows: int) -> tuple[list[_Pending], int]:
        """Wait for more requests while traffic flows, until max_rows or BATCH_WAIT_MS after the oldest arrived."""
        # Traffic flows when requests queued together, or the last call (just now) merged several: a lone client
        # that sends its next request as soon as it has its answer never waits.
        recent = time.perf_counter() - self._last_end < IDLE_S
        busy = len(batch) > 1 or (recent and self._last_requests > 1)
        if self.wait_s <= 0 or self._closing or not busy:
            return batch, rows
        deadline = batch[0].queued + self.wait_s
        while rows < self.max_rows and not self._closing:
            if not self._queue and self.arrivals is not None:
                await asyncio.sleep(0)  # requests whose bytes are here take their first step
                if not self._queue and self.arrivals.on_their_way == 0:
                    break  # no other request is coming: waiting would only add latency
            if not self._queue:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                continue
            head = self._queue[0]
            if head.future.done():
                self._queue.popleft()
                continue
            if rows + len(head.rows) > self.max_rows:
                break
            batch.append(self._queue.popleft())
            rows += len(head.rows)
        return batch, rows

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch, rows = self._take()
            if not batch:
                continue
            self._inflight = batch
            batch, rows = await self._fill(batch, rows)
            for probabilities in (False, True):  # plain and probability requests apart: same answers as alone
                group = [p for p in batch if p.probabilities is probabilities]
                if group:
                    await self._call(loop, group, probabilities)
            self._last_end = time.perf_counter()
            self._last_requests = len(batch)
            self._inflight = []

    async def _call(self, loop: asyncio.AbstractEventLoop, group: list[_Pending], probabilities: bool) -> None:
        started = time.perf_counter()
        if self.metrics is not None:
            for pending in group:
                self.metrics.observe_queue_wait(started - pending.queued)
            self.metrics.observe_batch_requests(len(group))
        rows = group[0].rows if len(group) == 1 else np.concatenate([p.rows for p in group])
        try:
            indices, proba = await self._model(loop, rows, probabilities)
        except Exception as error:  # noqa: BLE001 (handed to the requests, never lost)
            if len(group) == 1:
                _settle(group[0].future, error=error)
                return
            for pending in group:  # which request broke the batch? each alone: only that one gets the error
                try:
                    _settle(pending.future, await self._model(loop, pending.rows, probabilities))
                except Exception as alone:  # noqa: BLE001
                    _settle(pending.future, error=alone)
            return
        start = 0
        for pending in group:
            end = start + len(pending.rows)
            _settle(pending.future, (indices[start:end], proba[start:end] if proba is not None else None))
            start = end

    async def _model(self, loop: asyncio.AbstractEventLoop, rows: np.ndarray, probabilities: bool) -> Result:
        """One model call: on the loop while calls are short, else in the model thread (see the module's doc)."""
        if self._call_s < INLINE_MAX_S:
            return self._timed(rows, probabilities)
        return await loop.run_in_executor(self._executor, self._timed, rows, probabilities)

    def _timed(self, rows: np.ndarray, probabilities: bool) -> Result:
        started = time.perf_counter()
        try:
            return self.call(rows, probabilities)
        finally:
            elapsed = time.perf_counter() - started
            self._call_s = elapsed if self._call_s == float("inf") else 0.8 * self._call_s + 0.2 * elapsed


def _settle(future: asyncio.Future[Result], result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # cancelled: the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
