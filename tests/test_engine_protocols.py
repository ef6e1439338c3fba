"""Promise: the serve container speaks the standards its users' tools expect, checked with clients no one here
wrote: the Open Inference Protocol (KServe V2) through tritonclient's InferenceServerClient, Prometheus metrics
through the exposition format's own parser, and an OpenAPI description that schemathesis cannot make answer 5xx."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from helpers.builds import Built
from helpers.combos import Combo, DEFAULT_COMBO
from helpers.containers import Container

pytestmark = pytest.mark.engine
HARDENED = ("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL")
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


@pytest.fixture(scope="module")
def server(built_project: Callable[[Combo], Built]):
    built = built_project(DEFAULT_COMBO)
    with Container(built.serve_image, *HARDENED) as container:
        yield container


@pytest.fixture(scope="module")
def model_name() -> str:
    return "iris-classifier"  # MODEL_NAME's default: the image name of the default answers


def test_tritonclient_speaks_v2_to_the_server(server: Container, model_name: str) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=10)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(model_name)
    metadata = client.get_model_metadata(model_name)
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]} == {"predictions": "INT64",
                                                                       "probabilities": "FP64"}
    expected = server.http("POST", "/predict", {"instances": ROWS, "return_probabilities": True})[1]
    for datatype, dtype, binary in [("FP32", np.float32, True), ("FP64", np.float64, False),
                                    ("INT64", np.int64, True)]:
        data = np.asarray(ROWS, dtype=dtype)
        tensor = httpclient.InferInput("input-0", list(data.shape), datatype)
        tensor.set_data_from_numpy(data, binary_data=binary)
        result = client.infer(model_name, [tensor], outputs=[
            httpclient.InferRequestedOutput("predictions", binary_data=False),
            httpclient.InferRequestedOutput("probabilities", binary_data=False)])
        predictions, probabilities = result.as_numpy("predictions"), result.as_numpy("probabilities")
        assert predictions.dtype == np.int64 and predictions.shape == (3,), datatype
        assert probabilities.dtype == np.float64 and probabilities.shape == (3, 3), datatype
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
        if datatype != "INT64":  # integer features round the rows: only the shapes are comparable
            assert predictions.tolist() == expected["predictions"], datatype
            np.testing.assert_allclose(probabilities, expected["probabilities"], atol=1e-6 if dtype is np.float64
                                       else 1e-3)


def test_v2_errors_are_in_the_protocols_format(server: Container, model_name: str) -> None:
    bad_shape = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]}
    status, body = server.http("POST", f"/v2/models/{model_name}/infer", bad_shape)
    assert status == 400 and "4 features" in body["error"], body
    status, body = server.http("POST", "/v2/models/nope/infer", bad_shape)
    assert status == 404 and "nope" in body["error"]
    status, body = server.http("POST", f"/v2/models/{model_name}/infer", raw=b"{not json")
    assert status == 400 and "error" in body
    status, body = server.http("POST", f"/v2/models/{model_name}/infer",
                               {"inputs": [{"name": "x", "datatype": "BOOL", "shape": [1, 4], "data": [1] * 4}]})
    assert status == 400 and "BOOL" in body["error"]


def test_metrics_follow_the_prometheus_format(server: Container) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    for _ in range(3):
        assert server.http("POST", "/predict", {"features": ROWS[0]})[0] == 200
    assert server.http("POST", "/predict", {"instances": ROWS})[0] == 200
    assert server.http("POST", "/predict", {"features": [1.0]})[0] == 422
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in families["http_requests"].samples
                if s.name == "http_requests_total"}
    assert requests[("/predict", "200")] >= 4 and requests[("/predict", "422")] >= 1, requests
    assert not [route for route, _ in requests if route in ("/health", "/ready", "/metrics")], requests
    rows = {s.labels.get("le"): s.value for s in families["model_batch_rows"].samples
            if s.name == "model_batch_rows_bucket"}
    assert rows["1.0"] >= 3 and rows["4.0"] >= 4, rows
    info = [s for s in families["model_info"].samples][0]
    assert info.value == 1 and info.labels["framework"] == "scikit-learn" and len(info.labels["sha256"]) == 64
    assert [s.value for s in families["model_load_duration_seconds"].samples][0] > 0


def test_schemathesis_finds_no_server_error(server: Container, model_name: str, tmp_path: Path) -> None:
    st = Path(sys.executable).parent / "st"
    # the served model's name, so that the V2 model routes are reached and not only answered with 404
    (tmp_path / "schemathesis.toml").write_text(f'[parameters]\n"path.model_name" = "{model_name}"\n')
    har = tmp_path / "requests.har"
    result = subprocess.run(
        [str(st), "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "40",
         "--request-timeout", "10", "--workers", "2", "--no-color", "--report", "har", "--report-har-path", str(har)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    # what was really sent: every route, and generated bodies that got past validation to the model
    statuses: dict[str, set[int]] = {}
    for entry in json.loads(har.read_text())["log"]["entries"]:
        path = urllib.parse.urlsplit(entry["request"]["url"]).path
        statuses.setdefault(path, set()).add(entry["response"]["status"])
    assert all(code < 500 for codes in statuses.values() for code in codes), statuses
    for path in ("/predict", "/ready", f"/v2/models/{model_name}", f"/v2/models/{model_name}/ready"):
        assert 200 in statuses.get(path, set()), (path, statuses.get(path))
    # generated tensors rarely agree with their own shape: the named model's infer route answered them (400 in the
    # protocol's format, never 404); tritonclient above proves the 200s
    assert statuses.get(f"/v2/models/{model_name}/infer", {404}) <= {200, 400, 405, 413}, statuses
