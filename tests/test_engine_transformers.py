"""Promise: framework=transformers locks, fine-tunes a Hub-layout encoder (a tiny one the tests make) and serves it
offline: texts in, labels and scores out, over /predict and V2 (tritonclient, BYTES); the model folder is verified
file by file before loading; read-only root, non-root; no CUDA library and no token anywhere in the images."""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers.answers import MATRIX
from helpers.builds import Built
from helpers.combos import TEXT_COMBOS
from helpers.engine import run

pytestmark = pytest.mark.engine
COMBO = TEXT_COMBOS[0]
TEXTS = ["a wonderful film", "the service was terrible and the meal was dull, honestly the worst trip",
         "great", "what a boring show " * 40]  # the last one is over MAX_SEQ_LENGTH tokens: truncated


@pytest.fixture(scope="module")
def built(built_project) -> Built:
    return built_project(COMBO)


@pytest.fixture(scope="module")
def server(built, serve_container):
    uid = MATRIX["base_image"][COMBO.base_image]["uid"]
    with serve_container(COMBO, "--read-only", "--tmpfs", f"/tmp:uid={uid},gid={uid}", "--cap-drop", "ALL",
                         "--network", "none") as container:
        yield container


def test_training_records_every_file_and_the_base_revision(built: Built) -> None:
    meta = built.metadata
    assert meta["framework"] == "transformers" and meta["artifact"] == "model"
    folder = built.project / "models" / "model"
    on_disk = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert sorted(meta["files"]) == on_disk
    assert "model.safetensors" in on_disk and "tokenizer.json" in on_disk and "config.json" in on_disk
    assert not [name for name in on_disk if name.endswith((".bin", ".pt", ".pkl"))], on_disk
    assert meta["target_names"] == ["negative", "positive"] and meta["base_model"] == "/base"
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}


def test_predict_one_text_and_a_batch(server) -> None:
    status, one = server.http("POST", "/predict", {"text": TEXTS[0], "return_probabilities": True})
    assert status == 200, one
    assert one["labels"][0] in ("negative", "positive") and abs(sum(one["probabilities"][0]) - 1) < 1e-6
    status, many = server.http("POST", "/predict", {"inputs": TEXTS, "return_probabilities": True})
    assert status == 200, many
    assert len(many["labels"]) == len(TEXTS)
    # padded with the longer texts of its batch, the first text gets the answer it got alone
    assert many["probabilities"][0] == pytest.approx(one["probabilities"][0], abs=1e-5)
    for text, proba in zip(TEXTS, many["probabilities"]):
        status, alone = server.http("POST", "/predict", {"text": text, "return_probabilities": True})
        assert alone["probabilities"][0] == pytest.approx(proba, abs=1e-5), text


@pytest.mark.parametrize(("body", "says"), [
    ({"inputs": "not a list"}, "list"),
    ({"inputs": []}, "at least 1"),
    ({"inputs": ["fine", 3]}, "string"),
    ({"text": ""}, "at least 1"),
    ({"text": "   "}, "pattern"),
    ({"inputs": ["x"] * 1025}, "MAX_BATCH_SIZE"),
    ({"text": "x" * 10_001}, "at most 10000"),
    ({"text": "a", "inputs": ["b"]}, "exactly one"),
])
def test_bad_input_is_a_422_that_says_what(server, body, says) -> None:
    status, answer = server.http("POST", "/predict", body)
    assert status == 422, answer
    assert says in json.dumps(answer), answer


def test_non_utf8_and_oversized_bodies_are_4xx(server) -> None:
    status, answer = server.http("POST", "/predict", raw=b'{"text": "caf\xe9"}')
    assert 400 <= status < 500, answer
    status, answer = server.http("POST", "/predict", raw=b'{"inputs": ["' + b"a" * 70_000_000 + b'"]}')
    assert status == 413, answer


def test_runs_read_only_as_non_root_and_offline(server) -> None:
    assert server.exec("id", "-u") == str(MATRIX["base_image"][COMBO.base_image]["uid"])
    env = server.exec("env")
    assert "HF_HUB_OFFLINE=1" in env
    assert server.http("GET", "/ready")[0] == 200  # with --network none: nothing came from the Hub


def test_a_tampered_model_file_is_refused_with_one_line(built: Built, tmp_path) -> None:
    models = tmp_path / "models"
    run(["cp", "-a", str(built.project / "models"), str(models)])
    weights = models / "model" / "tokenizer.json"
    weights.write_text(weights.read_text().replace('"[UNK]"', '"[UNX]"', 1))
    result = subprocess.run(["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--network", "none",
                             "-v", f"{models}:/app/models:ro", built.serve_image], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "tokenizer.json" in line]
    assert len(lines) == 1 and "does not match metadata.json" in lines[0], result.stderr[-2000:]


def test_no_cuda_library_in_the_images(built: Built) -> None:
    for image in (built.serve_image, built.train_image):
        found = run(["docker", "run", "--rm", "--entrypoint", "", image, "sh", "-c",
                     "find / -xdev \\( -name 'libcudart*' -o -name 'libcublas*' -o -name 'libcudnn*' "
                     "-o -name 'libnccl*' -o -path '*/nvidia/*' \\) 2>/dev/null | head"]).stdout
        assert not found.strip(), f"{image} holds CUDA libraries:\n{found}"
        torch = run(["docker", "run", "--rm", "--entrypoint", "", image, "python", "-c",
                     "import torch; print(torch.version.cuda)"]).stdout.strip()
        assert torch == "None", f"{image}: torch built for CUDA {torch}"
