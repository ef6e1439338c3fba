#!/usr/bin/env python3
"""Peak memory of the serve container under oversized requests: the server as generated (MAX_BODY_BYTES from
MAX_BATCH_SIZE and the features) side by side with the same image with the limit lifted (the pre-limit behaviour:
the whole body is read and parsed, then the batch size check refuses it).

    .venv/bin/python bench/body_limit.py [--image IMAGE] [--sizes 20 200]
    # IMAGE: the test suite's image of the default render, or bench/serving.py's mldt-bench/serving-default:bench

For each size (20 MB and 200 MB of JSON rows), sent with a Content-Length and chunked: the status, and the server's
peak resident memory (VmHWM, summed over its processes) over its idle figure. The answer is read while the body is
still being sent, so an early refusal shows as its status (413), not as a broken pipe. Requests go to 127.0.0.1
only, one at a time; the 200 MB baseline peaks at several GB of memory (--sizes 20 for a short run).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.combos import DEFAULT_COMBO
from helpers.containers import Container
from helpers.engine import image_tag, run

MB = 1_000_000
ROW = b"[5.1, 3.5, 1.4, 0.2]"


def body(megabytes: int) -> bytes:
    rows = megabytes * MB // (len(ROW) + 1)
    return b'{"instances": [' + b",".join([ROW] * rows) + b"]}"


PEAKS = """
import os
total = 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) != os.getpid():
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
print(total)
"""


def peak_kb(container: Container) -> int:
    """Peak resident memory of the container's processes, summed (the supervisor and every WORKERS process)."""
    return int(subprocess.run(["docker", "exec", container.id, "python", "-c", PEAKS], capture_output=True,
                              text=True, check=True, timeout=60).stdout)


def send(url: str, payload: bytes, chunked: bool, timeout: float) -> str:
    """POST the payload and read the answer while still sending: a server that refuses early (413) answers, then
    closes, and a client that only reads after its last byte sees a broken pipe instead of the status."""
    host, port = url.removeprefix("http://").split(":")
    framing = b"Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(payload)}".encode()
    head = b"POST /predict HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n%s\r\nConnection: close\r\n\r\n"
    sock = socket.create_connection((host, int(port)), timeout=timeout)

    def pieces() -> Iterator[bytes]:
        yield head % (host.encode(), framing)
        for i in range(0, len(payload), 65536):
            piece = payload[i:i + 65536]
            yield b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
        if chunked:
            yield b"0\r\n\r\n"

    def sender() -> None:
        try:
            for piece in pieces():
                sock.sendall(piece)
        except OSError:
            pass  # the server answered early and closed while we were still sending

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    try:
        status_line = sock.makefile("rb").readline(1000)
    except TimeoutError:
        return f"no answer in {timeout:g} s"
    except OSError:
        status_line = b""
    finally:
        sock.close()
        thread.join(timeout=5)
    parts = status_line.split()
    return parts[1].decode() if len(parts) > 1 else "closed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default=image_tag(DEFAULT_COMBO, "serve"),
                        help="a serve image of the default render (also: mldt-bench/serving-default:bench, which "
                             "bench/serving.py builds)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200], metavar="MB",
                        help="request sizes in MB (the 200 MB baseline peaks at several GB)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for each answer")
    args = parser.parse_args()
    if run(["docker", "image", "inspect", args.image], check=False).returncode != 0:
        print(f"{args.image}: no such image (run `make test` or bench/serving.py first, or pass --image)",
              file=sys.stderr)
        return 2
    print("| server | request | sent as | status | peak RSS over idle MB |")
    print("| --- | --- | --- | ---: | ---: |")
    for label, env in [("generated (limit on)", []), ("limit lifted (baseline)", ["-e", "MAX_BODY_BYTES=10000000000",
                                                                              "-e", "MAX_BATCH_SIZE=100000"])]:
        for megabytes in args.sizes:
            payload = body(megabytes)
            for chunked in (False, True):
                with Container(args.image, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", *env) as server:
                    time.sleep(1)
                    idle = peak_kb(server)
                    status = send(server.url, payload, chunked, args.timeout)
                    time.sleep(0.5)
                    over = (peak_kb(server) - idle) / 1000
                    print(f"| {label} | {megabytes} MB | {'chunked' if chunked else 'Content-Length'} | "
                          f"{status} | {over:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
