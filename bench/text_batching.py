#!/usr/bin/env python3
"""Text models: micro-batching against the same server with BATCHING=false (issue 20's goal: at least 2x the texts
per second at one CPU, 8 connections, one short text per request), with p50/p99 and texts of mixed lengths.

    MLDT_KEEP_IMAGES=1 .venv/bin/python -m pytest -m engine tests/test_engine_transformers.py -k budget
    .venv/bin/python bench/text_batching.py [--runs 3] [--duration 8] [--warmup 2] [--image IMAGE]

The first line builds the tests' text chain (python 3.11, torch's CPU build, the tiny encoder the tests make,
fine-tuned on the demo CSV) and keeps its images (the suite otherwise releases them); any serve image of a
framework=transformers render with its model baked will do. One run, one engine: each server alone in a container
with `--cpus 1 --cpuset-cpus 0`, read-only, no capabilities, `WORKERS=1`; wrk pinned to the other CPU enters the
container's network namespace (bench/serving.py's method: no bridge or proxy in the path, so root). Scenarios: one
short text per request (`{"text": ...}`), and one text of 1 to 80 words per request, a different one each time.
--runs N interleaves the servers (on, off, on, off, ...; a fresh container each time) and prints the median of each
figure, the range of texts/s, and the median of the rounds' on/off ratios. Answers are checked before the load
(every text gets one of the model's labels); a scenario with any non-2xx answer or socket error is FAILED.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving  # (bench/serving.py: containers, wrk in the container's network namespace)
from serving import Server, run, start, wrk

IMAGE = "mldt-test/transformers-slim-baked-py3.11-uv-nodev-cinone-nok8s-built:serve"
SHORT = "the service was quick and friendly"
WORDS = ("great fast slow broken lovely awful support refund delivery price quality screen battery works "
         "again never always would recommend terrible excellent late early box manual").split()


def mixed_texts(count: int = 200, seed: int = 0) -> list[str]:
    pick = random.Random(seed)
    return [" ".join(pick.choice(WORDS) for _ in range(pick.randint(1, 80))) for _ in range(count)]


def lua(texts: list[str]) -> str:
    """A wrk script: one text per request, the next of `texts` each time, and the summary as one JSON line."""
    bodies = ",\n".join(f"[==[{json.dumps({'text': t})}]==]" for t in texts)
    return ('wrk.method = "POST"\nwrk.path = "/predict"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"local bodies = {{\n{bodies}\n}}\nlocal i = 0\n"
            "request = function()\n  i = i % #bodies + 1\n"
            "  return wrk.format(nil, nil, nil, bodies[i])\nend\n" + serving.WRK_DONE)


def check(running) -> None:
    for text in (SHORT, *mixed_texts(5, seed=1)):
        status, answer = running.http("POST", "/predict", json.dumps({"text": text}).encode())
        if status != 200 or not isinstance(answer, dict) or len(answer.get("labels") or ()) != 1:
            raise SystemExit(f"{running.server.label}: no label for {text[:40]!r}: {status} {answer}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default=IMAGE)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("text_batching: run as root (wrk enters the container's network namespace)")
    if run(["docker", "image", "inspect", args.image], check=False).returncode != 0:
        raise SystemExit(f"text_batching: no image {args.image}: build it first (this script's docstring says how)")
    hardened = [*serving.HARDENED, "-e", "WORKERS=1"]
    servers = [Server("batching on", args.image, 8000, hardened),
               Server("BATCHING=false", args.image, 8000, [*hardened, "-e", "BATCHING=false"])]
    scenarios = {"short": [SHORT], "mixed": mixed_texts()}
    figures: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as work:
        scripts = {name: Path(work, f"{name}.lua") for name in scenarios}
        for name, texts in scenarios.items():
            scripts[name].write_text(lua(texts))
        for round_ in range(args.runs):
            for server in servers:
                running = start(server, args.server_cpu)
                try:
                    check(running)
                    for name, script in scripts.items():
                        print(f"round {round_ + 1}/{args.runs} [{server.label}] {name}", file=sys.stderr, flush=True)
                        if args.warmup:
                            wrk(running, script, args.connections, args.warmup, args.client_cpu, 1)
                        stats = wrk(running, script, args.connections, args.duration, args.client_cpu, 1)
                        errors = sum(stats[k] for k in serving.WRK_ERRORS)
                        figures.setdefault((server.label, name), []).append(
                            {"texts_s": stats["requests"] / (stats["duration_us"] / 1e6), "errors": errors,
                             "p50": stats["p50_us"] / 1000, "p99": stats["p99_us"] / 1000})
                finally:
                    run(["docker", "rm", "-f", running.cid], check=False)
    print(f"\n{serving.cpu_model()}; {args.image}; {args.connections} connections, one text per request, "
          f"median of {args.runs} interleaved rounds, {args.duration} s each after {args.warmup} s\n")
    print("| scenario | server | texts/s (range) | p50 ms | p99 ms | on / off |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name in scenarios:
        on, off = figures[("batching on", name)], figures[("BATCHING=false", name)]
        ratio = statistics.median(a["texts_s"] / b["texts_s"] for a, b in zip(on, off))
        for label, rounds in (("batching on", on), ("BATCHING=false", off)):
            rates = [r["texts_s"] for r in rounds]
            failed = " FAILED" if any(r["errors"] for r in rounds) else ""
            print(f"| {name} | {label}{failed} | {statistics.median(rates):.0f} ({min(rates):.0f}-{max(rates):.0f}) "
                  f"| {statistics.median(r['p50'] for r in rounds):.1f} | {statistics.median(r['p99'] for r in rounds):.1f} "
                  f"| {f'{ratio:.2f}x' if label == 'batching on' else ''} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
