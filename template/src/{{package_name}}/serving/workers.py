"""WORKERS server processes on one listening socket, supervised so that the container keeps its promises.

uvicorn's own multi-process mode restarts a worker that dies, so a worker that cannot load its model would be
restarted forever (alive, never ready). Here any worker that ends on its own ends the whole server with exit code 1
(the orchestrator restarts the container); SIGTERM stops every worker gracefully and exits 0.

Workers are started with `spawn` (a fresh interpreter each): forking a process that has imported numpy can
inherit thread-pool locks in a bad state. Each sizes its native thread pools to its share of the CPU quota. Their
Prometheus metrics go to files in PROMETHEUS_MULTIPROC_DIR (the client library's multiprocess mode), so that /metrics,
whichever worker answers it, reports the whole server.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable

from .._cpu import limit_threads, threads_per_worker

log = logging.getLogger(__name__)
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
STOP_TIMEOUT_S = 9.0  # within Docker's 10 s stop timeout; workers shut down gracefully within 8 s


@dataclass
class Peers:
    """What the worker processes share: how many loaded the model, whether one failed (it alone logs why)."""

    count: int
    loaded: Any  # multiprocessing.Value("i")
    failed: Any  # multiprocessing.Value("i")

    def mark_loaded(self) -> None:
        with self.loaded.get_lock():
            self.loaded.value += 1

    def all_loaded(self) -> bool:
        return bool(self.loaded.value >= self.count)

    def first_failure(self) -> bool:
        """True for the first worker to fail, which logs the reason; the others stay quiet."""
        with self.failed.get_lock():
            first = self.failed.value == 0
            self.failed.value = 1
        return bool(first)


def listen(host: str, port: int) -> socket.socket:
    sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                backlog=2048)
    sock.set_inheritable(True)
    return sock


def supervise(target: Callable[[Any, socket.socket, Peers], None], settings: Any, host: str, port: int,
              workers: int) -> int:
    """Run target(settings, sock, peers) in `workers` processes; the exit code of the whole server."""
    try:
        sock = listen(host, port)
    except OSError as error:
        log.error("cannot listen on %s:%s: %s (set HOST/PORT)", host, port, error)
        return 1
    context = multiprocessing.get_context("spawn")
    peers = Peers(workers, context.Value("i", 0), context.Value("i", 0))
    limit_threads(threads_per_worker(workers))  # inherited by the workers' environment
    metrics_dir = None
    if not os.environ.get(MULTIPROC_DIR):  # read by prometheus_client when a worker imports it
        metrics_dir = os.environ[MULTIPROC_DIR] = tempfile.mkdtemp(prefix="metrics-")
    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    processes = [context.Process(target=target, args=(settings, sock, peers), name=f"worker-{n}", daemon=False)
                 for n in range(workers)]
    for process in processes:
        process.start()
    # The workers have their own copies now. Closing this one means that once they close theirs (SIGTERM), new
    # connections are refused at once instead of waiting in a backlog that nobody accepts from.
    sock.close()
    log.info("%d workers on %s:%s (WORKERS)", workers, host, port)
    code = 0
    while not stopping:
        wait([p.sentinel for p in processes], timeout=0.2)
        ended = [p for p in processes if p.exitcode is not None]
        if ended and not stopping:
            code = 1
            if peers.failed.value == 0:  # a load failure was logged by its worker; anything else is said here
                log.error("worker %s ended with exit code %s; stopping the server", ended[0].name, ended[0].exitcode)
            break
    for process in processes:
        if process.exitcode is None:
            process.terminate()  # SIGTERM: uvicorn finishes in-flight requests, then exits
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join()
    if metrics_dir is not None:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return code
