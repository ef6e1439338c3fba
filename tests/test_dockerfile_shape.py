"""Promise (issue 36): the generated Dockerfile reads like a careful engineer wrote it by hand. At most 140 lines for a
project of several platforms, 120 for one platform, 160 for a CUDA render; no block written twice, except the
runtime settings and user where the serve image is another image than the builder (distroless, nvidia-cuda); a
single-platform render holds no cross-architecture stage and no VENV; every stage is used by a target (lock, train,
serve, dev) for some VENV value. Over every render of the covering set."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from helpers.answers import MATRIX
from helpers.combos import COMBOS, Combo
from helpers.dockerfile import Dockerfile
from helpers.file_stats import repeated_lines

RenderCombo = Callable[[Combo], Path]
TARGETS = ("lock", "train", "serve", "dev")


def line_limit(combo: Combo) -> int:
    if combo.base_image == "nvidia-cuda":
        return 160
    return 140 if len(combo.platforms.split(",")) > 1 else 120


def instruction_lines(text: str) -> list[str]:
    """Each line's instruction (its first line's keyword: ENV, RUN ...), comments and blanks: the next one's."""
    lines = text.splitlines()
    keywords: list[str] = [""] * len(lines)
    current = ""
    continued = False
    for n, line in enumerate(lines):
        stripped = line.strip()
        if not continued and stripped and not stripped.startswith("#"):
            current = stripped.split()[0].upper()
        if stripped and not stripped.startswith("#"):
            continued = stripped.endswith("\\")
        keywords[n] = current if continued or (stripped and not stripped.startswith("#")) else ""
    for n in range(len(lines) - 2, -1, -1):  # a comment is the instruction's below it
        if not keywords[n] and lines[n].strip().startswith("#"):
            keywords[n] = keywords[n + 1]
    return keywords


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: c.id)
def test_the_dockerfile_is_short_and_says_each_thing_once(render_combo: RenderCombo, combo: Combo) -> None:
    path = render_combo(combo) / "Dockerfile"
    text = path.read_text()
    lines = text.splitlines()
    assert len(lines) <= line_limit(combo), f"{len(lines)} lines, at most {line_limit(combo)}"
    repeated, _ = repeated_lines([text])
    base = MATRIX["base_image"][combo.base_image]
    if base.get("runtime_pip"):  # train and serve grow from one runtime: nothing is written twice
        assert not repeated, [lines[n] for _, n in sorted(repeated)]
    else:  # the serve image is another image: its settings (ENV) and user (RUN useradd) again, nothing else
        keywords = instruction_lines(text)
        for _, n in sorted(repeated):
            user = keywords[n] == "RUN" and "useradd" in _instruction(lines, n)
            workdir = lines[n] == "WORKDIR /app" and "useradd" in _instruction(lines, n - 1)  # the user's home
            allowed = keywords[n] == "ENV" or user or workdir
            assert allowed, f"line {n + 1} repeats a block: {lines[n]!r}"


def _instruction(lines: list[str], n: int) -> str:
    """The whole instruction (its continuation lines) that line n is part of."""
    start = n
    while start > 0 and lines[start - 1].rstrip().endswith("\\"):
        start -= 1
    end = n
    while lines[end].rstrip().endswith("\\") and end + 1 < len(lines):
        end += 1
    return "\n".join(lines[start:end + 1])


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: c.id)
def test_every_stage_is_used_and_one_platform_has_no_cross_stage(render_combo: RenderCombo, combo: Combo) -> None:
    path = render_combo(combo) / "Dockerfile"
    readings = Dockerfile.each(path)
    stages = set(readings[0].stages)
    used = set().union(*(reading.reachable(*TARGETS) for reading in readings))
    assert stages - used == set(), "stages no target builds"
    if len(combo.platforms.split(",")) == 1:
        assert len(readings) == 1 and "VENV" not in readings[0].global_args and "${VENV}" not in path.read_text()
        assert not [name for name in stages if "cross" in name], stages
        assert not [s for s in readings[0].stages.values() if s.platform], "a stage on another platform"
    # each VENV value builds a different venv: neither reading is the other's
    if len(readings) == 2:
        native, cross = (reading.reachable("train", "serve") for reading in readings)
        assert native != cross and "cross-build" in cross - native
