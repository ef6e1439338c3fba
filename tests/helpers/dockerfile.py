"""A small Dockerfile reader for the static checks: instructions grouped by stage.

A stage's base is read as a build for one pair of architectures sees it (the image's, and the one pip installs on:
the Dockerfile's INSTALL_ARCH, by default the build machine's):
`FROM ${TARGETARCH:-amd64}-on-${INSTALL_ARCH:-...}-serve-venv` resolves to the stage that name picks, through the
empty stages that only name another (the `pick` macro's)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path


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


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)
    platform: str = ""  # FROM --platform=...

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def index(self, keyword: str, contains: str) -> int:
        for n, instruction in enumerate(self.instructions):
            if instruction.keyword == keyword and contains in instruction.args:
                return n
        raise AssertionError(f"stage {self.name}: no {keyword} containing {contains!r}")


@dataclass
class Dockerfile:
    text: str
    global_args: dict[str, str]
    stages: dict[str, Stage]

    @classmethod
    def read(cls, path: Path, target: str = "amd64", builder: str | None = None) -> Dockerfile:
        """The stages of a build of a `target` image (an architecture: amd64, arm64) on a `builder` (default: the
        same)."""
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
                current = stages[match.group(3)] = Stage(match.group(2), match.group(3), platform=match.group(1) or "")
            elif current is None:
                assert keyword == "ARG", f"{keyword} before the first FROM"
                name, _, default = args.partition("=")
                global_args[name] = default
            else:
                current.instructions.append(Instruction(keyword, args.strip()))
        arches = {"TARGETARCH": target, "INSTALL_ARCH": builder or target}
        for stage in stages.values():  # ${INSTALL_ARCH:-${TARGETARCH:-amd64}}, then ${TARGETARCH:-amd64}
            stage.base = re.sub(r"\$\{(INSTALL_ARCH)(:-\$\{[^}]*\})?\}", lambda m: arches[m.group(1)], stage.base)
            stage.base = re.sub(r"\$\{(TARGETARCH)(:-[^}]*)?\}", lambda m: arches[m.group(1)], stage.base)
        for stage in stages.values():
            while stage.base in stages and not stages[stage.base].instructions:
                stage.base = stages[stage.base].base
        return cls(text, global_args, stages)

    def chain(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        result = []
        while name in self.stages:
            stage = self.stages[name]
            result.append(stage)
            name = stage.base
        return result
