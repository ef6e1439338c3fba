"""Promise: `make lock-check` (scripts/lock.py --check) fails, offline and at once, when a lock is stale against
what it was compiled from (its .in files, the Python, the builder image, the lock tool) and says `run make lock`;
the stamp that makes this possible changes no pin."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from helpers.answers import REPO
from helpers.combos import Combo, DEFAULT_COMBO
from helpers.engine import run
from test_lock import pins

spec = importlib.util.spec_from_file_location("lock", REPO / "hooks" / "lock.py")
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)

LOCK_TEXT = "numpy==2.1.0 \\\n    --hash=sha256:{h}\n    # via -r requirements/serve.in\n".format(h="a" * 64)


@pytest.fixture
def project(render_combo: Callable[[Combo], Path], tmp_path: Path) -> Path:
    """The default render with stand-in locks stamped as `make lock` stamps them (no compile needed)."""
    dst = tmp_path / "project"
    shutil.copytree(render_combo(DEFAULT_COMBO), dst)
    for name in lock.locks(dst):
        (dst / "requirements" / f"{name}.txt").write_text(LOCK_TEXT)
        lock.stamp_lock(dst, name)
    return dst


def check(project: Path) -> tuple[int, list[str]]:
    result = run([sys.executable, "scripts/lock.py", "--check"], cwd=project, check=False)
    return result.returncode, result.stderr.splitlines()


def stale(name: str) -> str:
    return f"requirements/{name}.txt is stale against {name}.in: run make lock"


def test_fresh_locks_pass_fast_and_the_stamp_changes_no_pin(project: Path) -> None:
    started = time.monotonic()
    assert check(project) == (0, [])
    assert time.monotonic() - started < 5, "lock-check runs in pre-commit: it must be fast"
    text = (project / "requirements/train.txt").read_text()
    assert re.match(r"^# lock-inputs: sha256=[0-9a-f]{64} \(python 3\.13, python:3\.13-slim-trixie \(linux/amd64\), pip-tools==", text)
    assert pins(project / "requirements/train.txt") == {"numpy": "2.1.0"}
    lock.stamp_lock(project, "train")  # stamping again replaces the stamp, never stacks them
    assert (project / "requirements/train.txt").read_text() == text


def test_edit_to_train_in_makes_train_and_what_it_constrains_stale(project: Path) -> None:
    with (project / "requirements/train.in").open("a") as f:
        f.write("tqdm>=4.66\n")
    code, lines = check(project)
    # serve.txt is compiled with -c train.txt: train's inputs are its inputs too; dev.in includes train.in
    assert code == 1 and lines == [stale("train"), stale("serve"), stale("dev")]


def test_edit_to_serve_in_makes_serve_and_train_stale(project: Path) -> None:
    """train.in includes serve.in (-r), and dev.in train.in, so every lock depends on it."""
    with (project / "requirements/serve.in").open("a") as f:
        f.write("orjson>=3.10\n")
    assert check(project) == (1, [stale("train"), stale("serve"), stale("dev")])


def test_an_edit_to_dev_in_makes_only_dev_stale(project: Path) -> None:
    with (project / "requirements/dev.in").open("a") as f:
        f.write("seaborn>=0.13\n")
    assert check(project) == (1, [stale("dev")])


def test_a_new_python_or_base_image_or_lock_tool_makes_every_lock_stale(project: Path) -> None:
    dockerfile = project / "Dockerfile"
    original = dockerfile.read_text()
    for old, new in (("ARG PYTHON_VERSION=3.13", "ARG PYTHON_VERSION=3.11"),
                     ("slim-trixie\nARG RUNTIME", "slim-bookworm\nARG RUNTIME"),
                     ("ARG LOCK_TOOL=pip-tools", "ARG LOCK_TOOL=uv"),
                     ("ARG LOCK_TOOL_VERSION=", "ARG LOCK_TOOL_VERSION=0.0.1")):
        assert old in original, old
        dockerfile.write_text(original.replace(old, new, 1))
        assert check(project) == (1, [stale("train"), stale("serve"), stale("dev")]), new
    # a digest pin of the same image (Renovate, or bit-for-bit rebuilds) does not make the locks stale
    pinned = re.sub(r"^(ARG BUILDER_IMAGE=\S+)$", r"\1@sha256:" + "b" * 64, original, flags=re.MULTILINE)
    assert pinned != original
    dockerfile.write_text(pinned)
    assert check(project) == (0, [])


def test_a_lock_from_before_the_stamps_counts_as_stale_with_its_own_message(project: Path) -> None:
    path = project / "requirements/serve.txt"
    path.write_text(LOCK_TEXT)
    assert check(project) == (1, ["requirements/serve.txt has no input stamp (made before lock-check): run make lock"])
    (project / "requirements/train.txt").unlink()
    code, lines = check(project)
    assert code == 1 and lines[0] == "requirements/train.txt is missing: run make lock"


def test_the_stamp_does_not_depend_on_where_the_project_is(project: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "other-name"
    shutil.copytree(project, moved)
    assert check(moved) == (0, [])
