"""Promise: `make keys` writes one EC P-256 pair (the private half mode 600, git-ignored, out of every build context;
the public half committed) and never overwrites it; cosign 2.5 (Debian trixie's) signs with that very key; an image
index signed by `make sign-image` (the signing of `make release`, which checks the key before it builds anything)
passes `make verify-image`, index and platforms, with one line; a tag re-pushed with another image, or a signature
by another key, fails with one line and exit 1, and `make deploy` refuses it before kubectl is called; each
platform's SBOM that BuildKit attached becomes an attestation signed by the key. Offline: cosign runs with its proxy
variables pointed at a closed port, so any look-up beyond the registry on 127.0.0.1 fails the test. Keyless signing
needs Sigstore's public services: tests/test_ci.py checks it statically; the full `make release` of a real project,
signed and verified, is tests/test_engine_platforms.py's release test."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import k8s_tools
from helpers.combos import DEFAULT_COMBO
from helpers.engine import IMAGE_PREFIX, engine_required, record_time, run
from helpers.registry import Registry, require_docker_registry
from helpers.render import render

# every cosign call of these tests: a look-up beyond 127.0.0.1 (TUF, Rekor, Fulcio) hits a closed port and fails
OFFLINE = {name: "http://127.0.0.1:9" for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")} | {
    "NO_PROXY": "", "no_proxy": ""}
NAME = f"{IMAGE_PREFIX}-signing"
SPDX = "https://spdx.dev/Document"


@pytest.fixture(scope="module")
def cosign() -> Path:
    """Debian trixie's cosign 2.5; CI fails without it, elsewhere the tests skip with one line."""
    try:
        return k8s_tools.install(names=("cosign",)) / "cosign"
    except (k8s_tools.ToolError, OSError, subprocess.SubprocessError) as error:
        if engine_required():
            pytest.fail(f"the signing tests need Debian's cosign: {error}", pytrace=False)
        pytest.skip(f"signing tests skipped: {error}")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("signing") / "project", DEFAULT_COMBO.answers)


@pytest.fixture
def project(rendered: Path, tmp_path: Path) -> Path:
    """A copy of the render of its own, a git repository as a user's is (keys made in one stay in it)."""
    copy = tmp_path / "project"
    shutil.copytree(rendered, copy)
    run(["git", "init", "-q", "."], cwd=copy)
    return copy


def make(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run(["make", "--no-print-directory", *args], cwd=project, check=False, timeout=300,
               env={**OFFLINE, **(env or {})})


def lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line and not line.startswith("make")]


def recorder(folder: Path, name: str, status: int = 0) -> Path:
    """A stand-in for the command `name` on PATH that records its arguments in folder/calls and exits `status`."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / name
    script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{folder}/calls"\nexit {status}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def calls(folder: Path) -> list[str]:
    return (folder / "calls").read_text().splitlines() if (folder / "calls").is_file() else []


def der_of(pem: str) -> bytes:
    return base64.b64decode("".join(line for line in pem.splitlines() if not line.startswith("-----")))


def fingerprint_of(public: Path) -> str:
    """What openssl says of the key (`openssl pkey -pubin -in KEY | sha256sum`): the models' key hint too."""
    pem = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(public)], capture_output=True, text=True,
                         check=True).stdout
    return "sha256:" + hashlib.sha256(pem.encode()).hexdigest()


# ---- make keys ------------------------------------------------------------------------------------------------------

def test_make_keys_writes_one_pair_says_where_each_half_goes_and_never_overwrites(project: Path) -> None:
    result = make(project, "keys")
    assert result.returncode == 0, result.stderr
    private, public = project / "keys/signing.key", project / "keys/signing.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")  # PKCS#8: what model signing reads
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----\n")
    curve = run(["openssl", "pkey", "-in", str(private), "-noout", "-text"]).stdout
    assert "prime256v1" in curve or "P-256" in curve, curve
    derived = run(["openssl", "pkey", "-in", str(private), "-pubout"]).stdout
    assert derived == public.read_text(), "the public key is the private key's"
    fingerprint = fingerprint_of(public)
    said = result.stdout.splitlines()
    assert said[0] == (f"keys: wrote keys/signing.key (the private key, EC P-256, mode 600) and wrote "
                       f"keys/signing.pub (its public key, {fingerprint})")
    assert said[1].startswith("  keys/signing.key: stays on the machine that signs, or goes into a CI secret")
    assert said[2].startswith("  keys/signing.pub: commit it (git add keys/signing.pub)")
    assert result.stderr == "", "git ignores the private key: no warning"
    # the private half never reaches git; the public half does
    run(["git", "add", "-A"], cwd=project)
    tracked = run(["git", "ls-files", "keys"], cwd=project).stdout.split()
    assert tracked == ["keys/signing.pub"], tracked
    before = private.read_bytes(), public.read_bytes()
    again = make(project, "keys")
    assert again.returncode == 0 and lines(again) == [
        "keys: keys/signing.key and keys/signing.pub exist: left as they are (a new pair: docs/signing.md, "
        "rotating the key)"]
    public.unlink()  # the private half alone: its public half written again, the same
    assert make(project, "keys").returncode == 0 and (private.read_bytes(), public.read_bytes()) == before
    private.unlink()  # the public half alone: its private half is elsewhere; no new pair over it
    alone = make(project, "keys")
    assert alone.returncode != 0 and len(lines(alone)) == 1 and "exists without keys/signing.key" in alone.stderr
    assert public.read_bytes() == before[1] and not private.exists()


def test_the_key_cosign_signs_with_is_the_pem_key_of_make_keys(project: Path, cosign: Path, tmp_path: Path) -> None:
    """The PEM key of make keys (PKCS#8), a SEC1 `EC PRIVATE KEY`, the same key in an environment variable, and a key
    in cosign's own format: cosign signs a blob with each, and openssl verifies the signature with the PEM public
    key: the key cosign used is the key make keys wrote. The refusals are one line each, before any signing."""
    assert make(project, "keys").returncode == 0
    private, public = project / "keys/signing.key", project / "keys/signing.pub"
    sec1 = tmp_path / "sec1.key"
    sec1.write_text(run(["openssl", "ec", "-in", str(private)]).stdout)
    assert sec1.read_text().startswith("-----BEGIN EC PRIVATE KEY-----")
    native = tmp_path / "native"
    native.mkdir()
    run([str(cosign), "generate-key-pair"], cwd=native, env={**OFFLINE, "COSIGN_PASSWORD": "pw"})
    blob = tmp_path / "blob"
    blob.write_text("signed by the key of make keys")
    sign = f"""
import os, subprocess, sys
sys.path.insert(0, "scripts")
from image_signing import Signer
with Signer() as signer:
    subprocess.run([os.environ["COSIGN"], "sign-blob", "--key", signer.key, "--tlog-upload=false", "-y",
                    "--output-signature", sys.argv[1], "{blob}"], env={{**os.environ, **signer.env}}, check=True,
                   capture_output=True)
"""
    cases = {"pkcs8": ({"SIGNING_KEY": "keys/signing.key"}, public),
             "sec1": ({"SIGNING_KEY": str(sec1)}, public),
             "env": ({"SIGNING_KEY": "env://PEM", "PEM": private.read_text()}, public),
             "cosign": ({"SIGNING_KEY": str(native / "cosign.key"), "COSIGN_PASSWORD": "pw"}, native / "cosign.pub")}
    for name, (env, verifying) in cases.items():
        signature = tmp_path / f"{name}.sig"
        result = run([sys.executable, "-c", sign, str(signature)], cwd=project, check=False,
                     env={**OFFLINE, "COSIGN": str(cosign), **env})
        assert result.returncode == 0, (name, result.stderr[-2000:])
        raw = tmp_path / f"{name}.der"
        raw.write_bytes(base64.b64decode(signature.read_text()))
        verified = run(["openssl", "dgst", "-sha256", "-verify", str(verifying), "-signature", str(raw), str(blob)],
                       check=False)
        assert verified.returncode == 0 and "Verified OK" in verified.stdout, (name, verified.stdout)
    rsa = tmp_path / "rsa.key"
    rsa.write_text(run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]).stdout)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_text(run(["openssl", "pkcs8", "-topk8", "-in", str(private), "-passout", "pass:pw"]).stdout)
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key\n")
    refused = {str(rsa): "not an EC P-256, P-384 or P-521 private key",
               str(encrypted): "is an encrypted PKCS#8 key",
               str(garbage): "not a PEM private key",
               str(tmp_path / "missing.key"): "no such file",
               str(native / "cosign.key"): "is a cosign key: set COSIGN_PASSWORD"}
    for key, why in refused.items():
        result = make(project, "sign-image", f"IMAGE_DIGEST=127.0.0.1:9/x@sha256:{'0' * 64}", f"SIGNING_KEY={key}",
                      f"COSIGN={cosign}")
        assert result.returncode != 0 and len(lines(result)) == 1 and why in result.stderr, (key, result.stderr)


def test_release_checks_the_key_and_cosign_before_it_builds(project: Path, cosign: Path, tmp_path: Path) -> None:
    """A docker that records its calls: with a broken key or no cosign, release stops with one line before the
    first docker call; without a key, one line says the images will be unsigned and the build goes on."""
    docker = recorder(tmp_path / "bin", "docker", status=1)
    path = f"{docker.parent}:{os.environ['PATH']}"
    release = [sys.executable, "scripts/release.py"]
    base = {**OFFLINE, "PATH": path, "REGISTRY_IMAGE": "127.0.0.1:9/x", "COSIGN": str(cosign)}
    bad = tmp_path / "bad.key"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    for env, why in (({"SIGNING_KEY": str(bad)}, "not an EC P-256"),
                     ({"SIGNING_KEY": str(tmp_path / "nowhere.key")}, "no such file"),
                     ({"SIGNING_KEY": "env://UNSET_KEY"}, "UNSET_KEY is empty or unset")):
        result = run(release, cwd=project, env={**base, **env}, check=False)
        said = lines(result)
        assert result.returncode == 1 and len(said) == 1 and said[0].startswith(
            f"release: SIGNING_KEY={env['SIGNING_KEY']}") and why in said[0], said
        assert calls(docker.parent) == [], "release built before it checked the key"
    assert make(project, "keys").returncode == 0
    missing = run(release, cwd=project, env={**base, "COSIGN": "cosign-is-not-installed"}, check=False)
    assert missing.returncode == 1 and calls(docker.parent) == []
    assert lines(missing) == ["release: cosign-is-not-installed not found: install cosign 2.x (Debian 13: apt-get "
                              "install cosign; other systems: a v2 release binary from "
                              "https://github.com/sigstore/cosign/releases), or set COSIGN=/path/to/cosign"]
    unsigned = run(release, cwd=project, env={**base, "SIGNING_KEY": ""}, check=False)
    assert lines(unsigned)[0] == ("release: the images will be unsigned: no signing key (SIGNING_KEY is empty); "
                                  "`make keys` makes one (docs/signing.md)")
    assert calls(docker.parent)[0] == "docker buildx inspect", "without a key the release goes on"
    # make passes the signing settings through the environment (make/signing.mk exports them)
    dry = run(["make", "-n", "release", "SIGNING_KEY=env://K", "-o", "requirements/train.txt", "-o",
               "requirements/serve.txt"], cwd=project)
    assert "scripts/release.py" in dry.stdout


def test_the_verify_command_names_the_ci_identity(project: Path) -> None:
    """Keyless: the identity Sigstore's certificate names for GitHub's and GitLab's jobs, in the verify command that
    digests.md (the run's summary) shows."""
    probe = """
import sys
sys.path.insert(0, "scripts")
from image_signing import Signer
signer = Signer()
signer.key = "keyless"
print(signer.verify_command("ghcr.io/o/r@sha256:d"))
"""
    github = {"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com",
              "GITHUB_WORKFLOW_REF": "owner/repo/.github/workflows/ci.yml@refs/tags/v1.2.0"}
    gitlab = {"GITLAB_CI": "true", "CI_SERVER_URL": "https://gitlab.com", "CI_PROJECT_PATH": "group/project",
              "CI_CONFIG_PATH": ".gitlab-ci.yml", "CI_COMMIT_BRANCH": "main"}
    clean = {k: "" for k in (*github, *gitlab, "CI_COMMIT_TAG")}
    said = {name: run([sys.executable, "-c", probe], cwd=project, env={**clean, **env}).stdout.strip()
            for name, env in (("github", github), ("gitlab", gitlab))}
    assert said["github"] == (
        "make verify-image IMAGE_DIGEST=ghcr.io/o/r@sha256:d SIGNING_IDENTITY=https://github.com/owner/repo/.github/"
        "workflows/ci.yml@refs/tags/v1.2.0 SIGNING_OIDC_ISSUER=https://token.actions.githubusercontent.com")
    assert said["gitlab"] == (
        "make verify-image IMAGE_DIGEST=ghcr.io/o/r@sha256:d SIGNING_IDENTITY=https://gitlab.com/group/project//"
        ".gitlab-ci.yml@refs/heads/main SIGNING_OIDC_ISSUER=https://gitlab.com")


def test_deploy_fails_closed_without_cosign_and_says_when_it_checks_nothing(project: Path, tmp_path: Path) -> None:
    kubectl = recorder(tmp_path / "bin", "kubectl")
    env = {"PATH": f"{kubectl.parent}:{os.environ['PATH']}", "COSIGN": "cosign-is-not-installed"}
    digest = f"sha256:{'1' * 64}"
    unchecked = make(project, "deploy", "IMAGE=127.0.0.1:9/x", f"IMAGE_DIGEST={digest}", env=env)
    assert unchecked.returncode == 0, unchecked.stderr
    assert unchecked.stdout.splitlines()[0] == ("deploy: the image's signature is not checked: no keys/signing.pub "
                                                "(make keys; docs/signing.md)")
    assert calls(kubectl.parent)[0] == "kubectl apply -k deploy/k8s/namespace"
    (kubectl.parent / "calls").unlink()
    assert make(project, "keys").returncode == 0
    for target, variable in (("deploy", "IMAGE_DIGEST"), ("k8s-train", "TRAIN_IMAGE_DIGEST")):
        refused = make(project, target, "IMAGE=127.0.0.1:9/x", f"{variable}={digest}", env=env)
        assert refused.returncode != 0 and lines(refused) == [
            f"{target}: cosign-is-not-installed not found: install cosign 2.x (Debian 13: apt-get install cosign; "
            f"other systems: a v2 release binary from https://github.com/sigstore/cosign/releases), or set "
            f"COSIGN=/path/to/cosign"], refused.stderr
    assert calls(kubectl.parent) == [], "kubectl ran before the signature was checked"


# ---- a real registry on 127.0.0.1 -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def registry(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    require_docker_registry()
    server = Registry(tmp_path_factory.mktemp("registry"))
    yield server
    server.close()
    listed = run(["docker", "images", "--format", "{{.Repository}} {{.Tag}} {{.ID}}"]).stdout.splitlines()
    # by name; an image a re-push left without a tag by its ID (these tiny images share no ID with another image)
    ours = [f"{repository}:{tag}" if tag != "<none>" else image for repository, tag, image in map(str.split, listed)
            if repository.startswith((f"{server.host}/", f"{NAME}-"))]
    if ours:
        run(["docker", "image", "rm", *ours], check=False)


@pytest.fixture(scope="module")
def push_index(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[str, dict]]:
    """push_index(repository, tag, content): an index of two tiny images (FROM scratch, one file and one label; no
    emulation for arm64: nothing runs), pushed to the registry under repository:tag; (index ref, {platform: ref})."""
    def _push(repository: str, tag: str, content: str) -> tuple[str, dict[str, str]]:
        context = tmp_path_factory.mktemp("tiny")
        (context / "content").write_text(content)
        (context / "Dockerfile").write_text(f"FROM scratch\nLABEL test.content={content}\nCOPY content /content\n")
        name = f"{registry.host}/{repository}"
        parts = []
        for arch in ("amd64", "arm64"):
            run(["docker", "build", "-q", "--platform", f"linux/{arch}", "-t", f"{name}:{tag}-{arch}", "."],
                cwd=context, env={"DOCKER_BUILDKIT": "1"})
            run(["docker", "push", "--quiet", f"{name}:{tag}-{arch}"])
            parts.append(f"{name}:{tag}-{arch}")
        run(["docker", "buildx", "imagetools", "create", "-t", f"{name}:{tag}", *parts])
        return index_of(f"{name}:{tag}")

    return _push


def index_of(ref: str) -> tuple[str, dict[str, str]]:
    name = ref.rsplit(":", 1)[0] if "@" not in ref else ref.split("@")[0]
    raw = run(["docker", "buildx", "imagetools", "inspect", "--raw", ref]).stdout
    digest = "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
    platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}": f"{name}@{m['digest']}"
                 for m in json.loads(raw)["manifests"] if m["platform"]["os"] != "unknown"}
    return f"{name}@{digest}", platforms


@pytest.mark.engine
def test_a_signed_index_verifies_and_a_repushed_or_foreign_signed_one_is_refused(
        project: Path, cosign: Path, registry: Registry, push_index, tmp_path: Path) -> None:
    env = {"COSIGN": str(cosign)}
    assert make(project, "keys").returncode == 0
    index, platforms = push_index("signed", "v1", "first")
    started = time.monotonic()
    signed = make(project, "sign-image", f"IMAGE_DIGEST={index}", env=env)
    record_time("signing: make sign-image (an index of 2 platforms)", time.monotonic() - started)
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.splitlines() == [
        f"sign-image: {index} signed (keys/signing.key); make verify-image IMAGE_DIGEST={index} checks it"]
    fingerprint = fingerprint_of(project / "keys/signing.pub")
    for ref in (index, *platforms.values()):  # --recursive: the index and each platform's image
        verified = make(project, "verify-image", f"IMAGE_DIGEST={ref}", env=env)
        assert verified.returncode == 0, verified.stderr
        assert lines(verified) == [f"verify-image: {ref} is signed by keys/signing.pub ({fingerprint})"]
    # sha256:... alone names an image of IMAGE; a tag is refused
    short = make(project, "verify-image", f"IMAGE={index.split('@')[0]}", f"IMAGE_DIGEST={index.split('@')[1]}",
                 env=env)
    assert short.returncode == 0, short.stderr
    tagged = make(project, "verify-image", f"IMAGE_DIGEST={index.split('@')[0]}:v1", env=env)
    assert tagged.returncode != 0 and len(lines(tagged)) == 1 and "never a tag" in tagged.stderr
    # the tag re-pushed with another image: a new digest, which nothing signed
    changed, _ = push_index("signed", "v1", "second")
    assert changed != index and index_of(f"{index.split('@')[0]}:v1")[0] == changed
    refused = make(project, "verify-image", f"IMAGE_DIGEST={changed}", env=env)
    assert refused.returncode != 0 and lines(refused) == [
        f"verify-image: {changed} is NOT signed by keys/signing.pub ({fingerprint}): it has no signature"]
    script = run([sys.executable, "scripts/image_signing.py", "verify", changed], cwd=project, check=False,
                 env={**OFFLINE, **env})
    assert script.returncode == 1, "a verdict: exit 1 (2: a usage error)"
    # signed, but by another key (REGISTRY_HTTP=1: cosign's --allow-http-registry, accepted on 127.0.0.1 too)
    other = tmp_path / "other"
    other.mkdir()
    assert make(project, "keys", f"SIGNING_KEY={other}/o.key", f"SIGNING_PUBLIC_KEY={other}/o.pub").returncode == 0
    foreign = make(project, "sign-image", f"IMAGE_DIGEST={changed}", f"SIGNING_KEY={other}/o.key", "REGISTRY_HTTP=1",
                   env=env)
    assert foreign.returncode == 0, foreign.stderr
    refused = make(project, "verify-image", f"IMAGE_DIGEST={changed}", env=env)
    assert refused.returncode != 0 and lines(refused) == [
        f"verify-image: {changed} is NOT signed by keys/signing.pub ({fingerprint}): its signatures are by another "
        f"key, or it changed after signing"]
    assert make(project, "verify-image", f"IMAGE_DIGEST={changed}", f"SIGNING_PUBLIC_KEY={other}/o.pub",
                env=env).returncode == 0
    # make deploy: refused before kubectl is called, for the unsigned and the foreign-signed digest alike
    kubectl = recorder(tmp_path / "bin", "kubectl")
    path = {"PATH": f"{kubectl.parent}:{os.environ['PATH']}", **env}
    image = changed.split("@")[0]
    unsigned, _ = push_index("signed", "v2", "third")
    for digest in (changed.split("@")[1], unsigned.split("@")[1]):
        deploy = make(project, "deploy", f"IMAGE={image}", f"IMAGE_DIGEST={digest}", env=path)
        assert deploy.returncode != 0 and len(lines(deploy)) == 1, deploy.stderr
        assert lines(deploy)[0].startswith(f"deploy: {image}@{digest} is NOT signed by keys/signing.pub")
        assert calls(kubectl.parent) == [], "kubectl ran for an image the key did not sign"
    deploy = make(project, "deploy", f"IMAGE={image}", f"IMAGE_DIGEST={index.split('@')[1]}", env=path)
    assert deploy.returncode == 0, deploy.stderr
    assert deploy.stdout.startswith(f"deploy: {index} is signed by keys/signing.pub")
    assert calls(kubectl.parent)[:2] == ["kubectl apply -k deploy/k8s/namespace",
                                         "kubectl apply -k deploy/k8s/pinned/prod"]


def put_blob(registry: Registry, repository: str, data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = urllib.request.Request(f"http://{registry.host}/v2/{repository}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(start, timeout=30) as response:
        location = response.headers["Location"]
    if location.startswith("/"):
        location = f"http://{registry.host}{location}"
    upload = urllib.request.Request(f"{location}{'&' if '?' in location else '?'}digest={digest}", data=data,
                                    method="PUT", headers={"Content-Type": "application/octet-stream"})
    urllib.request.urlopen(upload, timeout=30).close()
    return {"digest": digest, "size": len(data)}


def put_manifest(registry: Registry, repository: str, reference: str, manifest: dict) -> dict:
    data = json.dumps(manifest).encode()
    request = urllib.request.Request(f"http://{registry.host}/v2/{repository}/manifests/{reference}", data=data,
                                     method="PUT", headers={"Content-Type": manifest["mediaType"]})
    urllib.request.urlopen(request, timeout=30).close()
    return {"mediaType": manifest["mediaType"], "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data)}


@pytest.mark.engine
def test_each_platforms_sbom_becomes_an_attestation_signed_by_the_key(
        project: Path, cosign: Path, registry: Registry, push_index, tmp_path: Path) -> None:
    """The index a docker-container builder pushes, made by hand: each platform's image, and an attestation manifest
    per image holding its SPDX SBOM as an in-toto statement (as BuildKit writes them). release.py's signing reads the
    SBOMs with `docker buildx imagetools inspect` and attests each to its platform's image."""
    _, platforms = push_index("attested", "parts", "sbom")
    repository = "attested"
    manifests = []
    for platform, ref in platforms.items():
        raw = run(["docker", "buildx", "imagetools", "inspect", "--raw", ref]).stdout
        media = json.loads(raw)["mediaType"]
        digest = ref.split("@")[1]
        manifests.append({"mediaType": media, "digest": digest, "size": len(raw.encode()),
                          "platform": {"os": "linux", "architecture": platform.split("/")[1]}})
        statement = {"_type": "https://in-toto.io/Statement/v0.1", "predicateType": SPDX,
                     "subject": [{"name": f"pkg:docker/{repository}", "digest": {"sha256": digest[7:]}}],
                     "predicate": {"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "name": f"sbom-{platform}",
                                   "dataLicense": "CC0-1.0", "packages": []}}
        layer = put_blob(registry, repository, json.dumps(statement).encode())
        config = put_blob(registry, repository, json.dumps(
            {"architecture": "unknown", "os": "unknown", "config": {},
             "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}).encode())
        attestation = put_manifest(registry, repository, f"att-{platform.split('/')[1]}", {
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
            "layers": [{"mediaType": "application/vnd.in-toto+json", **layer,
                        "annotations": {"in-toto.io/predicate-type": SPDX}}]})
        manifests.append({**attestation, "platform": {"os": "unknown", "architecture": "unknown"},
                          "annotations": {"vnd.docker.reference.digest": digest,
                                          "vnd.docker.reference.type": "attestation-manifest"}})
    index = put_manifest(registry, repository, "v1", {"schemaVersion": 2,
                                                      "mediaType": "application/vnd.oci.image.index.v1+json",
                                                      "manifests": manifests})
    name = f"{registry.host}/{repository}"
    assert make(project, "keys").returncode == 0
    sign = f"""
import json, sys
from pathlib import Path
sys.path.insert(0, "scripts")
import release
from image_signing import Signer
images = {json.dumps({p: r.split("@")[1] for p, r in platforms.items()})}
with Signer(release.say) as signer:
    print(json.dumps(release.sign(signer, "{name}", {{"serve": ("{index['digest']}", images)}}, "docker-container",
                                  Path("{tmp_path}"))))
"""
    result = run([sys.executable, "-c", sign], cwd=project, env={**OFFLINE, "COSIGN": str(cosign)})
    assert "serve signed by digest (keys/signing.key) in" in result.stderr and "with 2 SBOM attestations" in \
        result.stderr, result.stderr[-3000:]
    assert json.loads(result.stdout)[1].startswith("Signed with cosign (keys/signing.key), each index and each "
                                                   f"platform's image; verify one with `make verify-image "
                                                   f"IMAGE_DIGEST={name}@{index['digest']}`")
    for platform, ref in platforms.items():
        verified = run([str(cosign), "verify-attestation", "--key", "keys/signing.pub", "--insecure-ignore-tlog",
                        "--type", "spdxjson", ref], cwd=project, env=OFFLINE, check=False)
        assert verified.returncode == 0, verified.stderr[-2000:]
        payload = json.loads(base64.b64decode(json.loads(verified.stdout.splitlines()[0])["payload"]))
        assert payload["predicate"]["name"] == f"sbom-{platform}" and payload["subject"][0]["digest"]["sha256"] == \
            ref.split("@sha256:")[1]
    # attested to the platform's image, not to the index
    assert make(project, "verify-image", f"IMAGE_DIGEST={name}@{index['digest']}",
                env={"COSIGN": str(cosign)}).returncode == 0


@pytest.mark.engine
def test_the_private_key_stays_out_of_the_build_context_and_git(project: Path, tmp_path: Path) -> None:
    """The worst case: a Dockerfile that copies the whole context. The project's .dockerignore keeps keys/signing.key
    (and any *.key) out and lets keys/signing.pub in; git ignores the private half."""
    assert make(project, "keys").returncode == 0
    (project / "cosign.key").write_text((project / "keys/signing.key").read_text())  # a stray one at the root
    dockerfile = tmp_path / "Dockerfile.everything"
    dockerfile.write_text("FROM scratch\nCOPY . /context/\n")
    tag = f"{NAME}-context:latest"
    run(["docker", "build", "-q", "-f", str(dockerfile), "-t", tag, "."], cwd=project, env={"DOCKER_BUILDKIT": "1"})
    try:
        archive = tmp_path / "image.tar"
        run(["docker", "save", "-o", str(archive), tag])
        secret = (project / "keys/signing.key").read_text()
        needles = [secret.encode(), der_of(secret), der_of(secret)[-40:],
                   "".join(secret.splitlines()[1:-1]).encode()]
        names = []
        with tarfile.open(archive) as image:
            for member in image.getmembers():
                if member.isfile() and member.name.endswith(".tar"):
                    with tarfile.open(fileobj=image.extractfile(member)) as layer:
                        for entry in layer.getmembers():
                            names.append(entry.name)
                            if entry.isfile():
                                data = layer.extractfile(entry).read()
                                assert not any(n in data for n in needles), f"the private key is in {entry.name}"
        assert "context/keys/signing.pub" in names, "the public key is let in (a serve image may verify with it)"
        assert not [n for n in names if n.endswith(".key")], names
        history = run(["docker", "history", "--no-trunc", tag]).stdout + run(["docker", "image", "inspect", tag]).stdout
        assert not any(n.decode(errors="ignore") in history for n in needles[::3])
    finally:
        run(["docker", "image", "rm", tag], check=False)
    run(["git", "add", "-A"], cwd=project)
    tracked = run(["git", "ls-files"], cwd=project).stdout.split()
    assert "keys/signing.pub" in tracked and not [path for path in tracked if path.endswith(".key")], tracked
