"""Promise: framework=transformers locks, fine-tunes a Hub-layout encoder (a tiny one the tests make) and serves it
offline: texts in, labels and scores out, over /predict and V2 (tritonclient, BYTES); the model folder is verified
file by file before loading; read-only root, non-root; no CUDA library and no token anywhere in the images."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from helpers.answers import MATRIX
from helpers.builds import Built
from helpers.combos import TEXT_COMBOS
from helpers.engine import SESSION_LABEL, run

COMBO = TEXT_COMBOS[0]
pytestmark = [pytest.mark.engine, pytest.mark.chain(COMBO)]
TEXTS = ["a wonderful film", "the service was terrible and the meal was dull, honestly the worst trip",
         "great", "what a boring show " * 40]  # the last one is over MAX_SEQ_LENGTH tokens: truncated


@pytest.fixture(scope="module")
def built(built_project) -> Built:
    return built_project(COMBO)


@pytest.fixture(scope="module")
def server(built, serve_container):
    uid = MATRIX["base_image"][COMBO.base_image]["uid"]
    with serve_container(COMBO, "--read-only", "--tmpfs", f"/tmp:uid={uid},gid={uid}", "--cap-drop", "ALL") as container:
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
    # MAX_BATCH_SIZE (1024) texts of MAX_TEXT_CHARS (10000) characters: about 61 MB of JSON at most. Announced
    # bigger, the body is refused before a byte of it is read.
    import http.client

    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=10)
    connection.putrequest("POST", "/predict")
    connection.putheader("content-type", "application/json")
    connection.putheader("content-length", str(1024 * (10_000 * 6 + 4) + 64 * 1024 + 1))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413, response.read()
    connection.close()


def test_runs_read_only_as_non_root_and_without_a_network(built: Built, server) -> None:
    assert server.exec("id", "-u") == str(MATRIX["base_image"][COMBO.base_image]["uid"])
    assert "HF_HUB_OFFLINE=1" in server.exec("env")
    assert "Read-only file system" in run(["docker", "exec", server.id, "sh", "-c", "touch /app/x 2>&1 || true"]).stdout
    # no network at all: ready all the same, so nothing is fetched from the Hub at start
    container = run(["docker", "run", "-d", "--label", SESSION_LABEL, "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--network", "none",
                     built.serve_image]).stdout.strip()
    try:
        deadline = time.monotonic() + 90
        while subprocess.run(["docker", "exec", container, "python", "-m", "iris_classifier.healthcheck"],
                             capture_output=True, check=False, timeout=600).returncode != 0:
            assert time.monotonic() < deadline, run(["docker", "logs", container], check=False).stderr[-2000:]
            time.sleep(0.5)
    finally:
        run(["docker", "rm", "-f", container], check=False)


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


MODEL_NAME = "iris-classifier"  # MODEL_NAME's default: the image name of the default project name


def test_tritonclient_sends_texts_as_bytes(server) -> None:
    import numpy as np
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=10)
    assert client.is_model_ready(MODEL_NAME)
    assert client.get_model_metadata(MODEL_NAME)["inputs"] == [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}]
    expected = server.http("POST", "/predict", {"inputs": TEXTS, "return_probabilities": True})[1]
    for binary in (True, False):
        data = np.array([t.encode() for t in TEXTS], dtype=np.object_)
        tensor = httpclient.InferInput("input-0", [len(TEXTS)], "BYTES")
        tensor.set_data_from_numpy(data, binary_data=binary)
        result = client.infer(MODEL_NAME, [tensor], outputs=[
            httpclient.InferRequestedOutput("predictions", binary_data=False),
            httpclient.InferRequestedOutput("probabilities", binary_data=False)])
        assert result.as_numpy("predictions").tolist() == expected["predictions"], binary
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected["probabilities"], atol=1e-5)


@pytest.mark.parametrize(("tensor", "says"), [
    ({"name": "input-0", "datatype": "FP64", "shape": [1], "data": [1.0]}, "BYTES"),
    ({"name": "input-0", "datatype": "BYTES", "shape": [2], "data": ["one"]}, "needs 2"),
    ({"name": "input-0", "datatype": "BYTES", "shape": [1], "data": [""]}, "empty"),
    ({"name": "input-0", "datatype": "BYTES", "shape": [1], "data": [7]}, "not a string"),
    ({"name": "input-0", "datatype": "BYTES", "shape": [0], "data": []}, "MAX_BATCH_SIZE"),
    ({"name": "input-0", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]}, "shape"),
])
def test_v2_bad_tensors_are_400s_that_say_what(server, tensor, says) -> None:
    status, body = server.http("POST", f"/v2/models/{MODEL_NAME}/infer", {"inputs": [tensor]})
    assert status == 400 and says in body["error"], body


def test_v2_binary_text_that_is_not_utf8_is_a_400(server) -> None:
    header = json.dumps({"inputs": [{"name": "input-0", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": 6}}]}).encode()
    import urllib.error
    import urllib.request
    request = urllib.request.Request(f"{server.url}/v2/models/{MODEL_NAME}/infer", data=header + b"\x02\0\0\0\xff\xfe",
                                     method="POST", headers={"inference-header-content-length": str(len(header)),
                                                             "content-type": "application/octet-stream"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400 and "not UTF-8" in json.loads(refused.value.read())["error"]


DUMMY_TOKEN = "hf_dummyTokenOfTheTests0123456789"


def test_a_token_never_reaches_a_log_a_model_file_or_an_image(built: Built, tmp_path) -> None:
    """Train with a token in the secret's file (as compose hands it over): not in the log, not in models/ (which the
    serve image bakes, so no serve layer can); no history entry or config of either image holds a token."""
    from helpers.tiny_encoder import train_args

    secret = tmp_path / "hf_token"
    secret.write_text(DUMMY_TOKEN)
    secret.chmod(0o644)
    models = tmp_path / "models"
    models.mkdir()
    models.chmod(0o777)
    result = subprocess.run(["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
                             *train_args(built.project.parent / "tiny-encoder"),
                             "-v", f"{secret}:/run/secrets/hf_token:ro", "-e", "HF_TOKEN_PATH=/run/secrets/hf_token",
                             "-v", f"{models}:/app/models", built.train_image], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert DUMMY_TOKEN not in result.stdout + result.stderr
    assert not [p for p in models.rglob("*") if p.is_file() and DUMMY_TOKEN.encode() in p.read_bytes()]
    for image in (built.train_image, built.serve_image):
        assert DUMMY_TOKEN not in run(["docker", "history", "--no-trunc", image]).stdout
        assert "TOKEN=" not in run(["docker", "inspect", image]).stdout


def test_serve_image_within_its_budget_and_without_what_serving_never_imports(built: Built) -> None:
    mb = 1_000_000
    base = COMBO.image("runtime")
    size = {image: int(run(["docker", "image", "inspect", "--format", "{{.Size}}", image]).stdout)
            for image in (base, built.serve_image)}
    added = size[built.serve_image] - size[base]
    budget = MATRIX["framework"]["transformers"]["serve_budget_mb"]
    assert added <= budget * mb, f"serve adds {added / mb:.1f} MB over {base} (budget {budget} MB)"
    excluded = MATRIX["framework"]["transformers"]["serve_exclude"]
    modules = [name.replace("-", "_") for name in excluded if name not in ("markdown-it-py",)] + ["pandas", "sklearn"]
    probe = f"import importlib.util; print([m for m in {modules!r} if importlib.util.find_spec(m)])"
    assert run(["docker", "run", "--rm", built.serve_image, "python", "-c", probe]).stdout.strip() == "[]"


def test_a_hub_id_trains_offline_from_the_cache_volume(built: Built, tmp_path) -> None:
    """The id path: the base model in HF_HOME in the Hub's cache layout, as the compose volume keeps it after a first
    training online; offline, `main` resolves to the cached commit, which is recorded and printed to pin."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--mldt--tiny-encoder"
    shutil.copytree(built.project.parent / "tiny-encoder", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    run(["chmod", "-R", "a+rwX", str(tmp_path / "hf")])  # the image's user owns the volume in compose
    models = tmp_path / "models"
    models.mkdir()
    models.chmod(0o777)
    result = run(["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--network", "none",
                  "-e", "HF_HUB_OFFLINE=1", "-e", "BASE_MODEL=mldt/tiny-encoder", "-e", "EPOCHS=1",
                  "-v", f"{tmp_path / 'hf'}:/app/var/hf", "-v", f"{models}:/app/models", built.train_image],
                 timeout=600)
    meta = json.loads((models / "metadata.json").read_text())
    assert meta["base_model"] == "mldt/tiny-encoder" and meta["base_model_revision"] == commit, meta
    assert f"pin it with BASE_MODEL_REVISION={commit}" in result.stdout + result.stderr


@pytest.mark.parametrize(("settings", "says"), [
    (["-e", "BASE_MODEL=someone/not-here"], "base model someone/not-here at revision main:"),
    (["-e", "MAX_SEQ_LENGTH=4096"], "MAX_SEQ_LENGTH 4096 exceeds /base's 128 positions"),
])
def test_a_base_model_that_cannot_be_used_ends_training_with_one_line(built: Built, tmp_path, settings, says) -> None:
    from helpers.tiny_encoder import train_args

    models = tmp_path / "models"
    models.mkdir()
    models.chmod(0o777)
    result = subprocess.run(["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp",
                             *train_args(built.project.parent / "tiny-encoder"), *settings,
                             "-v", f"{models}:/app/models", built.train_image], capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-2000:]
    assert says in result.stdout.strip().splitlines()[-1] and "ERROR" in result.stdout.strip().splitlines()[-1], output


def test_schemathesis_finds_no_server_error_on_the_text_routes(server, tmp_path) -> None:
    """Generated bodies for the text schemas (strings of every kind, lists of them, wrong types): never a 5xx, and
    some get past validation to the model (200)."""
    st = Path(sys.executable).parent / "st"
    (tmp_path / "schemathesis.toml").write_text(f'[parameters]\n"path.model_name" = "{MODEL_NAME}"\n')
    har = tmp_path / "requests.har"
    result = subprocess.run(
        [str(st), "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "40",
         "--request-timeout", "20", "--workers", "2", "--no-color", "--report", "har", "--report-har-path", str(har)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    statuses: dict[str, set[int]] = {}
    for entry in json.loads(har.read_text())["log"]["entries"]:
        path = urllib.parse.urlsplit(entry["request"]["url"]).path
        statuses.setdefault(path, set()).add(entry["response"]["status"])
    assert all(code < 500 for codes in statuses.values() for code in codes), statuses
    assert 200 in statuses.get("/predict", set()), statuses.get("/predict")
    assert statuses.get(f"/v2/models/{MODEL_NAME}/infer", {404}) <= {200, 400, 405, 413}, statuses
