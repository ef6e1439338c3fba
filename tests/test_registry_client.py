"""Promise: a tracking=mlflow project's registry client (registry.py: the standard library only) and promote.py speak
MLflow's REST API as a real `mlflow server` 3.17.2 answers it: training registers a version with the alias candidate
and the artifact's sha256; the server's fetch returns the very files, verified; promote moves champion past a gate;
and every failure (tampered file, pin, unknown model/alias/version, server down, artifacts not proxied, wrong
credentials) is one line, in bounded time, that never shows a credential. Two real servers (one plain, one with
MLflow's basic-auth app) run from .venv-mlflow (requirements-mlflow.txt) for the module, on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import importlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import types
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers.answers import REPO
from helpers.engine import free_port
from helpers.render import render

pytestmark = pytest.mark.xdist_group("mlflow-server")  # one process starts the servers once

MLFLOW = REPO / ".venv-mlflow" / "bin" / "mlflow"
PACKAGE = "registry_check"
ANSWERS = {"project_name": "Registry Check", "package_name": PACKAGE, "tracking": "mlflow"}
ADMIN_PASSWORD = "pw-" + secrets.token_hex(12)  # the auth server's; no output may ever show it
WRONG_PASSWORD = "wrong-" + secrets.token_hex(12)
WRONG_TOKEN = "tok-" + secrets.token_hex(12)


class Server:
    """`mlflow server` in a folder of its own: SQLite backend, proxied artifacts in <folder>/artifacts."""

    def __init__(self, folder: Path, *extra: str, env: dict[str, str] | None = None):
        folder.mkdir(parents=True)
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        command = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                   "--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--artifacts-destination",
                   str(folder / "artifacts"), *extra]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True,
                                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})})

    def wait(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mlflow server exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        pytest.fail(f"mlflow server did not answer in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # its own session: uvicorn and its worker
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)

    def api(self, method: str, endpoint: str, body: dict[str, Any] | None = None, **query: str) -> dict[str, Any]:
        url = f"{self.url}/api/2.0/mlflow{endpoint}" + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                         headers={"Content-Type": "application/json"} if body else {})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer: dict[str, Any] = json.loads(response.read() or b"{}")
            return answer


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    if not MLFLOW.is_file():
        pytest.fail(f"{MLFLOW} missing: `make .venv-mlflow/.installed` installs it (requirements-mlflow.txt)",
                    pytrace=False)
    root = tmp_path_factory.mktemp("mlflow")
    config = root / "basic_auth.ini"
    config.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{root}/auth.db\n"
                      "admin_username = admin\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    plain = Server(root / "plain")
    auth = Server(root / "auth", "--app-name", "basic-auth",
                  env={"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                       "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)})
    try:  # both start at once: the module waits for the slower one, not for their sum
        plain.wait()
        auth.wait()
        yield plain, auth
    finally:
        plain.stop()
        auth.stop()


@pytest.fixture(scope="module")
def server(servers: tuple[Server, Server]) -> Server:
    return servers[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The rendered project, its package importable here (registry.py and promote.py need the standard library
    only); a stand-in runtime lets artifacts.load_model verify a fetched folder without the framework."""
    root = render(tmp_path_factory.mktemp("render") / "project", ANSWERS)
    sys.path.insert(0, str(root / "src"))
    runtime = types.ModuleType(f"{PACKAGE}.runtime")
    runtime.NAME, runtime.FRAMEWORK = "native", "fake"
    runtime.metadata = lambda: {"framework": "fake", "framework_version": "1"}
    runtime.load = lambda path: sorted(p.name for p in path.rglob("*")) if path.is_dir() else path.read_bytes()
    sys.modules[runtime.__name__] = runtime
    try:
        yield root
    finally:
        sys.path.remove(str(root / "src"))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def registry(project: Path) -> types.ModuleType:
    return importlib.import_module(f"{PACKAGE}.registry")


@pytest.fixture(scope="module")
def artifacts(project: Path) -> types.ModuleType:
    module = importlib.import_module(f"{PACKAGE}.artifacts")
    importlib.import_module(PACKAGE).runtime = sys.modules[f"{PACKAGE}.runtime"]
    return module


def client(registry: types.ModuleType, server: Server, **env: str) -> Any:
    return registry.Registry.from_env({"MLFLOW_TRACKING_URI": server.url, **env}, timeout=10, retries=1)


def model_folder(where: Path, accuracy: float, *, folder: bool = False) -> tuple[Path, dict[str, Any]]:
    """A model directory as train.py writes it: an artifact (a file, or a folder as transformers saves one) and
    metadata.json with its sha256 (a folder: every file's too) and held-out metrics."""
    where.mkdir(parents=True)
    if folder:
        artifact = where / "model"
        (artifact / "tokenizer").mkdir(parents=True)
        (artifact / "config.json").write_text('{"layers": 2}\n')
        (artifact / "model.safetensors").write_bytes(secrets.token_bytes(3000))
        (artifact / "tokenizer" / "vocab.txt").write_text("a\nb\n")
        files = {str(p.relative_to(artifact)): _sha(p.read_bytes()) for p in sorted(artifact.rglob("*")) if p.is_file()}
        digest = hashlib.sha256("".join(f"{n}  {s}\n" for n, s in files.items()).encode()).hexdigest()
        extra: dict[str, Any] = {"files": files}
    else:
        artifact = where / "model.joblib"
        artifact.write_bytes(secrets.token_bytes(5000))
        digest, extra = _sha(artifact.read_bytes()), {}
    metadata = {"artifact": artifact.name, "sha256": digest, **extra, "framework": "fake", "framework_version": "1",
                "serve_runtime": "native", "feature_names": ["a", "b"],
                "metrics": {"accuracy": accuracy, "n_test": 30, "not_a_number": float("nan"), "note": "text"}}
    (where / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return where, metadata


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".complete"}


def one_line(error: BaseException, *secrets_: str) -> str:
    message = str(error)
    assert "\n" not in message and message.strip() == message, message
    for secret in (ADMIN_PASSWORD, WRONG_PASSWORD, WRONG_TOKEN, *secrets_):
        assert secret not in message
    return message


def promote(project: Path, server: Server, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environment.update({"PYTHONPATH": str(project / "src"), "MLFLOW_TRACKING_URI": server.url, **env})
    return subprocess.run([sys.executable, "-m", f"{PACKAGE}.promote", *args], capture_output=True, text=True,
                          env=environment, timeout=120)


@pytest.fixture(scope="module")
def iris(registry: types.ModuleType, server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One training registered as v1 of "iris", @candidate."""
    folder, metadata = model_folder(tmp_path_factory.mktemp("train") / "models", 0.9)
    logged = registry.log_training(client(registry, server), folder, metadata, experiment="iris-exp",
                                   model_name="iris", params={"seed": 42, "features": ["a", "b"], "bad key!": "x"})
    return {"folder": folder, "metadata": metadata, "logged": logged}


def test_training_logs_the_run_and_registers_a_candidate_with_its_sha256(server: Server, iris: dict[str, Any]) -> None:
    logged, metadata = iris["logged"], iris["metadata"]
    assert logged["name"] == "iris" and logged["version"] == "1" and logged["alias"] == "candidate"
    version = server.api("GET", "/registered-models/alias", name="iris", alias="candidate")["model_version"]
    assert version["version"] == "1" and version["run_id"] == logged["run_id"] and version["status"] == "READY"
    assert {"key": "sha256", "value": metadata["sha256"]} in version["tags"]
    # the source a plain REST client registers: the run's own folder in the proxied store, as get-download-uri says
    source = f"mlflow-artifacts:/{logged['experiment_id']}/{logged['run_id']}/artifacts/model"
    assert version["source"] == source
    assert server.api("GET", "/model-versions/get-download-uri", name="iris", version="1")["artifact_uri"] == source
    run = server.api("GET", "/runs/get", run_id=logged["run_id"])["run"]
    assert run["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert metrics == {"accuracy": 0.9, "n_test": 30}  # numeric and finite only
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params == {"seed": "42", "features": '["a", "b"]', "bad key_": "x"}  # strings; keys MLflow accepts
    stored = server.folder / "artifacts" / logged["experiment_id"] / logged["run_id"] / "artifacts" / "model"
    assert tree(stored) == tree(iris["folder"])


def test_fetch_by_alias_and_by_version_returns_the_trained_files_verified(
        registry: types.ModuleType, artifacts: types.ModuleType, server: Server, iris: dict[str, Any],
        tmp_path: Path) -> None:
    reg = client(registry, server)
    by_alias, info = registry.fetch(reg, "models:/iris@candidate", tmp_path / "a")
    assert tree(by_alias) == tree(iris["folder"])
    assert info == {"registry": server.url, "name": "iris", "version": "1", "alias": "candidate",
                    "run_id": iris["logged"]["run_id"], "uri": "models:/iris@candidate"}
    by_version, info = registry.fetch(reg, "models:/iris/1", tmp_path / "v", sha256=iris["metadata"]["sha256"])
    assert tree(by_version) == tree(iris["folder"]) and info["version"] == "1" and info["alias"] == ""
    loaded = artifacts.load_model(by_version)  # the server's own check passes on the fetched folder
    assert loaded.metadata["sha256"] == iris["metadata"]["sha256"]
    assert loaded.model == (iris["folder"] / "model.joblib").read_bytes()
    # a pinned version's complete copy is served without the registry; an alias is always resolved
    down = registry.Registry(f"http://127.0.0.1:{free_port()}", timeout=1, retries=0)
    again, info = registry.fetch(down, "models:/iris/1", tmp_path / "v", sha256=iris["metadata"]["sha256"])
    assert again == by_version and info["run_id"] == iris["logged"]["run_id"]
    with pytest.raises(registry.RegistryError, match="unreachable"):
        registry.fetch(down, "models:/iris@candidate", tmp_path / "a")


def test_a_version_registered_with_a_runs_uri_is_fetched_too(
        registry: types.ModuleType, server: Server, iris: dict[str, Any], tmp_path: Path) -> None:
    run_id = iris["logged"]["run_id"]
    created = server.api("POST", "/model-versions/create", {"name": "iris", "source": f"runs:/{run_id}/model",
                                                            "run_id": run_id})["model_version"]
    folder, info = registry.fetch(client(registry, server), f"models:/iris/{created['version']}", tmp_path)
    assert tree(folder) == tree(iris["folder"]) and info["version"] == created["version"]


def test_a_folder_artifact_is_fetched_file_by_file(
        registry: types.ModuleType, artifacts: types.ModuleType, server: Server, tmp_path: Path) -> None:
    folder, metadata = model_folder(tmp_path / "models", 0.8, folder=True)
    reg = client(registry, server)
    logged = registry.log_training(reg, folder, metadata, experiment="encoder", model_name="encoder", params={})
    fetched, info = registry.fetch(reg, "models:/encoder@candidate", tmp_path / "cache", sha256=metadata["sha256"])
    assert tree(fetched) == tree(folder) and info["version"] == logged["version"] == "1"
    assert artifacts.load_model(fetched).model == ["config.json", "model.safetensors", "tokenizer", "vocab.txt"]


def test_promote_moves_champion_after_the_gate_and_the_server_gets_the_new_version(
        project: Path, registry: types.ModuleType, server: Server, tmp_path: Path) -> None:
    reg, env = client(registry, server), {"REGISTERED_MODEL_NAME": "gated"}
    trained = {}
    for version, accuracy in (("1", 0.9), ("2", 0.8), ("3", 0.95)):
        folder, metadata = model_folder(tmp_path / f"m{version}", accuracy)
        trained[version] = folder
        logged = registry.log_training(reg, folder, metadata, experiment="gated", model_name="gated", params={})
        assert logged["version"] == version
        result = promote(project, server, *(["--version", "2"] if version == "3" else []), **env)
        if version == "1":
            assert result.returncode == 0
            assert result.stdout == "champion: none -> v1 (accuracy 0.900, the first champion)\n"
        elif version == "2":  # a worse candidate: refused, one line, champion stays
            assert result.returncode == 1 and result.stdout == ""
            assert result.stderr == ("champion: stays v1, v2 refused (accuracy 0.800 < 0.900 of v1; --force moves it "
                                     "anyway)\n")
        else:  # --version 2 is still refused; the candidate, v3, passes
            assert result.returncode == 1 and "v2 refused" in result.stderr
            result = promote(project, server, **env)
            assert (result.returncode, result.stdout) == (0, "champion: v1 -> v3 (accuracy 0.950 >= 0.900)\n")
    champion, info = registry.fetch(reg, "models:/gated@champion", tmp_path / "cache")
    assert info["version"] == "3" and tree(champion) == tree(trained["3"])
    result = promote(project, server, "--version", "2", "--force", **env)  # a rollback
    assert (result.returncode, result.stdout) == (0, "champion: v3 -> v2 (accuracy 0.800 < 0.950 of v3; forced)\n")
    champion, info = registry.fetch(reg, "models:/gated@champion", tmp_path / "cache")
    assert info["version"] == "2" and tree(champion) == tree(trained["2"])
    assert promote(project, server, "--version", "2", **env).stdout == "champion: already v2\n"


def test_promote_says_in_one_line_what_is_missing(project: Path, server: Server, iris: dict[str, Any]) -> None:
    cases = {
        ("--from-alias", "nope"): "iris has no alias @nope",
        ("--version", "x"): "--version: invalid int value",
        ("--version", "99"): "iris has no version 99",
    }
    for args, expected in cases.items():
        result = promote(project, server, *args, REGISTERED_MODEL_NAME="iris")
        assert result.returncode == 1 and expected in result.stderr and result.stderr.count("\n") == 1, result
    result = promote(project, server, REGISTERED_MODEL_NAME="nothing-here")
    assert result.returncode == 1 and "no registered model 'nothing-here'" in result.stderr
    assert result.stderr.count("\n") == 1
    result = promote(project, server, MLFLOW_TRACKING_URI="")
    assert (result.returncode, result.stderr.count("\n")) == (1, 1)
    assert "MLFLOW_TRACKING_URI is not set" in result.stderr


def test_a_file_tampered_in_the_artifact_store_is_refused_naming_it(
        registry: types.ModuleType, server: Server, tmp_path: Path) -> None:
    folder, metadata = model_folder(tmp_path / "models", 0.9)
    reg = client(registry, server)
    logged = registry.log_training(reg, folder, metadata, experiment="tamper", model_name="tamper", params={})
    stored = server.folder / "artifacts" / logged["experiment_id"] / logged["run_id"] / "artifacts" / "model"
    (stored / "model.joblib").write_bytes(b"evil" + (stored / "model.joblib").read_bytes()[4:])
    with pytest.raises(registry.RegistryError) as error:
        registry.fetch(reg, "models:/tamper@candidate", tmp_path / "cache")
    message = one_line(error.value)
    assert message.startswith("MODEL_URI models:/tamper@candidate (v1 on ") and "model.joblib: sha256 " in message
    assert not (tmp_path / "cache" / "tamper" / "1").exists()  # nothing half-verified is kept
    assert [p.name for p in (tmp_path / "cache" / "tamper").iterdir()] == []
    # artifact and metadata.json swapped together: the version's sha256 tag, in the database, still tells
    swapped = {**metadata, "sha256": _sha((stored / "model.joblib").read_bytes())}
    (stored / "metadata.json").write_text(json.dumps(swapped))
    with pytest.raises(registry.RegistryError, match=r"metadata.json: sha256 \w+ does not match the version's tag"):
        registry.fetch(reg, "models:/tamper/1", tmp_path / "cache")
    (stored / "model.joblib").unlink()
    shutil.copy(folder / "metadata.json", stored / "metadata.json")
    with pytest.raises(registry.RegistryError, match="model.joblib: missing in the artifact store"):
        registry.fetch(reg, "models:/tamper/1", tmp_path / "cache")


def test_a_pin_that_does_not_match_is_refused(
        registry: types.ModuleType, server: Server, iris: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(registry.RegistryError) as error:
        registry.fetch(client(registry, server), "models:/iris@candidate", tmp_path, sha256="ab" * 32)
    message = one_line(error.value)
    assert f"the version's sha256 {iris['metadata']['sha256']} does not match MODEL_SHA256 {'ab' * 32}" in message
    with pytest.raises(registry.RegistryError, match="MODEL_SHA256 'nope': not a sha256"):
        registry.fetch(client(registry, server), "models:/iris@candidate", tmp_path, sha256="nope")


@pytest.mark.parametrize(("uri", "expected"), [
    ("models:/nosuch@champion", "no registered model 'nosuch'"),
    ("models:/iris@champion", "iris has no alias 'champion' (its aliases: @candidate -> v1;"),
    ("models:/iris/99", "iris has no version 99 (latest: v"),
    ("models:/iris", "use models:/<name>@<alias> or models:/<name>/<version>"),
    ("runs:/abc/model", "use models:/<name>@<alias> or models:/<name>/<version>"),
])
def test_unknown_model_alias_or_version_is_one_line(registry: types.ModuleType, server: Server, iris: dict[str, Any],
                                                    tmp_path: Path, uri: str, expected: str) -> None:
    with pytest.raises(registry.RegistryError) as error:
        registry.fetch(client(registry, server), uri, tmp_path)
    message = one_line(error.value)
    assert message.startswith(f"MODEL_URI {uri}") and expected in message, message


def test_a_server_that_is_down_fails_within_the_bound(registry: types.ModuleType, tmp_path: Path) -> None:
    timeout, retries, backoff = 2.0, 2, 0.2
    reg = registry.Registry(f"http://127.0.0.1:{free_port()}", timeout=timeout, retries=retries, backoff=backoff)
    started = time.monotonic()
    with pytest.raises(registry.RegistryError) as error:
        registry.fetch(reg, "models:/iris@champion", tmp_path)
    elapsed = time.monotonic() - started
    assert elapsed < timeout * (retries + 1) + backoff * (2**retries - 1) + 1
    message = one_line(error.value)
    assert message.startswith("MODEL_URI models:/iris@champion (MLflow server http://127.0.0.1:")
    assert "unreachable after 3 attempts" in message


class NotMLflow(http.server.BaseHTTPRequestHandler):
    """Answers as what MLFLOW_TRACKING_URI may point at by mistake; the path's first part says which."""

    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.hits.append(self.path)
        status, kind, body = {
            "busy": (503, "text/plain", b"overloaded"),
            "host": (403, "text/plain", b"Invalid Host header - possible DNS rebinding attack detected"),
            "html": (200, "text/html", b"<html>a proxy's login page</html>"),
        }.get(self.path.split("/")[1], (404, "text/html", b"<h1>Not Found</h1>"))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_only_what_may_pass_is_retried_and_a_server_that_is_not_mlflow_is_named(
        registry: types.ModuleType, tmp_path: Path) -> None:
    fake = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotMLflow)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{fake.server_address[1]}"
    expected = {
        "busy": "HTTP 503 Service Unavailable (overloaded) after 3 attempts",
        "host": f"it refuses the Host header 127.0.0.1:{fake.server_address[1]} (start the server with "
                f"--allowed-hosts listing 127.0.0.1:{fake.server_address[1]})",
        "html": f"did not answer a JSON object: is {base}/html an MLflow server?",
        "other": f"HTTP 404 Not Found for /other/api/2.0/mlflow/registered-models/alias: is {base}/other an MLflow "
                 "server (3.x)?",
    }
    try:
        for kind, message in expected.items():
            NotMLflow.hits.clear()
            reg = registry.Registry(f"{base}/{kind}", timeout=5, retries=2, backoff=0.1)
            with pytest.raises(registry.RegistryError) as error:
                registry.fetch(reg, "models:/iris@champion", tmp_path)
            assert message in one_line(error.value), error.value
            assert len(NotMLflow.hits) == (3 if kind == "busy" else 1)  # 5xx retried, the others never
    finally:
        fake.shutdown()
        fake.server_close()


def test_artifacts_not_served_by_the_server_are_refused_with_the_flag_to_use(
        registry: types.ModuleType, server: Server, tmp_path: Path) -> None:
    folder, metadata = model_folder(tmp_path / "models", 0.9)
    server.api("POST", "/experiments/create", {"name": "local", "artifact_location": str(tmp_path / "elsewhere")})
    reg = client(registry, server)
    with pytest.raises(registry.RegistryError) as error:
        registry.log_training(reg, folder, metadata, experiment="local", model_name="local", params={})
    assert "--artifacts-destination" in one_line(error.value)
    runs = server.api("POST", "/runs/search", {"experiment_ids": [
        server.api("GET", "/experiments/get-by-name", experiment_name="local")["experiment"]["experiment_id"]]})
    assert [r["info"]["status"] for r in runs["runs"]] == ["FAILED"]  # no run left RUNNING
    server.api("POST", "/registered-models/create", {"name": "on-s3"})
    server.api("POST", "/model-versions/create", {"name": "on-s3", "source": "s3://bucket/model"})
    with pytest.raises(registry.RegistryError) as error:
        registry.fetch(reg, "models:/on-s3/1", tmp_path / "cache")
    message = one_line(error.value)
    assert "v1's files are at s3://bucket/model" in message and "--artifacts-destination" in message


def test_credentials_from_files_work_and_wrong_ones_are_one_line_naming_the_variables(
        registry: types.ModuleType, project: Path, servers: tuple[Server, Server], tmp_path: Path) -> None:
    auth = servers[1]
    good, bad, token = tmp_path / "good", tmp_path / "bad", tmp_path / "token"
    good.write_text(ADMIN_PASSWORD + "\n")
    bad.write_text(WRONG_PASSWORD)
    token.write_text(WRONG_TOKEN)
    right = client(registry, auth, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD_FILE=str(good),
                   MLFLOW_TRACKING_TOKEN_FILE=os.devnull)  # compose's default secret: an empty file is none
    assert ADMIN_PASSWORD not in repr(right)
    folder, metadata = model_folder(tmp_path / "models", 0.9)
    logged = registry.log_training(right, folder, metadata, experiment="auth", model_name="auth", params={})
    fetched, _ = registry.fetch(right, "models:/auth@candidate", tmp_path / "cache")
    assert tree(fetched) == tree(folder) and logged["version"] == "1"

    cases = [
        ({}, "the server needs credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
        ({"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD_FILE": str(bad)},
         "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD were refused"),
        ({"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": WRONG_PASSWORD},
         "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD were refused"),
        ({"MLFLOW_TRACKING_TOKEN_FILE": str(token)}, "MLFLOW_TRACKING_TOKEN was refused"),
    ]
    for env, expected in cases:
        started = time.monotonic()
        with pytest.raises(registry.RegistryError) as error:
            registry.fetch(client(registry, auth, **env), "models:/auth@candidate", tmp_path / "cache")
        message = one_line(error.value)
        assert f"HTTP 401 Unauthorized from {auth.url} (" in message and expected in message, message
        assert time.monotonic() - started < 5  # a 401 is never retried
        with pytest.raises(registry.RegistryError) as error:
            registry.log_training(client(registry, auth, **env), folder, metadata, experiment="auth",
                                  model_name="auth", params={})
        assert expected in one_line(error.value)
    result = promote(project, auth, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=WRONG_PASSWORD,
                     REGISTERED_MODEL_NAME="auth")
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "were refused" in result.stderr
    assert WRONG_PASSWORD not in result.stdout + result.stderr and ADMIN_PASSWORD not in result.stdout + result.stderr
    result = promote(project, auth, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD_FILE=str(good),
                     REGISTERED_MODEL_NAME="auth")
    assert (result.returncode, result.stdout) == (0, "champion: none -> v1 (accuracy 0.900, the first champion)\n")
    assert ADMIN_PASSWORD not in result.stdout + result.stderr


def test_settings_from_the_environment(registry: types.ModuleType, tmp_path: Path) -> None:
    Registry, RegistryError = registry.Registry, registry.RegistryError
    assert Registry.from_env({}) is None and Registry.from_env({"MLFLOW_TRACKING_URI": " "}) is None
    secret_file = tmp_path / "token"
    secret_file.write_text("from-file\n")
    reg = Registry.from_env({"MLFLOW_TRACKING_URI": "http://mlflow:5000/",
                             "MLFLOW_TRACKING_TOKEN_FILE": str(secret_file)}, timeout=5, retries=2)
    assert (reg.tracking_uri, reg.token, reg.timeout, reg.retries) == ("http://mlflow:5000", "from-file", 5, 2)
    assert "from-file" not in repr(reg)
    reg = Registry.from_env({"MLFLOW_TRACKING_URI": f"https://admin:{WRONG_PASSWORD}@mlflow.example:443"})
    assert (reg.tracking_uri, reg.username, reg.password) == ("https://mlflow.example:443", "admin", WRONG_PASSWORD)
    refused = {
        "MLFLOW_TRACKING_TOKEN and MLFLOW_TRACKING_TOKEN_FILE are both set":
            {"MLFLOW_TRACKING_TOKEN": WRONG_TOKEN, "MLFLOW_TRACKING_TOKEN_FILE": str(secret_file)},
        f"MLFLOW_TRACKING_PASSWORD_FILE {tmp_path / 'missing'}: cannot be read":
            {"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD_FILE": str(tmp_path / "missing")},
        "MLFLOW_TRACKING_PASSWORD (or _FILE) is not set": {"MLFLOW_TRACKING_USERNAME": "u"},
        "MLFLOW_TRACKING_USERNAME is not set": {"MLFLOW_TRACKING_PASSWORD": WRONG_PASSWORD},
        "MLFLOW_TRACKING_TOKEN: has characters an HTTP header cannot carry": {"MLFLOW_TRACKING_TOKEN": "a b"},
    }
    for expected, env in refused.items():
        with pytest.raises(RegistryError) as error:
            Registry.from_env({"MLFLOW_TRACKING_URI": "http://mlflow:5000", **env})
        assert expected in one_line(error.value), error.value
    with pytest.raises(RegistryError, match=r"MLFLOW_TRACKING_URI: sqlite:... is not served here: needs http\(s\)://host:port"):
        Registry.from_env({"MLFLOW_TRACKING_URI": "sqlite:///mlflow.db"})
