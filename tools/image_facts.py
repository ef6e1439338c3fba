#!/usr/bin/env python3
"""The facts of a built image that a Dockerfile refactor must keep (issue 36's "the same images" proof), as JSON.

    .venv/bin/python tools/image_facts.py IMAGE [IMAGE...] > before.json    # facts of each image
    .venv/bin/python tools/image_facts.py --compare before.json IMAGE        # one line per difference, exit 1 if any
    .venv/bin/python tools/image_facts.py --compare IMAGE_A IMAGE_B
    .venv/bin/python tools/image_facts.py --layers IMAGE                     # each layer's size and instruction

The facts of an image: its platform and the config's User, Entrypoint, Cmd, Healthcheck, Labels, ExposedPorts, Env
and WorkingDir (`docker image inspect`); each layer's size and the instruction that made it, in build order
(`docker history`); the venv's distributions as name==version and every file under the venv with its size (a
symlink as `-> target`), read by the image's own Python: `docker run --rm --network none --user 0:0 --entrypoint
<venv>/bin/python IMAGE -c ...` (no shell and no pip needed, so distroless serve images work; falls back to
`python3` on the image's PATH). `--venv` reads another prefix (e.g. /usr/local of a python image).

--compare takes two image references or JSON files this tool wrote (an image rebuilt under the same tag can be
compared with the facts saved before). It does not compare layer sizes or the values of the labels that change with
every build (org.opencontainers.image.created, .revision: their presence is compared), and compares the files under
a __pycache__ folder by path only (bytecode size may vary with how it was compiled). Exit 0 when the same, 1 when not,
2 when an image cannot be read. Every docker call has a timeout; nothing is built or pulled.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

CONFIG_KEYS = ("User", "Entrypoint", "Cmd", "Healthcheck", "Labels", "ExposedPorts", "Env", "WorkingDir")
PER_BUILD_LABELS = ("org.opencontainers.image.created", "org.opencontainers.image.revision")

# run by the image's Python (3.9+, standard library only): the venv's distributions and files
PROBE = r"""
import importlib.metadata as md, json, os, sys
venv = sys.argv[1].rstrip("/") or "/"
if not os.path.isdir(venv):
    print(json.dumps({"error": f"no folder {venv} in the image"})); sys.exit(0)
import glob
paths = sorted({p for p in sys.path if p == venv or p.startswith(venv + "/")}
               | set(glob.glob(os.path.join(venv, "lib", "python*", "site-packages"))))
dists = sorted({f"{d.metadata['Name']}=={d.version}" for d in md.distributions(path=paths)}, key=str.lower)
files = {}
for root, dirs, names in os.walk(venv):
    for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
        path = os.path.join(root, name)
        try:
            link = os.path.islink(path)
            files[os.path.relpath(path, venv)] = "-> " + os.readlink(path) if link else os.lstat(path).st_size
        except OSError as error:  # a file gone while walking (only under a live folder such as /proc)
            files[os.path.relpath(path, venv)] = f"unreadable: {error.strerror}"
print(json.dumps({"python": sys.version.split()[0], "executable": sys.executable, "distributions": dists,
                  "files": dict(sorted(files.items()))}))
"""


class Unreadable(Exception):
    """An image (or a facts file) this tool cannot read: one line saying why."""


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired as error:
        raise Unreadable(f"docker {' '.join(args[:3])} ... timed out after {timeout:g} s") from error
    except FileNotFoundError as error:
        raise Unreadable("no docker command on PATH") from error


def inspect(image: str) -> dict[str, Any]:
    result = docker("image", "inspect", "--format", "{{json .}}", image, timeout=60)
    if result.returncode != 0:
        raise Unreadable(f"{image}: {result.stderr.strip() or 'docker image inspect failed'}")
    return json.loads(result.stdout)


def layers(image: str) -> list[dict[str, Any]]:
    """[{size, created_by}] oldest first (metadata-only steps such as ENV have size 0)."""
    result = docker("history", "--no-trunc", "--human=false", "--format", "{{json .}}", image, timeout=60)
    if result.returncode != 0:
        raise Unreadable(f"{image}: {result.stderr.strip() or 'docker history failed'}")
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [{"size": int(row["Size"]), "created_by": row["CreatedBy"]} for row in reversed(rows)]


def venv_facts(image: str, venv: str, python: str | None) -> dict[str, Any]:
    tried = []
    for candidate in [python] if python else [f"{venv.rstrip('/')}/bin/python", "python3"]:
        result = docker("run", "--rm", "--network", "none", "--user", "0:0", "--entrypoint", candidate, image,
                        "-c", PROBE, venv, timeout=300)
        if result.returncode == 0:
            return json.loads(result.stdout.strip().splitlines()[-1])
        said = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("Run 'docker")]
        tried.append(f"{candidate}: {said[-1] if said else 'exit ' + str(result.returncode)}")
    raise Unreadable(f"{image}: no Python in the image could list {venv} ({'; '.join(tried)})")


def facts(image: str, venv: str = "/opt/venv", python: str | None = None) -> dict[str, Any]:
    data = inspect(image)
    config = data.get("Config") or {}
    return {
        "image": image,
        "id": data.get("Id"),
        "platform": "/".join(filter(None, (data.get("Os"), data.get("Architecture"), data.get("Variant")))),
        "size": data.get("Size"),
        "config": {key: config.get(key) for key in CONFIG_KEYS},
        "layers": layers(image),
        "venv": {"path": venv, **venv_facts(image, venv, python)},
    }


def load(source: str, venv: str, python: str | None) -> dict[str, Any]:
    """Facts of an image reference, or read from a JSON file this tool wrote (one image's facts)."""
    path = Path(source)
    if source.endswith(".json") and path.is_file():
        try:
            data = json.loads(path.read_text())
        except ValueError as error:
            raise Unreadable(f"{source}: not JSON ({error})") from error
        if "config" not in data:  # the {image: facts} form; it must hold exactly one image
            if len(data) != 1:
                raise Unreadable(f"{source} holds {len(data)} images' facts: compare one (save them one per file)")
            data = next(iter(data.values()))
        return data
    return facts(source, venv, python)


def canonical(distribution: str) -> tuple[str, str]:
    name, _, version = distribution.partition("==")
    return re.sub(r"[-_.]+", "-", name).lower(), version


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """One line per difference between two images' facts (layer sizes and per-build label values excepted)."""
    out: list[str] = []
    if a.get("platform") != b.get("platform"):
        out.append(f"platform: {a.get('platform')} != {b.get('platform')}")
    ca, cb = a["config"], b["config"]
    for key in CONFIG_KEYS:
        if key in ("Env", "Labels"):
            continue
        if ca.get(key) != cb.get(key):
            out.append(f"config {key}: {json.dumps(ca.get(key))} != {json.dumps(cb.get(key))}")
    env_a = dict(item.partition("=")[::2] for item in ca.get("Env") or [])
    env_b = dict(item.partition("=")[::2] for item in cb.get("Env") or [])
    for name in sorted(env_a.keys() | env_b.keys()):
        if env_a.get(name) != env_b.get(name):
            out.append(f"env {name}: {json.dumps(env_a.get(name))} != {json.dumps(env_b.get(name))}")
    labels_a, labels_b = ca.get("Labels") or {}, cb.get("Labels") or {}
    for name in sorted(labels_a.keys() | labels_b.keys()):
        if name in PER_BUILD_LABELS and name in labels_a and name in labels_b:
            continue
        if labels_a.get(name) != labels_b.get(name):
            out.append(f"label {name}: {json.dumps(labels_a.get(name))} != {json.dumps(labels_b.get(name))}")

    va, vb = a["venv"], b["venv"]
    for key in ("error", "path", "python", "executable"):
        if va.get(key) != vb.get(key):
            out.append(f"venv {key}: {json.dumps(va.get(key))} != {json.dumps(vb.get(key))}")
    dists_a = dict(map(canonical, va.get("distributions") or []))
    dists_b = dict(map(canonical, vb.get("distributions") or []))
    for name in sorted(dists_a.keys() | dists_b.keys()):
        if dists_a.get(name) != dists_b.get(name):
            out.append(f"distribution {name}: {dists_a.get(name) or '(absent)'} != {dists_b.get(name) or '(absent)'}")
    files_a, files_b = va.get("files") or {}, vb.get("files") or {}
    for path in sorted(files_a.keys() - files_b.keys()):
        out.append(f"file only in A: {path}")
    for path in sorted(files_b.keys() - files_a.keys()):
        out.append(f"file only in B: {path}")
    for path in sorted(files_a.keys() & files_b.keys()):
        if "__pycache__" not in Path(path).parts and files_a[path] != files_b[path]:
            out.append(f"file {path}: {files_a[path]} != {files_b[path]}")
    return out


def layer_lines(data: dict[str, Any]) -> list[str]:
    rows = sorted(data["layers"], key=lambda layer: -layer["size"])
    width = max((len(f"{layer['size'] / 1e6:.1f}") for layer in rows), default=1)
    lines = [f"{data['image']} ({data.get('size', 0) / 1e6:.1f} MB, {len(rows)} steps, MB = 10^6 bytes):"]
    for layer in rows:
        instruction = re.sub(r"\s+", " ", layer["created_by"]).strip() or "(no instruction recorded)"
        shown = instruction if len(instruction) <= 200 else instruction[:200] + "..."
        lines.append(f"  {layer['size'] / 1e6:>{width}.1f} MB  {shown}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", help="image references (or, with --compare, facts files)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="print the differences, exit 1 if any")
    parser.add_argument("--layers", metavar="IMAGE", help="each layer's size and instruction, biggest first")
    parser.add_argument("--venv", default="/opt/venv", help="the folder whose distributions and files are read")
    parser.add_argument("--python", help="the image's Python to run (default: <venv>/bin/python, then python3)")
    args = parser.parse_args()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends the output quietly
    if sum(map(bool, (args.images, args.compare, args.layers))) != 1:
        parser.error("give images, or --compare A B, or --layers IMAGE")
    try:
        if args.layers:
            data = {"image": args.layers, "size": inspect(args.layers).get("Size") or 0, "layers": layers(args.layers)}
            print("\n".join(layer_lines(data)))
            return 0
        if args.compare:
            a, b = (load(source, args.venv, args.python) for source in args.compare)
            found = differences(a, b)
            print("\n".join(found) if found else f"same: {args.compare[0]} and {args.compare[1]} "
                  f"({len(a['venv'].get('distributions') or [])} distributions, "
                  f"{len(a['venv'].get('files') or {})} files under {a['venv'].get('path')})")
            return 1 if found else 0
        print(json.dumps({image: facts(image, args.venv, args.python) for image in args.images}, indent=1))
        return 0
    except Unreadable as error:
        print(f"image_facts: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
