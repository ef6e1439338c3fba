"""The stamp on each lock's first lines (what it was compiled from: the Dockerfile's Python, builder image, lock tool
and platforms, and the sha256 of each .in file with its -r/-c includes), and `--check`, which recomputes it offline
and names each input that changed. Stamps from before (one sha256 of everything) are still read."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from lock_files import UNCONSTRAINED, locks

STAMP = "# lock-inputs: "  # `key=value` of each input, on the lock's first lines
FIELD = re.compile(r"(?<!\S)([^\s=]+)=(\S+)")
# the single-hash stamp of 0.2.0 to 0.3.0 and after: `sha256=<hex> (python X, <image>[ (<platforms>)], <tool>; ...)`
LEGACY = re.compile(r"^# lock-inputs: sha256=([0-9a-f]{64})"
                    r"(?: \(python (\S+), ([^\s,]+)(?: \(([^)]*)\))?, ([^\s;]+);)?")
# what every lock depends on besides its .in files, as a stale lock names it
ENVIRONMENT = {"python": "the Python", "image": "the builder image", "tool": "the lock tool",
               "platforms": "the platforms"}


def dockerfile_args(project: Path) -> dict[str, str]:
    """ARG defaults of the Dockerfile: the single place the Python, the lock tool and its version are written."""
    text = (project / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG\s+([A-Z_]+)=(\S+)", text, flags=re.MULTILINE))


def lock_inputs(project: Path, name: str) -> list[Path]:
    """The .in files a lock is compiled from: <name>.in and its -r/-c includes, recursively; serve and dev are
    constrained by train.txt, so train's inputs are theirs too (not mlflow's: lock_files.UNCONSTRAINED)."""
    seen: list[Path] = []
    first = [name] if name in UNCONSTRAINED else [name, "train"]
    pending = [(project / "requirements" / f"{n}.in").resolve() for n in dict.fromkeys(first)]
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
    """The environment, then each .in file's sha256 (16 hex digits: enough to tell which file changed)."""
    files = input_files(project, name)
    return {**lock_environment(project),
            **{label: "sha256:" + hashlib.sha256(data).hexdigest()[:16] for label, data in files.items()}}


def inputs_digest(project: Path, name: str) -> str:
    """The sha256 of everything together: the single-hash stamp of before, still read by the check."""
    env = lock_environment(project)
    digest = hashlib.sha256("".join(f"{key}={env[key]}\n" for key in ENVIRONMENT if key in env).encode())
    for label, data in input_files(project, name).items():
        digest.update(f"{label}\n".encode() + data)
    return digest.hexdigest()


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
        if legacy.group(1) == inputs_digest(project, name):
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
    """One line per lock that does not match its inputs, saying which changed (empty: all up to date)."""
    return [problem for name in locks(project) if (problem := lock_problem(project, name))]
