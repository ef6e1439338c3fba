#!/usr/bin/env python3
"""Sign a trained model folder with OpenSSF Model Signing's key method, into model.sig beside metadata.json.

    /opt/sign/bin/python scripts/sign_model.py models/model --private-key /run/secrets/model_signing_key

Run with the python of the venv that holds `model-signing` (requirements/sign.txt; /opt/sign in the train image),
never the train or serve venv: sigstore and tuf stay out of those. The file is the one
`model_signing sign key DIR --private_key KEY --signature DIR/model.sig` writes (every file's sha256; the signature
file and the top-level .git* paths left out); the server checks it with src/<package>/signing.py. The key is an EC
private key (P-256, P-384 or P-521) in PEM, unencrypted or with --password-file. Errors are one line on stderr and
exit 1; the key's bytes are never printed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

CURVES = ("secp256r1", "secp384r1", "secp521r1")  # what model_signing accepts (sign_ec_key.py)
MAKE_ONE = "make one: openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out key.pem"


class SignError(Exception):
    """One line: what could not be signed, and what to do."""


def load_private_key(path: Path, password: bytes | None) -> Any:
    """The EC private key in path, checked before model_signing reads it (its own errors name no file)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SignError(f"{path}: no such private key file (mount the signing key there, or {MAKE_ONE})") from None
    except OSError as error:
        raise SignError(f"{path}: the private key cannot be read by uid {os.getuid()} "
                        f"({error.strerror or error})") from None
    try:
        key = serialization.load_pem_private_key(data, password)
    except TypeError:  # encrypted without a password, or a password for a key that has none
        need = "is encrypted: pass --password-file" if password is None else "is not encrypted: drop --password-file"
        raise SignError(f"{path}: the private key {need}") from None
    except (ValueError, UnsupportedAlgorithm):  # the message can quote nothing of the key: ours names the file only
        raise SignError(f"{path}: not a PEM private key, or a wrong password; {MAKE_ONE}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        kind = type(key).__name__.removeprefix("_").removesuffix("PrivateKey")
        raise SignError(f"{path}: key type {kind}: model signing takes an EC key (P-256, P-384 or P-521); {MAKE_ONE}")
    if key.curve.name not in CURVES:
        raise SignError(f"{path}: an EC key on {key.curve.name}: model signing takes P-256, P-384 or P-521; {MAKE_ONE}")
    return key


# models/.gitkeep keeps the folder in git and is no part of a model (make publish and the registry leave it out)
IGNORED = (".gitkeep",)


def sign(model_dir: Path, private_key: Path, signature: str = "model.sig", password: bytes | None = None,
         ignore: tuple[str, ...] = IGNORED) -> str:
    """Sign model_dir into model_dir/signature (replaced whole, never half-written); return a line saying what."""
    from cryptography.hazmat.primitives import serialization

    if not model_dir.is_dir():
        raise SignError(f"{model_dir}: no such model folder (train first)")
    if not signature or "/" in signature or signature in (".", ".."):
        raise SignError(f"--signature {signature!r}: a file name inside the model folder")
    key = load_private_key(private_key, password)
    # after the key's checks (it takes half a second to import sigstore and tuf); untyped, so Any
    model_signing: Any = importlib.import_module("model_signing")
    target = model_dir / signature
    # the ignored paths are written into the signature: verifiers skip them too
    hashing = model_signing.hashing.Config().set_ignored_paths(paths=[signature, *ignore], ignore_git_paths=True)
    # bytes, though 1.1.1 annotates str: it hands the password to cryptography as is (a str fails there)
    config = model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key, password=password)
    config.set_hashing_config(hashing)
    with tempfile.TemporaryDirectory(prefix="sign-") as scratch:
        written = Path(scratch) / signature  # outside the folder while its files are hashed
        try:
            config.sign(model_dir, written)
        except (OSError, ValueError) as error:  # a symlink, an unreadable file
            raise SignError(f"{model_dir}: cannot be signed ({error})") from None
        bundle = written.read_bytes()
    fd, partial = tempfile.mkstemp(dir=model_dir, prefix=f".{signature}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(bundle)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    except OSError as error:
        Path(partial).unlink(missing_ok=True)
        raise SignError(f"{target}: cannot be written ({error.strerror or error})") from None
    statement = json.loads(base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"]))
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return (f"signed {model_dir} ({len(statement['predicate']['resources'])} files, root sha256 "
            f"{statement['subject'][0]['digest']['sha256']}) with key {hashlib.sha256(pem).hexdigest()} -> {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="the trained model folder (metadata.json and the artifact)")
    parser.add_argument("--private-key", type=Path, required=True, help="PEM EC private key (a secret mount)")
    parser.add_argument("--signature", default="model.sig", help="signature file name in the folder (model.sig)")
    parser.add_argument("--password-file", type=Path, help="file holding the private key's password, if it has one")
    args = parser.parse_args(argv)
    try:
        password = None
        if args.password_file:
            try:
                password = args.password_file.read_bytes().rstrip(b"\r\n")
            except OSError as error:
                raise SignError(f"{args.password_file}: cannot be read ({error.strerror or error})") from None
        print(sign(args.model_dir, args.private_key, args.signature, password))
    except SignError as error:
        print(f"sign_model: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
