"""Promise: the default render runs on linux/arm64 as on linux/amd64 from one lock. `make lock` compiles train,
serve and dev in both platforms' images and merges (the same bytes from an engine whose own platform is arm64);
`make build-serve PLATFORM=linux/arm64` installs from that lock, hash-checked, with this machine's pip (the cross
stage, VENV=cross; tests/test_venv_install.py); the image's Python is aarch64; the model trained on amd64 answers the same
there; a uid-1000 user's `make train PLATFORM=linux/arm64` trains under emulation and its model serves on amd64;
`make release` pushes one index per image holding both platforms, signed with the key of `make keys` (cosign) and
verified by `make verify-image`, and each platform of the serve image pulled by the index digest serves. The base
images come from a real registry on 127.0.0.1 holding both platforms under one tag, as a mirror does
(helpers/registry.py): the engine's own store keeps one platform per name."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import k8s_tools
from helpers.answers import REPO
from helpers.combos import PLATFORM_COMBOS
from helpers.containers import Container
from helpers.engine import IMAGE_PREFIX, record_time, run, timed
from helpers.registry import ARM64_PREFIX, Registry, require_docker_registry
from helpers.render import copier_cli
from helpers.users import USER, as_user

COMBO = PLATFORM_COMBOS[0]
# built here, by make, not by the shared fixtures; last of the engine level (helpers/footprint.py), after its arm64
# bases, which .ci/run builds beside the static level
pytestmark = [pytest.mark.engine, pytest.mark.chain(COMBO)]
BASE = "python:3.13-slim-trixie"
IMAGE = f"{IMAGE_PREFIX}-platforms"
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5], [0.0, 100.0, -3.0, 7.5]]
LOCKS = ("train", "serve", "dev")


def make(project: Path, *args: str, timeout: float = 1800) -> str:
    result = timed(f"{COMBO.id} make {' '.join(args)}", ["make", *args, f"IMAGE={IMAGE}"], cwd=project,
                   timeout=timeout)
    return result.stdout + result.stderr


def wait_for_arm64_bases() -> None:
    """.ci/run builds the arm64 stand-ins in the background and names the file their exit status goes to."""
    status = os.environ.get("MLDT_ARM64_BASES_RC")
    if not status:
        return
    deadline = time.monotonic() + 3600
    while not Path(status).is_file():
        assert time.monotonic() < deadline, f"the arm64 bases were not built within an hour ({status} missing)"
        time.sleep(5)
    log = Path(status).with_suffix(".log")
    assert Path(status).read_text().strip() == "0", \
        f"building the arm64 bases failed:\n{log.read_text()[-3000:] if log.is_file() else ''}"


@pytest.fixture(scope="module")
def registry(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    wait_for_arm64_bases()
    missing = [image for image in (BASE, ARM64_PREFIX + BASE)
               if run(["docker", "image", "inspect", image], check=False).returncode != 0]
    if missing:  # .ci/run builds them; a machine without them cannot run arm64 at all
        message = f"no {', '.join(missing)}: run ../shared/tools/container-engine bases-arm64 3.13"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    require_docker_registry()
    server = Registry(tmp_path_factory.mktemp("registry"))
    yield server
    server.close()
    # by name, never by ID: the registry's base tags share their IDs with the stand-ins
    listed = run(["docker", "images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}"]).stdout
    ours = []
    for repository, tag, digest in (line.split() for line in listed.splitlines()):
        if repository.startswith(f"{server.host}/") or repository == IMAGE:
            ours.append(f"{repository}:{tag}" if tag != "<none>" else f"{repository}@{digest}")
    if ours:
        run(["docker", "image", "rm", *ours], check=False)


@pytest.fixture(scope="module")
def project(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default render (both platforms), copied as a user does, its base images on the registry, then locked."""
    base = registry.index_of(BASE)
    dst = tmp_path_factory.mktemp("platforms") / "project"
    args = [a for k, v in COMBO.answers.items() if k != "platforms" for a in ("-d", f"{k}={v}")]
    result = copier_cli("copy", "--trust", "--defaults", "--skip-tasks", "--vcs-ref", "HEAD", *args, str(REPO),
                        str(dst))
    assert result.returncode == 0, result.stderr[-3000:]
    dockerfile = dst / "Dockerfile"
    text = dockerfile.read_text()
    assert "ARG PLATFORMS=linux/amd64,linux/arm64\n" in text, "the default render is not for both platforms"
    assert (dst / "requirements" / "dev.in").is_file(), "the default render has no dev environment"
    # a mirror of the same image, as a company registry holds it (slim: one image for train and serve)
    assert f"ARG BUILDER_IMAGE={BASE}\n" in text and "ARG RUNTIME_IMAGE" not in text
    text = text.replace(f"ARG BUILDER_IMAGE={BASE}\n", f"ARG BUILDER_IMAGE={base}\n")
    dockerfile.write_text(text)
    timed(f"{COMBO.id} lock (both platforms)", [sys.executable, "scripts/lock.py", "--strict"], cwd=dst,
          timeout=2400)
    return dst


def pins(text: str) -> dict[str, str]:
    return {line.split(" ", 1)[0]: line for line in text.splitlines() if line and not line.startswith((" ", "#"))}


def test_the_lock_is_compiled_in_each_platforms_image_and_installs_on_both(project: Path) -> None:
    for name in LOCKS:
        text = (project / "requirements" / f"{name}.txt").read_text()
        assert "# Compiled in the linux/amd64 and linux/arm64 images and merged by scripts/lock.py" in text, name
        for line in pins(text).values():  # every pin hashed (pip refuses the lock otherwise)
            block = text.split(line, 1)[1].split("\n# ", 1)[0]
            assert "--hash=sha256:" in block.split("\n", 2)[1], f"{name}.txt: {line} has no hash"
    run(["make", "lock-check"], cwd=project)


def test_an_arm64_machine_writes_the_same_bytes(project: Path, tmp_path: Path) -> None:
    """An engine whose own platform is arm64 (Docker Desktop on Apple Silicon) compiles each platform in that
    platform's image too, and merges in PLATFORMS' order: the same files."""
    again = tmp_path / "project"
    shutil.copytree(project, again, ignore=shutil.ignore_patterns("*.txt", "models", "dist"))
    run([sys.executable, "scripts/lock.py", "--strict"], cwd=again, env={"DOCKER_DEFAULT_PLATFORM": "linux/arm64"},
        timeout=2400)
    for name in LOCKS:
        assert (again / "requirements" / f"{name}.txt").read_bytes() == \
            (project / "requirements" / f"{name}.txt").read_bytes(), name


@pytest.fixture(scope="module")
def trained(project: Path) -> dict:
    """`make train` on this (amd64) machine: the model both platforms' serve images carry."""
    make(project, "train", "TAG=amd64")
    return json.loads((project / "models" / "metadata.json").read_text())


@pytest.fixture(scope="module")
def arm64(project: Path, trained: dict) -> str:
    """`make build-serve PLATFORM=linux/arm64`, as a user on an amd64 machine does: installed from the one lock,
    hash-checked, by this machine's own pip (not under emulation: 34x slower here)."""
    out = make(project, "build-serve", "PLATFORM=linux/arm64", "TAG=arm64")
    assert ran(out, "cross-build") and ran(out, "cross-serve-venv"), out[-3000:]
    return f"{IMAGE}:arm64"


def ran(log: str, stage: str) -> bool:
    """Whether BuildKit's log shows a step of `stage` (compose prefixes the service: `[serve cross-build 2/5]`)."""
    return re.search(rf"\[(?:[\w-]+ )?{re.escape(stage)} \d+/\d+\]", log) is not None


def image_machine(image: str, *args: str) -> str:
    return run(["docker", "run", "--rm", *args, "--entrypoint", "python", image, "-c",
                "import platform; print(platform.machine())"]).stdout.strip()


def predictions(image: str, *args: str) -> tuple[list, dict]:
    # one server process: each one imports the stack, several times slower under emulation
    container = Container(image, "-e", "WORKERS=1", *args, wait_ready=False)
    try:
        container.wait_ready(timeout=600)
        status, answer = container.http("POST", "/predict", {"instances": ROWS})
        assert status == 200, answer
        return answer["predictions"], container.http("GET", "/metadata")[1]
    finally:
        run(["docker", "rm", "-f", container.id], check=False)


def test_an_amd64_trained_model_answers_the_same_on_arm64(project: Path, trained: dict, arm64: str) -> None:
    assert trained["platform"] == "x86_64"
    assert image_machine(arm64, "--platform", "linux/arm64") == "aarch64"
    on_arm, metadata = predictions(arm64, "--platform", "linux/arm64")
    assert metadata["platform"] == "x86_64"  # where the model was trained, served on aarch64
    make(project, "build-serve", "PLATFORM=linux/amd64", "TAG=amd64")
    assert image_machine(f"{IMAGE}:amd64") == "x86_64"
    on_amd, _ = predictions(f"{IMAGE}:amd64")
    assert on_arm == on_amd  # a random forest: the same trees give the same answers, bit for bit


@pytest.fixture
def user_copy() -> Iterator[tuple[Path, Path]]:
    """A folder for the user's copy of the project and their home (pytest's own tmp folders are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="mldt-platforms-"))
    try:
        yield root / "project", root / "home"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_training_runs_on_arm64_as_the_user_and_its_model_serves_on_amd64(
        project: Path, trained: dict, user_copy: tuple[Path, Path]) -> None:
    """A user in the docker group (uid 1000 where the tests run as root, as in CI; else this machine's own user)
    types `make train PLATFORM=linux/arm64` (the train image's venv from the cross stage, the training under
    emulation) in their copy of the project: the model is theirs, trained on aarch64; the amd64 model stays the one
    the release carries."""
    again, home = user_copy
    root = os.geteuid() == 0
    uid = USER if root else os.geteuid()
    shutil.copytree(project, again, ignore=shutil.ignore_patterns("models", "dist", "digests.*", ".env"))
    home.mkdir()
    if root:
        run(["chown", "-R", f"{uid}:{uid}", str(again), str(home)])
        again.parent.chmod(0o755)

    def user(*cmd: str) -> list[str]:  # as_user with 0: as this process's own user, in the same clean environment
        return as_user(list(cmd), home, USER if root else 0)

    run(user("python3", "scripts/dotenv.py"), cwd=again)  # their .env (HOST_UID), as `make env` writes it
    result = timed(f"{COMBO.id} make train PLATFORM=linux/arm64 TAG=arm64 (uid {uid})",
                   user("make", "train", "PLATFORM=linux/arm64", "TAG=arm64", f"IMAGE={IMAGE}"), cwd=again,
                   timeout=1800)
    log = result.stdout + result.stderr
    assert ran(log, "cross-build") and ran(log, "cross-train-venv"), log[-3000:]
    written = again / "models" / "metadata.json"
    assert written.stat().st_uid == uid, "the arm64 training left files the user does not own"
    assert json.loads(written.read_text())["platform"] == "aarch64"
    make(again, "build-serve", "PLATFORM=linux/amd64", "TAG=arm64-trained")
    answers, served = predictions(f"{IMAGE}:arm64-trained")
    assert served["platform"] == "aarch64"
    make(project, "build-serve", "PLATFORM=linux/amd64", "TAG=amd64")  # the amd64 model's, as in the test above
    reference, _ = predictions(f"{IMAGE}:amd64")
    # the three iris rows are no close call for any forest; the last row, far outside the data, may be
    assert answers[:3] == reference[:3], (answers, reference)


def offline_cosign(folder: Path) -> Path:
    """Debian trixie's cosign (tests/helpers/k8s_tools.py) behind a wrapper that points its proxy variables at a
    closed port: a look-up beyond the registry on 127.0.0.1 fails the release (the build itself keeps its network)."""
    try:
        cosign = k8s_tools.install(names=("cosign",)) / "cosign"
    except (k8s_tools.ToolError, OSError, subprocess.SubprocessError) as error:
        pytest.fail(f"signing the release needs Debian's cosign: {error}", pytrace=False)
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "cosign"
    wrapper.write_text("#!/bin/sh\nexport HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 "
                       "https_proxy=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9 NO_PROXY= no_proxy=\n"
                       f'exec "{cosign}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def key_in_image(image: str, needles: list[bytes], folder: Path) -> list[str]:
    """Where the image's history, config or any layer's files hold one of `needles` (none: an empty list)."""
    found = []
    history = run(["docker", "history", "--no-trunc", image]).stdout + run(["docker", "image", "inspect", image]).stdout
    found += ["history or config"] if any(n.decode(errors="ignore") in history for n in needles) else []
    archive = folder / "image.tar"
    run(["docker", "save", "-o", str(archive), image], timeout=600)
    try:
        with tarfile.open(archive) as saved:
            for member in saved.getmembers():
                if member.isfile() and member.name.endswith(".tar"):
                    with tarfile.open(fileobj=saved.extractfile(member)) as layer:
                        for entry in layer.getmembers():
                            if entry.isfile() and any(n in layer.extractfile(entry).read() for n in needles):
                                found.append(entry.name)
    finally:
        archive.unlink()
    return found


def test_release_pushes_one_index_and_each_platform_serves_from_it(project: Path, arm64: str,
                                                                  registry: Registry, tmp_path: Path) -> None:
    """Both images, each an index of both platforms, signed with the key of `make keys` (cosign 2.5, offline) and
    verified by `make verify-image`, the private key in no layer; the serve image's platforms pulled and served."""
    target = f"{registry.host}/iris-classifier"
    cosign = offline_cosign(tmp_path / "bin")
    keys = make(project, "keys")
    assert "keys: wrote keys/signing.key" in keys, keys
    out = make(project, "release", f"REGISTRY_IMAGE={target}", "REVISION=0123abc", "RELEASE_VERSION=v1.2.3",
               f"COSIGN={cosign}", timeout=2400)
    assert "no provenance or SBOM attestations" in out  # the docker driver says what it cannot do
    signed = re.search(r"^release: train, serve signed by digest \(keys/signing.key\) in ([\d.]+) s; no SBOM to "
                       r"attest: the `docker` driver attaches none$", out, re.MULTILINE)
    assert signed, out[-3000:]
    record_time(f"{COMBO.id} make release: cosign signing (2 indexes of 2 platforms)", float(signed.group(1)))
    env = dict(line.split("=", 1) for line in (project / "digests.env").read_text().split())
    assert (project / "digests.md").read_text().splitlines()[-1].startswith(
        f"Signed with cosign (keys/signing.key), each index and each platform's image; verify one with "
        f"`make verify-image IMAGE_DIGEST={env['SERVE_DIGEST']}`")
    for name in ("SERVE_DIGEST", "TRAIN_DIGEST", "SERVE_DIGEST_LINUX_ARM64", "TRAIN_DIGEST_LINUX_AMD64"):
        verified = make(project, "verify-image", f"IMAGE_DIGEST={env[name]}", f"COSIGN={cosign}")
        assert f"verify-image: {env[name]} is signed by keys/signing.pub (sha256:" in verified, verified
    for image in ("TRAIN", "SERVE"):  # the serve image's last: its index is the one checked below
        assert env[f"{image}_DIGEST"].startswith(f"{target}@sha256:"), env
        raw = json.loads(run(["docker", "buildx", "imagetools", "inspect", "--raw", env[f"{image}_DIGEST"]]).stdout)
        platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in raw["manifests"]}
        assert set(platforms) == {"linux/amd64", "linux/arm64"}, (image, platforms)
        assert env[f"{image}_DIGEST_LINUX_ARM64"].endswith(f"@{platforms['linux/arm64']}")
    for tag in ("0123abc", "v1.2.3"):  # the tags name the index
        assert json.loads(run(["docker", "buildx", "imagetools", "inspect", "--raw", f"{target}:{tag}"]).stdout) == raw
    secret = (project / "keys" / "signing.key").read_text()
    needles = [secret.encode(), base64.b64decode("".join(secret.splitlines()[1:-1])), secret.splitlines()[1].encode()]
    for platform, machine in (("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")):
        run(["docker", "pull", "--quiet", "--platform", platform, env["SERVE_DIGEST"]], timeout=600)
        try:
            assert key_in_image(env["SERVE_DIGEST"], needles, tmp_path) == [], f"the private key is in {platform}"
            assert image_machine(env["SERVE_DIGEST"], "--platform", platform) == machine
            answers, _ = predictions(env["SERVE_DIGEST"], "--platform", platform)
            assert len(answers) == len(ROWS)
        finally:  # the engine's store holds one platform per name: the next pull of the index needs the name free
            run(["docker", "image", "rm", env["SERVE_DIGEST"]], check=False)
