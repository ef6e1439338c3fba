"""The model server: `python -m <package>.serve` (the app and its routes: serving/app.py, serving/routes/).

WORKERS processes serve one port (serving/workers.py): one per CPU of the container's quota by default; any worker that
cannot load the model ends the whole server with exit code 1. This module stays light (no numpy, no model stack):
with several workers each imports the app in its own process, in parallel, and the supervisor never does.
"""

from __future__ import annotations

import logging
import signal
import socket

from .config import ServeSettings, load_settings, setup_logging
from .serving.workers import Peers, supervise

log = logging.getLogger(f"{__package__}.serve")  # not __main__ (or __mp_main__ in a worker)


def serve(settings: ServeSettings, sock: socket.socket | None = None, peers: Peers | None = None) -> int:
    """Run one server process until SIGTERM (0) or a model that cannot be served (1)."""
    import uvicorn

    from .serving.app import create_app

    def stop() -> None:  # a model that cannot be served ends the process with exit code 1
        server.should_exit = True

    try:
        app = create_app(settings, on_fatal=stop, peers=peers)
    except OSError as error:
        if peers is None or peers.first_failure():
            log.error("cannot start: %s", error)
        return 1
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            loop="uvloop",  # the fast event loop and HTTP parser (locked dependencies of the serve image)
            http="httptools",
            log_config=None,  # keep the logging set up in main()
            access_log=settings.access_log,
            timeout_graceful_shutdown=8,  # within Docker's 10 s stop timeout
            server_header=False,
        )
    )
    # uvicorn raises the signal that stopped it again once it has shut down gracefully; by default that ends the
    # process "killed by SIGTERM" (exit 143) wherever it is not PID 1 (docker run --init, tini, a shell, systemd).
    # A graceful stop is a success: the raised signal finds this handler, and the server returns 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run(sockets=[sock] if sock is not None else None)
    return 1 if app.state.serving.load_error else 0


def worker(settings: ServeSettings, sock: socket.socket, peers: Peers) -> None:
    """One of WORKERS processes (started by workers.supervise, in a fresh interpreter)."""
    setup_logging(settings.log_level)
    raise SystemExit(serve(settings, sock, peers))


def main() -> None:
    settings = load_settings(ServeSettings)
    setup_logging(settings.log_level)
    if settings.workers == 1:
        raise SystemExit(serve(settings))
    raise SystemExit(supervise(worker, settings, settings.host, settings.port, settings.workers))


if __name__ == "__main__":
    main()
