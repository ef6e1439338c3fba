"""Each thing once per session, even when several threads ask: a cache of per-key results (a lock per key), and an
optional prefetch that builds what the collected tests will ask for, a few at a time, beside the tests, and the
release of a result no test will ask for again."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Generic, Hashable, Iterable, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Once(Generic[K, V]):
    def __init__(self, make: Callable[[K], V]):
        self._make = make
        self._done: dict[K, V] = {}
        self._locks: dict[K, threading.Lock] = {}
        self._guard = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._forgotten: set[K] = set()
        self._closed = False

    def __call__(self, key: K) -> V:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # a failed make leaves nothing cached: the next caller tries again and sees the error
            if key not in self._done:
                self._done[key] = self._make(key)
            return self._done[key]

    def ready(self, key: K) -> bool:
        return key in self._done

    def forget(self, key: K) -> V | None:
        """Drop a result (the caller releases what it holds); a later call makes it again, a prefetch does not."""
        with self._guard:
            self._forgotten.add(key)
        return self._done.pop(key, None)

    def prefetch(self, keys: Iterable[K], workers: int, wait: Callable[[K], bool] = lambda key: True) -> None:
        """Make `keys` in the background, `workers` at a time, in order; callers wait only for what they need.
        `wait(key)` blocks until the key may be made (False: skip it)."""
        if workers < 1 or self._pool is not None:
            return
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="prefetch")
        for key in keys:
            self._pool.submit(self._quiet, key, wait)

    def _quiet(self, key: K, wait: Callable[[K], bool]) -> None:
        try:
            if self._closed or key in self._forgotten or key in self._done or not wait(key):
                return
            if not self._closed and key not in self._forgotten:
                self(key)
        except BaseException:  # the test that needs it makes it again and reports the failure
            pass

    def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
