"""Small wheels made on the spot, for tests that run a real pip against a local find-links folder."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(folder: Path, name: str, version: str, platform: str = "any", files: dict[str, str] | None = None,
               scripts: dict[str, str] | None = None, data: dict[str, str] | None = None,
               requires: list[str] | None = None) -> Path:
    """A wheel `name`-`version` tagged py3-none-`platform` (dots: several platforms): `files` in the package's
    purelib, `scripts` as console entry points (name -> module:function), `data` under the .data/data/ scheme (what
    pip installs beside bin/: share/..., etc/...), `requires` its Requires-Dist."""
    dist = f"{name}-{version}.dist-info"
    tags = [f"py3-none-{p}" for p in platform.split(".")]
    contents = {path: text.encode() for path, text in (files or {}).items()}
    contents |= {f"{name}-{version}.data/data/{path}": text.encode() for path, text in (data or {}).items()}
    contents[f"{dist}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                    + "".join(f"Requires-Dist: {r}\n" for r in requires or [])).encode()
    contents[f"{dist}/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: "
                                 f"{'true' if platform == 'any' else 'false'}\n"
                                 + "".join(f"Tag: {tag}\n" for tag in tags)).encode()
    if scripts:
        contents[f"{dist}/entry_points.txt"] = ("[console_scripts]\n" + "".join(
            f"{script} = {target}\n" for script, target in scripts.items())).encode()
    record = "".join(f"{path},{_record_hash(body)},{len(body)}\n" for path, body in contents.items())
    contents[f"{dist}/RECORD"] = (record + f"{dist}/RECORD,,\n").encode()
    wheel = folder / f"{name}-{version}-py3-none-{platform}.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, body in contents.items():
            archive.writestr(path, body)
    return wheel


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
