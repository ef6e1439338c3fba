"""Size and repetition of a generated file (Dockerfile, compose.yaml, Makefile + make/*.mk): the figures issue 36
tracks, counted one way for tools/file_stats.py and the tests.

Lines are compared after stripping trailing whitespace (leading whitespace counts: an indented copy is not a copy).

A *content line* is a line that is neither blank nor only a comment marker (`#`, after stripping).

A *repeated block* is a maximal run of 2 or more consecutive content lines (a blank or marker-only line ends a run,
and so does the end of a file) whose exact sequence of lines occurs more than once among the files counted
together (a Makefile and its make/*.mk are one text for this: the lock recipe in Makefile and make/dev.mk is a
repeat). A line is *in a repeated block* when it is in such a run; since any repeated run of 2+ lines is made of
repeated pairs of adjacent content lines, and a repeated pair is itself a repeated run, this is exactly: the line
belongs to a pair of adjacent content lines (itself and its successor, or its predecessor and itself) that occurs
at least twice.

A line is a *2nd-or-later copy* when it belongs to such a pair whose same two lines also occur at an earlier
position (an earlier file, or earlier in the same file). For a block written three times, the first copy's lines
count as repeated but not as later copies; the second and third copies' lines count as both.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

FROM = re.compile(r"^\s*FROM\s", re.IGNORECASE)
LONG = 120  # the limit for the Makefile's lines


@dataclass(frozen=True)
class Stats:
    lines: int
    comment_lines: int  # first non-blank character is `#` (a `# syntax=` directive included)
    blank_lines: int
    repeated_lines: int  # lines in a repeated block (module docstring)
    repeated_copies: int  # of those, lines of a 2nd-or-later copy
    longest_line: int  # characters, trailing whitespace stripped
    long_lines: int  # lines over LONG characters
    stages: int  # FROM instructions (meaningful for a Dockerfile only)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and stripped != "#"


def repeated_lines(texts: list[str]) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(every (file, line) in a repeated block, the (file, line)s of 2nd-or-later copies), line indexes from 0."""
    where: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)  # pair of lines -> starts, in order
    for f, text in enumerate(texts):
        lines = [line.rstrip() for line in text.splitlines()]
        for i in range(len(lines) - 1):
            if is_content(lines[i]) and is_content(lines[i + 1]):
                where[(lines[i], lines[i + 1])].append((f, i))
    repeated: set[tuple[int, int]] = set()
    later: set[tuple[int, int]] = set()
    for starts in where.values():
        if len(starts) < 2:
            continue
        for n, (f, i) in enumerate(starts):
            repeated.update({(f, i), (f, i + 1)})
            if n:
                later.update({(f, i), (f, i + 1)})
    return repeated, later


def stats(texts: list[str]) -> Stats:
    """The figures of one file, or of several files read as one text (a Makefile and its make/*.mk)."""
    lines = [line.rstrip() for text in texts for line in text.splitlines()]
    repeated, later = repeated_lines(texts)
    return Stats(
        lines=len(lines),
        comment_lines=sum(line.lstrip().startswith("#") for line in lines),
        blank_lines=sum(not line.strip() for line in lines),
        repeated_lines=len(repeated),
        repeated_copies=len(later),
        longest_line=max((len(line) for line in lines), default=0),
        long_lines=sum(len(line) > LONG for line in lines),
        stages=sum(bool(FROM.match(line)) for line in lines),
    )


def makefiles(project: Path) -> list[Path]:
    """The Makefile and the make/*.mk it includes, in the order make reads them."""
    return [project / "Makefile", *sorted((project / "make").glob("*.mk"))]


def project_stats(project: Path) -> dict[str, Stats]:
    """{'Dockerfile': ..., 'compose.yaml': ..., 'Makefile': ... (with make/*.mk)} of a rendered project."""
    return {
        "Dockerfile": stats([(project / "Dockerfile").read_text()]),
        "compose.yaml": stats([(project / "compose.yaml").read_text()]),
        "Makefile": stats([path.read_text() for path in makefiles(project) if path.is_file()]),
    }
