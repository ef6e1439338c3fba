"""A small Dockerfile reader for the static checks: instructions grouped by stage.

A stage's base is read as a build with one value of the Dockerfile's VENV argument sees it (`native`, its default,
or `cross`: the renders of several platforms only): `FROM ${VENV}-train-venv AS train` is built FROM
`native-train-venv` or `cross-train-venv`. `reachable` follows FROM and COPY --from, as BuildKit does for a target."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

VENV_SCRIPT = "/tmp/venv.py"  # where every install stage puts scripts/venv.py (/lock/venv.py for the split)


@dataclass
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str] | None:
        """The JSON array of a CMD/ENTRYPOINT/HEALTHCHECK CMD, or None for shell form."""
        text = re.sub(r"^(--\S+\s+)*(CMD\s+)?", "", self.args) if self.keyword == "HEALTHCHECK" else self.args
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return value if isinstance(value, list) else None

    def copy_from(self) -> str | None:
        """The stage (or image) a COPY --from=... reads."""
        match = re.match(r"(?:--\S+\s+)*?--from=(\S+)", self.args) if self.keyword == "COPY" else None
        return match.group(1) if match else None

    def mounts(self) -> list[str]:
        """A RUN's --mount=... values."""
        return re.findall(r"--mount=(\S+)", self.args) if self.keyword == "RUN" else []

    def venv_calls(self) -> list[list[str]]:
        """Each `<python> .../venv.py ...` command of a RUN, as words (the python first)."""
        if self.keyword != "RUN":
            return []
        command = re.sub(r"^(--mount=\S+\s+)*", "", self.args)
        calls = []
        for part in re.split(r"\s*&&\s*", command):
            words = shlex.split(part)
            if len(words) > 1 and words[1].endswith("/venv.py"):
                calls.append(words)
        return calls


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)
    platform: str = ""  # FROM --platform=...
    written_base: str = ""  # the FROM as written (${VENV} unresolved)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def index(self, keyword: str, contains: str) -> int:
        for n, instruction in enumerate(self.instructions):
            if instruction.keyword == keyword and contains in instruction.args:
                return n
        raise AssertionError(f"stage {self.name}: no {keyword} containing {contains!r}")

    def venv_calls(self) -> list[list[str]]:
        return [call for run in self.all("RUN") for call in run.venv_calls()]


@dataclass
class Dockerfile:
    text: str
    global_args: dict[str, str]
    stages: dict[str, Stage]
    venv: str | None  # the VENV value the bases were read with; None where the Dockerfile has no VENV

    @classmethod
    def read(cls, path: Path, venv: str = "native") -> Dockerfile:
        """The stages of a build with `--build-arg VENV=<venv>` (a Dockerfile without VENV ignores it)."""
        assert venv in ("native", "cross"), venv
        text = path.read_text()
        logical: list[str] = []
        buffer = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not buffer and (not line or line.startswith("#")):
                continue
            if buffer and line.startswith("#"):
                continue
            if line.endswith("\\"):
                buffer += line[:-1] + " "
                continue
            logical.append(buffer + line)
            buffer = ""
        global_args: dict[str, str] = {}
        stages: dict[str, Stage] = {}
        current: Stage | None = None
        for line in logical:
            keyword, _, args = line.partition(" ")
            keyword = keyword.upper()
            if keyword == "FROM":
                match = re.match(r"(?:--platform=(\S+)\s+)?(\S+)\s+AS\s+(\S+)$", args.strip())
                assert match, f"unnamed stage: FROM {args}"
                assert match.group(3) not in stages, f"stage {match.group(3)} defined twice"
                current = stages[match.group(3)] = Stage(match.group(2), match.group(3), platform=match.group(1) or "",
                                                         written_base=match.group(2))
            elif current is None:
                assert keyword == "ARG", f"{keyword} before the first FROM"
                name, _, default = args.partition("=")
                global_args[name] = default
            else:
                current.instructions.append(Instruction(keyword, args.strip()))
        has_venv = "VENV" in global_args
        for stage in stages.values():
            if "${VENV}" in stage.base:
                assert has_venv, f"stage {stage.name}: FROM {stage.base} without a global ARG VENV"
                stage.base = stage.base.replace("${VENV}", venv)
        return cls(text, global_args, stages, venv if has_venv else None)

    @classmethod
    def each(cls, path: Path) -> list[Dockerfile]:
        """The Dockerfile as each VENV value builds it (one reading where it has no VENV)."""
        native = cls.read(path)
        return [native] if native.venv is None else [native, cls.read(path, venv="cross")]

    def chain(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        result = []
        while name in self.stages:
            stage = self.stages[name]
            result.append(stage)
            name = stage.base
        return result

    def reachable(self, *targets: str) -> set[str]:
        """The stages a build of these targets runs: their FROM chains and the stages they COPY --from."""
        seen: set[str] = set()
        todo = [t for t in targets if t in self.stages]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            stage = self.stages[name]
            todo += [n for n in (stage.base, *(i.copy_from() for i in stage.all("COPY"))) if n in self.stages]
        return seen

    def copies_into(self, name: str, destination: str) -> list[Instruction]:
        """The COPY instructions of a stage whose destination is `destination`."""
        return [i for i in self.stages[name].all("COPY") if i.args.split()[-1] == destination]
