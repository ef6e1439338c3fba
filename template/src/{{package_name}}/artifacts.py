"""The train -> serve contract: a model directory holds the artifact and metadata.json describing it."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

METADATA = "metadata.json"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path: Path, write: Any) -> None:
    """Call write(tmp_path), then rename over path: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_metadata(model_dir: Path, metadata: dict[str, Any]) -> None:
    text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
    write_atomically(model_dir / METADATA, lambda tmp: tmp.write_text(text))


def read_metadata(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / METADATA).read_text())


class ArtifactRefused(Exception):
    """The runtime would not write the artifact (serve_runtime=onnx: it answers unlike the framework); says why."""


class NotWritable(Exception):
    """The model directory cannot be written; the message says by whom and what to do."""


def check_writable(directory: Path) -> None:
    """Fail before training, not after it, when directory cannot take the model (a bind mount owned by another uid)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as error:
        uid, gid = os.getuid(), os.getgid()
        raise NotWritable(
            f"{directory} is not writable by uid {uid} ({error.strerror}): set HOST_UID/HOST_GID in .env to the "
            f"owner of the host folder (`make env` writes yours), or make it writable by {uid}:{gid}"
        ) from None
