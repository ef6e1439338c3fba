"""The template's questions as copier.yml states them: the loaded file, the offered values, and what the validators
say about a set of answers. The validators are evaluated (with Copier's default Jinja extensions), never restated:
one rule, one place."""

from __future__ import annotations

import functools
import importlib.util
import itertools
from pathlib import Path
from typing import Any

import jinja2.meta
import jinja2.sandbox
import yaml

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ANSWERS = {"project_name": "Iris Classifier"}


def host_platform() -> str:
    """This machine's platform as the `platforms` answer names it (linux/amd64, linux/arm64): scripts/lock.py's own
    reading, which a render that locks for this machine only must match."""
    spec = importlib.util.spec_from_file_location("lock_for_host", REPO / "hooks" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.host_platform())


def _load_copier_yml() -> dict[str, Any]:
    """copier.yml with its `!include` documents merged, as Copier reads it."""

    class Loader(yaml.SafeLoader):
        pass

    def include(loader: yaml.Loader, node: yaml.Node) -> list[Any]:
        docs: list[Any] = []
        for path in sorted(REPO.glob(str(loader.construct_scalar(node)))):
            docs.extend(yaml.load_all(path.read_text(), Loader=Loader))
        return docs

    Loader.add_constructor("!include", include)
    merged: dict[str, Any] = {}
    for doc in yaml.load_all((REPO / "copier.yml").read_text(), Loader=Loader):
        for part in doc if isinstance(doc, list) else [doc]:
            merged.update(part or {})
    return merged


CONFIG = _load_copier_yml()
QUESTIONS = {k: v for k, v in CONFIG.items() if not k.startswith("_") and v.get("when") is not False}
MATRIX = CONFIG["matrix"]["default"]
# never-asked data entries (the matrix, the reserved names): the validators read them as variables
DATA = {k: v["default"] for k, v in CONFIG.items()
        if not k.startswith("_") and v.get("when") is False and not isinstance(v.get("default"), str)}
# Copier renders copier.yml's templates in a sandbox with these extensions (copier/_main.py: Worker.jinja_env)
JINJA = jinja2.sandbox.SandboxedEnvironment(extensions=["jinja2_ansible_filters.AnsibleCoreFiltersExtension"])


def choices(question: str) -> list[Any]:
    """The values a choice or boolean question offers, read from copier.yml."""
    spec = QUESTIONS[question]
    if spec.get("type") == "bool":
        return [False, True]
    offered = spec.get("choices", {})
    values = list(offered.values()) if isinstance(offered, dict) else list(offered)
    if spec.get("multiselect"):  # every non-empty selection, comma-joined in the choices' order, the largest first
        return [",".join(chosen) for size in range(len(values), 0, -1)
                for chosen in itertools.combinations(values, size)]
    return values


# The questions whose every value the covering sets combine: those with choices, and the booleans
CHOICE_QUESTIONS = [name for name, spec in QUESTIONS.items() if "choices" in spec or spec.get("type") == "bool"]


@functools.lru_cache(maxsize=None)
def _template(source: str) -> jinja2.Template:
    return JINJA.from_string(source)


def _cast(spec: dict[str, Any], value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if spec.get("type") == "bool":
        return value.strip().lower() in ("true", "yes", "1", "on")
    if spec.get("type") == "yaml":
        return yaml.safe_load(value)
    return value


def _render(source: Any, context: dict[str, Any]) -> Any:
    return _template(source).render(**context) if isinstance(source, str) and "{" in source else source


def asked(question: str, context: dict[str, Any]) -> bool:
    """Whether Copier asks `question` given the answers so far (its `when`)."""
    when = QUESTIONS[question].get("when", True)
    return _cast({"type": "bool"}, _render(when, context)) if isinstance(when, str) else bool(when)


def complete(answers: dict[str, Any]) -> dict[str, Any]:
    """Every asked question's answer, in copier.yml's order: the given ones, else the (rendered) defaults.
    A question that is not asked has no entry."""
    answers = {**DEFAULT_ANSWERS, **answers}
    context: dict[str, Any] = {**DATA}
    for name, spec in QUESTIONS.items():
        if not asked(name, context):
            continue
        context[name] = answers[name] if name in answers else _cast(spec, _render(spec.get("default"), context))
        if spec.get("multiselect") and isinstance(context[name], str):  # a selection as choices() names it
            context[name] = context[name].split(",")
    return {name: context[name] for name in QUESTIONS if name in context}


def refusals(answers: dict[str, Any]) -> dict[str, str]:
    """What the validators say about these answers (completed with the defaults): {question: message}, empty when
    Copier accepts them."""
    context = {**DATA, **complete(answers)}
    said = {}
    for name, spec in QUESTIONS.items():
        if name in context and spec.get("validator"):
            message = _render(spec["validator"], context).strip()
            if message:
                said[name] = message
    return said


def referenced(question: str) -> set[str]:
    """The questions that `question`'s validator and `when` read (the ones its answer is checked against)."""
    spec = QUESTIONS[question]
    found: set[str] = set()
    for source in (spec.get("validator"), spec.get("when")):
        if isinstance(source, str):
            found |= jinja2.meta.find_undeclared_variables(JINJA.parse(source))
    return found & set(QUESTIONS)
