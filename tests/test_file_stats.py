"""Promise: tools/file_stats.py's figures (issue 36's before/after table) count what its definition says, and the
tool runs on this template."""

from __future__ import annotations

import json
import sys

from helpers.answers import REPO
from helpers.engine import run
from helpers.file_stats import repeated_lines, stats


def test_a_block_written_twice_counts_both_copies_and_the_second_as_later() -> None:
    text = "FROM a AS one\nRUN x \\\n    && y\nUSER 1\n\nFROM b AS two\nRUN x \\\n    && y\nUSER 1\n"
    s = stats([text])
    assert (s.lines, s.stages, s.blank_lines) == (9, 2, 1)
    assert (s.repeated_lines, s.repeated_copies) == (6, 3)
    _, later = repeated_lines([text])
    assert later == {(0, 6), (0, 7), (0, 8)}


def test_single_lines_blank_and_marker_lines_break_blocks_and_trailing_space_is_ignored() -> None:
    # `WORKDIR /app` alone is repeated but not a block; a blank or a bare `#` line between two lines is no block
    text = "WORKDIR /app\nA\n\nB\n#\nC\nWORKDIR /app\nD\n\nB\n#\nC\nE  \nF\nE\nF\n"
    s = stats([text])
    assert (s.repeated_lines, s.repeated_copies) == (4, 2)  # only E F, written twice (once with trailing spaces)
    assert s.comment_lines == 2


def test_indentation_counts_and_a_block_three_times_has_two_later_copies() -> None:
    assert stats(["  a\n  b\na\nb\n"]).repeated_lines == 0
    s = stats(["a\nb\n\na\nb\n\na\nb\n"])
    assert (s.repeated_lines, s.repeated_copies) == (6, 4)


def test_files_read_together_share_blocks_but_no_block_spans_two_files() -> None:
    s = stats(["lock:\n\tpython3 scripts/lock.py --strict\n", "dev:\n\tpython3 scripts/lock.py --strict\nlock:\n"])
    assert (s.repeated_lines, s.repeated_copies) == (0, 0)  # "--strict" then "lock:" spans the end of file 1
    s = stats(["x\nlock:\n\tpython3 scripts/lock.py --strict\n", "lock:\n\tpython3 scripts/lock.py --strict\n"])
    assert (s.repeated_lines, s.repeated_copies) == (4, 2)
    assert s.longest_line == len("\tpython3 scripts/lock.py --strict")


def test_the_tool_renders_the_five_renders_and_counts_them() -> None:
    result = run([sys.executable, str(REPO / "tools/file_stats.py"), "--json"], timeout=600)
    figures = json.loads(result.stdout)
    assert list(figures) == ["default", "amd64", "distroless", "cuda", "transformers"]
    for name, files in figures.items():
        assert list(files) == ["Dockerfile", "compose.yaml", "Makefile"], name
        assert files["Dockerfile"]["stages"] >= 1 and files["Dockerfile"]["lines"] > 0, name
        for file, s in files.items():
            assert 0 <= s["repeated_copies"] <= s["repeated_lines"] <= s["lines"] - s["blank_lines"], (name, file)
