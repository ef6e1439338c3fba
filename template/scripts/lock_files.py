"""The lock files: which ones a project has, their text read as entries, several platforms' locks merged into one,
and a merged lock as one platform sees it. Also what every lock module shares (LockError, log). Standard library
only, like every scripts/lock*.py."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

# Order matters: train first; the others are compiled with `-c train.txt`, so a package they share with training
# has the training version (the model is served, and explored, with the library that trained it). The MLflow
# server's lock (tracking=mlflow) and the model signer's (model_signing: /opt/sign in the train image) are
# resolutions of their own: they run no model, and share no venv with it.
LOCKS = ("train", "serve", "dev", "mlflow", "sign")  # dev.in, mlflow.in, sign.in: in projects with those parts
UNCONSTRAINED = ("train", "mlflow", "sign")
# what `uname -m` says inside each platform's images: the value of the locks' platform_machine markers
MACHINES = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
MARKER = re.compile(r"""^\s*platform_machine\s*==\s*["']([\w-]+)["']\s*$""")


class LockError(Exception):
    """A lock that cannot be made as asked: the message is one line that says what to do."""


def log(msg: str) -> None:
    print(f"lock: {msg}", file=sys.stderr, flush=True)


def locks(root: Path) -> list[str]:
    """The locks this project has: one per requirements/<name>.in."""
    return [name for name in LOCKS if (root / "requirements" / f"{name}.in").is_file()]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """A lock as its sections: [(heading lines, [entry lines])]. The first heading is the file's header; pip-compile's
    later sections (packages "considered to be unsafe", "excluded from the output") start at a top-level comment
    after a blank line. An entry is its requirement line and the indented lines below (hashes, `# via`)."""
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


def merge_locks(per_platform: dict[str, str], lock: str, hashes: Callable[[str, str], list[str]] | None) -> str:
    """One lock from each platform's, in the order given (PLATFORMS'): shared pins once, the rest once per platform
    group, marked. Each pin's hashes are `hashes(name, version)`: every file of that version on the indexes (the
    compiles resolve only). A pin without hashes fails: pip would refuse the lock."""
    platforms = list(per_platform)
    if len(platforms) == 1:
        return per_platform[platforms[0]]
    assert hashes is not None
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
