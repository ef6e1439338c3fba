"""Promise: the questionnaire, answered by a person at a terminal (the pinned Copier in a pseudo-terminal, keys as a
person presses them), ends in a project that passes the static checks, or refuses on the spot: a choice the earlier
answers rule out is shown disabled with its reason and cannot be picked, a yes/no question whose answer they fix is
not asked, a bad text answer is refused with the question still on screen, and nothing ever prints a traceback.

The paths are computed from copier.yml and the matrix (helpers.pairs.refused_pairs), not listed by hand: each choice
value that some earlier answer rules out is met disabled on one path, with the answers that rule it out."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pexpect
import pytest
import yaml
from helpers.answers import (
    DATA,
    QUESTIONS,
    REPO,
    _cast,
    _render,
    asked,
    offered,
    refusals,
)
from helpers.pairs import constrained_rows
from test_dockerfile_lint import hadolint_findings

BIN = Path(sys.executable).parent
DOWN, SPACE, ENTER, CLEAR = "\x1b[B", " ", "\r", "\x15"  # arrow down, space, return, Ctrl-U (clear the line)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def plain(text: str) -> str:
    return ANSI.sub("", text)


class Terminal:
    """`copier copy` of the working tree in a 400-column pseudo-terminal (long help lines stay on one line)."""

    def __init__(self, dst: Path):
        self.dst = dst
        self.child = pexpect.spawn(
            str(BIN / "copier"), ["copy", "--trust", "--skip-tasks", "--vcs-ref", "HEAD", str(REPO), str(dst)],
            # no cursor position request: pexpect is no terminal emulator to answer it (prompt_toolkit would wait)
            env={**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}, dimensions=(60, 400),
            encoding="utf-8", codec_errors="replace", timeout=60)
        self.seen = ""

    def wait_for(self, text: str) -> str:
        """Everything printed up to `text` (matched with the escapes taken out)."""
        pattern = r"(?:\x1b\[[0-9;?]*[A-Za-z]|\s)+".join(re.escape(word) for word in text.split())
        try:
            self.child.expect(pattern)
        except pexpect.TIMEOUT:
            raise AssertionError(f"not on screen: {text}\n--- screen:\n{plain(self.child.before)[-3000:]}") from None
        printed = plain(self.child.before + self.child.after)
        self.seen += printed
        return printed

    def keys(self, *keys: str) -> None:
        time.sleep(0.2)  # the prompt drawn and reading its input
        for key in keys:
            self.child.send(key)

    def finish(self) -> int:
        self.child.expect(pexpect.EOF, timeout=120)
        self.seen += plain(self.child.before)
        self.child.close()
        return self.child.exitstatus


def prompt_of(name: str, context: dict[str, Any]) -> str:
    """The start of the question's help as Copier prints it."""
    return " ".join(str(_render(QUESTIONS[name]["help"], context)).split())[:40]


def answer_all(term: Terminal, wanted: dict[str, Any], bad_text: dict[str, str] | None = None) -> dict[str, Any]:
    """Answer every question Copier asks: `wanted` where given, else the default (Enter). A choice question checks
    that every choice the answers so far rule out is on screen with its reason, and reaches its answer with arrow
    keys, which skip disabled choices. `bad_text`: a refused answer typed first, its refusal asserted on screen."""
    context: dict[str, Any] = {**DATA, "_copier_conf": {"dst_path": str(term.dst)}}
    asked_names = []
    for name, spec in QUESTIONS.items():
        default = _cast(spec, _render(spec.get("default"), context))
        if not asked(name, context):  # Copier takes the default, which the answers above fix
            context[name] = default
            continue
        asked_names.append(name)
        shown = term.wait_for(prompt_of(name, context))
        value = wanted.get(name, default)
        if "choices" in spec:
            why = offered(name, context)
            enabled = [v for v, reason in why.items() if not reason]
            for choice, reason in why.items():
                if reason:  # shown disabled, with the reason: wait for the whole list to be drawn
                    shown += term.wait_for(reason)
            if spec.get("multiselect"):
                chosen = value if isinstance(value, list) else yaml.safe_load(value)
                checked = default if isinstance(default, list) else yaml.safe_load(default)
                for position, choice in enumerate(enabled):  # the pointer starts on the first enabled choice
                    if (choice in chosen) != (choice in checked):
                        term.keys(SPACE)
                    if position < len(enabled) - 1:
                        term.keys(DOWN)
                term.keys(ENTER)
                context[name] = chosen
            else:
                assert value in enabled, f"{name}={value} is disabled: {why[value]}"
                steps = (enabled.index(value) - enabled.index(default)) % len(enabled)
                term.keys(*[DOWN] * steps, ENTER)
                context[name] = value
        elif spec.get("type") == "bool":
            term.keys("y" if value else "n")
            context[name] = value
        else:
            if bad_text and name in bad_text:
                # refused under the question (prompt_toolkit redraws only what changed in that line, so the
                # outcome is checked: the answer typed next lands in this question, not the next one)
                assert _render(spec["validator"], {**context, name: bad_text[name]}).strip()
                term.keys(CLEAR, bad_text[name], ENTER)
                term.wait_for(f"Validation error for question '{name}'")
            if name in wanted:
                term.keys(CLEAR, str(value), ENTER)
            else:
                term.keys(ENTER)
            context[name] = value
    return {"asked": asked_names, **{k: v for k, v in context.items() if k in QUESTIONS}}


def static_checks(project: Path) -> None:
    """What every render passes, as its user runs it: hadolint, compose config, ruff, and the pipeline's make -n."""
    assert hadolint_findings(project / "Dockerfile") == []
    ruff = subprocess.run([str(BIN / "ruff"), "check", "--quiet", "."], cwd=project, check=False,
                          capture_output=True, text=True, timeout=60)
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr
    if shutil.which("docker"):
        config = subprocess.run(["docker", "compose", "--profile", "train", "config", "--quiet"], cwd=project,
                                check=False, capture_output=True, text=True, timeout=60)
        assert config.returncode == 0, config.stderr
    dry = subprocess.run(["make", "-n", "build", "train", "serve", "test", "lint", "push", "digest", "publish"],
                         cwd=project, check=False, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr


def _paths() -> list[tuple[str, dict[str, Any], tuple[str, Any]]]:
    """One path per choice value that earlier answers rule out: (id, those answers, the disabled value), from the
    answers of the constrained questions that Copier refuses for that choice alone."""
    order = list(QUESTIONS)
    _, refused = constrained_rows()
    found: dict[tuple[str, Any], dict[str, Any]] = {}
    for row in sorted(refused, key=lambda r: sum(v is not None for v in r.values())):
        given = {k: v for k, v in row.items() if v is not None}
        said = refusals(given)
        question = next(iter(said))
        if len(said) != 1 or "choices" not in QUESTIONS[question]:
            continue  # refused for several reasons, or by a validator of a text or yes/no question
        earlier = {k: v for k, v in given.items() if order.index(k) < order.index(question)}
        found.setdefault((question, given[question]), earlier)
    return [(f"{q}={v}", given, (q, v)) for (q, v), given in sorted(found.items(), key=str)]


PATHS = _paths()


def test_every_disabled_choice_is_met_on_a_path() -> None:
    """The paths below meet each choice question's impossible values: if the matrix rules out more, they grow."""
    met = {value for _, _, value in PATHS}
    assert {q for q, _ in met} >= {"base_image", "cuda_version", "serve_runtime", "platforms"}, sorted(met, key=str)


def _merge(paths: list[tuple[str, dict[str, Any], tuple[str, Any]]]) -> list[dict[str, Any]]:
    """Paths whose earlier answers agree share one questionnaire (each costs a Copier run)."""
    merged: list[dict[str, Any]] = []
    for _, given, _ in paths:
        for answers in merged:
            if all(answers.get(k, v) == v for k, v in given.items()):
                answers.update(given)
                break
        else:
            merged.append(dict(given))
    return merged


# The GPU paths that crashed or built nothing before: TensorFlow's CUDA route (amd64 only: the platforms default
# follows), scikit-learn (no GPU question: a `y` crashed), PyTorch on nvidia/cuda (GPU implied, not asked; CUDA
# releases without its wheels disabled). They share questionnaires with the computed paths where they agree.
GPU_PATHS = [{"framework": "tensorflow", "gpu": True}, {"python_version": "3.12", "framework": "sklearn"},
             {"python_version": "3.12", "framework": "pytorch", "base_image": "nvidia-cuda"}]
# typed first wherever asked, each refused under its question: a library's name, and PyTorch's index with /cpu on it
BAD_TEXT = {"package_name": "torch", "torch_index_url": "https://download.pytorch.org/whl/cpu"}
GOOD_TEXT = {"package_name": "person_typed", "torch_index_url": "https://torch.example.org/whl"}


@pytest.mark.parametrize("given", _merge([*PATHS, *(("gpu", g, None) for g in GPU_PATHS)]),
                         ids=lambda g: "-".join(f"{k}={v}" for k, v in g.items()))
def test_a_person_at_a_terminal_ends_in_a_project_or_is_refused_on_the_spot(tmp_path: Path,
                                                                           given: dict[str, Any]) -> None:
    term = Terminal(tmp_path / "project")
    answered = answer_all(term, {"project_name": "Typed At A Terminal", **GOOD_TEXT, **given}, bad_text=BAD_TEXT)
    assert term.finish() == 0, term.seen[-3000:]
    assert "Traceback" not in term.seen, term.seen[-3000:]
    for _, path_given, (question, value) in PATHS:  # a disabled choice was never picked
        if all(given.get(k) == v for k, v in path_given.items()) and question in answered["asked"]:
            assert answered[question] != value
    answers = yaml.safe_load((tmp_path / "project" / ".copier-answers.yml").read_text())
    # the refused text answers were not taken: the good one typed next landed in the same question
    assert answers["package_name"] == GOOD_TEXT["package_name"]
    assert answers["description"] == QUESTIONS["description"]["default"]
    if "torch_index_url" in answered["asked"]:
        assert answers["torch_index_url"] == GOOD_TEXT["torch_index_url"]
        assert f"{GOOD_TEXT['torch_index_url']}/" in (tmp_path / "project" / "requirements" / "serve.in").read_text()
    if given["framework"] == "sklearn" or given.get("base_image") == "nvidia-cuda":
        assert "gpu" not in answered["asked"] and "gpu" not in answers  # fixed by the answers above: not asked
    if given.get("base_image") == "nvidia-cuda":
        assert "ARG BUILDER_IMAGE=nvidia/cuda:13.0" in (tmp_path / "project" / "Dockerfile").read_text()
    if given["framework"] == "tensorflow" and given.get("gpu"):
        assert answers["platforms"] == ["linux/amd64"]
    static_checks(tmp_path / "project")
