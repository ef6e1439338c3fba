"""A small Dockerfile reader for the static checks: instructions grouped by stage."""

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
    def read(cls, path: Path) -> Dockerfile:
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
                match = re.match(r"(\S+)\s+AS\s+(\S+)$", args.strip())
                assert match, f"unnamed stage: FROM {args}"
                current = stages[match.group(2)] = Stage(match.group(1), match.group(2))
            elif current is None:
                assert keyword == "ARG", f"{keyword} before the first FROM"
                name, _, default = args.partition("=")
                global_args[name] = default
            else:
                current.instructions.append(Instruction(keyword, args.strip()))
        return cls(text, global_args, stages)

    def chain(self, name: str) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        result = []
        while name in self.stages:
            stage = self.stages[name]
            result.append(stage)
            name = stage.base
        return result
