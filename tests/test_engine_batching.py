"""Promise: under concurrent load the serve container merges requests into shared model calls (micro-batching),
answers each request with its own predictions, runs one worker process per CPU of its quota, and still ends with
exit 1 and one log line when its model cannot be loaded, or exit 0 within 10 s on SIGTERM with requests in flight."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pytest

from helpers.builds import Built
from helpers.combos import Combo, DEFAULT_COMBO
from helpers.containers import Container
from helpers.engine import run

pytestmark = pytest.mark.engine
HARDENED = ("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL")
ROWS = {0: [5.1, 3.5, 1.4, 0.2], 2: [6.7, 3.0, 5.2, 2.3], 1: [5.9, 3.0, 4.2, 1.5]}  # class: a row of it
N_REQUESTS = 120
CONNECTIONS = 24  # requests sent at once (5 rounds)
EXIT_GUARD_S = 60
MAX_CALLS = N_REQUESTS // 4  # batching at all: 4 requests a call on average (a round of 24 in 6 calls or fewer)
WORKER_THREADS = """
import os
found = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) != os.getpid() and b"spawn_main" in open(f"/proc/{pid}/cmdline", "rb").read():
        env = dict(v.split(b"=", 1) for v in open(f"/proc/{pid}/environ", "rb").read().split(b"\\0") if b"=" in v)
        found.append(env.get(b"OMP_NUM_THREADS", b"unset").decode())
print(" ".join(sorted(found)))
"""


@pytest.fixture(scope="module")
def built(built_project: Callable[[Combo], Built]) -> Built:
    return built_project(DEFAULT_COMBO)


def metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def scrape(container: Container) -> str:
    import urllib.request

    with urllib.request.urlopen(container.url + "/metrics", timeout=10) as response:
        return response.read().decode()


def fire(container: Container, n: int = N_REQUESTS, concurrency: int = 24) -> list[tuple[int, int, dict]]:
    def one(i: int) -> tuple[int, int, dict]:
        expected = i % 3
        body = {"features": ROWS[expected]} if i % 2 else {"instances": [ROWS[expected]] * 3}
        status, answer = container.http("POST", "/predict", body)
        return expected, status, answer

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(n)))


def request_bytes(i: int) -> tuple[int, bytes]:
    """Request i as it goes on the wire (keep-alive HTTP/1.1), and the class it must be answered with."""
    expected = i % 3
    body = json.dumps({"features": ROWS[expected]} if i % 2 else {"instances": [ROWS[expected]] * 3}).encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return expected, head + body


def fire_together(container: Container, n: int = N_REQUESTS,
                  connections: int = CONNECTIONS) -> list[tuple[int, int, dict]]:
    """n requests in rounds of `connections` truly concurrent ones: every connection is open (keep-alive) before
    anything is sent; in each round one thread sends every request but its last byte, then every last byte back to
    back (a barrier: the server can finish none of them before all are there), then reads every answer. Threads of
    urllib (a connection per request, each sent when the GIL lets it) arrive a little apart, and a fast model then
    answers each before the next is there: no batching to see."""
    host, port = container.url.removeprefix("http://").rsplit(":", 1)
    sockets = [socket.create_connection((host, int(port)), timeout=10) for _ in range(connections)]
    results = []
    try:
        for sock in sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, n, connections):
            round_ = [request_bytes(i) for i in range(start, min(start + connections, n))]
            for sock, (_, data) in zip(sockets, round_):
                sock.sendall(data[:-1])
            time.sleep(0.02)  # for the server to take in what it has (a tighter barrier; batching does not need it)
            for sock, (_, data) in zip(sockets, round_):
                sock.sendall(data[-1:])
            for sock, (expected, _) in zip(sockets, round_):
                response = http.client.HTTPResponse(sock, method="POST")
                response.begin()
                results.append((expected, response.status, json.loads(response.read())))
                assert not response.will_close, "the server closed a keep-alive connection"
    finally:
        for sock in sockets:
            sock.close()
    return results


def test_concurrent_requests_share_model_calls_and_get_their_own_answers(built: Built) -> None:
    """Host network: no docker-proxy between the client and the server, relaying each connection on its own."""
    with Container(built.serve_image, *HARDENED, "-e", "WORKERS=1", "-e", "BATCH_WAIT_MS=5",
                   host_network=True) as server:
        results = fire_together(server)
        text = scrape(server)
    for expected, status, answer in results:
        assert status == 200, answer
        assert set(answer["predictions"]) == {expected}, answer
    calls = metric(text, "model_batch_rows_count")
    rounds = -(-N_REQUESTS // CONNECTIONS)
    print(f"batching: {calls:.0f} model calls for {N_REQUESTS} requests in {rounds} rounds of {CONNECTIONS}")
    assert metric(text, "model_batch_rows_sum") == sum(1 if i % 2 else 3 for i in range(N_REQUESTS))
    assert metric(text, "model_batch_queue_wait_seconds_count") == N_REQUESTS
    assert metric(text, "model_batch_requests_sum") == N_REQUESTS
    assert metric(text, "model_batch_requests_count") == calls
    # every round's requests are all at the server before any can be answered: a round takes a few calls at most
    assert rounds <= calls <= MAX_CALLS, \
        f"{calls:.0f} model calls for {N_REQUESTS} requests sent {CONNECTIONS} at once: not batched"


def test_workers_follow_the_cpu_quota_and_answer_alike(built: Built) -> None:
    with Container(built.serve_image, *HARDENED, "--cpus", "2") as server:
        results = fire(server, n=60)
        workers = server.exec("python", "-c", WORKER_THREADS)
        scrapes = [scrape(server) for _ in range(6)]  # answered by either worker
    assert workers == "1 1", f"OMP_NUM_THREADS of each worker process: {workers}"  # 2 CPUs, 2 workers: 1 thread each
    assert all(status == 200 and set(answer["predictions"]) == {expected} for expected, status, answer in results)
    for text in scrapes:  # every scrape adds up both workers
        assert metric(text, 'http_requests_total{method="POST",route="/predict",status="200"}') == 60, text
        assert metric(text, "model_batch_rows_sum") == sum(1 if i % 2 else 3 for i in range(60)), text
        info = [line for line in text.splitlines() if line.startswith("model_info{")]
        assert len(info) == 1 and info[0].endswith(" 1.0"), info


def test_sigterm_under_load_drains_what_began_and_refuses_the_rest(built: Built) -> None:
    """Graceful drain: SIGTERM while 8 clients send large batches. Every request the server began is answered (200,
    or 503 "shutting down" once the batcher closes), new connections are refused once the listener closes, and the
    container exits 0 within 10 s. Host network: no docker port proxy turning a refused connection into a reset."""
    server = Container(built.serve_image, *HARDENED, "-e", "WORKERS=2", host_network=True)
    batch = {"instances": [ROWS[2]] * 1000}  # large: several model calls each, so requests are in flight at SIGTERM
    outcomes: list[list[str]] = [[] for _ in range(8)]

    def load(mine: list[str]) -> None:
        while True:  # until the server refuses the connection (or resets one it never began)
            try:
                status, answer = server.http("POST", "/predict", batch)
            except urllib.error.URLError as error:  # while connecting or sending
                reason = error.reason
                mine.append("refused" if isinstance(reason, ConnectionRefusedError) else
                            f"reset {reason!r}" if isinstance(reason, (ConnectionResetError, BrokenPipeError)) else
                            f"error {reason!r}")
                return
            except (ConnectionResetError, http.client.RemoteDisconnected) as error:
                mine.append(f"reset {type(error).__name__}")
                return
            if status == 200 and set(answer["predictions"]) == {2}:
                mine.append("answered")
            elif status == 503 and "shutting down" in str(answer):
                mine.append("503")
            else:
                mine.append(f"wrong {status} {answer}")

    with server:
        threads = [threading.Thread(target=load, args=(mine,)) for mine in outcomes]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60  # each client answered at least once, and sending again: load, in flight
        while not all(outcomes) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(outcomes), f"not every client was answered within 60 s: {outcomes}"
        started = time.monotonic()
        run(["docker", "kill", "--signal", "TERM", server.id])
        run(["docker", "wait", server.id], timeout=30)
        elapsed = time.monotonic() - started
        for thread in threads:
            thread.join(15)
        assert server.state()["ExitCode"] == 0, server.logs()
    assert elapsed < 10, f"SIGTERM to exit took {elapsed:.1f}s"
    for mine in outcomes:
        *before, last = mine
        assert before and set(before) <= {"answered", "503"}, mine  # all that began were answered
        # the last attempt met the closed listener: refused, or (the race the issue names) reset before it began
        assert last == "refused" or last.startswith("reset"), mine
    lasts = [mine[-1] for mine in outcomes]
    assert lasts.count("refused") >= 1, f"no connection was refused after the listener closed: {lasts}"
    print(f"drain: {sum(len(m) - 1 for m in outcomes)} answered, last attempts {sorted(lasts)}, "
          f"SIGTERM to exit {elapsed:.1f} s")


def test_a_model_no_worker_can_load_ends_the_container_with_one_line(built: Built, tmp_path: Path) -> None:
    models = built.tampered_models(tmp_path / "models")
    container = Container(built.serve_image, *HARDENED, "-e", "WORKERS=3", "-e", "MODEL_URI=",
                          "-v", f"{models}:/app/models:ro", wait_ready=False)
    with container:
        started = time.monotonic()
        # a guard against alive-but-never-ready (a worker restarted forever), not a speed figure: three workers
        # spawned on 2 cores under a load average of 5 took 11 s to fail here, so 20 s was not enough of a margin
        while container.state()["Status"] != "exited":
            assert time.monotonic() - started < EXIT_GUARD_S, f"running after {EXIT_GUARD_S} s:\n{container.logs()}"
            time.sleep(0.2)
        print(f"a model no worker can load: exit after {time.monotonic() - started:.1f} s (guard {EXIT_GUARD_S} s)")
        logs = container.logs()
        assert container.state()["ExitCode"] == 1, logs
    errors = [line for line in logs.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "does not match metadata.json" in errors[0], logs
    assert "Traceback" not in logs, logs
