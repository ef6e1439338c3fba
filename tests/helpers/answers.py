"""The template's questions as copier.yml states them: the loaded file, the offered values, and what the validators
say about a set of answers. The validators are evaluated (with Copier's default Jinja extensions), never restated:
one rule, one place."""

from __future__ import annotations

import functools
import itertools
import json
import re
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
    from helpers.lock_scripts import lock_engine  # imports this module: not at the top

    return str(lock_engine.host_platform())


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
# Copier renders copier.yml's templates in a sandbox with these extensions, loading includes from the template's
# root (copier/_main.py: Worker.jinja_env)
JINJA = jinja2.sandbox.SandboxedEnvironment(extensions=["jinja2_ansible_filters.AnsibleCoreFiltersExtension"],
                                            loader=jinja2.FileSystemLoader(REPO))
RULES = (REPO / "includes" / "rules.jinja").read_text()


def offered(question: str, context: dict[str, Any]) -> dict[Any, str]:
    """A choice question's values as Copier offers them after these answers: value -> why it is disabled ('')."""
    spec = QUESTIONS[question]["choices"]
    if isinstance(spec, str):  # rendered by includes/rules.jinja: [[label, {value, validator}], ...]
        spec = _parsed(_render(spec, context))
    pairs = spec.items() if isinstance(spec, dict) else [c if isinstance(c, list) else (c, c) for c in spec]
    return {(v["value"] if isinstance(v, dict) else v): (v.get("validator", "") if isinstance(v, dict) else "")
            for _, v in pairs}


@functools.lru_cache(maxsize=None)
def _parsed(text: str) -> Any:
    """Rendered choices: JSON (which Copier reads as YAML), parsed once per distinct text."""
    return json.loads(text)


def choices(question: str) -> list[Any]:
    """The values a choice or boolean question offers, read from copier.yml."""
    spec = QUESTIONS[question]
    if spec.get("type") == "bool":
        return [False, True]
    values = list(offered(question, DATA))
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


def _frozen(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return tuple(map(_frozen, value)) if isinstance(value, list) else value


def _render(source: Any, context: dict[str, Any]) -> Any:
    if not (isinstance(source, str) and "{" in source):
        return source
    # the answers in the context are what varies (the data entries never change): one rendering per distinct answers,
    # as the pairwise sets ask the same few thousand times (the rules' import makes each rendering slow)
    key = (source, tuple((k, _frozen(v)) for k, v in context.items() if k not in DATA))
    if key not in _RENDERED:
        _RENDERED[key] = _template(source).render(**context)
    return _RENDERED[key]


_RENDERED: dict[tuple, str] = {}


def asked(question: str, context: dict[str, Any]) -> bool:
    """Whether Copier asks `question` given the answers so far (its `when`)."""
    when = QUESTIONS[question].get("when", True)
    return _cast({"type": "bool"}, _render(when, context)) if isinstance(when, str) else bool(when)


def complete(answers: dict[str, Any]) -> dict[str, Any]:
    """Every asked question's answer, in copier.yml's order: the given ones, else the (rendered) defaults.
    A question that is not asked has no entry, but for a yes/no question, which then still has its answer: the one
    the answers above fix (gpu on nvidia/cuda, or for scikit-learn), or the one given with -d (Copier checks it)."""
    answers = {**DEFAULT_ANSWERS, **answers}
    context: dict[str, Any] = {**DATA}
    for name, spec in QUESTIONS.items():
        if not asked(name, context) and spec.get("type") != "bool":
            continue
        context[name] = answers[name] if name in answers else _cast(spec, _render(spec.get("default"), context))
        if spec.get("multiselect") and isinstance(context[name], str):  # a selection as choices() names it
            text = context[name]
            context[name] = yaml.safe_load(text) if text.startswith("[") else text.split(",")
    return {name: context[name] for name in QUESTIONS if name in context}


def refusals(answers: dict[str, Any]) -> dict[str, str]:
    """What Copier says about these answers (completed with the defaults), in its words: {question: the last line
    of its error} for a disabled choice or a validator's message; empty when Copier accepts them."""
    final = complete(answers)
    context: dict[str, Any] = {**DATA}
    said = {}
    for name, spec in QUESTIONS.items():
        if name not in final:
            continue
        if "choices" in spec:
            why = offered(name, context)
            picked = final[name] if spec.get("multiselect") else [final[name]]
            disabled = [why[value] for value in picked if why.get(value)]
            if disabled:
                said[name] = f"Invalid choice for '{name}': {disabled[0]}"
        context[name] = final[name]
        if name not in said and spec.get("validator"):
            message = _render(spec["validator"], context).strip()
            if message:
                said[name] = f"Validation error for question '{name}': {message}"
    return said


def _rule_sources(question: str) -> list[str]:
    """The branches of includes/rules.jinja's refusal macro about `question` (condition and message)."""
    branches = re.split(r"\{%-? *(?:el)?if ", RULES.split("macro choices")[0])[1:]
    return [b for b in branches if f"question == '{question}'" in b]


def referenced(question: str) -> set[str]:
    """The questions that `question`'s validator, choices and `when` read (the ones its answer is checked
    against), the rules of includes/rules.jinja included."""
    spec = QUESTIONS[question]
    found: set[str] = set()
    for source in (spec.get("validator"), spec.get("when"), spec.get("choices")):
        if isinstance(source, str):
            found |= jinja2.meta.find_undeclared_variables(JINJA.parse(source))
            if "rules." in source:
                for branch in _rule_sources(question):
                    found |= set(re.findall(r"[a-z_]+", branch))
                    if "fw" in branch or "gpu_route" in branch:  # the macro's names for the framework's data
                        found.add("framework")
    return found & set(QUESTIONS)
