"""Microseconds per POST /predict through the ASGI app itself (no sockets, no uvicorn): the generated server of a
serve image, or the floor app (bench/floor/app.py), driven by a closed loop of 8 concurrent requests on one CPU.
It shows time the server spends per request, idle time included (a batch waiting for company), which a sampling
profile does not.

    docker run --rm --cpus 1 -v "$PWD/bench:/bench:ro" --entrypoint python <serve image> /bench/asgi_loop.py app
    docker run --rm --cpus 1 -v "$PWD/bench:/bench:ro" --entrypoint python <serve image> /bench/asgi_loop.py floor
    (add `profile` for cProfile's top functions; SORT=cumtime to sort by cumulative time; REQUESTS=n measured
    requests, 4000 by default: more for steadier figures)
"""

import asyncio
import cProfile
import importlib
import json
import os
import pkgutil
import pstats
import sys
import time

BODY = json.dumps({"features": [5.1, 3.5, 1.4, 0.2]}).encode()
CONCURRENCY = 8


def scope(path: str = "/predict") -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "state": {},
            "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(BODY)).encode())],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}


async def one(app) -> int:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.sleep(3600)  # the client stays: no disconnect
        return {"type": "http.disconnect"}

    status: list[int] = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope(), receive, send)
    return status[0]


async def start(app) -> None:
    """The lifespan's startup, as uvicorn runs it."""
    messages: asyncio.Queue = asyncio.Queue()
    await messages.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def send(message: dict) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    asyncio.get_running_loop().create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                                messages.get, send))
    await started.wait()


async def per_request_us(app, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n // CONCURRENCY):
        codes = await asyncio.gather(*(one(app) for _ in range(CONCURRENCY)))
        assert set(codes) == {200}, codes
    return (time.perf_counter() - started) / n * 1e6


def generated_app():
    """The image's own package (the one folder under /app/src with a serving package), its app and settings."""
    package = next(m.name for m in pkgutil.iter_modules(["/app/src"])
                   if os.path.isdir(f"/app/src/{m.name}/serving"))
    config = importlib.import_module(f"{package}.config")
    return importlib.import_module(f"{package}.serving.app").create_app(config.ServeSettings())


async def main(which: str, profile: bool) -> None:
    if which == "floor":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor"))
        from app import app  # bench/floor/app.py
        await start(app)
    else:
        app = generated_app()
        await start(app)
        for _ in range(600):  # the model loads in the background
            if app.state.serving.serving() is not None:
                break
            await asyncio.sleep(0.05)
    await per_request_us(app, 800)  # warm-up
    measured = int(os.environ.get("REQUESTS", "4000"))
    print(f"{which}: {await per_request_us(app, measured):.1f} us per request ({CONCURRENCY} concurrent)")
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        await per_request_us(app, 4000)
        profiler.disable()
        pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "tottime")).print_stats(30)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(sys.argv[1] if len(sys.argv) > 1 else "app", "profile" in sys.argv))
