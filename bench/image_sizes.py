#!/usr/bin/env python3
"""Image size figures for every combination the test suite built (run `make test` first).

    .venv/bin/python bench/image_sizes.py

Reads the images tagged $MLDT_IMAGE_PREFIX (default mldt-test)/<combination>:serve|train and prints, per combination, the MB each adds over
its base image and its largest layer, as a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.answers import MATRIX
from helpers.combos import ENGINE_COMBOS
from helpers.engine import image_tag, run

MB = 1_000_000


def size(image: str) -> int:
    return int(run(["docker", "image", "inspect", "--format", "{{.Size}}", image]).stdout)


def layers(image: str) -> list[int]:
    return [int(x) for x in run(["docker", "history", "--human=false", "--format", "{{.Size}}", image]).stdout.split()]


def main() -> None:
    print("| combination | serve MB over base | serve largest layer MB | serve budget MB | train MB over base |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for combo in ENGINE_COMBOS:
        base, builder = combo.image("runtime"), combo.image("builder")
        serve, train = image_tag(combo, "serve"), image_tag(combo, "train")
        if run(["docker", "image", "inspect", serve], check=False).returncode != 0:
            print(f"| {combo.id} | not built | | | |")
            continue
        ours = layers(serve)[: -len(layers(base))]
        budget = MATRIX["framework"][combo.framework]["serve_budget_mb"]
        print(f"| {combo.id} | {(size(serve) - size(base)) / MB:.1f} | {max(ours) / MB:.1f} | {budget} "
              f"| {(size(train) - size(builder)) / MB:.1f} |")


if __name__ == "__main__":
    main()
