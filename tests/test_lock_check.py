"""Promise: `make lock-check` (scripts/lock.py --check) fails, offline and at once, when a lock is stale against
what it was compiled from (its .in files, the Python, the builder image, the lock tool, the platforms), names the
input that changed and says `run make lock`; `make update` ends by saying the same, or that no lock is stale; a
stamp from before (one hash of everything) is still read; the stamp changes no pin."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable

import pytest

from helpers.answers import REPO
from helpers.combos import Combo, DEFAULT_COMBO
from helpers.engine import run
from helpers.lock_scripts import lock_files, lock_stamp
from test_lock import pins
from test_update import generate, git, head_is_working_tree, released_template


LOCK_TEXT = "numpy==2.1.0 \\\n    --hash=sha256:{h}\n    # via -r requirements/serve.in\n".format(h="a" * 64)


@pytest.fixture
def project(render_combo: Callable[[Combo], Path], tmp_path: Path) -> Path:
    """The default render with stand-in locks stamped as `make lock` stamps them (no compile needed)."""
    dst = tmp_path / "project"
    shutil.copytree(render_combo(DEFAULT_COMBO), dst)
    for name in lock_files.locks(dst):
        (dst / "requirements" / f"{name}.txt").write_text(LOCK_TEXT)
        lock_stamp.stamp_lock(dst, name)
    return dst


def check(project: Path) -> tuple[int, list[str]]:
    result = run([sys.executable, "scripts/lock.py", "--check"], cwd=project, check=False)
    return result.returncode, result.stderr.splitlines()


def stale(name: str, because: str) -> str:
    return f"requirements/{name}.txt is stale{because}: run make lock"


EVERY = ("train", "serve", "dev")


def test_fresh_locks_pass_fast_and_the_stamp_changes_no_pin(project: Path) -> None:
    started = time.monotonic()
    assert check(project) == (0, [])
    assert time.monotonic() - started < 5, "lock-check runs in pre-commit: it must be fast"
    text = (project / "requirements/train.txt").read_text()
    assert re.match(r"# lock-inputs: python=3\.13 image=python:3\.13-slim-trixie tool=pip-tools==\S+ "
                    r"platforms=linux/amd64 \(.*\)\n"
                    r"# lock-inputs: requirements/train\.in=sha256:[0-9a-f]{16} "
                    r"requirements/serve\.in=sha256:[0-9a-f]{16}\n"
                    r"numpy==", text), text
    assert pins(project / "requirements/train.txt") == {"numpy": "2.1.0"}
    lock_stamp.stamp_lock(project, "train")  # stamping again replaces the stamp, never stacks them
    assert (project / "requirements/train.txt").read_text() == text


def test_edit_to_train_in_makes_train_and_what_it_constrains_stale(project: Path) -> None:
    with (project / "requirements/train.in").open("a") as f:
        f.write("tqdm>=4.66\n")
    # serve.txt is compiled with -c train.txt: train's inputs are its inputs too; dev.in includes train.in. Each
    # names train.in, the file that changed (not its own .in)
    assert check(project) == (1, [stale(name, " against train.in") for name in EVERY])


def test_edit_to_serve_in_makes_serve_and_train_stale(project: Path) -> None:
    """train.in includes serve.in (-r), and dev.in train.in, so every lock depends on it."""
    with (project / "requirements/serve.in").open("a") as f:
        f.write("orjson>=3.10\n")
    assert check(project) == (1, [stale(name, " against serve.in") for name in EVERY])


def test_an_edit_to_dev_in_makes_only_dev_stale(project: Path) -> None:
    with (project / "requirements/dev.in").open("a") as f:
        f.write("seaborn>=0.13\n")
    assert check(project) == (1, [stale("dev", " against dev.in")])


def test_a_new_include_is_named_as_new(project: Path) -> None:
    (project / "requirements/extra.in").write_text("rich>=13\n")
    with (project / "requirements/train.in").open("a") as f:
        f.write("-r extra.in\n")
    assert check(project) == (1, [stale(name, " against train.in and extra.in (new)") for name in EVERY])


def test_a_new_python_or_base_image_or_lock_tool_makes_every_lock_stale(project: Path) -> None:
    dockerfile = project / "Dockerfile"
    original = dockerfile.read_text()
    tool = re.search(r"^ARG LOCK_TOOL_VERSION=(\S+)$", original, re.MULTILINE)[1]
    for old, new, because in (
            ("ARG PYTHON_VERSION=3.13", "ARG PYTHON_VERSION=3.11", "the Python changed (3.13 -> 3.11)"),
            ("ARG BUILDER_IMAGE=python:3.13-slim-trixie", "ARG BUILDER_IMAGE=python:3.13-slim-bookworm",
             "the builder image changed (python:3.13-slim-trixie -> python:3.13-slim-bookworm)"),
            ("ARG LOCK_TOOL=pip-tools", "ARG LOCK_TOOL=uv", f"the lock tool changed (pip-tools=={tool} -> uv=={tool})"),
            ("ARG LOCK_TOOL_VERSION=", "ARG LOCK_TOOL_VERSION=0.0.1",
             f"the lock tool changed (pip-tools=={tool} -> pip-tools==0.0.1{tool})"),
            ("ARG PLATFORMS=linux/amd64", "ARG PLATFORMS=linux/amd64,linux/arm64",
             "the platforms changed (linux/amd64 -> linux/amd64, linux/arm64)")):
        assert old in original, old
        dockerfile.write_text(original.replace(old, new, 1))
        assert check(project) == (1, [stale(name, f": {because}") for name in EVERY]), new
    # an .in file and the Python at once: both named
    dockerfile.write_text(original.replace("ARG PYTHON_VERSION=3.13", "ARG PYTHON_VERSION=3.12", 1))
    with (project / "requirements/dev.in").open("a") as f:
        f.write("seaborn>=0.13\n")
    assert check(project)[1][-1] == stale("dev", " against dev.in, and the Python changed (3.13 -> 3.12)")
    (project / "requirements/dev.in").write_text((project / "requirements/dev.in").read_text().replace(
        "seaborn>=0.13\n", ""))
    # a digest pin of the same image (Renovate, or bit-for-bit rebuilds) does not make the locks stale
    pinned = re.sub(r"^(ARG BUILDER_IMAGE=\S+)$", r"\1@sha256:" + "b" * 64, original, flags=re.MULTILINE)
    assert pinned != original
    dockerfile.write_text(pinned)
    assert check(project) == (0, [])


def test_make_update_says_which_locks_are_stale_and_why_or_that_none_are(project: Path) -> None:
    said = run([sys.executable, "scripts/lock.py", "--check", "--report"], cwd=project)  # exit 0 either way
    assert said.stdout == "update: every lock is up to date with its inputs (no make lock needed)\n"
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("ARG PYTHON_VERSION=3.13", "ARG PYTHON_VERSION=3.11", 1))
    said = run([sys.executable, "scripts/lock.py", "--check", "--report"], cwd=project)
    assert said.stdout.splitlines() == ["update: make lock needed:", *(
        "  " + stale(name, ": the Python changed (3.13 -> 3.11)") for name in EVERY)]
    recipe = (project / "Makefile").read_text().split("\nupdate:", 1)[1].split("\n\n", 1)[0]
    assert recipe.rstrip().endswith("\n\t@python3 scripts/lock.py --check --report"), recipe


def old_stamp(project: Path, name: str) -> None:
    """The single-hash stamp that lock.py wrote before the detailed one (its inputs_digest is still that hash)."""
    path = project / "requirements" / f"{name}.txt"
    env = lock_stamp.lock_environment(project)
    summary = f"python {env['python']}, {env['image']} ({env['platforms']}), {env['tool']}"
    digest = lock_stamp.inputs_digest(project, name)
    path.write_text(f"# lock-inputs: sha256={digest} ({summary}; `make lock-check` compares it)\n{LOCK_TEXT}")


def test_a_single_hash_stamp_still_passes_and_says_what_it_can(project: Path) -> None:
    for name in lock_files.locks(project):
        old_stamp(project, name)
    assert check(project) == (0, []), "an up-to-date lock needs no re-lock for its stamp's sake"
    note = " (this lock predates the detailed stamp: re-made once, the check names each input that changed)"
    with (project / "requirements/dev.in").open("a") as f:
        f.write("seaborn>=0.13\n")
    # one hash of everything: which .in changed it cannot tell, so it names them all
    assert check(project) == (1, [stale("dev", " against dev.in, train.in or serve.in") + note])
    dockerfile = project / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("ARG PLATFORMS=linux/amd64", "ARG PLATFORMS=linux/arm64"))
    assert check(project)[1][0] == stale("train", ": the platforms changed (linux/amd64 -> linux/arm64)") + note


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


def test_an_update_from_0_3_0_names_the_real_cause_in_make_update_and_lock_check(tmp_path: Path) -> None:
    """0.3.0 stamped its locks with one hash of everything and had no platforms. After the update both `make update`
    (0.3.0's own recipe runs it; the migration speaks) and `make lock-check` blame the platforms, not train.in."""
    template = released_template(tmp_path / "template")
    project = generate(template, tmp_path / "project", "0.3.0")
    spec = importlib.util.spec_from_file_location("lock_0_3_0", project / "scripts/lock.py")
    released = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(released)
    for name in released.locks(project):  # as 0.3.0's `make lock` left them
        (project / "requirements" / f"{name}.txt").write_text(LOCK_TEXT)
        released.stamp_lock(project, name)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "locked with 0.3.0")
    head_is_working_tree(template)
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cause = "the platforms changed (the host's -> linux/amd64, linux/arm64)"

    def said(result: subprocess.CompletedProcess) -> list[str]:
        return [line for line in result.stdout.splitlines() if line.startswith(("update: ", "  requirements/"))]

    update = run(["make", "update", "UPDATE_ARGS=--defaults --vcs-ref HEAD"], cwd=project, env=env)
    stale_locks = said(update)
    assert stale_locks[0] == "update: make lock needed:" and len(stale_locks) == 1 + len(lock_files.locks(project))
    for line in stale_locks[1:]:
        assert cause in line and "train.in" not in line, line
    checked = run(["make", "lock-check"], cwd=project, env=env, check=False)
    assert checked.returncode != 0 and [f"  {line}" for line in checked.stderr.splitlines()
                                        if line.startswith("requirements/")] == stale_locks[1:]

    # from now on the project's own Makefile says it at the end of `make update` (a stand-in copier: the recipe is
    # under test), and the migration keeps quiet under it
    stand_in = tmp_path / "bin/copier"
    stand_in.parent.mkdir()
    stand_in.write_text('#!/bin/sh\necho "copier $* (MAKE_UPDATE_REPORTS_LOCKS=$MAKE_UPDATE_REPORTS_LOCKS)"\n')
    stand_in.chmod(0o755)
    again = run(["make", "update"], cwd=project, env={"PATH": f"{stand_in.parent}{os.pathsep}{env['PATH']}"})
    assert "(MAKE_UPDATE_REPORTS_LOCKS=1)" in again.stdout
    assert said(again) == stale_locks and again.stdout.rstrip().endswith(stale_locks[-1])
    migration = [sys.executable, str(REPO / "hooks/migrations.py"), "locks", "after"]
    assert run(migration, cwd=project, env={"MAKE_UPDATE_REPORTS_LOCKS": "1"}).stdout == ""
