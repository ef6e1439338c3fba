"""Copier migrations: run by `copier update` from the new template (copier.yml `_migrations`), in the project.

0.3.0 moved the serving plumbing into src/<package>/serving/. Copier deletes the old files, whether or not you
changed them; this migration keeps the ones you changed where they were (the new ones arrive under serving/) and
says, one line each, what to merge. A file counts as unchanged when it is what a release shipped (SHIPPED: sha256 of
each file as the template held it, tests/test_update.py checks them against the release commits).

    python migrations.py 0.3.0 before|after    (in the project; copier's own answers are not rendered for `before`)
    python migrations.py locks after           (every update: which locks are stale and why)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml  # copier's own dependency: this runs on copier's Python

STASH = ".copier-migration"  # where a changed file waits while copier updates (removed again in `after`)

MOVES_0_3_0 = {
    "app.py": "serving/app.py",
    "batching.py": "serving/batching.py",
    "limits.py": "serving/limits.py",
    "metrics.py": "serving/metrics.py",
    "predlog.py": "serving/predlog.py",
    "source.py": "serving/source.py",
    "workers.py": "serving/workers.py",
    "oip.py": "serving/routes/oip.py",
}
# sha256 of the template's file (before rendering) in each release that shipped it: 0.2.0
SHIPPED_0_3_0 = {
    "app.py": {"29219f33a1a3f3525858183267aeb606e4945b227251bcda6ab1ba1a4259cdb2"},
    "batching.py": {"5d7aea0cdff4051ad9bd515821fdc4d4bb49c9a75fb9741360404bd8b41b6ff3"},
    "limits.py": {"b72260767c17a46c75a592f3c69a110a4e8de77f33dc01ffe079382939e1d249"},
    "metrics.py": {"1c2a77301836d08c5b35ea0cf04e95292e3d38253c0512ff9da0cda4a98db65d"},
    "oip.py": {"095d20d8b79d58b85eb7c6899efbd5228afc2f75e29fc0f001fc6ebde40b12ef"},
    "predlog.py": {"70d51accdffd9a503fe3c4f7dd75c47adf3df25bdd88ec0502f85751fdbd22e7"},
    "source.py": {"6ebaa86390682bb534f02f3312f898148534fb715e3af9f48a939359a6e5ea81"},
    "workers.py": {"479d2f8662ce862cd60f97932467887a6480e8a5ad064bb09093c6e6e011592b"},
}


def unrendered(text: str, package_name: str, project_name: str) -> str:
    """The file as the template held it: app.py.jinja named the package and the project, nothing else did."""
    return (text.replace(f"python -m {package_name}.serve", "python -m {{ package_name }}.serve")
                .replace(f'FastAPI(title="{project_name}"', 'FastAPI(title="{{ project_name }}"'))


def changed_by_user(path: Path, shipped: set[str], package_name: str, project_name: str) -> bool:
    text = unrendered(path.read_text(errors="replace"), package_name, project_name)
    return hashlib.sha256(text.encode()).hexdigest() not in shipped


def serving_package_0_3_0(stage: str) -> None:
    answers = yaml.safe_load(Path(".copier-answers.yml").read_text())
    project_name = str(answers.get("project_name", ""))
    for package in sorted(p.parent for p in Path("src").glob("*/serve.py")):
        move_changed_files(stage, package, project_name)
    if stage == "after" and Path(STASH).is_dir():
        for leftover in sorted(Path(STASH).rglob("*"), reverse=True):
            leftover.rmdir()
        Path(STASH).rmdir()


def move_changed_files(stage: str, package: Path, project_name: str) -> None:
    package_name = package.name
    stash = Path(STASH) / package
    for old, new in MOVES_0_3_0.items():
        if stage == "before":
            path = package / old
            if path.is_file() and changed_by_user(path, SHIPPED_0_3_0[old], package_name, project_name):
                (stash / old).parent.mkdir(parents=True, exist_ok=True)
                path.replace(stash / old)
        elif (stash / old).is_file():
            (stash / old).replace(package / old)
            print(f"copier update: kept {package / old} (you changed it); the template moved it to {package / new}: "
                  f"merge your changes there, then delete {package / old}")


def lock_report(stage: str) -> None:
    """Which locks the update made stale, and why (`scripts/lock.py --check --report`, the updated one). `make update`
    says it itself once conflicts are known (it sets MAKE_UPDATE_REPORTS_LOCKS); this covers `copier update` run
    by hand and `make update` in a project of an earlier release (its own Makefile runs, which does not say it)."""
    if stage == "after" and not os.environ.get("MAKE_UPDATE_REPORTS_LOCKS") and Path("scripts/lock.py").is_file():
        subprocess.run([sys.executable, "scripts/lock.py", "--check", "--report"], check=False)


MIGRATIONS = {"0.3.0": serving_package_0_3_0, "locks": lock_report}

if __name__ == "__main__":
    version, stage = sys.argv[1:3]
    MIGRATIONS[version](stage)
