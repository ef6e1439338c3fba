"""Promise: lock_tool=uv compiles the same .in files into pip-compatible hashed locks with the same pins as
pip-tools, inside the image, and its projects build, train and serve; installs stay pip --require-hashes."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest

from helpers.dockerfile import Dockerfile
from helpers.answers import choices, MATRIX, QUESTIONS, REPO
from helpers.combos import Combo, DEFAULT_COMBO, ENGINE_COMBOS, LOCK_TOOL_TWINS
from helpers.engine import run
from helpers.lock_scripts import lock_compile, lock_index, lock_stamp
from test_lock import assert_good_locks, pins


def hashes(path: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for block in re.split(r"^(?=[A-Za-z0-9])", path.read_text(), flags=re.MULTILINE)[1:]:
        name = re.split(r"[=\[ ]", block, maxsplit=1)[0].lower().replace("_", "-")
        found[name] = set(re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return found


def test_the_lock_code_a_project_carries_is_short_modules_read_from_the_entry_point(
        render_combo: Callable[[Combo], Path]) -> None:
    """A user who wants to know how their locks are made reads scripts/lock.py's docstring first (usage, the order
    of preference), then modules with one job each: every scripts/lock*.py at most 250 lines, each with a docstring
    that says its job. pip-tools stays the default lock tool."""
    project = render_combo(DEFAULT_COMBO)
    modules = {path.name: path.read_text() for path in sorted((project / "scripts").glob("lock*.py"))}
    assert "lock.py" in modules and len(modules) > 1, sorted(modules)
    for name, text in modules.items():
        assert len(text.splitlines()) <= 250, f"scripts/{name}: {len(text.splitlines())} lines"
        assert ast.get_docstring(ast.parse(text)), f"scripts/{name} does not start with a docstring"
    assert modules["lock.py"].startswith('#!/usr/bin/env python3\n"""'), "the entry point opens with its docstring"
    assert QUESTIONS["lock_tool"]["default"] == "pip-tools"
    assert Dockerfile.read(project / "Dockerfile").global_args["LOCK_TOOL"] == "pip-tools"


def test_both_lock_tools_are_offered() -> None:
    assert choices("lock_tool") == ["pip-tools", "uv"]
    assert {c.lock_tool for c in LOCK_TOOL_TWINS} == {"uv"}
    assert {c.framework for c in LOCK_TOOL_TWINS} >= {DEFAULT_COMBO.framework, "pytorch"}


@pytest.mark.parametrize("tool", choices("lock_tool"))
def test_dockerfile_pins_the_lock_tool_and_installs_from_hashes(render_combo: Callable[[Combo], Path],
                                                               tool: str) -> None:
    project = render_combo(replace(DEFAULT_COMBO, lock_tool=tool))
    dockerfile = Dockerfile.read(project / "Dockerfile")
    assert dockerfile.global_args["LOCK_TOOL"] == tool
    assert dockerfile.global_args["LOCK_TOOL_VERSION"] == MATRIX["tools"][tool.replace("-", "_")]
    install = dockerfile.stages["lock-compile"].all("RUN")[0].args
    assert '"${LOCK_TOOL}==${LOCK_TOOL_VERSION}"' in install, "the lock tool is installed at its pinned version"
    compile_run = dockerfile.stages["lock-compile"].all("RUN")[1].args
    assert "--mount=type=secret,id=pipconf" in compile_run and "target=/root/.cache/uv" in compile_run
    # whichever tool locked, the images install the lock with pip, hashes required, no dependency resolution: every
    # install is scripts/venv.py on a lock (its pip command: tests/test_venv_install.py), no other pip install
    for stage in ("train-venv", "serve-venv"):
        locks = [Path(call[2]).name for call in dockerfile.stages[stage].venv_calls()]
        assert locks == (["train.txt"] if stage == "train-venv" else ["1.txt", "2.txt"]), locks
    installs = [(s.name, i.args) for s in dockerfile.stages.values() for i in s.all("RUN") if "pip install" in i.args]
    assert installs == [("lock-compile", install)], installs
    script = (REPO / "template/scripts/venv.py").read_text()
    assert re.search(r'"-m", "pip", .*"install", "--require-hashes",\s+"--no-deps"', script, re.DOTALL)


def test_uv_gets_the_pip_index_settings_as_its_own_variables() -> None:
    settings = {"index-url": ["https://user:token@pypi.example.org/simple"],
                "extra-index-url": ["https://a.example.org/simple", "http://127.0.0.1:3141/simple"],
                "find-links": ["https://wheels.example.org/", "https://more.example.org/"],
                "trusted-host": ["a.example.org", "127.0.0.1"]}
    assert lock_index.uv_env(settings) == {
        "UV_INDEX_URL": "https://user:token@pypi.example.org/simple",
        "UV_EXTRA_INDEX_URL": "https://a.example.org/simple http://127.0.0.1:3141/simple",
        "UV_FIND_LINKS": "https://wheels.example.org/,https://more.example.org/",
        "UV_INSECURE_HOST": "a.example.org 127.0.0.1",
    }
    # equivalent flags: no index URLs in the locks, hashes, pip's cross-index resolution (PyTorch's extra index)
    assert {"--generate-hashes", "unsafe-best-match"} <= set(lock_compile.UV_COMPILE_FLAGS)
    assert not any(flag.startswith("--emit") for flag in lock_compile.UV_COMPILE_FLAGS)


@pytest.mark.parametrize("tool", choices("lock_tool"))
def test_lock_exclude_reaches_the_lock_tool_for_its_own_lock_only(tmp_path: Path, tool: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`# lock-exclude:` in serve.in becomes uv's --no-emit-package or pip-compile's --unsafe-package (without
    --allow-unsafe, which would pin them after all), for serve.txt only; pip-compile's note that pip would refuse the
    lock (true only for installs that resolve dependencies) becomes uv's words, and its stderr warning is dropped."""
    requirements = tmp_path / "requirements"
    requirements.mkdir()
    (requirements / "train.in").write_text("-r serve.in\nonnx>=1.18\n")
    (requirements / "serve.in").write_text("onnxruntime>=1.20\n# lock-exclude: protobuf sympy\n")
    calls = []
    unpinned = lock_compile.PIP_TOOLS_UNPINNED + "# protobuf\n"

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        output = tmp_path / cmd[cmd.index("--output-file") + 1]
        output.write_text("onnxruntime==1.32.0 \\\n    --hash=sha256:00\n\n" + (unpinned if "serve" in output.name else ""))
        stderr = lock_compile.PIP_TOOLS_REJECTED + " See # WARNING lines for details.\nkept\n"
        return subprocess.CompletedProcess(cmd, 0, stderr=stderr if kwargs.get("stderr") else None)

    monkeypatch.setattr(lock_compile.subprocess, "run", fake_run)
    monkeypatch.setattr(lock_compile, "pip_settings", dict)
    compiler = ["uv", "pip", "compile"] if tool == "uv" else ["pip-compile"]
    lock_compile.compile_locks(tmp_path, compiler, tool=tool)
    train, serve = calls
    option = "--no-emit-package" if tool == "uv" else "--unsafe-package"
    assert option not in train and ("--allow-unsafe" in train) == (tool == "pip-tools")
    assert [serve[i + 1] for i, arg in enumerate(serve) if arg == option] == ["protobuf", "sympy"]
    assert "--allow-unsafe" not in serve
    if tool == "pip-tools":
        text = (requirements / "serve.txt").read_text()
        assert lock_compile.EXCLUDED + "# protobuf\n" in text and "WARNING" not in text


def test_the_build_secret_pip_conf_reaches_uv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside the lock stage the private index arrives as a pip.conf (PIP_CONFIG_FILE, the BuildKit secret): the
    same file lock.py writes for the build must become uv's settings, as it becomes pip-compile's."""
    conf = tmp_path / "pip.conf"
    assert lock_index.write_pip_conf({"index-url": ["https://user:token@pypi.example.org/simple"],
                                "extra-index-url": ["http://127.0.0.1:3141/simple"]}, conf) is True
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    env = lock_index.uv_env(lock_index.pip_settings())
    assert env["UV_INDEX_URL"] == "https://user:token@pypi.example.org/simple"
    assert env["UV_EXTRA_INDEX_URL"] == "http://127.0.0.1:3141/simple"


@pytest.mark.engine
@pytest.mark.parametrize("combo", LOCK_TOOL_TWINS, ids=lambda c: c.id)
def test_uv_locks_inside_the_image_with_the_same_pins_as_pip_tools(locked_project: Callable[[Combo], Path],
                                                                   combo: Combo, tmp_path: Path) -> None:
    project = locked_project(combo)
    # the tool's own header, after the lock stamp's lines
    header = next(line for line in (project / "requirements/train.txt").read_text().splitlines()
                  if not line.startswith(lock_stamp.STAMP))
    assert "autogenerated by uv" in header, header
    for name in ("train", "serve"):
        text = (project / f"requirements/{name}.txt").read_text()
        assert "--index-url" not in text and "--extra-index-url" not in text, "index URLs may hold credentials"
    train, serve = pins(project / "requirements/train.txt"), pins(project / "requirements/serve.txt")
    assert all(serve[name] == train[name] for name in serve), "serve.txt must be constrained by train.txt"
    twin = locked_project(replace(combo, lock_tool="pip-tools"))
    assert_good_locks(twin, combo.python_version, combo.framework)
    if any(pins(project / f"requirements/{n}.txt") != pins(twin / f"requirements/{n}.txt") for n in ("train", "serve")):
        # The twin was locked earlier in the session and the index may have moved since (a release in between):
        # lock it again now, to the newest allowed versions, so both tools answer for the same moment
        fresh = tmp_path / "twin"
        shutil.copytree(twin, fresh, symlinks=True)
        run([sys.executable, "scripts/lock.py", "--strict", "--upgrade"], cwd=fresh, timeout=1800)
        twin = fresh
    for name in ("train", "serve"):
        assert pins(project / f"requirements/{name}.txt") == pins(twin / f"requirements/{name}.txt"), name
        # and the same hashes: an install verifies exactly the same files whichever tool locked
        assert hashes(project / f"requirements/{name}.txt") == hashes(twin / f"requirements/{name}.txt"), name
    if combo.framework == "pytorch":  # from the tests' local CPU index, not PyPI's CUDA build
        assert train["torch"].endswith("+cpu"), train["torch"]


@pytest.mark.engine
@pytest.mark.parametrize("combo", [c for c in ENGINE_COMBOS if c.lock_tool == "uv"], ids=lambda c: c.id)
def test_uv_locked_project_builds_trains_and_serves(built_project, serve_container, combo: Combo) -> None:
    built = built_project(combo)
    assert built.metadata["framework"] and (built.project / "models" / "metadata.json").is_file()
    with serve_container(combo) as container:
        status, body = container.http("POST", "/predict", {"features": [5.1, 3.5, 1.4, 0.2]})
        assert status == 200 and len(body["predictions"]) == 1, body
        assert container.http("GET", "/ready")[0] == 200
