#!/usr/bin/env python3
"""Push the train and serve images for every platform of the Dockerfile's PLATFORMS as one image index each (make
release). Standard library only.

    REGISTRY_IMAGE=ghcr.io/owner/name REVISION=<commit> [RELEASE_VERSION=v1.2.0] python3 scripts/release.py
    RELEASE_TARGETS=serve ...    # the serve image only (default: train and serve)

Tags: the commit and the version (git tag), never `latest`; `-train` for the train image. Each node pulling the
index gets its own platform's image. Writes digests.md (a table for the CI summary) and digests.env
(TRAIN_DIGEST=..., SERVE_DIGEST=...: <registry>/<name>@sha256:... of the index; one line per platform too).
BUILDX_ARGS (make passes its labels and the pip.conf secret) and BUILDX_FLAGS (CI's cache) go to every build.

With a builder that builds several platforms at once (buildx's docker-container driver, as CI sets up) all
platforms are one build, pushed with provenance and SBOM attestations. Docker's built-in `docker` driver builds one
platform at a time and attaches no attestations: each platform is built, pushed under a per-platform tag, and the
index is assembled from their digests (`docker buildx imagetools create`).

Signing (scripts/image_signing.py, docs/signing.md): with a signing key (SIGNING_KEY, by default keys/signing.key,
which `make keys` writes) each pushed index is signed by digest with cosign, every platform's image in it too
(--recursive), without an entry in Sigstore's public transparency log unless SIGNING_TLOG=1; each platform's SBOM,
where the builder made one, is attached as an attestation signed by the same key. SIGNING_KEY=keyless signs with the
CI job's OIDC identity instead. Without a key the images go unsigned, and it says so. The key is checked before
anything is built.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from image_signing import Signer, SigningError
from lock import LockError, lock_platforms

TARGETS = {"train": "-train", "serve": ""}


def say(msg: str) -> None:
    print(f"release: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], capture: bool = False) -> str:
    print("+ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    result = subprocess.run(cmd, check=False, text=True, stdout=subprocess.PIPE if capture else None)
    if result.returncode != 0:
        raise SystemExit(f"release: `{' '.join(cmd[:4])} ...` failed (exit {result.returncode}): see its output above")
    return result.stdout or ""


def builder_driver() -> str:
    out = run(["docker", "buildx", "inspect"], capture=True)
    found = re.search(r"^Driver:\s*(\S+)", out, re.MULTILINE)
    return found.group(1) if found else "docker"


def index_platforms(ref: str) -> dict[str, str]:
    """{platform: digest} of an index's images (attestation manifests, platform unknown/unknown, left out)."""
    raw = json.loads(run(["docker", "buildx", "imagetools", "inspect", "--raw", ref], capture=True))
    found = {}
    for manifest in raw.get("manifests", []):
        spec = manifest.get("platform", {})
        if spec.get("os") != "unknown":
            found[f"{spec.get('os')}/{spec.get('architecture')}"] = manifest["digest"]
    return found


def sboms(ref: str, images: dict[str, str], folder: Path) -> dict[str, Path]:
    """{platform: SPDX file} of the SBOM attestations BuildKit attached to the index `ref` (none: an empty dict)."""
    out = run(["docker", "buildx", "imagetools", "inspect", ref, "--format", "{{ .SBOM | json }}"], capture=True)
    found = json.loads(out or "null") or {}
    if "SPDX" in found:  # an index of one platform: its SBOM, not a map of them
        found = {next(iter(images)): found}
    files = {}
    folder.mkdir(parents=True, exist_ok=True)
    for platform, sbom in found.items():
        if platform in images and isinstance(sbom, dict) and sbom.get("SPDX"):
            files[platform] = folder / f"sbom-{platform.replace('/', '-')}.spdx.json"
            files[platform].write_text(json.dumps(sbom["SPDX"]))
    return files


def sign(signer: Signer, registry: str, digests: dict[str, tuple[str, dict[str, str]]], driver: str,
         folder: Path) -> list[str]:
    """Sign each index (and the images it lists), attest each platform's SBOM; the lines for digests.md."""
    start = time.monotonic()
    attested = 0
    for target, (index, images) in digests.items():
        signer.sign(f"{registry}@{index}")
        if driver != "docker":
            for platform, sbom in sboms(f"{registry}@{index}", images, folder / target).items():
                signer.attest(f"{registry}@{images[platform]}", sbom)
                attested += 1
    seconds = time.monotonic() - start
    what = f"{', '.join(digests)} signed by digest ({signer.what})"
    if driver == "docker":
        say(f"{what} in {seconds:.1f} s; no SBOM to attest: the `docker` driver attaches none")
    else:
        say(f"{what} in {seconds:.1f} s, with {attested} SBOM attestation{'s' if attested != 1 else ''}")
    index = next(reversed(digests.values()))[0]
    return ["", f"Signed with cosign ({signer.what}), each index and each platform's image; verify one with "
                f"`{signer.verify_command(f'{registry}@{index}')}` (docs/signing.md)"]


def main() -> int:
    registry = os.environ.get("REGISTRY_IMAGE", "")
    image = os.environ.get("IMAGE", "")
    if not registry or registry == image:
        say("set REGISTRY_IMAGE=<registry>/<owner>/<name> (CI sets it)")
        return 1
    revision, version = os.environ.get("REVISION", "unknown"), os.environ.get("RELEASE_VERSION", "")
    # VENV=cross: each platform's venv installed by this machine's pip, no emulation (on this machine's own platform
    # it installs plainly); after BUILDX_ARGS, whose VENV names one platform's way: the last --build-arg wins
    args = [*shlex.split(os.environ.get("BUILDX_ARGS", "")), *shlex.split(os.environ.get("BUILDX_FLAGS", "")),
            "--build-arg", "VENV=cross"]
    try:
        platforms = lock_platforms(Path.cwd())  # the Dockerfile's PLATFORMS, read as make lock reads it
    except LockError as error:
        say(str(error))
        return 1
    if not platforms:
        say("the Dockerfile has no `ARG PLATFORMS=` line: add one (linux/amd64,linux/arm64), then run make lock")
        return 1
    targets = os.environ.get("RELEASE_TARGETS", "").split() or list(TARGETS)
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        say(f"RELEASE_TARGETS names {', '.join(unknown)}: it takes train and serve")
        return 1
    try:
        with Signer(say) as signer:  # the key checked before anything is built
            return release(registry, revision, version, args, platforms, targets, signer)
    except SigningError as error:
        say(str(error))
        return 1


def release(registry: str, revision: str, version: str, args: list[str], platforms: list[str], targets: list[str],
            signer: Signer) -> int:
    driver = builder_driver()
    if driver == "docker":
        say("the builder is Docker's built-in `docker` driver: one platform per build, no provenance or SBOM "
            "attestations (`docker buildx create --use` makes a builder that attaches them)")
    digests: dict[str, tuple[str, dict[str, str]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for target, suffix in ((t, TARGETS[t]) for t in targets):
            tags = [f"{registry}:{revision}{suffix}"] + ([f"{registry}:{version}{suffix}"] if version else [])
            if driver != "docker":
                meta = Path(tmp) / f"{target}.json"
                run(["docker", "buildx", "build", "--push", "--platform", ",".join(platforms), "--target", target,
                     *[a for t in tags for a in ("-t", t)], "--provenance=mode=max", "--sbom=true",
                     "--metadata-file", str(meta), *args, "."])
                index = json.loads(meta.read_text())["containerimage.digest"]
            else:
                parts = []
                for platform in platforms:
                    tag = f"{registry}:{revision}{suffix}-{platform.replace('/', '-')}"
                    run(["docker", "buildx", "build", "--load", "--platform", platform, "--target", target,
                         "-t", tag, *args, "."])
                    run(["docker", "push", "--quiet", tag])
                    pushed = json.loads(run(["docker", "image", "inspect", tag], capture=True))[0]["RepoDigests"]
                    parts += [d for d in pushed if d.startswith(registry + "@")][:1]
                run(["docker", "buildx", "imagetools", "create", *[a for t in tags for a in ("-t", t)], *parts])
                inspected = run(["docker", "buildx", "imagetools", "inspect", tags[0]], capture=True)
                index = re.search(r"^Digest:\s*(sha256:[0-9a-f]{64})", inspected, re.MULTILINE).group(1)
            images = index_platforms(f"{registry}@{index}")
            missing = sorted(set(platforms) - set(images))
            if missing:
                raise SystemExit(f"release: the {target} index {registry}@{index} lacks {', '.join(missing)}")
            digests[target] = (index, images)
        table = ["| image | platform | digest |", "| --- | --- | --- |"]
        env = []
        for target, (index, images) in digests.items():
            print(f"{target}: {registry}@{index} ({', '.join(images)})")
            table.append(f"| {target} | {', '.join(images)} (index) | `{registry}@{index}` |")
            env.append(f"{target.upper()}_DIGEST={registry}@{index}")
            for platform, digest in images.items():
                print(f"  {platform}: {registry}@{digest}")
                table.append(f"| {target} | {platform} | `{registry}@{digest}` |")
                env.append(f"{target.upper()}_DIGEST_{platform.replace('/', '_').upper()}={registry}@{digest}")
        Path("digests.env").write_text("\n".join(env) + "\n")
        Path("digests.md").write_text("\n".join(table) + "\n")  # what was pushed, signed or not
        if signer.key:
            Path("digests.md").write_text("\n".join(table + sign(signer, registry, digests, driver, Path(tmp))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
