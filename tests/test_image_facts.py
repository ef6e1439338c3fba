"""Promise: tools/image_facts.py --compare (issue 36's "the same images" proof) names every difference that matters in
one line and exits 1, and ignores what changes with every build: layer sizes, the created/revision labels'
values, bytecode sizes. Read from saved facts files, so no engine is needed here."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from helpers.answers import REPO

TOOL = REPO / "tools" / "image_facts.py"
FACTS = {
    "image": "demo:serve",
    "id": "sha256:aaa",
    "platform": "linux/amd64",
    "size": 374_000_000,
    "config": {
        "User": "10001:10001",
        "Entrypoint": None,
        "Cmd": ["python", "-m", "demo.serve"],
        "Healthcheck": {"Test": ["CMD", "python", "-m", "demo.health"], "Interval": 10_000_000_000},
        "Labels": {"org.opencontainers.image.created": "2026-12-01T00:00:00Z",
                   "org.opencontainers.image.revision": "abc", "org.opencontainers.image.version": "0.1.0"},
        "ExposedPorts": {"8000/tcp": {}},
        "Env": ["PATH=/opt/venv/bin:/usr/bin", "PORT=8000"],
        "WorkingDir": "/app",
    },
    "layers": [{"size": 80_000_000, "created_by": ""}, {"size": 227_000_000, "created_by": "COPY /opt/venv /opt/venv"}],
    "venv": {"path": "/opt/venv", "python": "3.13.5", "executable": "/opt/venv/bin/python",
             "distributions": ["numpy==2.3.0", "scikit-learn==1.7.0"],
             "files": {"bin/python": "-> /usr/local/bin/python3",
                       "lib/python3.13/site-packages/numpy/__init__.py": 1000,
                       "lib/python3.13/site-packages/numpy/__pycache__/__init__.cpython-313.pyc": 900}},
}


def compare(tmp_path: Path, change: Callable[[dict], None]) -> subprocess.CompletedProcess:
    after = copy.deepcopy(FACTS)
    change(after)
    (tmp_path / "before.json").write_text(json.dumps({"demo:serve": FACTS}))
    (tmp_path / "after.json").write_text(json.dumps(after))
    return subprocess.run([sys.executable, str(TOOL), "--compare", str(tmp_path / "before.json"),
                           str(tmp_path / "after.json")], capture_output=True, text=True, timeout=60, check=False)


def test_what_changes_with_every_build_is_not_a_difference(tmp_path: Path) -> None:
    def rebuilt(facts: dict) -> None:
        facts["id"], facts["size"] = "sha256:bbb", 300_000_000
        facts["layers"] = [{"size": 80_000_000, "created_by": ""}, {"size": 150_000_000, "created_by": "COPY a"},
                           {"size": 77_000_000, "created_by": "COPY b"}]
        facts["config"]["Labels"]["org.opencontainers.image.created"] = "2026-12-24T00:00:00Z"
        facts["config"]["Labels"]["org.opencontainers.image.revision"] = "def"
        facts["config"]["Env"] = list(reversed(facts["config"]["Env"]))
        facts["venv"]["files"]["lib/python3.13/site-packages/numpy/__pycache__/__init__.cpython-313.pyc"] = 950

    result = compare(tmp_path, rebuilt)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("same: "), result.stdout


def test_every_difference_that_matters_is_one_line_and_exit_1(tmp_path: Path) -> None:
    def changed(facts: dict) -> None:
        config = facts["config"]
        config["User"] = "root"
        config["Healthcheck"] = None
        config["ExposedPorts"] = {"8080/tcp": {}}
        config["Env"] = ["PATH=/opt/venv/bin:/usr/bin", "PORT=8080"]
        del config["Labels"]["org.opencontainers.image.revision"]
        config["Labels"]["org.opencontainers.image.version"] = "0.2.0"
        facts["venv"]["distributions"] = ["NumPy==2.3.1", "scikit_learn==1.7.0", "joblib==1.5.0"]
        files = facts["venv"]["files"]
        files["lib/python3.13/site-packages/numpy/__init__.py"] = 1001
        del files["lib/python3.13/site-packages/numpy/__pycache__/__init__.cpython-313.pyc"]

    result = compare(tmp_path, changed)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        'config User: "10001:10001" != "root"',
        'config Healthcheck: {"Test": ["CMD", "python", "-m", "demo.health"], "Interval": 10000000000} != null',
        'config ExposedPorts: {"8000/tcp": {}} != {"8080/tcp": {}}',
        'env PORT: "8000" != "8080"',
        'label org.opencontainers.image.revision: "abc" != null',
        'label org.opencontainers.image.version: "0.1.0" != "0.2.0"',
        "distribution joblib: (absent) != 1.5.0",
        "distribution numpy: 2.3.0 != 2.3.1",
        "file only in A: lib/python3.13/site-packages/numpy/__pycache__/__init__.cpython-313.pyc",
        "file lib/python3.13/site-packages/numpy/__init__.py: 1000 != 1001",
    ]


def test_an_image_that_cannot_be_read_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "two.json").write_text(json.dumps({"a": FACTS, "b": FACTS}))
    result = subprocess.run([sys.executable, str(TOOL), "--compare", str(tmp_path / "two.json"),
                             str(tmp_path / "two.json")], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "holds 2 images' facts" in result.stderr
