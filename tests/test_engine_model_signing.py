"""Promise (model_signing=true): `make keys`, then `make train` signs the model with OpenSSF Model Signing; the serve
image loads a model only after checking its signature against the public key it holds, whatever the source: the
folder training signed and one that `model_signing sign key` (the reference CLI) signed load and /metadata names the
key; unsigned, tampered or otherwise-signed folders end the server with exit 1 and one line. The private key is in
no layer, label or history line of either image. (The registry source's signed flow: tests/test_engine_registry.py.)"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from helpers.answers import REPO
from helpers.engine import free_port, run
from test_engine_registry import COMBO, Project, project  # noqa: F401 (the fixture: the registry chain's project)

pytestmark = [pytest.mark.engine, pytest.mark.chain(COMBO)]
MODEL_SIGNING = REPO / ".venv-signing" / "bin" / "model_signing"
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


def serve(project: Project, models: Path) -> tuple[int, str, dict | None]:
    """The serve image on this model folder (mounted, MODEL_URI emptied): its exit code (None while it serves) with
    its error lines, or its /metadata once ready."""
    port = free_port()
    name = f"sig-{port}"
    run(["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", "-e", "MODEL_URI=",
         "-v", f"{models}:/app/models:ro", f"{project.image}:t"])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = json.loads(run(["docker", "inspect", "--format", "{{json .State}}", name]).stdout)
            if not state["Running"]:
                logs = run(["docker", "logs", name]).stdout + run(["docker", "logs", name]).stderr
                return state["ExitCode"], "\n".join(line for line in logs.splitlines() if " ERROR " in line), None
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metadata", timeout=3) as response:
                    return 0, "", json.loads(response.read())
            except OSError:
                time.sleep(0.5)
        raise AssertionError("the server neither served nor exited within 60 s")
    finally:
        run(["docker", "rm", "-f", name], check=False)


def copy_models(project: Project, where: Path) -> Path:
    shutil.copytree(project.path / "models", where)
    where.chmod(0o755)
    return where


def refused(project: Project, models: Path, *words: str) -> str:
    code, errors, _ = serve(project, models)
    assert code == 1, f"exit {code}"
    lines = errors.splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), errors
    return lines[0]


@pytest.fixture(scope="module")
def signed(project: Project) -> Project:  # noqa: F811
    """The project with its key pair and a model trained (and signed) by `make train`."""
    if not (project.path / "keys" / "signing.key").exists():
        project.make("keys")
    if not (project.path / "models" / "model.sig").exists():
        project.make("train")
    project.make("build-serve")
    return project


def test_the_model_make_train_signed_and_one_the_reference_cli_signed_load(signed: Project, tmp_path: Path) -> None:
    pem = run(["openssl", "pkey", "-pubin", "-in", str(signed.path / "keys" / "signing.pub")]).stdout
    fingerprint = hashlib.sha256(pem.encode()).hexdigest()
    code, errors, metadata = serve(signed, signed.path / "models")
    assert code == 0 and metadata is not None, errors
    assert metadata["served_from"]["signed_by"] == fingerprint

    by_cli = copy_models(signed, tmp_path / "cli")
    (by_cli / "model.sig").unlink()
    (by_cli / ".gitkeep").unlink(missing_ok=True)
    subprocess.run([str(MODEL_SIGNING), "sign", "key", str(by_cli), "--private_key",
                    str(signed.path / "keys" / "signing.key"), "--signature", str(by_cli / "model.sig")],
                   check=True, capture_output=True, env={"PATH": "/usr/bin:/bin", **OFFLINE}, timeout=300)
    code, errors, metadata = serve(signed, by_cli)
    assert code == 0 and metadata is not None and metadata["served_from"]["signed_by"] == fingerprint, errors


def test_a_downloaded_bundle_of_the_signed_model_is_verified_after_its_download(signed: Project) -> None:
    """make publish bundles models/ with its model.sig; the server downloads it (file://), checks the bundle's
    sha256, then the signature (its cache marker left out), then serves: the project's own smoke test."""
    signed.make("publish")
    out = run(["python3", "scripts/smoke.py", f"{signed.image}:t", "--bundle", "dist/model.tar.gz", "--uid", "10001"],
              cwd=signed.path)
    assert "ready, /predict" in out.stdout, out.stdout + out.stderr


def test_unsigned_tampered_and_foreign_models_are_refused_in_one_line(signed: Project, tmp_path: Path) -> None:
    unsigned = copy_models(signed, tmp_path / "unsigned")
    (unsigned / "model.sig").unlink()
    refused(signed, unsigned, "model.sig", "missing")

    artifact = json.loads((signed.path / "models" / "metadata.json").read_text())["artifact"]
    tampered = copy_models(signed, tmp_path / "tampered")
    data = bytearray((tampered / artifact).read_bytes())
    data[len(data) // 2] ^= 1
    (tampered / artifact).write_bytes(bytes(data))
    refused(signed, tampered, artifact)

    added = copy_models(signed, tmp_path / "added")
    (added / "extra.py").write_text("print('not signed')\n")
    refused(signed, added, "extra.py")

    other = tmp_path / "other.pem"
    run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(tmp_path / "raw.pem")])
    run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", str(tmp_path / "raw.pem"), "-out", str(other)])
    foreign = copy_models(signed, tmp_path / "foreign")
    subprocess.run([str(MODEL_SIGNING), "sign", "key", str(foreign), "--private_key", str(other),
                    "--signature", str(foreign / "model.sig")], check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", **OFFLINE}, timeout=300)
    refused(signed, foreign, "key")


def test_the_private_key_is_in_no_image(signed: Project) -> None:
    key = (signed.path / "keys" / "signing.key").read_text()
    body = "".join(line for line in key.splitlines() if not line.startswith("-----"))
    needles = [body[:40].encode(), body[-40:].encode()]
    for image in (f"{signed.image}:t", f"{signed.image}:t-train", f"{signed.image}:t-mlflow"):
        history = run(["docker", "history", "--no-trunc", image]).stdout
        config = run(["docker", "image", "inspect", image]).stdout
        assert not any(n.decode() in history + config for n in needles), image
        saved = subprocess.run(["docker", "save", image], capture_output=True, check=True, timeout=600).stdout
        with tarfile.open(fileobj=io.BytesIO(saved)) as outer:
            for member in outer.getmembers():
                if not member.isfile():
                    continue
                data = outer.extractfile(member).read()  # type: ignore[union-attr]
                if re.search(rb"(^|/)layer\.tar$|^blobs/", member.name.encode()):
                    try:
                        with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                            for item in layer.getmembers():
                                if item.isfile() and item.size < 50_000_000:
                                    content = layer.extractfile(item).read()  # type: ignore[union-attr]
                                    assert not any(n in content for n in needles), f"{image}: {item.name}"
                    except tarfile.ReadError:
                        assert not any(n in data for n in needles), f"{image}: {member.name}"
