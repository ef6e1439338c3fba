#!/usr/bin/env python3
"""Compile requirements/*.in into hashed locks for the Python and platform of the project's images.

Shipped into every generated project as scripts/lock.py: Copier runs it once after `copier copy`, and `make lock`
runs it afterwards. Standard library only, so it runs under any Python 3.9+.

    python scripts/lock.py            # Docker if an engine answers, else a local compile, else instructions
    ENGINE=podman python scripts/lock.py   # the same with Podman (make passes its ENGINE)
    python scripts/lock.py --engine docker|local
    python scripts/lock.py --check    # offline: is every lock up to date with its inputs? (make lock-check)
    python scripts/lock.py --check --report   # the same, said after `make update`, exit 0 (stale or not)
    python scripts/lock.py compile    # what the Dockerfile's `lock` stage runs (inside the image)

The lock tool is the Dockerfile's LOCK_TOOL (pip-tools or uv) at LOCK_TOOL_VERSION; both compile the same .in files
into pip-compatible hashed locks, installed with `pip install --require-hashes --no-deps`.

Order of preference:
1. `docker build --target lock`: pip-compile runs inside the same Python image as the runtime, so markers and wheels
   match the container, not the laptop. Once per platform of the Dockerfile's PLATFORMS (linux/amd64, linux/arm64),
   each in that platform's image (the other one emulated: QEMU on Linux, Rosetta or QEMU in Docker Desktop), all at
   the same time, then merged into one lock per .in: a pin all platforms share is written once with every hash, a pin
   that differs (PyTorch's `torch==X+cpu` on x86_64, `torch==X` on aarch64) or exists on one platform only is written
   once per platform with a `platform_machine` marker. The platforms are always merged in PLATFORMS' order, so an
   arm64 laptop and an amd64 CI runner write the same bytes. With several platforms the compiles resolve only, and
   the hashes come from the package indexes' own listings (sha256 of every file of each pinned version), fetched
   here: pip-tools would otherwise download every file of every pin inside the emulated image wherever the index has
   no JSON API (mirrors, proxies). A pin with no hashed file on any index fails the lock.
2. A local pip-compile (or uv), only on Linux with the same Python minor version and machine as the images, and
   only for a single platform.
3. Otherwise, instructions, and exit 0 (`--strict` makes it exit 1): a project is never left broken by locking.

The user's pip settings (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_TRUSTED_HOST, and the same keys of
`pip config`) reach the build as a BuildKit secret, never as a build argument, and the locks never record index
URLs (they may carry credentials). uv reads no pip.conf: the same settings reach it as UV_* variables.

Every lock starts with a stamp of what it was compiled from, each input on its own: the Python version, the builder
image, the lock tool with its version, the platforms, and the sha256 of each .in file (with its -r/-c includes).
`--check` recomputes it, without network or Docker, so CI and a pre-commit hook refuse a stale lock and say which
input changed. Stamps from before (one sha256 of everything) are still read.
"""

from __future__ import annotations

import argparse
import base64
import configparser
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import urllib.request
import venv
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

# Order matters: train first; the others are compiled with `-c train.txt`, so a package they share with training
# has the training version (the model is served, and explored, with the library that trained it).
LOCKS = ("train", "serve", "dev")  # dev.in exists only in projects with the dev environment


def locks(root: Path) -> list[str]:
    """The locks this project has: one per requirements/<name>.in."""
    return [name for name in LOCKS if (root / "requirements" / f"{name}.in").is_file()]


PIP_KEYS = ("index-url", "extra-index-url", "find-links", "trusted-host")
COMPILE_FLAGS = [
    "--quiet",
    "--generate-hashes",
    "--allow-unsafe",
    "--strip-extras",
    "--no-emit-index-url",
    "--no-emit-trusted-host",
    "--no-emit-find-links",
    "--resolver=backtracking",
]
# uv's equivalents: index URLs, trusted hosts and find-links are never emitted and extras are stripped by default.
# `unsafe-best-match` resolves across all indexes as pip does (uv's default takes a package from the first index
# that has it, so a framework's extra index, PyTorch's, would decide numpy's version too).
UV_COMPILE_FLAGS = [
    "--quiet",
    "--generate-hashes",
    "--index-strategy",
    "unsafe-best-match",
    "--custom-compile-command",
    "make lock",
]
# uv reads no pip.conf: each pip setting has an environment variable (lists: space- or comma-separated)
UV_ENV = {
    "index-url": ("UV_INDEX_URL", " "),
    "extra-index-url": ("UV_EXTRA_INDEX_URL", " "),
    "find-links": ("UV_FIND_LINKS", ","),
    "trusted-host": ("UV_INSECURE_HOST", " "),
}
STAMP = "# lock-inputs: "  # `key=value` of each input, on the lock's first lines
FIELD = re.compile(r"(?<!\S)([^\s=]+)=(\S+)")
# the single-hash stamp of 0.2.0 to 0.3.0 and after: `sha256=<hex> (python X, <image>[ (<platforms>)], <tool>; ...)`
LEGACY = re.compile(r"^# lock-inputs: sha256=([0-9a-f]{64})"
                    r"(?: \(python (\S+), ([^\s,]+)(?: \(([^)]*)\))?, ([^\s;]+);)?")
# what every lock depends on besides its .in files, as a stale lock names it
ENVIRONMENT = {"python": "the Python", "image": "the builder image", "tool": "the lock tool",
               "platforms": "the platforms"}
# `# lock-exclude: name ...` in a lock's own .in file: packages its dependencies declare that the lock leaves out
# (uv --no-emit-package; pip-compile --unsafe-package without --allow-unsafe, which notes them unpinned)
EXCLUDE = re.compile(r"^#\s*lock-exclude:(.*)$", re.MULTILINE)
# pip-compile's note on them assumes pip resolves dependencies; the images install with --no-deps: uv's words instead
PIP_TOOLS_UNPINNED = (
    "# WARNING: The following packages were not pinned, but pip requires them to be\n"
    "# pinned when the requirements file includes hashes and the requirement is not\n"
    "# satisfied by a package already installed. Consider using the --allow-unsafe flag.\n"
)
EXCLUDED = "# The following packages were excluded from the output:\n"
PIP_TOOLS_REJECTED = "The generated requirements file may be rejected by pip install."
# what `uname -m` says inside each platform's images: the value of the locks' platform_machine markers
MACHINES = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
MARKER = re.compile(r"""^\s*platform_machine\s*==\s*["']([\w-]+)["']\s*$""")


class LockError(Exception):
    """A lock that cannot be made as asked: the message is one line that says what to do."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """A lock as its sections: [(heading lines, [entry lines])]. The first section's heading is the file's
    header; pip-compile's later sections (packages "considered to be unsafe", those "excluded from the output")
    start at a top-level comment after a blank line. An entry is its requirement line and the indented lines below
    (hashes, `# via`)."""
    sections: list[tuple[list[str], list[list[str]]]] = [([], [])]
    entry: list[str] | None = None
    for line in text.splitlines():
        if line.startswith((" ", "\t")) and entry is not None:
            entry.append(line)
        elif not line.strip() or line.startswith("#"):
            if entry is not None and sections[-1][1] and not line.strip():
                sections.append(([], []))
            entry = None
            sections[-1][0].append(line)
        else:
            entry = [line]
            sections[-1][1].append(entry)
    return sections


def requirement(entry: list[str]) -> tuple[str, str]:
    """(`name==version`, marker or "") of an entry's first line."""
    head = entry[0].rstrip().removesuffix("\\").strip()
    spec, _, marker = head.partition(";")
    return spec.strip(), marker.strip()


def platform_entry(entry: list[str], machines: list[str]) -> list[str]:
    """The entry for these machines only: its requirement line with a platform_machine marker (none: all)."""
    spec = requirement(entry)[0]
    marker = " or ".join(f'platform_machine == "{m}"' for m in machines)
    continued = " \\" if entry[0].rstrip().endswith("\\") else ""
    return [f"{spec} ; {marker}{continued}" if machines else f"{spec}{continued}", *entry[1:]]


def merge_locks(per_platform: dict[str, str], lock: str, hashes: Callable[[str, str], list[str]]) -> str:
    """One lock from each platform's, in the order given (PLATFORMS'): shared pins once, the rest once per platform
    group, marked. Each pin's hashes: `hashes(name, version)`, every file of that version on the indexes (the
    compiles resolve only: under emulation, hashing by download took longer than the rest). A pin without hashes
    fails (pip would refuse the lock)."""
    platforms = list(per_platform)
    if len(platforms) == 1:
        return per_platform[platforms[0]]
    # sections by their note (header: ""), in the order they first appear
    sections: dict[str, dict] = {}
    for p in platforms:
        for index, (heading, entries) in enumerate(parse_lock(per_platform[p])):
            key = next((line for line in heading if line.startswith("# ")), "") if index else ""
            section = sections.setdefault(key, {"heading": heading if not index else ["", key], "notes": set(),
                                                "entries": {}})
            if index:  # the names an "excluded from the output" note lists
                section["notes"].update(line for line in heading if line.startswith("# ") and line != key)
            section["entries"][p] = {canonical(re.split(r"[=<>!~;\[ ]", e[0], maxsplit=1)[0]): e for e in entries}
    out: list[str] = []
    # pip-compile's order: the pins, those "considered to be unsafe", then the list of those left out
    for key, section in sorted(sections.items(), key=lambda item: (bool(item[0]), "excluded" in item[0])):
        out += section["heading"]
        if not key:
            out += [f"# Compiled in the {' and '.join(platforms)} images and merged by scripts/lock.py", "#"]
        out += sorted(section["notes"])
        found = section["entries"]
        for name in sorted({n for entries in found.values() for n in entries}):
            have = {p: found[p][name] for p in platforms if name in found.get(p, {})}
            specs = {p: requirement(entry)[0] for p, entry in have.items()}
            for spec in dict.fromkeys(specs.values()):
                group = [p for p in have if specs[p] == spec]
                found_hashes = [f"--hash=sha256:{h}" for h in hashes(*spec.split("==", 1))]
                if not found_hashes:
                    raise LockError(f"requirements/{lock}.txt: {spec} has no hashes for {', '.join(group)} (its "
                                    "index listed none): use an index that serves hashes, then run make lock again")
                rest = [line for line in have[group[0]][1:] if not line.strip().startswith("--hash=")]
                machines = [] if len(group) == len(platforms) else [MACHINES[p] for p in group]
                lines = [f"    {h} \\" for h in sorted(found_hashes)]
                lines[-1] = lines[-1].removesuffix(" \\")  # the last hash ends the requirement
                head = have[group[0]][0].rstrip().removesuffix("\\").rstrip() + " \\"
                out += [*platform_entry([head], machines), *lines, *rest]
    return "\n".join(out).rstrip("\n") + "\n"


class IndexHashes:
    """sha256 of every file of a pinned version, from the indexes' simple pages (PEP 691 JSON or PEP 503 HTML, whose
    links carry `#sha256=`), as pip-tools and uv take them; looked up once per package, a few at a time."""

    def __init__(self, indexes: list[str], cafile: str | None = None):
        self.indexes = list(dict.fromkeys(index.rstrip("/") + "/" for index in indexes))
        self.context = ssl.create_default_context(cafile=cafile) if cafile else None
        self.listed: dict[str, dict[str, set[str]]] = {}

    def fetch(self, names: list[str]) -> None:
        todo = [name for name in dict.fromkeys(map(canonical, names)) if name not in self.listed]
        with ThreadPoolExecutor(8) as pool:
            self.listed.update(pool.map(lambda name: (name, self.files_of(name)), todo))

    def files_of(self, name: str) -> dict[str, set[str]]:
        """{version: sha256s} of a package over every index."""
        found: dict[str, set[str]] = {}
        for index in self.indexes:
            for filename, digest in self.page(urljoin(index, f"{name}/")):
                version = file_version(filename, name)
                if version and digest:
                    found.setdefault(version, set()).add(digest)
        return found

    def page(self, url: str) -> list[tuple[str, str]]:
        parts = urlsplit(url)
        headers = {"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1", "User-Agent": "make-lock"}
        if parts.username:  # credentials in the URL: basic auth, never in a log line
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
            url = urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60,
                                        context=self.context) as response:
                body = response.read().decode("utf-8", "replace")
                kind = response.headers.get("Content-Type", "")
        except OSError as error:
            if getattr(error, "code", None) in (403, 404):  # not on this index (PyTorch's answers 403)
                return []
            raise LockError(f"cannot read {urlsplit(url).hostname}'s page of {url.rstrip('/').rsplit('/', 1)[-1]} "
                            f"for its hashes ({error}): check the index settings and the network, then run make lock"
                            ) from error
        if "json" in kind:
            return [(f["filename"], f.get("hashes", {}).get("sha256", "")) for f in json.loads(body)["files"]]
        return [(unquote(href.split("#", 1)[0].rsplit("/", 1)[-1]), digest) for href, digest in
                re.findall(r'href="([^"]+?#sha256=([0-9a-f]{64}))"', body)]

    def __call__(self, name: str, version: str) -> list[str]:
        self.fetch([name])
        return sorted(self.listed[canonical(name)].get(version, ()))


def file_version(filename: str, name: str) -> str:
    """The version in a wheel's or an sdist's file name, if the file is `name`'s."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        return parts[1] if len(parts) >= 5 and canonical(parts[0]) == name else ""
    for suffix in (".tar.gz", ".zip", ".tar.bz2"):
        if filename.endswith(suffix):
            stem = filename[: -len(suffix)]
            base, _, version = stem.rpartition("-")
            return version if canonical(base) == name else ""
    return ""


def platform_view(text: str, machine: str) -> str:
    """A merged lock as the lock tool of one platform sees it: the entries marked for another machine left out,
    the markers of this one's dropped (both tools keep an existing lock's pins as their starting point)."""
    kept = []
    for heading, entries in parse_lock(text):
        kept += heading
        for entry in entries:
            marker = requirement(entry)[1]
            machines = [m.group(1) for part in marker.split(" or ") if (m := MARKER.match(part))] if marker else []
            if marker and len(machines) == len(marker.split(" or ")):
                if machine in machines:
                    kept += platform_entry(entry, [])
            else:
                kept += entry
    return "\n".join(kept).rstrip("\n") + "\n"


def log(msg: str) -> None:
    print(f"lock: {msg}", file=sys.stderr, flush=True)


def compile_locks(workdir: Path, compiler: list[str], upgrade: bool = False, tool: str = "pip-tools") -> None:
    """Compile train, then serve and dev (at the same time) in workdir/requirements, constrained by train.

    `compiler` is pip-compile's command, or uv's for tool="uv" (`uv pip compile` with equivalent flags).
    Paths stay relative to workdir so the lock headers and annotations are the same wherever the lock is made.
    Existing locks in that folder are kept as the starting point (both tools only change what they must).
    """
    env = {**os.environ, "CUSTOM_COMPILE_COMMAND": "make lock"}
    if tool == "uv":
        flags = [*UV_COMPILE_FLAGS, "--python-version", f"{sys.version_info[0]}.{sys.version_info[1]}"]
        # like pip (which uses the system trust store), trust the system's CAs: a company proxy's CA is installed there
        env.update(uv_env(pip_settings()), UV_SYSTEM_CERTS="1")
    else:
        flags = COMPILE_FLAGS
    if os.environ.get("LOCK_HASHES") == "0":  # several platforms: scripts/lock.py adds the hashes from the indexes
        flags = [flag for flag in flags if flag != "--generate-hashes"]

    def compile_one(name: str) -> None:
        left_out = excluded(workdir / "requirements" / f"{name}.in")
        cmd = [*compiler, *flags, "--output-file", f"requirements/{name}.txt"]
        if upgrade:
            cmd.append("--upgrade")
        if name != "train":
            cmd += ["--constraint", "requirements/train.txt"]
        if tool != "uv":  # pip-tools' own cache, one per lock: two compiles at once would write the same file
            cache = os.path.expanduser(os.environ.get("XDG_CACHE_HOME") or "~/.cache")
            cmd += ["--cache-dir", str(Path(cache, "pip-tools", name))]
        if left_out and tool == "uv":
            cmd += [arg for package in left_out for arg in ("--no-emit-package", package)]
        elif left_out:  # these replace pip-compile's default unsafe set: setuptools and pip are pinned as usual
            cmd = [arg for arg in cmd if arg != "--allow-unsafe"]
            cmd += [arg for package in left_out for arg in ("--unsafe-package", package)]
        cmd.append(f"requirements/{name}.in")
        if left_out and tool != "uv":
            pip_compile_leaving_out(cmd, workdir, env, workdir / "requirements" / f"{name}.txt")
        else:
            subprocess.run(cmd, check=True, cwd=workdir, env=env)

    names = locks(workdir)
    if not names:
        return
    first, *rest = names  # train first: the others are constrained by it
    compile_one(first)
    # then the others at the same time: each is a resolver's minutes under emulation, on one core
    with ThreadPoolExecutor(max_workers=max(len(rest), 1)) as pool:
        for compiled in [pool.submit(compile_one, name) for name in rest]:
            compiled.result()


def pip_compile_leaving_out(cmd: list[str], workdir: Path, env: dict[str, str], lock: Path) -> None:
    """pip-compile with --unsafe-package: its warnings that pip would refuse the lock do not hold for --no-deps
    installs, so the lock says what uv says, and the warning on stderr is dropped (the rest of stderr is kept)."""
    result = subprocess.run(cmd, check=False, cwd=workdir, env=env, stderr=subprocess.PIPE, text=True)
    sys.stderr.write("".join(line for line in result.stderr.splitlines(keepends=True)
                             if not line.startswith(PIP_TOOLS_REJECTED)))
    result.check_returncode()
    lock.write_text(lock.read_text().replace(PIP_TOOLS_UNPINNED, EXCLUDED))


def excluded(path: Path) -> list[str]:
    """The packages a lock leaves out: `# lock-exclude:` lines of its own .in file (not of those it includes)."""
    return [package for line in EXCLUDE.findall(path.read_text()) for package in line.split()]


def uv_env(settings: dict[str, list[str]]) -> dict[str, str]:
    """The pip index settings as uv's environment variables (uv does not read pip.conf or PIP_* variables)."""
    env = {}
    for key, values in settings.items():
        if key in UV_ENV and values:
            name, sep = UV_ENV[key]
            env[name] = sep.join(values)
    return env


def lock_inputs(project: Path, name: str) -> list[Path]:
    """The .in files a lock is compiled from: <name>.in and its -r/-c includes, recursively; serve and dev are
    constrained by train.txt, so train's inputs are theirs too."""
    seen: list[Path] = []
    pending = [(project / "requirements" / f"{n}.in").resolve() for n in dict.fromkeys([name, "train"])]
    while pending:
        path = pending.pop(0)
        if path in seen or not path.is_file():
            continue
        seen.append(path)
        for ref in re.findall(r"^\s*(?:-r|-c|--requirement|--constraint)[ =]\s*(\S+)", path.read_text(), re.MULTILINE):
            if ref.endswith(".in"):  # .txt constraints are locks made from .in files already counted
                pending.append((path.parent / ref).resolve())
    return seen


def lock_environment(project: Path) -> dict[str, str]:
    """The Python, the builder image, the lock tool and the platforms, as the Dockerfile's ARGs say."""
    args = dockerfile_args(project)
    python = args.get("PYTHON_VERSION", "?")
    # a digest pin (@sha256:...) moves weekly with security updates of the same image; the tag decides the lock
    image = re.sub(r"@sha256:[0-9a-f]+$", "", args.get("BUILDER_IMAGE", "?").replace("${PYTHON_VERSION}", python))
    found = {"python": python, "image": image,
             "tool": f"{args.get('LOCK_TOOL', 'pip-tools')}=={args.get('LOCK_TOOL_VERSION', '?')}"}
    if "PLATFORMS" in args:  # older Dockerfiles lock for the host's platform and have no such line
        found["platforms"] = args["PLATFORMS"]
    return found


def input_files(project: Path, name: str) -> dict[str, bytes]:
    """{label: content} of a lock's .in files, labelled by their path in the project (its name if outside)."""
    root = project.resolve()
    return {(path.relative_to(root).as_posix() if root in path.parents else path.name):
            path.read_bytes().replace(b"\r\n", b"\n") for path in lock_inputs(project, name)}


def stamp_fields(project: Path, name: str) -> dict[str, str]:
    """What the stamp records: the environment, then each .in file's sha256 (its first 16 hex digits: enough to
    tell which file changed)."""
    files = input_files(project, name)
    return {**lock_environment(project),
            **{label: "sha256:" + hashlib.sha256(data).hexdigest()[:16] for label, data in files.items()}}


def inputs_digest(project: Path, name: str) -> tuple[str, str]:
    """(sha256, summary) of everything together: the single-hash stamp of before, still read by the check."""
    env = lock_environment(project)
    text = "".join(f"{key}={env[key]}\n" for key in ENVIRONMENT if key in env)
    digest = hashlib.sha256(text.encode())
    for label, data in input_files(project, name).items():
        digest.update(f"{label}\n".encode() + data)
    image = env["image"] + (f" ({env['platforms']})" if "platforms" in env else "")
    return digest.hexdigest(), f"python {env['python']}, {image}, {env['tool']}"


def stamp_lock(project: Path, name: str) -> None:
    """Put the stamp on the lock's first lines (replacing an older one): the environment, then the .in files."""
    path = project / "requirements" / f"{name}.txt"
    fields = stamp_fields(project, name)
    env = " ".join(f"{key}={value}" for key, value in fields.items() if key in ENVIRONMENT)
    files = " ".join(f"{key}={value}" for key, value in fields.items() if key not in ENVIRONMENT)
    body = "".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith(STAMP))
    path.write_text(f"{STAMP}{env} (`make lock-check` compares them)\n{STAMP}{files}\n{body}")


def joined(items: list[str], last: str = "and") -> str:
    return ", ".join(items[:-1]) + f" {last} {items[-1]}" if len(items) > 1 else "".join(items)


def environment_changes(recorded: dict[str, str], now: dict[str, str]) -> list[str]:
    def shown(key: str, value: str | None) -> str:
        if value is None:
            return "the host's" if key == "platforms" else "none"
        return value.replace(",", ", ")

    return [f"{what} changed ({shown(key, recorded.get(key))} -> {shown(key, now.get(key))})"
            for key, what in ENVIRONMENT.items() if recorded.get(key) != now.get(key)]


def stale(name: str, files: list[str], changes: list[str], note: str = "") -> str:
    """`requirements/<name>.txt is stale against train.in, and the Python changed (3.12 -> 3.13): run make lock`"""
    against = f" against {joined(files)}" if files else ""
    because = (", and " if files else ": ") + joined(changes) if changes else ""
    return f"requirements/{name}.txt is stale{against}{because}: run make lock{note}"


def lock_problem(project: Path, name: str) -> str | None:
    """Why a lock is stale, naming each input that changed; None when it is up to date."""
    path = project / "requirements" / f"{name}.txt"
    if not path.is_file():
        return f"requirements/{name}.txt is missing: run make lock"
    stamp = [line for line in path.read_text().splitlines()[:2] if line.startswith(STAMP)]
    if not stamp:
        return f"requirements/{name}.txt has no input stamp (made before lock-check): run make lock"
    now = stamp_fields(project, name)
    legacy = LEGACY.match(stamp[0])
    if legacy:  # one hash of everything: an .in change cannot be told from another, the rest is in its summary
        if legacy.group(1) == inputs_digest(project, name)[0]:
            return None
        python, image, platforms, tool = legacy.groups()[1:]
        recorded = {"python": python, "image": image, "tool": tool, **({"platforms": platforms} if platforms else {})}
        changes = environment_changes(recorded, now) if python else []
        files = [] if changes else [joined([label.removeprefix("requirements/") for label in now
                                            if label not in ENVIRONMENT], "or")]
        return stale(name, files, changes, " (this lock predates the detailed stamp: re-made once, the check names "
                                           "each input that changed)")
    recorded = dict(pair for line in stamp for pair in FIELD.findall(line))
    files = [label.removeprefix("requirements/") + ("" if label in recorded and label in now else
                                                    " (new)" if label in now else " (no longer included)")
             for label in dict.fromkeys([*now, *recorded])
             if label not in ENVIRONMENT and recorded.get(label) != now.get(label)]
    changes = environment_changes(recorded, now)
    return stale(name, files, changes) if files or changes else None


def check_locks(project: Path) -> list[str]:
    """One line per lock that does not match its inputs, saying which changed (empty: all up to date). Offline and
    fast."""
    return [problem for name in locks(project) if (problem := lock_problem(project, name))]


def lock_platforms(project: Path) -> list[str]:
    """The Dockerfile's PLATFORMS (none in older Dockerfiles: the host's platform, whichever it is)."""
    named = [p.strip() for p in dockerfile_args(project).get("PLATFORMS", "").split(",") if p.strip()]
    for name in named:
        if name not in MACHINES:
            raise LockError(f"PLATFORMS in the Dockerfile names {name}: the locks can be made for "
                            f"{' and '.join(MACHINES)} only; fix that line")
    return named


def host_platform() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "linux/amd64", "amd64": "linux/amd64", "aarch64": "linux/arm64", "arm64": "linux/arm64"}.get(
        machine, machine)


def dockerfile_args(project: Path) -> dict[str, str]:
    """ARG defaults of the Dockerfile: the single place the Python, the lock tool and its version are written."""
    text = (project / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG\s+([A-Z_]+)=(\S+)", text, flags=re.MULTILINE))


def pip_settings(keys: tuple[str, ...] = PIP_KEYS) -> dict[str, list[str]]:
    """The user's pip index settings: `pip config` first, environment variables on top (as pip itself does)."""
    found: dict[str, list[str]] = {}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        m = re.match(r"^[\w:.-]*?\.?([a-z-]+)='(.*)'$", line.strip())
        if m and m.group(1) in keys:
            found[m.group(1)] = m.group(2).split()
    for key in keys:
        value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            found[key] = value.split()
    return found


def usable_in_container(value: str) -> bool:
    """Local paths and file:// URLs of this machine do not exist inside the build."""
    return urlsplit(value).scheme in ("http", "https") or not value.startswith(("/", ".", "file:"))


def write_pip_conf(settings: dict[str, list[str]], path: Path) -> bool:
    """Write a pip.conf for the build secret; True if any setting points at this machine's loopback."""
    conf = configparser.ConfigParser()
    conf["global"] = {}
    loopback = False
    for key, values in settings.items():
        kept = [v for v in values if key == "trusted-host" or usable_in_container(v)]
        for dropped in set(values) - set(kept):
            log(f"not passing pip {key} {dropped!r} to the build: it is a path on this machine")
        if kept:
            conf["global"][key] = "\n".join(kept) if len(kept) > 1 else kept[0]
        loopback |= any(map(is_loopback, kept))
    with path.open("w") as f:
        conf.write(f)
    path.chmod(0o600)
    return loopback


# the engine's CLI: docker, or podman (whose builds take the same arguments and make the same locks)
ENGINE = os.environ.get("ENGINE") or "docker"


def engine_answers() -> bool:
    if not shutil.which(ENGINE):
        return False
    try:
        return subprocess.run([ENGINE, "info"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def requirement_urls(project: Path) -> list[str]:
    """Index URLs named inside requirements/*.in (a framework's own wheel index, say)."""
    found = []
    for path in sorted((project / "requirements").glob("*.in")):
        found += re.findall(r"^\s*--(?:extra-)?index-url[ =]\s*(\S+)", path.read_text(), flags=re.MULTILINE)
    return found


def is_loopback(url: str) -> bool:
    return urlsplit(url).hostname in ("localhost", "127.0.0.1", "::1")


def lock_with_docker(project: Path, out: Path, upgrade: bool, platforms: list[str]) -> bool:
    """The lock stage once per platform (the host's where none is named), each into out/<platform>/, then merged
    into out/. Raises LockError when a platform's containers cannot run here."""
    with tempfile.TemporaryDirectory() as tmp:
        pip_conf = Path(tmp) / "pip.conf"
        loopback = write_pip_conf(pip_settings(), pip_conf) or any(map(is_loopback, requirement_urls(project)))
        builds: dict[str, list[str]] = {}
        made: dict[str, Path] = {}
        for target in platforms or [""]:
            dest = out / (target.replace("/", "-") or "host")
            cmd = [ENGINE, "build", "--target", "lock", "--output", f"type=local,dest={dest}"]
            cmd += ["--platform", target] if target else []
            cmd += ["--secret", f"id=pipconf,src={pip_conf}"]
            if upgrade:
                cmd += ["--build-arg", "LOCK_UPGRADE=1"]
            if len(platforms) > 1:
                cmd += ["--build-arg", "LOCK_HASHES=0"]
            if loopback:  # a mirror on 127.0.0.1 is only reachable from the host's network namespace
                cmd += ["--network", "host"]
            cmd.append(str(project))
            log(f"compiling inside the {target or 'host platform'}'s image: " + " ".join(cmd[:5]) + " ...")
            builds[target], made[target] = cmd, dest
        ended = run_builds(builds)
        for target, (status, tail) in ended.items():  # in PLATFORMS' order, whichever failed first
            if status != 0 and target and target != host_platform() and "exec format error" in tail:
                raise LockError(f"this machine cannot run {target} containers to compile their locks: enable "
                                "emulation (Linux: `docker run --privileged --rm tonistiigi/binfmt --install "
                                f"all`; Docker Desktop has it), or remove {target} from the Dockerfile's PLATFORMS")
        if any(status != 0 for status, _ in ended.values()):
            return False  # the build's own output, passed on above, says why
        hashes = index_hashes(project) if len(made) > 1 else None
        for name in locks(project):
            texts = {target: (dest / f"{name}.txt").read_text() for target, dest in made.items()
                     if (dest / f"{name}.txt").is_file()}
            if len(texts) == len(made):
                if hashes:
                    log(f"hashes of requirements/{name}.txt from the indexes")
                    hashes.fetch([requirement(e)[0].split("==")[0] for text in texts.values()
                                  for _, entries in parse_lock(text) for e in entries])
                (out / f"{name}.txt").write_text(merge_locks(texts, name, hashes))
        return True


def run_builds(builds: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    """Every platform's lock build at once (an emulated one takes minutes; the native one runs beside it), their
    output passed on as it comes, each line after its platform's name when there are several. The first to fail
    stops the others (their locks are of no use then). Each one's exit status and the end of its output, in the
    order given."""
    several = len(builds) > 1
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    # each in its own process group: stopping one stops what its CLI started too (a buildx plugin), and Ctrl-C
    # reaches them through stop() below
    running = {target: subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, errors="replace",
                                        start_new_session=True)
               for target, cmd in builds.items()}

    def follow(target: str) -> tuple[int, str]:
        build = running[target]
        tail: list[str] = []
        assert build.stderr is not None
        with build.stderr:
            for line in build.stderr:
                sys.stderr.write(f"[{target}] {line}" if several else line)
                tail = [*tail[-199:], line]
        if build.wait() != 0:
            for other in running.values():
                stop(other)
        return build.returncode, "".join(tail)

    pool = ThreadPoolExecutor(max_workers=len(running))
    try:
        futures = {target: pool.submit(follow, target) for target in running}
        return {target: future.result() for target, future in futures.items()}
    finally:  # interrupted: no build left behind
        for build in running.values():
            stop(build)
        pool.shutdown()


def stop(build: subprocess.Popen[str]) -> None:
    if build.poll() is not None:
        return
    if hasattr(os, "killpg"):
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.killpg(build.pid, signal.SIGTERM)
    else:
        build.terminate()


def index_hashes(project: Path) -> IndexHashes:
    """The indexes the builds use (the user's pip settings and the .in files' own) and pip's CA bundle."""
    settings = pip_settings((*PIP_KEYS, "cert"))
    indexes = (settings.get("index-url") or ["https://pypi.org/simple"]) + settings.get("extra-index-url", [])
    indexes = [index for index in indexes + requirement_urls(project) if urlsplit(index).scheme in ("http", "https")]
    return IndexHashes(indexes, (settings.get("cert") or [None])[0])


def local_compiler(tmp: Path, tool: str, version: str) -> list[str]:
    """pip-compile from this Python if it has pip-tools; uv if the one on PATH is the pinned version; otherwise the
    pinned version installed into a temporary virtual environment."""
    if tool == "uv":
        found = shutil.which("uv")
        answer = subprocess.run([found, "--version"], capture_output=True, text=True).stdout if found else ""
        if answer.split()[1:2] == [version]:
            return [found, "pip", "compile"]
    else:
        try:
            import piptools  # noqa: F401

            return [sys.executable, "-m", "piptools", "compile"]
        except ImportError:
            pass
    log(f"installing {tool}=={version} into a temporary virtual environment")
    venv.create(tmp / "venv", with_pip=True)
    python = str(tmp / "venv" / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", f"{tool}=={version}"], check=True)
    if tool == "uv":
        return [str(tmp / "venv" / "bin" / "uv"), "pip", "compile"]
    return [python, "-m", "piptools", "compile"]


def lock_locally(project: Path, out: Path, tool: str, version: str, upgrade: bool) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "project"
        shutil.copytree(project / "requirements", work / "requirements")
        try:
            compile_locks(work, local_compiler(Path(tmp), tool, version), upgrade, tool)
            for name in locks(work):
                shutil.copyfile(work / "requirements" / f"{name}.txt", out / f"{name}.txt")
        except (OSError, subprocess.CalledProcessError) as error:
            log(f"local {tool} compile failed: {error}")
            return False
    return True


def install_locks(staged: Path, req_dir: Path) -> None:
    """Replace the locks only once all were produced: never leave a half-updated set."""
    names = [name for name in LOCKS if name in ("train", "serve") or name in locks(req_dir.parent)]
    for name in names:
        if not (staged / f"{name}.txt").is_file():
            raise FileNotFoundError(f"{name}.txt was not produced")
    for name in names:
        shutil.copyfile(staged / f"{name}.txt", req_dir / f"{name}.txt")


def instructions(python: str, local: bool) -> str:
    """What to do next; `local`: this machine could compile without an engine (it tried, and said why it failed)."""
    also = "; or fix what the local compile said above" if local else ""
    return (
        "lock: requirements/train.txt and requirements/serve.txt were NOT written.\n"
        "      The project is complete otherwise; to lock, start Docker (or Podman: ENGINE=podman) and run\n"
        f"      `make lock` (it compiles inside the python:{python} image{also}).\n"
        "      Private index? Export PIP_INDEX_URL / PIP_EXTRA_INDEX_URL first; they reach the build as a secret."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", nargs="?", choices=["lock", "compile"], default="lock")
    parser.add_argument("--engine", choices=["auto", "docker", "local"], default="auto")
    parser.add_argument("--upgrade", action="store_true", help="move every pin to the newest allowed version")
    parser.add_argument("--strict", action="store_true", help="exit 1 when no lock could be made")
    parser.add_argument("--check", action="store_true", help="exit 1 naming each lock stale against its inputs")
    parser.add_argument("--report", action="store_true",
                        help="with --check: say which locks are stale and why, or that none are; exit 0 (make update)")
    args = parser.parse_args(argv)
    project = Path.cwd()

    if args.action == "compile":  # inside the Dockerfile's lock stage (LOCK_TOOL comes from its ARG)
        tool = os.environ.get("LOCK_TOOL", "pip-tools")
        for name in locks(project):  # a merged lock's pins for this platform are the starting point
            path = project / "requirements" / f"{name}.txt"
            if path.is_file():
                path.write_text(platform_view(path.read_text(), platform.machine()))
        compiler = ["uv", "pip", "compile"] if tool == "uv" else ["pip-compile"]
        compile_locks(project, compiler, upgrade=os.environ.get("LOCK_UPGRADE") == "1", tool=tool)
        return 0

    if not (project / "requirements" / "train.in").is_file():
        log("run me from the project root (requirements/train.in not found)")
        return 2
    if args.check:
        problems = check_locks(project)
        if args.report:  # after `make update`: the update is done either way, this says whether to lock
            print("update: make lock needed:" if problems else "update: every lock is up to date with its inputs "
                  "(no make lock needed)")
            for line in problems:
                print(f"  {line}")
            return 0
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    versions = dockerfile_args(project)
    python, tool = versions["PYTHON_VERSION"], versions.get("LOCK_TOOL", "pip-tools")
    try:
        platforms = lock_platforms(project)
    except LockError as error:
        log(str(error))
        return 1 if args.strict else 0  # a copy never fails because of locking
    version = versions.get("LOCK_TOOL_VERSION") or versions["PIP_TOOLS_VERSION"]  # the latter: older Dockerfiles

    with tempfile.TemporaryDirectory() as staging:
        staged = Path(staging)
        done = False
        if args.engine in ("auto", "docker"):
            if engine_answers():
                try:
                    done = lock_with_docker(project, staged, args.upgrade, platforms)
                except LockError as error:
                    log(str(error))
                    return 1 if args.strict else 0  # the copy task: the project is complete without its locks
            else:
                log(f"no {'Docker' if ENGINE == 'docker' else ENGINE} engine answers")
        local_python = f"{sys.version_info.major}.{sys.version_info.minor}"
        local = False
        if not done and args.engine in ("auto", "local"):
            if platforms and platforms != [host_platform()]:
                log(f"no local fallback: the locks are for {' and '.join(platforms)}, compiled in each one's image; "
                    "this needs a container engine")
            elif sys.platform.startswith("linux") and local_python == python:
                log(f"compiling with a local {'uv' if tool == 'uv' else 'pip-compile'} (Linux, Python {local_python})")
                local = True
                done = lock_locally(project, staged, tool, version, args.upgrade)
            else:
                log(f"no local fallback: this is {sys.platform} with Python {local_python}, the images use {python}")
        if done:
            install_locks(staged, project / "requirements")
            for name in locks(project):
                stamp_lock(project, name)
            log("wrote " + " and ".join(f"requirements/{name}.txt" for name in locks(project)))
            return 0
    print(instructions(python, local), file=sys.stderr)
    return 1 if args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
