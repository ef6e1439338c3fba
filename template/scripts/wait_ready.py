"""Wait until URL answers 200, for at most TIMEOUT seconds: `make serve` under Podman, whose health checks never run
on a machine without systemd (docs/podman.md). Exit 1, naming the URL, when it never does."""

import sys
import time
import urllib.request

url, timeout = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + timeout
while True:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            if response.status == 200:
                sys.exit(0)
    except OSError:  # refused, reset, timed out, HTTP errors: not up yet
        pass
    if time.monotonic() > deadline:
        print(f"wait_ready: {url} did not answer 200 within {timeout:.0f} s", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.5)
