"""Promise: every command the project prints or documents works as written, in order, on a fresh copy: the post-copy
message and every shell command of the README and docs pages (fenced blocks, and inline commands with arguments), on
the pairwise renders. Statically: make targets and variables by `make -n` in the render, request bodies by the
render's own request schema, compose services by `docker compose config`, Dockerfile stages and build arguments,
`--trust` on copier commands that run tasks. And `make publish` writes a real bundle whatever the host's tar, and a
failing step inside a piped recipe fails make."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import copier
import pytest
import yaml
from helpers.answers import REPO
from helpers.combos import PAIRWISE_COMBOS, Combo

RenderCombo = Callable[[Combo], Path]

# Numeric renders train on scikit-learn's iris data unless DATA_PATH says otherwise (train.py, checked below): a
# documented row has its 4 features
DEMO_DATA, DEMO_FEATURES = "load_iris", 4
DIGEST = "sha256:" + "0" * 64
# placeholders a reader replaces, with what they stand for
PLACEHOLDERS = {"sha256:...": DIGEST, "<previous>": DIGEST}
SHELLS = {"bash", "sh", "shell"}
# commands whose first word these checks know; the rest (git, kubectl, nvidia-smi) are the reader's own tools
CHECKED = {"make", "copier", "docker", "podman", "podman-compose", "curl", "cd"}
# make targets that build the serve image: on a baked render they need a trained model (`make train` first)
BUILDS_SERVE = {"serve", "build", "build-serve", "push", "image-serve", "smoke", "release"}


@dataclass
class Command:
    where: str  # file and line, or "post-copy message"
    words: list[str]
    env: dict[str, str] = field(default_factory=dict)
    inline: bool = False  # written in a sentence: no order, no block around it

    def __str__(self) -> str:
        return f"{self.where}: {' '.join(shlex.quote(w) for w in [*(f'{k}={v}' for k, v in self.env.items()), *self.words])}"


@pytest.fixture(params=PAIRWISE_COMBOS, ids=lambda c: c.id)
def combo(request: pytest.FixtureRequest) -> Combo:
    return request.param


# ---- extraction -----------------------------------------------------------------------------------------------------

def commands_of(line: str, where: str, inline: bool = False) -> list[Command]:
    """The simple commands of one shell line (split at &&, ||, ;, |), each with its leading VAR=value assignments."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    found, words = [], []
    for token in [*lexer, ";"]:
        if token in (";", "&&", "||", "|", "&"):
            env = {}
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            if words:
                found.append(Command(where, words, env, inline))
            words = []
        else:
            words.append(token)
    return found


def shell_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    """(index, line) of a shell block, continuation lines joined, comment-only lines left out."""
    pending, start = "", 0
    for index, line in enumerate(lines):
        if not pending:
            start = index
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined, pending = pending + line, ""
        if joined.strip() and not joined.strip().startswith("#"):
            yield start, joined


def fenced_blocks(document: Path, project: Path) -> list[list[Command]]:
    """The shell blocks of a markdown file, each a list of commands in order."""
    blocks, lines, language, first = [], [], None, 0
    for number, line in enumerate(document.read_text().splitlines(), 1):
        opening = re.match(r"^```(\w*)\s*$", line)
        if language is None and opening:
            language, lines, first = opening.group(1), [], number + 1
        elif language is not None and line.startswith("```"):
            if language in SHELLS:
                name = document.relative_to(project)
                blocks.append([c for index, text in shell_lines(lines) for c in commands_of(text, f"{name}:{first + index}")])
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def inline_commands(document: Path, project: Path) -> list[Command]:
    """`make X VAR=...`, `copier update --trust ...`, `docker compose ...` and the like, written in sentences: the
    ones with arguments (a bare `make lint` in a table names a target, checked by test_docs.py)."""
    text = re.sub(r"^```.*?^```", "", document.read_text(), flags=re.MULTILINE | re.DOTALL)
    found = []
    for span in re.findall(r"`([^`]+)`", re.sub(r"\s*\n\s*", " ", text)):
        for placeholder, value in PLACEHOLDERS.items():
            span = span.replace(placeholder, value)
        if "<" in span or "..." in span or not re.match(r"([A-Z_]+=\S+ )*(make|copier|docker|podman|curl) \S+ ", span + " "):
            continue
        commands = commands_of(span, str(document.relative_to(project)), inline=True)
        if commands and commands[0].words[0] in ("make", "copier") and len(commands[0].words) < 3 and not commands[0].env:
            continue
        found += commands
    return found


@functools.cache
def post_copy_message(combo: Combo, dst: Path) -> str:
    """What `copier copy` prints at the end for these answers, into dst (rendered by Copier itself, nothing written)."""
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        copier.run_copy(str(REPO), dst, data=combo.answers, defaults=True, unsafe=True, vcs_ref="HEAD", skip_tasks=True,
                        quiet=False, pretend=True, overwrite=True)
    return printed.getvalue()


def message_commands(message: str) -> list[Command]:
    assert "Next steps:" in message, f"no 'Next steps:' in the post-copy message:\n{message}"
    steps = message.split("Next steps:", 1)[1].splitlines()
    return [c for _, text in shell_lines([s for s in steps if s.startswith("  ")])
            for c in commands_of(text, "post-copy message")]


# ---- the render's facts ---------------------------------------------------------------------------------------------

def answers(project: Path) -> dict:
    return yaml.safe_load((project / ".copier-answers.yml").read_text())


def makefiles(project: Path) -> str:
    return "\n".join(p.read_text() for p in [project / "Makefile", *sorted((project / "make").glob("*.mk"))])


def make_targets(project: Path) -> set[str]:
    return set(re.findall(r"^([a-z0-9][a-z0-9-]*):(?!=)", makefiles(project), flags=re.MULTILINE))


def dockerfile(project: Path) -> tuple[set[str], set[str]]:
    text = (project / "Dockerfile").read_text()
    stages = set(re.findall(r"^FROM\s.*\sAS\s+(\S+)", text, flags=re.MULTILINE | re.IGNORECASE))
    args = set(re.findall(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)", text, flags=re.MULTILINE))
    return stages, args


def make_dry_run(project: Path, command: Command) -> subprocess.CompletedProcess:
    env = {**os.environ, **command.env}
    if command.env.get("ENGINE") == "podman":  # podman.mk asks for podman-compose or Podman's socket: a stand-in
        env["PODMAN_SOCKET"] = str(project / "Makefile")
    return subprocess.run(["make", "-n", *command.words[1:]], cwd=project, env=env, capture_output=True, text=True,
                          timeout=60)


def compose_services(project: Path, flags: list[str]) -> dict[str, dict]:
    """The services `docker compose <flags>` sees: those of its -f files (compose.yaml by default), without a profile
    or in one of its --profile's (what `docker compose config --services` lists, read without the CLI: fast)."""
    files = [v for f, v in zip(flags, flags[1:]) if f in ("-f", "--file")] or ["compose.yaml"]
    profiles = {v for f, v in zip(flags, flags[1:]) if f == "--profile"}
    services: dict[str, dict] = {}
    for name in files:
        loaded = yaml.safe_load((project / name).read_text())
        included = [yaml.safe_load((project / path).read_text()) for path in loaded.get("include") or []]
        for document in [*included, loaded]:  # `include:` (compose.mlflow.yaml), short syntax, then the file itself
            for service, spec in (document.get("services") or {}).items():
                services[service] = {**services.get(service, {}), **(spec or {})}
    return {name: spec for name, spec in services.items() if not spec.get("profiles") or profiles & set(spec["profiles"])}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME:-default} and ${NAME}."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: env.get(m.group(1)) or m.group(2) or "", value)


VALIDATE = """
import importlib, json, sys
package, kind, bodies = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
schemas = importlib.import_module(package + ".serving.schemas")
model = schemas.text_request_model(64, 10000) if kind == "text" else schemas.request_model(64)
out = []
for body in bodies:
    try:
        out.append({"rows": [len(row) if isinstance(row, list) else row for row in model.model_validate_json(body).rows()]})
    except Exception as error:
        out.append({"error": str(error)})
print(json.dumps(out))
"""


@functools.cache
def validate(project: Path, package: str, kind: str, bodies: tuple[str, ...]) -> list[dict]:
    result = subprocess.run([sys.executable, "-c", VALIDATE, package, kind, json.dumps(bodies)], cwd=project,
                            env={**os.environ, "PYTHONPATH": str(project / "src")}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def validate_bodies(project: Path, bodies: list[str]) -> list[dict]:
    """Each /predict body through the render's own request schema: its rows (feature counts, or texts), or the error.
    serving/schemas.py is the same file in every render of a kind: checked once per process and kind."""
    package = next(p.name for p in (project / "src").iterdir() if (p / "__init__.py").is_file())
    kind = "text" if answers(project)["framework"] == "transformers" else "numbers"
    schemas = (project / "src" / package / "serving" / "schemas.py").read_text()
    return validate(SCHEMA_PROJECTS.setdefault((kind, schemas), project), package, kind, tuple(bodies))


SCHEMA_PROJECTS: dict[tuple[str, str], Path] = {}


# ---- the checks -----------------------------------------------------------------------------------------------------

class Checker:
    """Checks the commands of one render, block by block (a block: a fenced block, the message, or one sentence)."""

    def __init__(self, project: Path):
        self.project = project
        self.answers = answers(project)
        self.stages, self.args = dockerfile(project)
        self.makefiles = makefiles(project)
        self.targets = make_targets(project)
        self.bodies: list[tuple[Command, str]] = []
        self.checked = 0

    def block(self, commands: list[Command]) -> None:
        state = {"trained": False, "tags": {}}
        for command in commands:
            if command.words[0] not in CHECKED and not (command.words[0] == "docker" and len(command.words) > 1):
                continue
            getattr(self, command.words[0].replace("-", "_"))(command, state)
            self.checked += 1

    def cd(self, command: Command, state: dict) -> None:
        assert Path(command.words[1]) == self.project, f"{command}: the project is {self.project}"

    def make(self, command: Command, state: dict) -> None:
        args = command.words[1:]
        variables = {a.split("=", 1)[0] for a in args if "=" in a and not a.startswith("-")} | set(command.env)
        goals = [a for a in args if "=" not in a and not a.startswith("-")]
        for name in variables:
            assert re.search(rf"\$\({name}\)|^{name}\s*[?:]?=", self.makefiles, flags=re.MULTILINE), \
                f"{command}: the Makefile does not read {name}"
        for goal in goals:
            assert goal in self.targets, f"{command}: no target {goal!r}"
        result = make_dry_run(self.project, command)
        assert result.returncode == 0, f"{command}: make -n fails: {result.stderr.strip()[-800:]}"
        lines = result.stdout.splitlines()
        for script in re.findall(r"python3? (scripts/\S+\.py)", result.stdout):
            assert (self.project / script).is_file(), f"{command}: runs {script}, which this render does not have"
        if not command.inline and self.answers["model_source"] == "baked":
            if set(goals) & BUILDS_SERVE - {"release"}:
                assert state["trained"], f"{command}: builds the baked serve image before `make train` (no model yet)"
            state["trained"] |= "train" in goals
        for index, line in enumerate(lines):  # what is pushed was built (or named) by the same run
            pushed = re.match(r"^(docker|podman) push (\S+)$", line)
            if pushed:
                self.pushed_was_built(command, lines[:index], pushed.group(2))

    def pushed_was_built(self, command: Command, before: list[str], ref: str) -> None:
        name, _, tag = ref.rpartition(":")
        if any(re.search(rf"--target serve -t {re.escape(ref)}( |$)", line) for line in before):
            return
        assert any(re.search(r"compose( .*)? build serve$", line) for line in before), \
            f"{command}: pushes {ref}, which this make run does not build (`docker push` needs it locally)"
        image = interpolate(compose_services(self.project, [])["serve"]["image"], {"IMAGE": name, "TAG": tag})
        assert image == ref, f"{command}: compose builds {image}, make pushes {ref}"

    def copier(self, command: Command, state: dict) -> None:
        if command.words[1] in ("copy", "recopy", "update"):
            assert "--trust" in command.words or "--UNSAFE" in command.words, \
                f"{command}: the template runs tasks and migrations, which copier refuses without --trust (exit 4)"
            for index, word in enumerate(command.words):
                if word in ("-d", "--data"):
                    key, _, value = command.words[index + 1].partition("=")
                    assert key in self.answers, f"{command}: no question {key!r}"
                    if isinstance(self.answers[key], list):
                        assert isinstance(yaml.safe_load(value), list), f"{command}: {key} takes a YAML list"

    def docker(self, command: Command, state: dict) -> None:
        words = command.words[1:]
        if words[0] == "compose":
            return self.compose(command, words[1:], state)
        if words[0] == "build":
            return self.build(command, words[1:], state)
        if words[0] == "run":
            return self.run(command, words[1:], state)

    def podman(self, command: Command, state: dict) -> None:
        if command.words[1] == "build":
            self.build(command, command.words[2:], state)

    def podman_compose(self, command: Command, state: dict) -> None:
        self.compose(command, command.words[1:], state)

    def build(self, command: Command, words: list[str], state: dict) -> None:
        target = words[words.index("--target") + 1] if "--target" in words else None
        assert target is None or target in self.stages, f"{command}: the Dockerfile has no stage {target!r}"
        for index, word in enumerate(words):
            if word == "--build-arg":
                assert words[index + 1].split("=")[0] in self.args, f"{command}: the Dockerfile has no such ARG"
            if word == "-t" and target:
                state["tags"][words[index + 1]] = target
        if target == "serve" and self.answers["model_source"] == "baked" and not command.inline:
            assert state["trained"], f"{command}: builds the baked serve image before the model is trained"

    def run(self, command: Command, words: list[str], state: dict) -> None:
        if not state["tags"]:
            return  # an image of its own (nvidia-smi in a CUDA image), not one the block built
        images = [w for w in words if w in state["tags"]]
        assert images, f"{command}: runs none of the images this block built ({', '.join(state['tags'])})"
        target = state["tags"][images[0]]
        state["trained"] |= target == "train"
        joined = " ".join(words)
        if target == "serve" and self.answers["model_source"] == "mounted":
            assert ":/app/models" in joined, f"{command}: a mounted render's server needs the models folder mounted"
        if target == "serve" and self.answers["model_source"] == "downloaded":
            assert "--env-file" in words or "MODEL_URI" in joined, f"{command}: the server needs MODEL_URI"

    def compose(self, command: Command, words: list[str], state: dict) -> None:
        flags: list[str] = []
        while words and words[0].startswith("-"):
            flags += words[:2]
            words = words[2:]
        if not words:
            return  # `docker compose` named in a sentence
        subcommand, rest = words[0], words[1:]
        known = compose_services(self.project, flags)
        services = [w for w in rest if not w.startswith("-")]
        state["trained"] |= subcommand == "run" and services[:1] == ["train"]
        if subcommand in ("run", "up", "build", "restart", "logs", "down", "stop") and services:
            assert services[0] in known, f"{command}: no service {services[0]!r} with these flags (has: {', '.join(known)})"
        platform = command.env.get("DOCKER_DEFAULT_PLATFORM")
        if platform:
            assert platform in self.answers["platforms"], f"{command}: the images are not made for {platform}"

    def curl(self, command: Command, state: dict) -> None:
        url = next(w for w in command.words[1:] if re.match(r"(https?://)?(localhost|127\.0\.0\.1):", w))
        port = int(re.search(r":(\d+)", url).group(1))
        assert port == self.answers["serve_port"], f"{command}: the server listens on {self.answers['serve_port']}"
        if url.endswith("/predict"):
            self.bodies.append((command, command.words[command.words.index("-d") + 1]))

    def check_bodies(self) -> None:
        text = self.answers["framework"] == "transformers"
        results = validate_bodies(self.project, [body for _, body in self.bodies])
        for (command, body), result in zip(self.bodies, results):
            assert "error" not in result, f"{command}: the server answers 422: {result.get('error')}"
            if not text:
                assert set(result["rows"]) == {DEMO_FEATURES}, \
                    f"{command}: rows of {result['rows']} features; the demo model takes {DEMO_FEATURES}"


def test_every_documented_command_works_as_written(render_combo: RenderCombo, combo: Combo) -> None:
    project = render_combo(combo)
    assert DEMO_DATA in (REPO / "template/src/{{package_name}}/train.py").read_text(), \
        f"train.py no longer trains on {DEMO_DATA}: update DEMO_FEATURES"
    checker = Checker(project)
    for document in [project / "README.md", *sorted((project / "docs").glob("*.md"))]:
        for block in fenced_blocks(document, project):
            checker.block(block)
        for command in inline_commands(document, project):
            checker.block([command])
    checker.check_bodies()
    assert checker.bodies and checker.checked >= 20, "the extraction found next to nothing: is it broken?"


# The message reads the framework's input (texts or numbers) and the model source: one render of each pair there is
# (a copier run each: the pairwise renders' other answers do not change it)
MESSAGE_COMBOS = list({(c.framework == "transformers", c.model_source): c for c in PAIRWISE_COMBOS}.values())


@pytest.mark.parametrize("message_combo", MESSAGE_COMBOS, ids=lambda c: c.id)
def test_every_command_of_the_post_copy_message_works_as_written(render_combo: RenderCombo,
                                                                  message_combo: Combo) -> None:
    project = render_combo(message_combo)
    message = post_copy_message(message_combo, project)
    checker = Checker(project)
    commands = message_commands(message)
    checker.block(commands)
    checker.check_bodies()
    assert [c.words[:2] for c in commands if c.words[0] in ("cd", "curl")] == [["cd", str(project)], ["curl", "-s"]]
    said = {"baked": "baked in", "mounted": "mounted", "downloaded": "make publish", "registry": "make promote"}
    assert said[message_combo.model_source] in message
    assert all(said[other] not in message for other in said if other != message_combo.model_source), message


# ---- make publish and pipefail (one render: the Makefile is the same in all) -------------------------------------

@pytest.fixture
def default_project(render_combo: RenderCombo) -> Path:
    return render_combo(PAIRWISE_COMBOS[0])


def bsd_tools(folder: Path) -> str:
    """A PATH whose tar, gzip and sha256sum behave as macOS's do with GNU flags: unknown option, nothing written."""
    folder.mkdir()
    for tool in ("tar", "gzip", "sha256sum"):
        (folder / tool).write_text(f"#!/bin/sh\necho '{tool}: unrecognized option' >&2\nexit 1\n")
        (folder / tool).chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_publish_writes_a_real_reproducible_bundle_without_gnu_tools(default_project: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    subprocess.run(["cp", "-r", str(default_project), str(project)], check=True, timeout=120)
    models = project / "models"
    (models / "sub").mkdir(parents=True, exist_ok=True)
    (models / "metadata.json").write_text('{"framework": "demo"}\n')
    (models / "sub" / "weights.bin").write_bytes(os.urandom(4096))
    (models / ".gitkeep").touch()
    env = {**os.environ, "PATH": bsd_tools(tmp_path / "bin")}

    def publish() -> str:
        result = subprocess.run(["make", "publish"], cwd=project, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.split("MODEL_SHA256=")[1].split()[0]

    digest = publish()
    bundle = project / "dist/model.tar.gz"
    assert digest == hashlib.sha256(bundle.read_bytes()).hexdigest()
    with tarfile.open(bundle) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {".", "./metadata.json", "./sub", "./sub/weights.bin"}  # no .gitkeep
        assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members.values())
        assert tar.extractfile("./sub/weights.bin").read() == (models / "sub" / "weights.bin").read_bytes()
    os.utime(models / "metadata.json", (1, 1))  # a new mtime, the same model: the same bytes
    assert publish() == digest


def test_publish_without_a_model_fails_with_one_line(default_project: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    subprocess.run(["cp", "-r", str(default_project), str(project)], check=True, timeout=120)
    result = subprocess.run(["make", "publish"], cwd=project, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "run 'make train' first" in result.stderr
    assert not (project / "dist/model.tar.gz").exists()


def test_a_failing_step_in_a_piped_recipe_fails_make(default_project: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra.mk"
    extra.write_text("piped:\n\tfalse | cat\n\techo reached\nunset:\n\techo $$NO_SUCH_VARIABLE_HERE\n")
    for goal in ("piped", "unset"):
        result = subprocess.run(["make", "-f", "Makefile", "-f", str(extra), goal], cwd=default_project,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0, f"make {goal} passed: {result.stdout}"
        assert "reached" not in result.stdout
