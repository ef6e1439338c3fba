"""Promise: a generated project documents itself in a short README and one page per topic under docs/, only the
pages its answers call for, every link between them resolves, and no page shows a trace of its template."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.combos import PAIRWISE_COMBOS, Combo

RenderCombo = Callable[[Combo], Path]

ALWAYS = {"serving", "model-sources", "your-model", "configuration", "locks", "platforms", "images", "podman", "updating",
          "signing"}
README_MAX_LINES = 100
LINK = re.compile(r"(?<!!)\[[^\]]+\]\(([^)\s]+)\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...


@pytest.fixture(params=PAIRWISE_COMBOS, ids=lambda c: c.id)
def combo(request: pytest.FixtureRequest) -> Combo:
    return request.param


def expected_pages(combo: Combo) -> set[str]:
    optional = {"gpu": combo.gpu, "development": combo.dev_environment, "kubernetes": combo.kubernetes,
                "ci": combo.ci != "none", "onnx": combo.serve_runtime == "onnx",
                "text-models": combo.framework == "transformers", "registry": combo.tracking == "mlflow"}
    return ALWAYS | {page for page, wanted in optional.items() if wanted}


def documents(project: Path) -> list[Path]:
    return [project / "README.md", *sorted((project / "docs").glob("*.md"))]


def outside_code(text: str) -> list[str]:
    """The lines of a markdown text that are not inside a fenced code block."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file."""
    found = set()
    for line in outside_code(path.read_text()):
        heading = re.match(r"^#{1,6} (.+)$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            found.add(slug)
    return found


def test_docs_pages_follow_the_answers(render_combo: RenderCombo, combo: Combo) -> None:
    project = render_combo(combo)
    pages = {p.stem for p in (project / "docs").iterdir()}
    assert pages == expected_pages(combo)
    assert all(p.suffix == ".md" for p in (project / "docs").iterdir())


def test_every_relative_link_resolves(render_combo: RenderCombo, combo: Combo) -> None:
    project = render_combo(combo)
    checked = 0
    for document in documents(project):
        for target in LINK.findall("\n".join(outside_code(document.read_text()))):
            if EXTERNAL.match(target):
                continue
            path, _, fragment = target.partition("#")
            resolved = (document.parent / path).resolve() if path else document
            where = f"{document.relative_to(project)} links to {target}"
            assert resolved.is_file(), f"{where}, which this render does not have"
            assert project in resolved.parents, f"{where}, outside the project"
            if fragment:
                assert fragment in anchors(resolved), f"{where}: no such heading"
            checked += 1
    assert checked >= len(expected_pages(combo)), "the README must link every page"
    readme = (project / "README.md").read_text()
    for page in expected_pages(combo):
        assert f"(docs/{page}.md)" in readme, f"the README does not link docs/{page}.md"


def test_pages_render_without_artefacts(render_combo: RenderCombo, combo: Combo) -> None:
    project = render_combo(combo)
    for document in documents(project):
        name = str(document.relative_to(project))
        text = document.read_text()
        assert text.startswith("# "), f"{name}: a page starts with its title"
        assert text.endswith("\n") and not text.endswith("\n\n"), f"{name}: ends with one newline"
        assert "\n\n\n" not in text, f"{name}: two blank lines in a row (a branch left its newlines)"
        assert not re.search(r"{{|}}|{%|%}|{#|#}", text), f"{name}: unrendered Jinja"
        lines = text.splitlines()
        for number, line in enumerate(lines, 1):
            assert line == line.rstrip(), f"{name}:{number}: trailing whitespace"
        prose = outside_code(text)
        for index, line in enumerate(prose):
            assert not re.search(r"\S {2,}\S", line.lstrip()), f"{name}: double space in {line!r}"
            before = prose[index - 1] if index else ""
            if line.startswith("#") and index:
                assert before == "", f"{name}: the heading {line!r} is glued to the previous line"
            if re.match(r"([-*]|\d+\.) ", line):  # a list starts after a blank line, or continues a list
                assert before == "" or re.match(r"([-*]|\d+\.) |  ", before), \
                    f"{name}: the list item {line!r} is glued to the paragraph before it"
            if re.match(r"([-*]|\d+\.) |  ", before) and line:
                assert re.match(r"([-*]|\d+\.) |  ", line), \
                    f"{name}: {line!r} follows a list item without a blank line (it joins that item)"
        headings = [line for line in outside_code(text) if line.startswith("#")]
        assert len(headings) == len(set(headings)), f"{name}: a heading twice"
        tables = [line for line in outside_code(text) if line.startswith("|")]
        for line in tables:
            assert line.endswith("|"), f"{name}: a table row broken over lines: {line!r}"


def test_readme_is_short_and_lists_every_make_target(render_combo: RenderCombo, combo: Combo) -> None:
    project = render_combo(combo)
    readme = (project / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    help_text = subprocess.run(["make", "-C", str(project), "help"], capture_output=True, text=True,
                               check=True, timeout=600).stdout
    targets = set(re.findall(r"^  ([a-z][a-z0-9-]*) ", help_text, flags=re.MULTILINE))
    section = readme.split("## Make targets", 1)[1].split("\n## ", 1)[0]
    listed = {name for row in section.splitlines() if row.startswith("| `make ")
              for name in re.findall(r"`make ([a-z][a-z0-9-]*)`", row.split(" | ")[0])}
    assert listed == targets, f"README's make targets table: missing {targets - listed}, not targets {listed - targets}"
