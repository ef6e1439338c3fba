#!/usr/bin/env python3
"""Length and repetition of the generated Dockerfile, compose.yaml and Makefile (+ make/*.mk) in the five renders
of issue 36, as Markdown tables (the before/after figures in BENCHMARKS.md).

    .venv/bin/python tools/file_stats.py                      # the working tree (uncommitted changes included)
    .venv/bin/python tools/file_stats.py --vcs-ref 891707a    # another commit of this template
    .venv/bin/python tools/file_stats.py --template PATH --vcs-ref REF --keep /tmp/renders --json

Each render is `copier copy --trust --defaults --skip-tasks --vcs-ref REF -d project_name=demo` plus its answers
(RENDERS below); nothing is built or locked. What the columns count (lines in a repeated block, 2nd-or-later copies,
comment lines) is defined once, in tests/helpers/file_stats.py's docstring, and the tests use the same function.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from helpers.file_stats import LONG, Stats, project_stats

# the five renders: name -> answers beside project_name=demo
RENDERS: dict[str, list[str]] = {
    "default": [],
    "amd64": ['platforms=["linux/amd64"]'],
    "distroless": ["base_image=distroless"],
    "cuda": ["framework=pytorch", "gpu=true", "base_image=nvidia-cuda", "python_version=3.12",
             'platforms=["linux/amd64"]'],
    "transformers": ["framework=transformers"],
}
FILES = ("Dockerfile", "compose.yaml", "Makefile")


def copier() -> str:
    here = Path(sys.executable).parent / "copier"
    found = str(here) if here.is_file() else shutil.which("copier")
    if not found:
        sys.exit("file_stats: no copier next to this Python or on PATH (use the dev venv: .venv/bin/python)")
    return found


def render(template: Path, ref: str, name: str, dst: Path) -> Path:
    args = [a for answer in ("project_name=demo", *RENDERS[name]) for a in ("-d", answer)]
    cmd = [copier(), "copy", "--trust", "--defaults", "--skip-tasks", "--quiet", "--vcs-ref", ref, *args, str(template),
           str(dst)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        sys.exit(f"file_stats: render {name} failed ({' '.join(cmd)}):\n{result.stderr[-3000:]}")
    return dst


def describe(template: Path, ref: str) -> str:
    """The commit measured, as `ref (sha)`, plus `+ uncommitted changes` where Copier includes them (ref HEAD)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", f"{ref}^{{commit}}"], cwd=template, capture_output=True,
                             text=True, timeout=60, check=True).stdout.strip()
        dirty = ref == "HEAD" and subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                                 cwd=template, capture_output=True, text=True, timeout=60,
                                                 check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return ref
    return f"{ref} ({sha}){' + uncommitted changes' if dirty else ''}" if sha != ref else sha


def table(name: str, figures: dict[str, Stats]) -> list[str]:
    stages = name == "Dockerfile"
    head = ["render", "lines", *(["stages"] if stages else []), "comment lines", "blank lines",
            "in repeated blocks (2nd+ copies)", "longest line", f"lines > {LONG}"]
    rows = [f"| {' | '.join(head)} |", "|---|" + "---:|" * (len(head) - 1)]
    for render_name, s in figures.items():
        cells = [render_name, s.lines, *([s.stages] if stages else []), s.comment_lines, s.blank_lines,
                 f"{s.repeated_lines} ({s.repeated_copies})", s.longest_line, s.long_lines]
        rows.append(f"| {' | '.join(map(str, cells))} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, default=REPO, help="a checkout of this template (default: this one)")
    parser.add_argument("--vcs-ref", default="HEAD",
                        help="the commit to render (default HEAD: Copier includes uncommitted changes)")
    parser.add_argument("--keep", type=Path, help="render into this folder and keep the renders")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args()
    template = args.template.resolve()

    with tempfile.TemporaryDirectory(prefix="file-stats-") as tmp:
        base = args.keep.resolve() if args.keep else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=len(RENDERS)) as pool:
            projects = dict(zip(RENDERS, pool.map(lambda n: render(template, args.vcs_ref, n, base / n), RENDERS)))
        figures = {name: project_stats(project) for name, project in projects.items()}

    if args.json:
        print(json.dumps({name: {f: s.as_dict() for f, s in files.items()} for name, files in figures.items()},
                         indent=2))
        return 0
    answers = "; ".join(f"{name}: {' '.join(extra) or '(none)'}" for name, extra in RENDERS.items())
    out = [(f"Template {describe(template, args.vcs_ref)}, rendered with `copier copy --trust --defaults "
            f"--skip-tasks -d project_name=demo` plus: {answers}."), ""]
    for file in FILES:
        label = "Makefile + make/*.mk" if file == "Makefile" else file
        out += [f"### {label}", "", *table(file, {name: files[file] for name, files in figures.items()}), ""]
    out.append("Repeated block: a maximal run of 2+ consecutive non-blank lines (lines that are only `#` excluded, "
                "trailing whitespace stripped) that occurs more than once in the file (Makefile and make/*.mk read "
                "together); 2nd+ copies: the lines of every occurrence after the first (tests/helpers/file_stats.py).")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
