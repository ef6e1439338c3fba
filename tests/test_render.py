"""Promise: every combination of answers renders a complete project whose files say what they should."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Callable

import pytest
import yaml

from helpers.dockerfile import Dockerfile
from helpers.answers import DATA, MATRIX, REPO, asked, complete
from helpers.combos import Combo, COMBOS, PLATFORM_COMBOS

RenderCombo = Callable[[Combo], Path]
STAGES = {"base", "lock-compile", "lock", "serve-lock", "train", "serve"}
VENV_SCRIPT = (REPO / "template/scripts/venv.py").read_text()


def expected_stages(combo: Combo, dev: bool) -> set[str]:
    """The stages a render holds, from the answers: the Dockerfile's shape decisions, made again here."""
    base = MATRIX["base_image"][combo.base_image]
    expected = STAGES | ({"model"} if combo.model_source == "baked" else set())
    if base.get("runtime_pip"):  # one runtime for both; train's own only for apt packages serve does without
        train_only_apt = combo.serve_runtime == "onnx" and MATRIX["framework"][combo.framework]["apt"]
        expected |= {"runtime"} | ({"train-runtime"} if train_only_apt else set())
    else:  # the serve image is another image than the builder
        expected |= {"train-runtime", "serve-runtime"}
    # several platforms on a builder with its own Python: each venv native or cross (tests/test_venv_install.py)
    if len(combo.platforms.split(",")) > 1 and not base.get("python_apt"):
        expected |= {"native-train-venv", "native-serve-venv", "cross-build", "cross-train-venv", "cross-serve-venv"}
        expected |= set() if base.get("runtime_pip") else {"serve-venv"}
    else:
        expected |= {"train-venv", "serve-venv"}
    return expected | ({"dev"} if dev else set()) | ({"sign-venv"} if combo.model_signing else set())


def package_dir(project: Path) -> Path:
    return next((project / "src").iterdir())


@pytest.fixture(params=COMBOS, ids=lambda c: c.id)
def combo(request: pytest.FixtureRequest) -> Combo:
    return request.param


def test_complete_project(render_combo: RenderCombo, combo: Combo) -> None:
    project = render_combo(combo)
    for name in ["Dockerfile", ".dockerignore", "compose.yaml", ".env.example", ".gitignore", "Makefile", "README.md",
                 "pyproject.toml", ".copier-answers.yml", "requirements/train.in", "requirements/serve.in",
                 "scripts/lock.py", "models/.gitkeep", "data/.gitkeep", "tests/conftest.py"]:
        assert (project / name).is_file(), name
    package = package_dir(project)
    for module in ["__init__", "config", "model", "train", "serve", "healthcheck", "artifacts", "_cpu"]:
        assert (package / f"{module}.py").is_file(), module
    assert not (project / "frameworks").exists(), "template-only folder leaked into the project"
    lock_modules = {path.name: path.read_text() for path in (REPO / "template/scripts").glob("lock*.py")}
    assert {path.name: path.read_text() for path in (project / "scripts").glob("lock*.py")} == lock_modules


def test_no_unrendered_jinja_and_python_compiles(render_combo: RenderCombo, combo: Combo) -> None:
    project = render_combo(combo)
    for path in project.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text()
        if path.name in ("Makefile", "checks.mk"):  # docker's own Go template, kept raw on purpose
            text = re.sub(r"{{(index \.RepoDigests 0|\.State\.\w+)}}", "", text)
        if ".github" in path.parts:  # GitHub Actions' own expressions
            text = re.sub(r"\$\{\{[^}]*\}\}", "", text)
        assert not re.search(r"{{ ?[\w_]|{%|%}", text), f"unrendered Jinja in {path.relative_to(project)}"
        if path.suffix == ".py":
            compile(text, str(path), "exec")


def test_answers_file_records_every_answer(render_combo: RenderCombo, combo: Combo) -> None:
    answers = yaml.safe_load((render_combo(combo) / ".copier-answers.yml").read_text())
    assert answers["_src_path"] and answers["_commit"]
    context = {**DATA, **complete(combo.answers)}
    for key, value in combo.answers.items():
        if asked(key, context):
            assert answers[key] == value
        else:  # fixed by the answers before it (gpu on nvidia/cuda, for scikit-learn): recomputed on each update
            assert key not in answers, key
    assert "matrix" not in answers and "runtime_image" not in answers, "computed values must not be stored"


def test_dockerfile_stages_and_runtime_rules(render_combo: RenderCombo, combo: Combo) -> None:
    root = render_combo(combo)
    answers = yaml.safe_load((root / ".copier-answers.yml").read_text())
    base = MATRIX["base_image"][combo.base_image]
    one_image = bool(base.get("runtime_pip"))  # the serve image is the builder's (it has pip): venvs installed in place
    # the serve user's writable folders: the download cache, the prediction log
    state = [d for d, wanted in (("cache", combo.model_source in ("downloaded", "registry")),
                                 ("log", combo.log_predictions)) if wanted]
    for dockerfile in Dockerfile.each(root / "Dockerfile"):
        assert not re.search(r"^#\s*syntax=", dockerfile.text, re.MULTILINE)
        assert set(dockerfile.stages) == expected_stages(combo, answers["dev_environment"])
        cross = dockerfile.venv == "cross"
        prefix = f"{dockerfile.venv}-" if dockerfile.venv else ""
        assert dockerfile.global_args["PYTHON_VERSION"] == combo.python_version
        assert dockerfile.global_args["LOCK_TOOL"] == combo.lock_tool
        assert dockerfile.global_args["LOCK_TOOL_VERSION"] == MATRIX["tools"][combo.lock_tool.replace("-", "_")]
        assert dockerfile.stages["lock"].base == "scratch"
        # the labels that change with every build come from the build's --label, not from build arguments
        assert not {"VERSION", "REVISION", "CREATED", "SOURCE"} & set(dockerfile.global_args)
        assert not [i for st in dockerfile.stages.values() for i in st.all("ARG")
                    if re.match(r"(VERSION|REVISION|CREATED|SOURCE)\b", i.args)]
        # the train image runs on the builder: as the serve user where the template creates it, else as train_uid's
        for target, uid in (("train", base.get("train_uid", base["uid"])), ("serve", base["uid"])):
            chain = dockerfile.chain(target)
            instructions = [i for stage in reversed(chain) for i in stage.instructions]
            env = " ".join(i.args for i in instructions if i.keyword == "ENV")
            assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env, (target, env)
            assert "VIRTUAL_ENV=/opt/venv" in env and "PATH=/opt/venv/bin:$PATH" in env, (target, env)
            users = [i.args for i in instructions if i.keyword == "USER"]
            assert users and users[-1] == f"{uid}:{uid}" and uid != 0, users
            cmd = dockerfile.stages[target].all("CMD")
            assert len(cmd) == 1 and cmd[0].exec_form(), "CMD must be exec form"
            labels = " ".join(i.args for i in dockerfile.stages[target].all("LABEL"))
            keys = set(re.findall(r"org\.opencontainers\.image\.(\w+)=", labels))
            assert keys == {"title", "description"} | ({"authors"} if answers.get("author_name") else set()), keys
            # only the venv and the code reach the runtime: no COPY of the whole context
            copies = [i.args for i in dockerfile.stages[target].all("COPY")]
            assert not any(re.match(r"^\.\s", c) for c in copies), copies
        serve = dockerfile.stages["serve"]
        # the train target always runs on the builder image (it has a shell); serve on the chosen base
        assert dockerfile.chain("train")[-1].base == "${BUILDER_IMAGE}"
        assert dockerfile.chain("serve")[-1].base == ("${BUILDER_IMAGE}" if one_image else "${RUNTIME_IMAGE}")
        assert ("RUNTIME_IMAGE" in dockerfile.global_args) == (not one_image)
        debian = MATRIX["python"][combo.python_version]["debian"]
        if one_image:  # the one image is both: the matrix says so
            assert base["runtime"] == base["builder"]
            runtime = base["runtime"].format(python=combo.python_version, debian=debian)
            assert dockerfile.global_args["BUILDER_IMAGE"] == runtime
        elif combo.base_image != "nvidia-cuda":  # its tag depends on the CUDA answers: see test_gpu_static.py
            runtime = base["runtime"].format(python=combo.python_version, debian=debian)
            assert dockerfile.global_args["RUNTIME_IMAGE"].replace("${PYTHON_VERSION}", combo.python_version) == runtime
        # each venv is installed in the stage its image grows from (Buildah digests a copied venv on every build); only a
        # runtime image without pip, or an install for another architecture, gets its venv copied
        train_runtime = "train-runtime" if "train-runtime" in dockerfile.stages else "runtime"
        train_venv = dockerfile.stages["train"].base
        assert train_venv == f"{prefix}train-venv" and dockerfile.stages[train_venv].base == train_runtime
        serve_venv = f"{prefix}serve-venv"
        if one_image:
            assert serve.base == serve_venv and dockerfile.stages[serve_venv].base == "runtime"
            assert not [i for i in serve.all("COPY") if "/opt/venv" in i.args]
        else:
            assert serve.base == "serve-runtime"
            # the venv's two parts, made on the builder, copied in two layers before the code
            parts = [i.args for i in dockerfile.copies_into("serve", "/opt/venv")]
            assert parts == ["--from=serve-venv /opt/serve-1 /opt/venv", "--from=serve-venv /opt/serve-2 /opt/venv"]
            assert serve.index("COPY", "/opt/serve-2") < serve.index("COPY", "src/")
            if dockerfile.venv:  # an empty stage: the one VENV picks
                assert dockerfile.stages["serve-venv"].base == serve_venv
                assert not dockerfile.stages["serve-venv"].instructions
            if not cross:  # installed on the builder, for the serve image's interpreter
                assert dockerfile.stages[serve_venv].base == "base"
        if cross:  # the cross venvs: made on the build machine, copied onto the runtime
            assert dockerfile.stages["cross-build"].platform == "$BUILDPLATFORM"
            assert [i.args for i in dockerfile.copies_into("cross-train-venv", "/opt/venv")] == [
                "--from=cross-build /opt/train /opt/venv"]
            if one_image:
                assert [i.args for i in dockerfile.copies_into("cross-serve-venv", "/opt/venv")] == [
                    "--from=cross-build /opt/serve-1 /opt/venv", "--from=cross-build /opt/serve-2 /opt/venv"]
            else:
                assert dockerfile.stages["cross-serve-venv"].base == "cross-build"
        if not base["shell"]:
            assert not [i for st in dockerfile.chain("serve") for i in st.all("RUN")]
            assert serve.all("ENTRYPOINT")[0].args == "[]", "the distroless python ENTRYPOINT must be reset"
        health = serve.all("HEALTHCHECK")
        assert len(health) == 1 and health[0].exec_form(), "HEALTHCHECK must be exec form (no shell needed)"
        assert serve.all("EXPOSE")[0].args == str(combo.answers.get("serve_port", 8000))
        # the venvs come from the hashed locks only (scripts/venv.py installs with --require-hashes --no-deps), before
        # the code: a code change rebuilds only the last layers
        python_path = base["python_path"].format(python=combo.python_version)
        built = dockerfile.reachable("train", "serve", "dev")  # what a build of the images with this VENV runs
        install_stages = [s for s in dockerfile.stages.values()
                          if s.venv_calls() and s.name != "serve-lock" and s.name in built]
        assert {s.name for s in install_stages} == (
            {"cross-build"} if cross else {train_venv, serve_venv}) | ({"dev"} if answers["dev_environment"] else set()) \
            | ({"sign-venv"} if combo.model_signing else set())
        for stage in install_stages:
            for run in stage.all("RUN"):
                if not run.venv_calls():
                    continue
                assert "type=cache,id=/root/.cache/pip,target=/var/cache" in run.mounts(), run.args
                assert "type=secret,id=pipconf" in run.mounts(), run.args
                for call in run.venv_calls():
                    lock = Path(call[2]).name
                    assert call[1] == "/tmp/venv.py" and lock in ("train.txt", "dev.txt", "sign.txt", "1.txt",
                                                                  "2.txt"), call
                    # the lock comes in by a COPY before the install: a change of the lock redoes it, not of the code
                    assert stage.index("COPY", lock) < stage.instructions.index(run), (stage.name, lock)
                    # the serve venv points at the serve image's interpreter: the one that runs venv.py, or --python
                    if lock in ("1.txt", "2.txt"):
                        python = call[call.index("--python") + 1] if "--python" in call else call[0]
                        assert python == python_path and "--prune" in call, call
        assert re.search(r'"install", "--require-hashes",\s+"--no-deps"', VENV_SCRIPT)  # scripts/venv.py's one pip install
        copies = " ".join(i.args for i in serve.all("COPY"))
        # the code last (after the labels, which change on every commit): a code change redoes one step
        for target in ("train", "serve"):
            last = dockerfile.stages[target].instructions[-1]
            assert last.keyword == "COPY" and last.args == "src/ /app/src/", last
            assert dockerfile.stages[target].index("LABEL", "org.opencontainers.image.title") < len(
                dockerfile.stages[target].instructions) - 1
        if combo.model_source == "baked":
            # the model, checked in its own stage (beside the installs: a missing model fails at once), before the labels
            assert serve.index("COPY", "--from=model /models/ /app/models/") < serve.index(
                "LABEL", "org.opencontainers.image.title")
            assert "models/metadata.json" in dockerfile.stages["model"].all("RUN")[0].args
        else:
            assert "models" not in copies, "only a baked image holds a model"
        if state and base["shell"]:  # made with the serve user, owned by it
            user = dockerfile.stages["runtime" if one_image else "serve-runtime"].all("RUN")[-1].args
            assert "useradd" in user and all(f"/app/var/{d}" in user.split("chown", 1)[-1] for d in state), user
        elif state:
            # no shell in the serve image to make them: made beside the serve lock's split, copied in as the serve user's
            assert f"--from=serve-lock --chown={base['uid']}:{base['uid']} /lock/var/ /app/var/" in copies, \
                "the download cache must be writable by the serve user"
            assert all(f"/lock/var/{d}" in dockerfile.stages["serve-lock"].all("RUN")[0].args for d in state)


def test_dockerignore_is_ml_aware(render_combo: RenderCombo, combo: Combo) -> None:
    lines = {
        line.strip()
        for line in (render_combo(combo) / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for pattern in [".git", "**/__pycache__", ".venv", "**/*.ipynb", "notebooks", "data", "mlruns", "wandb",
                    "checkpoints", ".env", "tests", ".ci", ".github"]:
        assert pattern in lines, pattern
    for needed in ["src", "requirements", "scripts", "scripts/lock.py", "scripts/lock*.py"]:
        assert needed not in lines
    assert ("models" in lines) == (combo.model_source != "baked")


def test_compose_file(render_combo: RenderCombo, combo: Combo) -> None:
    project = render_combo(combo)
    compose = yaml.safe_load((project / "compose.yaml").read_text())
    assert "version" not in compose
    serve, train = compose["services"]["serve"], compose["services"]["train"]
    assert serve["build"]["target"] == "serve" and train["build"]["target"] == "train"
    assert "healthcheck" not in serve, "the serve image's HEALTHCHECK is the one: a copy here would drift from it"
    assert serve["restart"] == "unless-stopped"
    assert any(str(p).endswith(f":{combo.answers.get('serve_port', 8000)}") for p in serve["ports"])
    assert train["profiles"] == ["train"]
    assert "./models:/app/models" in train["volumes"]
    # every service hardened the same way, by one anchor (yaml.safe_load resolves the merge keys as compose does)
    for name, service in compose["services"].items():
        assert service["env_file"] == [{"path": ".env", "required": False}], name
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"] and service["cap_drop"] == ["ALL"], name
        assert service["security_opt"] == ["no-new-privileges:true"], name
        build = service["build"]
        # the labels that change on every commit are passed by the build (make sets them); the Dockerfile's are static
        assert build["labels"] == {f"org.opencontainers.image.{key}": value for key, value in (
            ("version", "${VERSION:-0.0.0}"), ("revision", "${REVISION:-unknown}"), ("created", "${CREATED:-unknown}"),
            ("source", "${SOURCE:-}"))}, name
        assert build["args"] == {"VENV": "${VENV:-native}"} and build["secrets"] == ["pipconf"], name
    text = (project / "compose.yaml").read_text()
    assert text.count("read_only:") == 1 and text.count("env_file:") == 1, "the hardening is written once"
    if combo.gpu:
        assert "<<: [*gpu, *hardened]" in text



def test_make_installs_another_architectures_venv_cross_under_docker_only(render_combo: RenderCombo) -> None:
    """PLATFORM of another architecture than this machine's: Docker builds it with VENV=cross (no emulation), Podman
    natively; every build outside compose passes the same labels (compose.yaml's x-build passes them there)."""
    project = render_combo(PLATFORM_COMBOS[0])
    here = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}[platform.machine()]
    other = {"amd64": "arm64", "arm64": "amd64"}[here]

    def image_train(*args: str) -> str:
        result = subprocess.run(["make", "-n", "--no-print-directory", "image-train", "REVISION=abc", *args],
                                cwd=project, capture_output=True, text=True, timeout=60,
                                env={k: v for k, v in os.environ.items() if k not in ("VENV", "ENGINE", "PLATFORM")})
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()[-1]

    assert "--build-arg VENV=cross" in image_train("ENGINE=docker", f"PLATFORM=linux/{other}")
    for args in (("ENGINE=docker",), ("ENGINE=docker", f"PLATFORM=linux/{here}"),
                 ("ENGINE=podman", f"PLATFORM=linux/{other}")):
        line = image_train(*args)
        assert "VENV=" not in line and "--label org.opencontainers.image.revision=abc" in line, args
    assert image_train("ENGINE=podman").startswith("podman build --format docker ")

def test_env_example_names_only_real_settings(render_combo: RenderCombo, combo: Combo) -> None:
    project = render_combo(combo)
    config = (package_dir(project) / "config.py").read_text()
    compose = "".join(p.read_text() for p in [project / "compose.yaml", *project.glob("compose.*.yaml"),
                                              *(project / "make").glob("*.mk")])  # and what make reads
    code = "".join(p.read_text() for p in package_dir(project).rglob("*.py"))
    for line in (project / ".env.example").read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]+)=", line)
        if match:
            name = match.group(1)
            assert (re.search(rf"^\s+{name.lower()}: ", config, re.MULTILINE) or f"${{{name}" in compose
                    or f'"{name}"' in code), f"{name} in .env.example is read by nothing"


def test_requirements_split_serve_from_train(render_combo: RenderCombo, combo: Combo) -> None:
    project = render_combo(combo)
    serve = (project / "requirements/serve.in").read_text()
    train = (project / "requirements/train.in").read_text()
    assert "-r serve.in" in train.splitlines()
    for training_only in ("pytest", "pandas", "httpx"):
        assert training_only not in serve
    spec = MATRIX["framework"][combo.framework]
    if combo.serve_runtime == "onnx":  # tests/test_onnx.py checks the framework is not there
        spec = spec["onnx"]
    wanted = spec["gpu"]["serve"] if combo.gpu and "serve" in spec["gpu"] else spec["serve"]
    if isinstance(wanted, dict):  # per CUDA major; the default CUDA release is the framework's newest
        wanted = wanted[MATRIX["cuda"][combo.cuda_version or spec["gpu"]["cuda"][-1]]["major"]]
    for requirement in wanted:
        assert requirement in serve.splitlines()


def test_generated_docs_explain_the_chosen_model_source(render_combo: RenderCombo, combo: Combo) -> None:
    project = render_combo(combo)
    page = (project / "docs/model-sources.md").read_text()
    assert page.startswith(f"# Rolling out a model ({combo.model_source})\n")
    needed = {"baked": "make train", "mounted": "/app/models:ro", "downloaded": "make publish",
              "registry": "make promote"}[combo.model_source]
    assert needed in page
    assert "(docs/model-sources.md)" in (project / "README.md").read_text()
    for name in ("README.md", "docs/model-sources.md"):  # tests/test_docs.py checks every page of the pairwise set
        assert not re.search(r"\S## ", (project / name).read_text()), f"{name}: a heading glued to the previous line"
