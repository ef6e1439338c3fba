"""Promise: a private index credential given to the build as a BuildKit secret is used, and leaves no trace in
the image: not in `docker history`, not in the image config, not in any layer's files."""

from __future__ import annotations

import json
import tarfile
import uuid
from pathlib import Path
from typing import Callable

import pytest

from helpers.builds import Built
from helpers.combos import Combo, DEFAULT_COMBO
from helpers.engine import image_tag, run

pytestmark = pytest.mark.engine


def test_pip_secret_is_used_and_leaves_no_trace(built_project: Callable[[Combo], Built], tmp_path: Path) -> None:
    built = built_project(DEFAULT_COMBO)
    token = f"s3cr3t-{uuid.uuid4().hex}"
    pip_conf = tmp_path / "pip.conf"
    # An extra index whose host holds the token: pip must try it (proving it read the secret), fail fast, and
    # install everything from the main index.
    pip_conf.write_text(f"[global]\nextra-index-url = http://user:{token}@{token}.invalid/simple\n"
                        "retries = 0\ntimeout = 2\n")
    tag = image_tag(DEFAULT_COMBO, "serve-secret")
    result = run(["docker", "build", "--progress=plain", "--no-cache", "--target", "serve", "-t", tag,
                  "--secret", f"id=pipconf,src={pip_conf}", "."], cwd=built.project, env={"DOCKER_BUILDKIT": "1"},
                 timeout=1200)
    assert f"{token}.invalid" in result.stderr, "pip never read the secret pip.conf: the test would prove nothing"

    history = run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", tag]).stdout
    assert token not in history
    config = run(["docker", "image", "inspect", tag]).stdout
    assert token not in config
    assert "PIP_CONFIG_FILE" not in json.loads(config)[0]["Config"]["Env"]
    archive = tmp_path / "image.tar"
    run(["docker", "save", "-o", str(archive), tag])
    found = []
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            data = outer.extractfile(member).read()
            if token.encode() in data:
                found.append(member.name)
            if member.name.endswith(".tar") or member.name.startswith("blobs/"):
                try:
                    with tarfile.open(fileobj=outer.extractfile(member)) as layer:
                        for entry in layer.getmembers():
                            if entry.isfile() and token.encode() in layer.extractfile(entry).read():
                                found.append(f"{member.name}:{entry.name}")
                except tarfile.ReadError:
                    pass
    archive.unlink()  # the size of the image, in the session's temporary folder until the session is long gone
    assert found == [], f"the secret is in the image: {found}"
