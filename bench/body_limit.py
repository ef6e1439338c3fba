#!/usr/bin/env python3
"""Peak memory of the serve container under oversized requests: the server as generated (MAX_BODY_BYTES from
MAX_BATCH_SIZE and the features) side by side with the same image with the limit lifted (the pre-limit behaviour:
the whole body is read and parsed, then the batch size check refuses it).

    .venv/bin/python bench/body_limit.py [--image IMAGE]    # default: the test suite's image of the default render

For each size (20 MB and 200 MB of JSON rows), sent with a Content-Length and chunked: the status, and the server's
peak resident memory (VmHWM of its process) over its idle figure. Requests go to 127.0.0.1 only, one at a time.
"""

from __future__ import annotations

import argparse
import http.client
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from template import DEFAULT_COMBO, Container, image_tag  # noqa: E402

MB = 1_000_000
ROW = b"[5.1, 3.5, 1.4, 0.2]"


def body(megabytes: int) -> bytes:
    rows = megabytes * MB // (len(ROW) + 1)
    return b'{"instances": [' + b",".join([ROW] * rows) + b"]}"


def peak_kb(container: Container) -> int:
    status = subprocess.run(["docker", "exec", container.id, "cat", "/proc/1/status"], capture_output=True,
                            text=True, check=True).stdout
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def send(url: str, payload: bytes, chunked: bool) -> int:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    headers = {"content-type": "application/json"}
    try:
        if chunked:
            pieces = (payload[i:i + 65536] for i in range(0, len(payload), 65536))
            connection.request("POST", "/predict", body=pieces, headers=headers, encode_chunked=True)
        else:
            connection.request("POST", "/predict", body=payload, headers=headers)
        return connection.getresponse().status
    except (ConnectionError, http.client.HTTPException):
        return 0  # the server answered early and closed while we were still sending
    finally:
        connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default=image_tag(DEFAULT_COMBO, "serve"))
    args = parser.parse_args()
    print("| server | request | sent as | status | peak RSS over idle MB |")
    print("| --- | --- | --- | ---: | ---: |")
    for label, env in [("generated (limit on)", []), ("limit lifted (baseline)", ["-e", "MAX_BODY_BYTES=10000000000",
                                                                              "-e", "MAX_BATCH_SIZE=100000"])]:
        for megabytes in (20, 200):
            payload = body(megabytes)
            for chunked in (False, True):
                with Container(args.image, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", *env) as server:
                    time.sleep(1)
                    idle = peak_kb(server)
                    status = send(server.url, payload, chunked)
                    time.sleep(0.5)
                    over = (peak_kb(server) - idle) / 1000
                    print(f"| {label} | {megabytes} MB | {'chunked' if chunked else 'Content-Length'} | "
                          f"{status or 'closed'} | {over:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
