"""Bundle models/ into dist/model.tar.gz and print its sha256: `make publish`, for model_source=downloaded.

The same model gives the same bytes (sorted names, mtime 0, owner 0:0, no gzip name or time), so the sha256 names the
model, not the moment it was bundled. Python, not tar, gzip and sha256sum: their flags differ between GNU (Linux)
and BSD (macOS), and the BSD ones wrote an empty bundle without failing. Standard library only."""

from __future__ import annotations

import gzip
import hashlib
import sys
import tarfile
from pathlib import Path

SKIP = {".gitkeep"}  # keeps models/ in git; not part of a model


def bundle(models: Path, out: Path) -> str:
    """Write the tar.gz of models/ (entries "./" and "./<path>", as `tar -C models .` names them); its sha256."""
    paths = sorted(p for p in models.rglob("*") if p.name not in SKIP)
    out.parent.mkdir(parents=True, exist_ok=True)
    # streamed: a model of gigabytes never sits in memory
    with out.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed, \
            tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in [models, *paths]:
            relative = path.relative_to(models).as_posix()
            info = tar.gettarinfo(str(path), arcname="./" if relative == "." else f"./{relative}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isfile():
                with path.open("rb") as content:
                    tar.addfile(info, content)
            elif info.isdir():
                tar.addfile(info)
            else:
                raise SystemExit(f"publish: {path} is neither a file nor a folder: a bundle holds only those")
    digest = hashlib.sha256()
    with out.open("rb") as written:
        while chunk := written.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> int:
    models, out = Path("models"), Path("dist/model.tar.gz")
    if not (models / "metadata.json").is_file():
        print("publish: no trained model in models/: run 'make train' first", file=sys.stderr)
        return 1
    digest = bundle(models, out)
    print(f"MODEL_SHA256={digest}  (upload {out}, then set MODEL_URI and MODEL_SHA256 in .env)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
