"""Promise (static): framework=transformers asks its own questions and refuses a malformed answer in one line; its
render installs torch from PyTorch's CPU index, serves offline, takes the Hub token from a file at run time only
(never an ARG, ENV or label), keeps the Hub cache on a named volume, and refuses serve_runtime=onnx with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers.answers import DEFAULT_ANSWERS, QUESTIONS, REPO, refusals
from helpers.dockerfile import Dockerfile
from helpers.render import copier_cli, render

TEXT = {**DEFAULT_ANSWERS, "framework": "transformers", "python_version": "3.11"}
ASKED = ("base_model", "base_model_revision", "text_labels", "max_seq_length")


def test_text_questions_are_asked_for_transformers_only() -> None:
    for name in ASKED:
        assert "transformers" in QUESTIONS[name]["when"], name
    assert QUESTIONS["base_model_revision"]["default"] == "main"


@pytest.mark.parametrize(("question", "value"), [
    ("base_model", "not a model"), ("base_model", "owner/../etc"), ("base_model", "a--b/c"),
    ("base_model_revision", "v1..2"), ("base_model_revision", "-x"), ("base_model_revision", "main/"),
    ("text_labels", "only"), ("text_labels", "a,a"), ("text_labels", "a,,b"),
    ("max_seq_length", "4"), ("max_seq_length", "lots"),
    ("serve_runtime", "onnx"),
])
def test_a_malformed_answer_is_refused_in_one_line(tmp_path: Path, question: str, value: str) -> None:
    args = [a for k, v in {**TEXT, question: value}.items() for a in ("-d", f"{k}={v}")]
    result = copier_cli("copy", "--trust", "--defaults", "--skip-tasks", "--vcs-ref", "HEAD", *args, str(REPO),
                        str(tmp_path / "out"))
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert f"'{question}'" in last and question in last.split(":", 1)[1], result.stderr[-1500:]


def test_onnx_is_refused_with_the_reason() -> None:
    message = refusals({**TEXT, "serve_runtime": "onnx"})["serve_runtime"]
    assert "transformers" in message and "parity" in message and "serve_runtime=native" in message


@pytest.mark.parametrize("answers", [{"base_model": "./data/base"}, {"base_model": "bert-base-uncased"},
                                     {"base_model_revision": "0123456789abcdef0123456789abcdef01234567"},
                                     {"text_labels": "neg, neutral ,pos", "max_seq_length": 512}])
def test_good_answers_are_accepted(answers: dict) -> None:
    assert refusals({**TEXT, **answers}) == {}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("text") / "p", {**TEXT, "text_labels": "bad,good", "max_seq_length": 64})


def test_requirements_take_torch_from_pytorchs_cpu_index(project: Path) -> None:
    serve = (project / "requirements/serve.in").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in serve
    for name in ("torch>=", "transformers>=", "tokenizers>=", "safetensors>="):
        assert name in serve, name
    assert "pandas" not in serve and "scikit-learn" not in serve  # training only


def test_answers_are_the_model_defaults(project: Path) -> None:
    model = (project / "src/iris_classifier/model.py").read_text()
    assert '"TEXT_LABELS", "bad,good"' in model and '"MAX_SEQ_LENGTH", "64"' in model
    assert '"BASE_MODEL", "distilbert/distilbert-base-uncased"' in model and '"BASE_MODEL_REVISION", "main"' in model
    assert (project / "src/iris_classifier/demo_texts.csv").read_text().startswith("text,label\n")


def test_serve_is_offline_and_no_token_is_built_in(project: Path) -> None:
    dockerfile = Dockerfile.read(project / "Dockerfile")
    serve_env = " ".join(i.args for stage in dockerfile.chain("serve") for i in stage.all("ENV"))
    assert "HF_HUB_OFFLINE=1" in serve_env and "TRANSFORMERS_OFFLINE=1" in serve_env
    train_env = " ".join(i.args for stage in dockerfile.chain("train") for i in stage.all("ENV"))
    assert "HF_HOME=/app/var/hf" in train_env and "HF_HUB_OFFLINE" not in train_env
    for stage in dockerfile.stages.values():
        for instruction in stage.instructions:
            if instruction.keyword in ("ARG", "ENV", "LABEL"):
                assert "TOKEN" not in instruction.args.upper(), instruction
    assert not [name for name in dockerfile.global_args if "TOKEN" in name.upper()]


def test_compose_keeps_the_hub_cache_on_a_volume_and_the_token_in_a_secret(project: Path) -> None:
    compose = yaml.safe_load((project / "compose.yaml").read_text())
    train = compose["services"]["train"]
    assert "hf-cache:/app/var/hf" in [v.split("  ")[0] for v in train["volumes"]] and "hf-cache" in compose["volumes"]
    assert train["secrets"] == ["hf_token"] and train["environment"]["HF_TOKEN_PATH"] == "/run/secrets/hf_token"
    assert compose["secrets"]["hf_token"]["file"] == "${HF_TOKEN_FILE:-/dev/null}"
    assert "HF_TOKEN" not in str(compose["services"]["serve"])
