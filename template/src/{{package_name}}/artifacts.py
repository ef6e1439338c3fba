"""The train -> serve contract: a model directory holds the artifact and metadata.json describing it. Training
writes both (write_metadata); serving loads the artifact only after verifying it against them (load_model)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METADATA = "metadata.json"

log = logging.getLogger(__name__)


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder, by its path relative to it (a save_pretrained folder)."""
    return {str(p.relative_to(folder)): sha256_of(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """A file's sha256; a folder's is that of its sorted `path  sha256` lines (file_hashes)."""
    if path.is_dir():
        lines = "".join(f"{name}  {sha}\n" for name, sha in file_hashes(path).items())
        return hashlib.sha256(lines.encode()).hexdigest()
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


def write_folder_atomically(path: Path, write: Any) -> None:
    """write(tmp_folder), then swap it in for path: readers see the old folder or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old = path.parent / f".{path.name}.old"
    try:
        write(tmp)
        for item in [tmp, *tmp.rglob("*")]:
            item.chmod(0o755 if item.is_dir() else 0o644)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_metadata(model_dir: Path, metadata: dict[str, Any]) -> None:
    text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
    write_atomically(model_dir / METADATA, lambda tmp: tmp.write_text(text))


def read_metadata(model_dir: Path) -> dict[str, Any]:
    metadata: dict[str, Any] = json.loads((model_dir / METADATA).read_text())
    return metadata


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


class ModelError(Exception):
    """The model cannot be served; the message names the path and the problem."""


@dataclass
class LoadedModel:
    model: Any
    metadata: dict[str, Any]
    served_from: dict[str, str] = field(default_factory=dict)  # where it came from, beside metadata.json (/metadata)

    @property
    def n_features(self) -> int:
        return len(self.metadata["feature_names"])


def load_model(model_dir: Path, *, allow_version_mismatch: bool = False) -> LoadedModel:
    """Load the model only after checking it against its metadata.json (hash first: unpickling runs code)."""
    from . import runtime  # here, not at the top: runtime.py imports this module

    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: no such directory (mount the model there, or set MODEL_DIR)")
    if not (model_dir / METADATA).is_file():
        raise ModelError(f"{model_dir / METADATA}: missing (train a model first: make train)")
    try:
        metadata = read_metadata(model_dir)
        artifact = model_dir / metadata["artifact"]
        expected = metadata["sha256"]
    except (ValueError, KeyError, TypeError) as error:
        raise ModelError(f"{model_dir / METADATA}: unreadable or incomplete ({error!r})") from None
    if not artifact.exists():
        raise ModelError(f"{artifact}: missing (metadata.json names it)")
    if artifact.is_dir():  # a folder: name the first file that differs from metadata.json's list
        recorded, have = metadata.get("files") or {}, file_hashes(artifact)
        for name in sorted(set(have) | set(recorded)):
            if have.get(name) != recorded.get(name):
                raise ModelError(f"{artifact / name}: sha256 {have.get(name, '(missing)')} does not match "
                                 f"metadata.json ({recorded.get(name, 'not listed')})")
    actual = sha256_of(artifact)
    if actual != expected:
        raise ModelError(f"{artifact}: sha256 {actual} does not match metadata.json ({expected})")
    if metadata.get("serve_runtime", "native") != runtime.NAME:
        raise ModelError(
            f"{artifact}: made for serve_runtime {metadata.get('serve_runtime')}, this server runs {runtime.NAME}"
        )
    if metadata.get("framework") != runtime.FRAMEWORK:
        raise ModelError(f"{artifact}: trained with {metadata.get('framework')}, this server runs {runtime.FRAMEWORK}")
    for key, have in runtime.metadata().items():
        recorded = metadata.get(key)
        if recorded == have:
            continue
        message = (
            f"{artifact}: trained with {key} {recorded}, this image has {have} "
            "(rebuild both images from the same locks)"
        )
        if not allow_version_mismatch:
            raise ModelError(message + "; set ALLOW_VERSION_MISMATCH=true to serve it anyway")
        log.warning("%s; serving anyway because ALLOW_VERSION_MISMATCH=true", message)
    try:
        loaded = runtime.load(artifact)
    except Exception as error:  # noqa: BLE001 (any loader failure is a bad artifact)
        raise ModelError(f"{artifact}: cannot be loaded ({type(error).__name__}: {error})") from None
    return LoadedModel(loaded, metadata)
