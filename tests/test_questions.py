"""Promise: every question has help text and a sane default; a bad answer is refused with one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers.answers import DEFAULT_ANSWERS, QUESTIONS, REPO, refusals
from helpers.combos import REFUSED_COMBOS, Combo
from helpers.render import copier_cli, render

PUBLIC_QUESTIONS = [
    "project_name", "package_name", "description", "author_name", "author_email",
    "python_version", "framework", "base_image", "tracking", "model_source", "serve_port", "torch_index_url",
    "model_uri", "model_sha256", "model_signing", "log_predictions",
    "gpu", "cuda_version", "cuda_flavor", "gpu_count", "gpu_device_ids", "shm_size",
    "serve_runtime", "platforms", "dev_environment", "lock_tool", "ci", "kubernetes",
    "base_model", "base_model_revision", "text_labels", "max_seq_length",
]


def test_public_questions_exist_with_help() -> None:
    for name in PUBLIC_QUESTIONS:
        assert name in QUESTIONS, name
        assert QUESTIONS[name].get("help"), f"{name} has no help text"
    assert set(QUESTIONS) == set(PUBLIC_QUESTIONS), "a new question must be added to the public list and README"


def test_documented_defaults() -> None:
    assert QUESTIONS["python_version"]["default"] == "3.13"
    assert set(QUESTIONS["python_version"]["choices"].values()) == {"3.11", "3.12", "3.13"}
    assert QUESTIONS["framework"]["default"] == "sklearn"
    assert QUESTIONS["base_image"]["default"] == "slim"
    assert QUESTIONS["model_source"]["default"] == "baked"
    assert QUESTIONS["serve_port"]["default"] == 8000


def test_readme_documents_every_question() -> None:
    readme = (REPO / "README.md").read_text()
    for name in PUBLIC_QUESTIONS:
        assert f"`{name}`" in readme, name


@pytest.mark.parametrize(
    ("project_name", "package_name"),
    [("Iris Classifier", "iris_classifier"), ("  My-Model 2!", "my_model_2"), ("3D Vision", "d_vision")],
)
def test_package_name_is_derived_from_project_name(tmp_path: Path, project_name: str, package_name: str) -> None:
    render(tmp_path, {"project_name": project_name})
    answers = yaml.safe_load((tmp_path / ".copier-answers.yml").read_text())
    assert answers["package_name"] == package_name
    assert (tmp_path / "src" / package_name / "serve.py").is_file()


BAD_ANSWERS = [
    ("project_name", "   "),
    ("package_name", "class"),
    ("package_name", "match"),
    ("package_name", "json"),
    ("package_name", "numpy"),
    ("package_name", "sklearn"),
    ("package_name", "torch"),  # a library the images install: PYTHONPATH=/app/src would shadow it
    ("package_name", "prometheus_client"),
    ("package_name", "9lives"),
    ("package_name", "My-Pkg"),
    ("package_name", "_private"),
    ("author_email", "not-an-email"),
    ("python_version", "3.10"),
    ("python_version", "3.14"),
    ("framework", "caffe"),
    ("base_image", "alpine"),
    ("model_source", "s3-bucket"),
    ("serve_port", "80"),
    ("serve_port", "65536"),
    ("serve_port", "abc"),
    ("serve_port", "8000.5"),
    ("serve_runtime", "tflite"),
    ("lock_tool", "poetry"),
    ("ci", "jenkins"),
]


BAD_ANSWERS += [
    ("torch_index_url", ""),  # framework=pytorch cannot work without it
    ("torch_index_url", "ftp://mirror.example.org/whl"),
    ("torch_index_url", "https://mirror.example.org/whl/"),
    ("torch_index_url", "https://download.pytorch.org/whl/cpu"),  # what pytorch.org shows: the images add /cpu
    ("torch_index_url", "https://download.pytorch.org/whl/cu126"),
    ("model_uri", "s3://bucket/model.tar.gz"),
    ("model_uri", "models/model.tar.gz"),
    ("model_sha256", "abc123"),
]
BAD_ANSWERS += [
    ("gpu_count", "0"),
    ("gpu_count", "some"),
    ("gpu_device_ids", "first,second"),
    ("shm_size", "lots"),
    ("cuda_version", "12.8"),  # no PyTorch wheels for it
    ("cuda_version", "11.8"),
]
GPU_RENDER = {"framework": "pytorch", "gpu": "true", "torch_index_url": "https://torch.example.org/whl"}
NEEDS = {"torch_index_url": {"framework": "pytorch"}, "model_uri": {"model_source": "downloaded"},
         "model_sha256": {"model_source": "downloaded"},
         **{q: GPU_RENDER for q in ("gpu_count", "gpu_device_ids", "shm_size", "cuda_version")}}


@pytest.mark.parametrize(("folder", "package"), [("my-model", "my_model"), ("Fraud Detector v2", "fraud_detector_v2")])
def test_defaults_alone_render_a_project_named_after_its_folder(tmp_path: Path, folder: str, package: str) -> None:
    """`copier copy --trust --defaults <template> my-model`, with no -d at all, as the README's quick start says."""
    result = copier_cli("copy", "--trust", "--defaults", "--skip-tasks", "--vcs-ref", "HEAD", str(REPO), folder,
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    answers = yaml.safe_load((tmp_path / folder / ".copier-answers.yml").read_text())
    assert (answers["project_name"], answers["package_name"]) == (folder, package)
    assert (tmp_path / folder / "src" / package / "serve.py").is_file()


def test_pytorch_defaults_to_the_public_wheel_index(tmp_path: Path) -> None:
    """--defaults -d framework=pytorch renders: the index pytorch.org's install selector shows is the default."""
    result = copier_cli("copy", "--trust", "--defaults", "--skip-tasks", "--vcs-ref", "HEAD", "-d", "framework=pytorch",
                        str(REPO), "torch-model", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    project = tmp_path / "torch-model"
    assert yaml.safe_load((project / ".copier-answers.yml").read_text())["torch_index_url"] == QUESTIONS[
        "torch_index_url"]["default"] == "https://download.pytorch.org/whl"
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in (project / "requirements/serve.in").read_text()


def test_gpu_count_and_device_ids_exclude_each_other(tmp_path: Path) -> None:
    data = {**DEFAULT_ANSWERS, **GPU_RENDER, "gpu_count": "2", "gpu_device_ids": "0,1"}
    args = [arg for key, val in data.items() for arg in ("-d", f"{key}={val}")]
    result = copier_cli("copy", "--trust", "--defaults", "--skip-tasks", "--vcs-ref", "HEAD", *args, str(REPO),
                        str(tmp_path / "out"))
    assert result.returncode != 0
    assert "'gpu_device_ids'" in result.stderr.strip().splitlines()[-1] and "exclude" in result.stderr


@pytest.mark.parametrize(("question", "value"), BAD_ANSWERS, ids=[f"{q}={v!r}" for q, v in BAD_ANSWERS])
def test_bad_answer_is_refused_naming_the_question(tmp_path: Path, question: str, value: str) -> None:
    data = {**DEFAULT_ANSWERS, **NEEDS.get(question, {}), question: value}
    args = [arg for key, val in data.items() for arg in ("-d", f"{key}={val}")]
    dst = tmp_path / "out"
    result = copier_cli("copy", "--trust", "--defaults", "--skip-tasks", "--vcs-ref", "HEAD", *args, str(REPO), str(dst))
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert f"'{question}'" in last_line, result.stderr[-2000:]
    assert not dst.exists() or not any(dst.iterdir()), "a refused answer must not leave a half-rendered project"


@pytest.mark.skipif(not REFUSED_COMBOS, reason="every combination of the offered answers is compatible today")
@pytest.mark.parametrize("combo", REFUSED_COMBOS or [None], ids=lambda c: c.id if c else "none")
def test_incompatible_combination_is_refused(tmp_path: Path, combo: Combo) -> None:
    args = [arg for key, val in combo.answers.items() for arg in ("-d", f"{key}={val}")]
    result = copier_cli("copy", "--trust", "--defaults", "--skip-tasks", "--vcs-ref", "HEAD", *args, str(REPO),
                        str(tmp_path / "out"))
    assert result.returncode != 0
    # Copier says the first refusal, in copier.yml's order: the one the suite's evaluation of the validators finds
    message = next(iter(refusals(combo.answers).values()))
    assert message in result.stderr.strip().splitlines()[-1], result.stderr[-2000:]


def test_valid_unusual_answers_render(tmp_path: Path) -> None:
    render(tmp_path, {
        "project_name": 'Quote "Model" Ünïcode',
        "package_name": "quote_model",
        "description": 'Says "hi"',
        "author_name": "Ada O'Neil",
        "author_email": "ada@example.org",
        "serve_port": 9123,
    })
    assert "EXPOSE 9123" in (tmp_path / "Dockerfile").read_text()
    answers = yaml.safe_load((tmp_path / ".copier-answers.yml").read_text())
    assert answers["serve_port"] == 9123
