"""Promise: `copier update` brings template changes and never loses a user's edits; conflicts are visible;
changing an answer re-renders consistently; a project from every release updates to HEAD."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.version import Version

from helpers.answers import REPO
from helpers.engine import run
from helpers.render import copier_cli

GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.org", "-c", "init.defaultBranch=main",
       "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"]


def git(cwd: Path, *args: str) -> str:
    return run([*GIT, *args], cwd=cwd).stdout


def copy_working_tree(dst: Path) -> None:
    """The template's files as they are now (uncommitted changes included), symlinks kept."""
    files = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO).stdout
    for name in filter(None, files.split("\0")):
        source = REPO / name
        if source.exists() or source.is_symlink():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            run(["cp", "-P", str(source), str(dst / name)])


def template_repo(dst: Path) -> Path:
    """A throwaway git repository holding the template's working tree."""
    copy_working_tree(dst)
    git(dst, "init", "-q")
    git(dst, "add", "-A")
    git(dst, "commit", "-qm", "template")
    return dst


def generate(template: Path, dst: Path, ref: str, *answers: str) -> Path:
    args = [a for answer in ("project_name=Iris Classifier", *answers) for a in ("-d", answer)]
    result = copier_cli("copy", "--trust", "--defaults", "--skip-tasks", "--vcs-ref", ref, *args, str(template),
                        str(dst))
    assert result.returncode == 0, result.stderr[-3000:]
    # locks as `make lock` would leave them: an update must never rewrite them
    for name in ("train", "serve"):
        (dst / f"requirements/{name}.txt").write_text(f"# {name} lock of the user\nsix==1.16.0\n")
    git(dst, "init", "-q")
    git(dst, "add", "-A")
    git(dst, "commit", "-qm", "generated")
    return dst


def update(project: Path, *args: str) -> subprocess.CompletedProcess:
    return copier_cli("update", "--trust", "--defaults", "--conflict", "inline", *args, cwd=project)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def no_conflicts(project: Path) -> None:
    assert not list(project.rglob("*.rej")), "a .rej file was left"
    for path in project.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            assert not re.search(r"^(<<<<<<<|>>>>>>>) ", path.read_text(errors="replace"), re.MULTILINE), path
    assert git(project, "ls-files", "--unmerged") == ""


@pytest.fixture()
def two_releases(tmp_path: Path) -> Path:
    """Release 1.0.0 = today's template; release 1.1.0 changes the Dockerfile, .dockerignore, serve.in and model.py."""
    template = template_repo(tmp_path / "template")
    git(template, "tag", "1.0.0")
    edit(template / "template/Dockerfile.jinja", "HEALTHCHECK --interval=10s", "HEALTHCHECK --interval=15s")
    (template / "template/.dockerignore.jinja").write_text(
        (template / "template/.dockerignore.jinja").read_text() + "\n# new in 1.1.0\n*.parquet.tmp\n")
    edit(template / "template/requirements/serve.in.jinja", "fastapi>=0.115", "fastapi>=0.115\norjson>=3.10")
    edit(template / "template/frameworks/sklearn/model.py", '"""The model:', '"""(1.1.0) The model:')
    git(template, "commit", "-qam", "Release 1.1.0")
    git(template, "tag", "1.1.0")
    return template


def test_update_merges_template_changes_and_keeps_user_edits(two_releases: Path, tmp_path: Path) -> None:
    project = generate(two_releases, tmp_path / "project", "1.0.0")
    model = next(project.glob("src/*/model.py"))
    edit(project / "Dockerfile", 'CMD ["python", "-m", "iris_classifier.train"]',
         'CMD ["python", "-m", "iris_classifier.train"]\n# user: train nightly')
    edit(model, "n_estimators=100", "n_estimators=300")
    edit(project / "requirements/train.in", "pytest>=8", "pytest>=8\nrich>=13")
    (project / ".env").write_text("SEED=7\n")  # git-ignored, as it should be
    git(project, "commit", "-qam", "user edits")
    locks = {p.name: p.read_text() for p in project.glob("requirements/*.txt")}

    result = update(project)
    assert result.returncode == 0, result.stderr[-3000:]
    dockerfile = (project / "Dockerfile").read_text()
    assert "HEALTHCHECK --interval=15s" in dockerfile, "the template's change did not arrive"
    assert "# user: train nightly" in dockerfile
    assert "*.parquet.tmp" in (project / ".dockerignore").read_text()
    assert "orjson>=3.10" in (project / "requirements/serve.in").read_text()
    assert "rich>=13" in (project / "requirements/train.in").read_text()
    assert "n_estimators=300" in model.read_text() and "(1.1.0)" not in model.read_text(), "model.py is the user's"
    assert (project / ".env").read_text() == "SEED=7\n"
    assert {p.name: p.read_text() for p in project.glob("requirements/*.txt")} == locks, "an update rewrote the locks"
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] == "1.1.0"
    no_conflicts(project)


def test_real_conflict_leaves_inline_markers_and_make_update_fails(two_releases: Path, tmp_path: Path) -> None:
    project = generate(two_releases, tmp_path / "project", "1.0.0")
    edit(project / "Dockerfile", "HEALTHCHECK --interval=10s", "HEALTHCHECK --interval=30s")
    git(project, "commit", "-qam", "user: slower health checks")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["make", "update", "UPDATE_ARGS=--defaults"], cwd=project, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "conflicts to resolve" in result.stdout and "Dockerfile" in result.stdout
    text = (project / "Dockerfile").read_text()
    assert re.search(r"^<<<<<<< .*\nHEALTHCHECK --interval=30s.*\n=======\nHEALTHCHECK --interval=15s", text,
                     re.MULTILINE), text
    assert git(project, "ls-files", "--unmerged"), "git does not show the conflict"
    assert not list(project.rglob("*.rej"))


CONFLICT = re.compile(r"^<<<<<<< [^\n]*\n(.*?)^=======\n(.*?)^>>>>>>> [^\n]*\n", re.MULTILINE | re.DOTALL)


def conflict_sides(text: str) -> tuple[str, str]:
    """The file with every inline conflict resolved to the user's side, and to the template's new side."""
    assert text.count("\n<<<<<<< ") == text.count("\n>>>>>>> ") == len(CONFLICT.findall(text)), "malformed markers"
    user = CONFLICT.sub(lambda m: re.split(r"^\|\|\|\|\|\|\| .*\n", m.group(1), flags=re.MULTILINE)[0], text)
    return user, CONFLICT.sub(lambda m: m.group(2), text)


def test_template_deleting_the_line_a_user_edited_is_a_conflict_not_a_loss(tmp_path: Path) -> None:
    """A refactor that removes (or moves) the instruction a user changed: the user's version stays, between markers."""
    template = template_repo(tmp_path / "template")
    git(template, "tag", "1.0.0")
    project = generate(template, tmp_path / "project", "1.0.0")
    dockerfile = template / "template/Dockerfile.jinja"
    healthcheck = re.compile(r"^HEALTHCHECK [^\n]*\\\n(?:[^\n]*\\\n)*[^\n]*\n", re.MULTILINE)
    assert len(healthcheck.findall(dockerfile.read_text())) == 1, "the template's HEALTHCHECK instruction moved"
    dockerfile.write_text(healthcheck.sub("", dockerfile.read_text()))
    git(template, "commit", "-qam", "Release 1.1.0: no HEALTHCHECK")
    git(template, "tag", "1.1.0")
    edit(project / "Dockerfile", "HEALTHCHECK --interval=10s", "HEALTHCHECK --interval=30s")
    git(project, "commit", "-qam", "user: slower health checks")

    result = update(project, "--skip-answered")  # as `make update` runs it
    assert result.returncode == 0, result.stderr[-3000:]
    text = (project / "Dockerfile").read_text()
    user, new = conflict_sides(text)
    assert CONFLICT.search(text) and "HEALTHCHECK --interval=30s" in user, f"the user's edit was dropped:\n{text}"
    assert "HEALTHCHECK --interval" not in new, "the template's side still has the HEALTHCHECK"
    assert git(project, "ls-files", "--unmerged"), "git does not show the conflict"


def user_dockerfile_edits(text: str) -> list[tuple[str, str]]:
    """Edits a user makes to a release's Dockerfile, as (old, new): a changed flag in a line the template has kept so
    far, a changed install line, a line added to the serve stage. Each new text appears nowhere else."""
    healthcheck = re.search(r"^HEALTHCHECK --interval=\S+", text, re.MULTILINE)
    install = re.search(r"^.*--require-hashes.*\\$", text, re.MULTILINE)
    serve = re.search(r"^FROM .* AS serve$", text, re.MULTILINE)
    assert healthcheck and install and serve, "the release's Dockerfile has no HEALTHCHECK, hashed install or serve"
    return [(healthcheck[0], "HEALTHCHECK --interval=17s"),
            (install[0], install[0][:-1].rstrip() + " --log /tmp/pip-user.log \\"),
            (serve[0], serve[0] + "\n# user: serve tweaks")]


def test_dockerfile_edits_survive_an_update_from_the_last_release(tmp_path: Path) -> None:
    """Issue 36's promise: the Dockerfile is rewritten between releases, and a user who edited theirs finds each edit
    either merged or inside Copier's conflict markers, never silently gone; resolving every conflict to the template's
    side (and undoing the merged edits) gives exactly the Dockerfile a new project gets."""
    template = released_template(tmp_path / "template")
    last = releases()[0]
    project = generate(template, tmp_path / "project", last)
    edits = user_dockerfile_edits((project / "Dockerfile").read_text())
    for old, new in edits:
        edit(project / "Dockerfile", old, new)
    git(project, "commit", "-qam", "user edits")
    head_is_working_tree(template)
    fresh = generate(template, tmp_path / "fresh", "HEAD")

    result = update(project, "--vcs-ref", "HEAD", "--skip-answered")
    assert result.returncode == 0, result.stderr[-3000:]
    text = (project / "Dockerfile").read_text()
    user, theirs = conflict_sides(text)
    for old, new in edits:
        assert new in user, f"update from {last} dropped the user's edit {new!r}:\n{text}"
        theirs = theirs.replace(new, old)
    assert theirs == (fresh / "Dockerfile").read_text(), "the template's side is not the new Dockerfile"
    assert bool(CONFLICT.search(text)) == bool(git(project, "ls-files", "--unmerged")), "markers and git disagree"
    assert not list(project.rglob("*.rej"))


def test_changing_an_answer_rerenders_consistently(tmp_path: Path) -> None:
    template = template_repo(tmp_path / "template")
    git(template, "tag", "1.0.0")
    project = generate(template, tmp_path / "project", "1.0.0")
    result = update(project, "-d", "serve_port=9100", "-d", "python_version=3.11")
    assert result.returncode == 0, result.stderr[-3000:]
    no_conflicts(project)
    dockerfile = (project / "Dockerfile").read_text()
    assert "ARG PYTHON_VERSION=3.11" in dockerfile and "slim-bookworm" in dockerfile
    assert "EXPOSE 9100" in dockerfile and "ENV PORT=9100" in dockerfile
    assert "${SERVE_PORT:-9100}:9100" in (project / "compose.yaml").read_text()
    assert "SERVE_PORT = 9100" in next(project.glob("src/*/_project.py")).read_text()
    assert 'requires-python = "==3.11.*"' in (project / "pyproject.toml").read_text()
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert answers["serve_port"] == 9100 and answers["python_version"] == "3.11"


def test_update_runs_offline_and_never_runs_the_lock_task(two_releases: Path, tmp_path: Path) -> None:
    if not shutil.which("unshare") or os.geteuid() != 0:
        pytest.skip("needs root and unshare to cut the network")
    project = generate(two_releases, tmp_path / "project", "1.0.0")
    copier = str(Path(sys.executable).parent / "copier")
    result = subprocess.run(["unshare", "--net", copier, "update", "--trust", "--defaults", "--conflict", "inline"],
                            cwd=project, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "lock:" not in result.stdout + result.stderr, "the lock task ran during an update"
    assert "HEALTHCHECK --interval=15s" in (project / "Dockerfile").read_text()


def releases() -> list[str]:
    return re.findall(r"^## (\d+\.\d+\.\d+) - ", (REPO / "CHANGELOG.md").read_text(), re.MULTILINE)


def test_changelog_lists_releases_with_their_commits() -> None:
    assert releases(), "CHANGELOG.md lists no release"
    for version in releases():
        commits = run(["git", "log", "--format=%H", f"--grep=^Release {re.escape(version)}$"], cwd=REPO).stdout.split()
        assert len(commits) == 1, f"release {version}: expected one commit 'Release {version}', found {commits}"
        tagged = run(["git", "rev-list", "-n1", version], cwd=REPO, check=False)
        if tagged.returncode == 0:  # a clone may lack tags; where the tag exists it must be that commit
            assert tagged.stdout.strip() == commits[0], f"tag {version} is not the 'Release {version}' commit"


def release_commit(version: str) -> str:
    return run(["git", "log", "--format=%H", f"--grep=^Release {re.escape(version)}$"], cwd=REPO).stdout.split()[0]


# who tags releases: the script .github/workflows/release.yml runs on main (git's identity as GIT sets it)
TAGGER = {"GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.org", "GIT_AUTHOR_NAME": "Test",
          "GIT_AUTHOR_EMAIL": "test@example.org"}


def tag_releases(template: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, str(REPO / "tools/tag_releases.py"), *args], cwd=template, env=TAGGER, check=check)


def released_template(dst: Path) -> Path:
    """A clone of this repository with every release tagged as the release workflow tags them (a clean clone may
    carry no tags; Copier runs the migrations between two tags)."""
    run(["git", "clone", "-q", str(REPO), str(dst)])
    tag_releases(dst)
    return dst


def head_is_working_tree(template: Path) -> None:
    """HEAD = the working tree under test, committed on top of the history."""
    git(template, "rm", "-rq", ".")
    copy_working_tree(template)
    git(template, "add", "-A")
    git(template, "commit", "-q", "--allow-empty", "-m", "working tree under test")


@pytest.mark.parametrize("version", releases())
def test_project_from_every_release_updates_to_head(version: str, tmp_path: Path) -> None:
    template = released_template(tmp_path / "template")
    project = generate(template, tmp_path / "project", version)
    head_is_working_tree(template)
    result = update(project, "--vcs-ref", "HEAD")
    assert result.returncode == 0, result.stderr[-3000:]
    no_conflicts(project)
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["_commit"] != version


def test_migration_knows_what_each_release_shipped() -> None:
    """hooks/migrations.py tells a user's file from the shipped one by hash: its table must be the releases' files."""
    sys.path.insert(0, str(REPO / "hooks"))
    try:
        import migrations
    finally:
        sys.path.pop(0)
    for old, shipped in migrations.SHIPPED_0_3_0.items():
        hashes = set()
        for version in releases():
            if Version(version) >= Version("0.3.0"):
                continue
            for name in (old, f"{old}.jinja"):
                found = run(["git", "show", f"{release_commit(version)}:template/src/{{{{package_name}}}}/{name}"],
                            cwd=REPO, check=False)
                if found.returncode == 0:
                    hashes.add(hashlib.sha256(found.stdout.encode()).hexdigest())
        assert hashes and hashes == shipped, f"{old}: the releases shipped {hashes}, the migration knows {shipped}"


def test_serving_package_move_keeps_the_files_a_user_changed(tmp_path: Path) -> None:
    """0.3.0 moved the serving modules under serving/: unchanged ones move, changed ones stay with one line each."""
    template = released_template(tmp_path / "template")
    project = generate(template, tmp_path / "project", "0.2.0")
    package = project / "src/iris_classifier"
    edit(package / "app.py", '{"status": "ok"}', '{"status": "fine"}')
    (package / "batching.py").write_text((package / "batching.py").read_text() + "# user: tuned\n")
    git(project, "commit", "-qam", "user edits")
    head_is_working_tree(template)
    result = update(project, "--vcs-ref", "HEAD")
    assert result.returncode == 0, result.stderr[-3000:]
    no_conflicts(project)
    assert '{"status": "fine"}' in (package / "app.py").read_text()
    assert (package / "batching.py").read_text().endswith("# user: tuned\n")
    for moved in ("limits.py", "metrics.py", "oip.py", "predlog.py", "source.py", "workers.py"):
        assert not (package / moved).exists(), f"{moved}: unchanged, it should have moved"
    for new in ("serving/app.py", "serving/batching.py", "serving/routes/oip.py", "serving/routes/health.py"):
        assert (package / new).is_file(), new
    said = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("copier update: kept")]
    assert len(said) == 2, said
    assert any("src/iris_classifier/app.py" in line and "serving/app.py" in line for line in said), said
    assert not (project / ".copier-migration").exists()
