"""Promise: a generated project's model signatures are OpenSSF Model Signing's. The serve image's verifier
(src/<package>/signing.py, standard library only) accepts what `model_signing` 1.1.1 signs, with its CLI as pinned or
through the training signer (scripts/sign_model.py), and refuses with one line what `model_signing verify key`
refuses: on every case, valid or not, the two verdicts are equal. model_signing runs from its own venv
(.venv-signing: `make .venv-signing/.installed`), offline: the proxy variables point at a closed port, so a silent
network look-up fails the test."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from helpers.answers import REPO

pytestmark = pytest.mark.xdist_group("model_signing")  # one process builds the cases once

VENV_PYTHON = REPO / ".venv-signing" / "bin" / "python"
SIGNING = REPO / "template/src/{{package_name}}/signing.py"
SIGNER = REPO / "template/scripts/sign_model.py"
CLOSED = "http://127.0.0.1:9"
OFFLINE = {**os.environ, "HTTPS_PROXY": CLOSED, "HTTP_PROXY": CLOSED, "https_proxy": CLOSED, "http_proxy": CLOSED,
           "ALL_PROXY": CLOSED, "NO_PROXY": "", "no_proxy": ""}

# Runs in .venv-signing: reads a list of operations (JSON on stdin), answers one result per operation. "cli" calls
# the console script's click group (model_signing._cli:main) in this process, "exec" the console script itself:
# the CLI as pinned, imported once for all the cases. "resign" signs a bundle's statement again, with its PAE.
DRIVER = r"""
import base64, json, subprocess, sys
from pathlib import Path
from click.testing import CliRunner
from cryptography.hazmat.primitives import hashes, serialization as s
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from model_signing._cli import main
from model_signing._signing.sign_sigstore_pb import pae

CURVES = {"p256": ec.SECP256R1, "p384": ec.SECP384R1, "p521": ec.SECP521R1, "k1": ec.SECP256K1}
results = []
for op in json.load(sys.stdin):
    if op["op"] == "key":
        curve = CURVES.get(op["kind"])
        key = ec.generate_private_key(curve()) if curve else rsa.generate_private_key(65537, 2048)
        form = s.PrivateFormat.TraditionalOpenSSL if op.get("sec1") else s.PrivateFormat.PKCS8
        lock = s.BestAvailableEncryption(b"secret") if op.get("encrypted") else s.NoEncryption()
        Path(op["private"]).write_bytes(key.private_bytes(s.Encoding.PEM, form, lock))
        public = key.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo)
        Path(op["public"]).write_bytes(public)
        results.append(None)
    elif op["op"] == "resign":  # the statement the test wrote into the bundle, signed as model_signing signs one
        key = s.load_pem_private_key(Path(op["private"]).read_bytes(), None)
        bundle = json.loads(Path(op["bundle"]).read_text())
        envelope = bundle["dsseEnvelope"]
        signed = key.sign(pae(base64.b64decode(envelope["payload"])), ec.ECDSA(hashes.SHA256()))
        envelope["signatures"][0]["sig"] = base64.b64encode(signed).decode()
        Path(op["bundle"]).write_text(json.dumps(bundle))
        results.append(None)
    elif op["op"] == "cli":
        run = CliRunner().invoke(main, op["args"])
        results.append({"exit": run.exit_code, "output": run.output})
    else:
        run = subprocess.run([str(Path(sys.executable).with_name("model_signing")), *op["args"]],
                             capture_output=True, text=True)
        results.append({"exit": run.returncode, "output": run.stdout + run.stderr})
json.dump(results, sys.stdout)
"""


def load_signing() -> ModuleType:
    spec = importlib.util.spec_from_file_location("template_signing", SIGNING)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


signing = load_signing()


def reference(ops: list[dict[str, Any]]) -> list[Any]:
    if not VENV_PYTHON.is_file():
        pytest.fail(f"{VENV_PYTHON} missing: `make .venv-signing/.installed` installs model-signing "
                    "(requirements-signing.txt)", pytrace=False)
    result = subprocess.run([str(VENV_PYTHON), "-c", DRIVER], input=json.dumps(ops), capture_output=True, text=True,
                            env=OFFLINE, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answers: list[Any] = json.loads(result.stdout)
    return answers


def sign_cli(model: Path, key: Path, how: str = "cli") -> dict[str, Any]:
    return {"op": how, "args": ["sign", "key", str(model), "--private_key", str(key),
                                "--signature", str(model / "model.sig")]}


def verify_cli(model: Path, public: Path, how: str = "cli") -> dict[str, Any]:
    return {"op": how, "args": ["verify", "key", str(model), "--signature", str(model / "model.sig"),
                                "--public_key", str(public)]}


def make_model(folder: Path, seed: int) -> Path:
    """A file artifact and a folder artifact (nested files), and metadata.json naming them, as training writes."""
    (folder / "model" / "sub").mkdir(parents=True)
    (folder / "model.joblib").write_bytes(hashlib.sha256(b"joblib%d" % seed).digest() * 64)
    (folder / "model" / "config.json").write_text(json.dumps({"seed": seed}))
    (folder / "model" / "sub" / "weights.bin").write_bytes(bytes(range(256)) * (4 + seed))
    (folder / "metadata.json").write_text(json.dumps({"artifact": "model.joblib", "seed": seed}, indent=2) + "\n")
    return folder


def flip_byte(path: Path, at: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def statement_of(bundle: dict[str, Any]) -> dict[str, Any]:
    statement: dict[str, Any] = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return statement


@dataclass(frozen=True)
class Case:
    from_: str  # the signed folder it copies ("" for none)
    key: str  # the public key it is verified with
    refusal: str  # "" when valid, else a fragment of our one-line refusal


def alter_payload(folder: Path) -> None:
    """Change a file and write its new digest (and the root digest) into the statement, keeping the signature."""
    flip_byte(folder / "model.joblib")
    bundle = json.loads((folder / "model.sig").read_text())
    statement = statement_of(bundle)
    digests = []
    for resource in statement["predicate"]["resources"]:
        if resource["name"] == "model.joblib":
            resource["digest"] = hashlib.sha256((folder / "model.joblib").read_bytes()).hexdigest()
        digests.append(bytes.fromhex(resource["digest"]))
    statement["subject"][0]["digest"]["sha256"] = hashlib.sha256(b"".join(digests)).hexdigest()
    bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (folder / "model.sig").write_text(json.dumps(bundle))


def restate(change: Any) -> Any:
    """A change to the signed statement: the fixture signs it again with key a (the "resign" operation)."""
    def _apply(folder: Path) -> None:
        bundle = json.loads((folder / "model.sig").read_text())
        statement = statement_of(bundle)
        change(statement)
        bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
        (folder / "model.sig").write_text(json.dumps(bundle))
    _apply.resign = True  # type: ignore[attr-defined]
    return _apply


def drop_hint(folder: Path) -> None:
    bundle = json.loads((folder / "model.sig").read_text())
    del bundle["verificationMaterial"]["publicKey"]["hint"]
    (folder / "model.sig").write_text(json.dumps(bundle))


def add_git_paths(folder: Path) -> None:
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / ".gitignore").write_text("*.tmp\n")
    (folder / ".github").mkdir()
    (folder / ".github" / "CODEOWNERS").write_text("* @ml\n")


CASES: dict[str, Case] = {
    "signed-by-the-cli": Case("cli", "a", ""),
    "signed-by-sign_model.py": Case("ours", "a", ""),
    "signed-with-p384": Case("p384", "p384", ""),
    "signed-with-p521": Case("p521", "p521", ""),
    "top-level-git-paths-added": Case("cli", "a", ""),
    "no-signature": Case("", "a", "missing: the model is not signed"),
    "another-key": Case("another", "a", "signed by another key"),
    "another-key-without-key-hint": Case("another", "a", "does not verify with the configured public key"),
    "one-byte-changed": Case("cli", "a", "(changed model/sub/weights.bin)"),
    "metadata-changed": Case("ours", "a", "(changed metadata.json)"),
    "file-added": Case("cli", "a", "(added model/extra.bin)"),
    "nested-gitignore-added": Case("cli", "a", "(added model/.gitignore)"),
    "file-removed": Case("cli", "a", "(removed model/config.json)"),
    "truncated-signature": Case("cli", "a", "unreadable or truncated signature bundle"),
    "empty-signature": Case("cli", "a", "unreadable or truncated signature bundle"),
    "signature-of-another-model": Case("cli", "a", "was made for another model"),
    "statement-altered": Case("cli", "a", "does not verify with the configured public key"),
    "empty-folder-added": Case("cli", "a", ""),
    "symlink-added": Case("cli", "a", "model/link: a symbolic link"),
    "symlink-inside-.git": Case("cli", "a", ".git/link: a symbolic link"),
    "resigned-with-./-names": Case("cli", "a", ""),
    "resigned-with-a-capital-root-digest": Case("cli", "a", "inconsistent: the root digest"),
    "resigned-as-shards": Case("cli", "a", "serialized as 'shards'"),
}
CHANGES = {
    "top-level-git-paths-added": add_git_paths,
    "another-key-without-key-hint": drop_hint,
    "one-byte-changed": lambda f: flip_byte(f / "model" / "sub" / "weights.bin"),
    "metadata-changed": lambda f: flip_byte(f / "metadata.json", 3),
    "file-added": lambda f: (f / "model" / "extra.bin").write_bytes(b"extra"),
    "nested-gitignore-added": lambda f: (f / "model" / ".gitignore").write_text("*\n"),
    "file-removed": lambda f: (f / "model" / "config.json").unlink(),
    "truncated-signature": lambda f: (f / "model.sig").write_bytes((f / "model.sig").read_bytes()[:700]),
    "empty-signature": lambda f: (f / "model.sig").write_bytes(b""),
    "statement-altered": alter_payload,
    "empty-folder-added": lambda f: (f / "model" / "empty").mkdir(),
    "symlink-added": lambda f: (f / "model" / "link").symlink_to("config.json"),
    "symlink-inside-.git": lambda f: ((f / ".git").mkdir(), (f / ".git" / "link").symlink_to("../metadata.json")),
    "resigned-with-./-names": restate(lambda st: [r.update(name="./" + r["name"]) for r in st["predicate"]["resources"]]),
    "resigned-with-a-capital-root-digest": restate(
        lambda st: st["subject"][0]["digest"].update(sha256=st["subject"][0]["digest"]["sha256"].upper())),
    "resigned-as-shards": restate(lambda st: st["predicate"]["serialization"].update(method="shards", shard_size=1000)),
}


@dataclass
class Verdicts:
    keys: Path
    folders: dict[str, Path]
    reference: dict[str, dict[str, Any]]  # model_signing verify key's exit code and output, by case
    exec_exit: int  # the console script's own exit code on the first case
    signer_output: str


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> Verdicts:
    root = tmp_path_factory.mktemp("model-signing")
    keys = root / "keys"
    keys.mkdir()
    names = {"a": "p256", "b": "p256", "p384": "p384", "p521": "p521", "rsa": "rsa", "k1": "k1", "encrypted": "p256"}
    ops: list[dict[str, Any]] = [{"op": "key", "kind": kind, "private": str(keys / f"{name}.pem"),
                                  "public": str(keys / f"{name}.pub"), "sec1": name == "a",
                                  "encrypted": name == "encrypted"} for name, kind in names.items()]
    signed = {"cli": ("a", 1), "ours": ("b", 1), "p384": ("p384", 1), "p521": ("p521", 1), "another": ("b", 1),
              "other": ("a", 2)}
    for name, (key, seed) in signed.items():  # "ours" is signed by b first: sign_model.py replaces it with a's
        ops.append(sign_cli(make_model(root / "signed" / name, seed), keys / f"{key}.pem",
                            "exec" if name == "cli" else "cli"))
    answers = reference(ops)
    assert all(a["exit"] == 0 for a in answers[len(names):]), answers
    signer = subprocess.run([str(VENV_PYTHON), str(SIGNER), str(root / "signed" / "ours"), "--private-key",
                             str(keys / "a.pem")], capture_output=True, text=True, env=OFFLINE, timeout=300)
    assert signer.returncode == 0, signer.stderr

    folders: dict[str, Path] = {}
    for name, case in CASES.items():
        folder = folders[name] = root / "cases" / name / "model"
        if case.from_:
            shutil.copytree(root / "signed" / case.from_, folder)
        else:
            shutil.copytree(root / "signed" / "cli", folder)
            (folder / "model.sig").unlink()
        if name == "signature-of-another-model":
            shutil.copy(root / "signed" / "other" / "model.sig", folder / "model.sig")
        CHANGES.get(name, lambda _: None)(folder)
    resign = [{"op": "resign", "private": str(keys / "a.pem"), "bundle": str(folders[name] / "model.sig")}
              for name, change in CHANGES.items() if getattr(change, "resign", False)]
    checks = [verify_cli(folders[name], keys / f"{case.key}.pub") for name, case in CASES.items()]
    first = next(iter(CASES))
    answers = reference([*resign, *checks, verify_cli(folders[first], keys / f"{CASES[first].key}.pub", "exec")])
    verdicts = dict(zip(CASES, answers[len(resign):-1], strict=True))
    return Verdicts(keys, folders, verdicts, answers[-1]["exit"], signer.stdout)


def ours(verdicts: Verdicts, name: str) -> Any:
    key = signing.load_public_key(verdicts.keys / f"{CASES[name].key}.pub")
    return signing.verify_model(verdicts.folders[name], key)


@pytest.mark.parametrize("name", CASES)
def test_the_verifier_answers_as_model_signing_verify_key(verdicts: Verdicts, name: str) -> None:
    case, theirs = CASES[name], verdicts.reference[name]
    try:
        ours(verdicts, name)
        refusal = ""
    except signing.SignatureError as error:
        refusal = str(error)
    assert (not refusal) == (theirs["exit"] == 0), f"ours: {refusal or 'valid'}; model_signing: {theirs}"
    assert (not refusal) == (not case.refusal), refusal or "accepted"
    if refusal:
        assert "\n" not in refusal and case.refusal in refusal, refusal
        assert str(verdicts.folders[name]) in refusal, "the refusal names the folder or its signature file"


def test_the_console_script_and_the_in_process_cli_agree(verdicts: Verdicts) -> None:
    assert verdicts.exec_exit == verdicts.reference[next(iter(CASES))]["exit"] == 0


def test_a_valid_signature_gives_the_key_hint_and_the_root_digest(verdicts: Verdicts) -> None:
    for name in ("signed-by-the-cli", "signed-by-sign_model.py", "signed-with-p521"):
        bundle = json.loads((verdicts.folders[name] / "model.sig").read_text())
        statement = statement_of(bundle)
        result = ours(verdicts, name)
        public = (verdicts.keys / f"{CASES[name].key}.pub").read_bytes()
        assert result.key_fingerprint == bundle["verificationMaterial"]["publicKey"]["hint"]
        assert result.key_fingerprint == hashlib.sha256(public).hexdigest()  # sha256 of the PEM, as openssl writes it
        assert result.root_digest == statement["subject"][0]["digest"]["sha256"]
        assert result.files == {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
        assert set(result.files) == {"metadata.json", "model.joblib", "model/config.json", "model/sub/weights.bin"}
    fingerprint = hashlib.sha256((verdicts.keys / "a.pub").read_bytes()).hexdigest()
    assert f"(4 files, root sha256 {ours(verdicts, 'signed-by-sign_model.py').root_digest}) with key {fingerprint}" \
        in verdicts.signer_output


def test_the_signer_writes_what_the_cli_writes(verdicts: Verdicts) -> None:
    cli, mine = (statement_of(json.loads((verdicts.folders[n] / "model.sig").read_text()))
                 for n in ("signed-by-the-cli", "signed-by-sign_model.py"))
    assert mine["subject"][0]["digest"] == cli["subject"][0]["digest"]  # same files: the old model.sig left out
    # the signer also leaves out models/.gitkeep (no part of a model: make publish and the registry drop it)
    assert sorted(mine["predicate"]["serialization"]["ignore_paths"]) == sorted(
        [*cli["predicate"]["serialization"]["ignore_paths"], ".gitkeep"])
    assert not list(verdicts.folders["signed-by-sign_model.py"].glob(".model.sig.*")), "no partial file left"


def test_a_key_that_is_not_an_ec_public_key_is_refused_in_one_line(verdicts: Verdicts) -> None:
    keys = verdicts.keys
    (keys / "garbage.pub").write_text("-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n")
    expected = {"a.pem": "holds a private key", "rsa.pub": "not an EC public key", "k1.pub": "unsupported curve",
                "garbage.pub": "not a PEM public key", "missing.pub": "cannot be read"}
    for name, fragment in expected.items():
        with pytest.raises(signing.SignatureError) as refused:
            signing.load_public_key(keys / name)
        message = str(refused.value)
        assert fragment in message and str(keys / name) in message and "\n" not in message, message
        assert "BEGIN" not in message, "a key's text is never echoed"


def test_the_signer_refuses_a_missing_or_unusable_key_in_one_line(verdicts: Verdicts, tmp_path: Path) -> None:
    keys, model = verdicts.keys, make_model(tmp_path / "model", 3)
    expected = {"missing.pem": "no such private key file", "rsa.pem": "key type RSA", "a.pub": "not a PEM private key",
                "k1.pem": "an EC key on secp256k1", "encrypted.pem": "is encrypted: pass --password-file"}
    secrets = {(keys / n).read_text().splitlines()[1] for n in ("rsa.pem", "k1.pem")}
    for name, fragment in expected.items():
        result = subprocess.run([str(VENV_PYTHON), str(SIGNER), str(model), "--private-key", str(keys / name)],
                                capture_output=True, text=True, env=OFFLINE, timeout=60)
        assert result.returncode == 1 and not result.stdout, (name, result.stdout, result.stderr)
        line = result.stderr.strip()
        assert "\n" not in line and fragment in line and str(keys / name) in line, line
        assert not any(secret in line for secret in secrets), "the key's bytes are never printed"
    assert not (model / "model.sig").exists()
