"""Run by bench/tail.py inside a serve image, as its Python: the image's own server (`python -m <package>.serve`),
with the batcher's `_take` wrapped to note, for each batch it takes, the wall clock, the event loop thread's CPU time
(user and kernel together: getrusage samples them in ticks, too coarse to split a millisecond), its time spent
waiting for a CPU (the second field of /proc/thread-self/schedstat, in ns), and the requests it took. The notes go
to /out/cycles.json when the server exits (docker stop: uvicorn's graceful shutdown). A note costs a call and a read
of a /proc file per batch (a few microseconds, shared by the batch's requests).
"""

import atexit
import importlib
import json
import os
import pkgutil
import runpy
import time

PACKAGE = next(m.name for m in pkgutil.iter_modules(["/app/src"]) if os.path.isdir(f"/app/src/{m.name}/serving"))
batching = importlib.import_module(f"{PACKAGE}.serving.batching")
SCHEDSTAT = os.open("/proc/thread-self/schedstat", os.O_RDONLY)  # this thread's: uvicorn's event loop runs here
NOTES: list[tuple[float, float, int, int]] = []
take = batching.Batcher._take


def noted_take(self):  # type: ignore[no-untyped-def]
    batch, rows = take(self)
    if batch and len(NOTES) < 2_000_000:
        waited = int(os.pread(SCHEDSTAT, 64, 0).split()[1])
        NOTES.append((time.perf_counter(), time.thread_time(), waited, len(batch)))
    return batch, rows


def write() -> None:
    with open("/out/cycles.json", "w") as out:
        json.dump(NOTES, out)


batching.Batcher._take = noted_take
atexit.register(write)
runpy.run_module(f"{PACKAGE}.serve", run_name="__main__", alter_sys=True)
