"""Model signatures: OpenSSF Model Signing (OMS v1.0, its key method), verified before a model loads.

Training signs the model folder with `model_signing` itself (scripts/sign_model.py, in a venv of its own) into
model.sig beside metadata.json; `model_signing sign key` makes the same file. The server checks it here with the
standard library only: sigstore, tuf and `cryptography` (16 MB with its Rust library) stay out of the serve image.

What is checked, in order (verify_model), as `model_signing verify key` does:
- model.sig is a Sigstore bundle v0.3 (JSON) holding a DSSE envelope of an in-toto Statement v1;
- the bundle's key hint (the sha256 of the signer's public key, PEM) is the configured key's fingerprint;
- the ECDSA signature (P-256/SHA-256, P-384/SHA-384 or P-521/SHA-512) over the DSSE pre-authentication encoding;
- the statement's one subject digest is the sha256 of the per-file digests its predicate lists;
- every file under the folder, and no other, has the sha256 the statement lists. Skipped, as model_signing skips
  them: the signature file, the paths the signature itself lists as ignored, and .git, .gitattributes, .github and
  .gitignore at the top of the folder (only there).
Every refusal is a SignatureError: one line naming the folder or file, the cause and what to do.

The ECDSA arithmetic is verification only: its inputs (key, signature, message) are public, so timing leaks nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

SIGNATURE_FILE = "model.sig"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")  # model_signing's default, top level only
CHUNK = 1 << 20
RESIGN = "re-sign the model folder with the private key (scripts/sign_model.py, or model_signing sign key)"


class SignatureError(Exception):
    """The model's signature is missing or does not hold: one line naming the folder or file and what to do."""


# ---- keys -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Curve:
    name: str
    oid: str
    p: int
    b: int  # a = -3 on the three NIST prime curves
    gx: int
    gy: int
    n: int
    hash: str  # the hash model_signing pairs with the curve (sign_ec_key.get_ec_key_hash)

    @property
    def size(self) -> int:
        return (self.p.bit_length() + 7) // 8


CURVES = {
    curve.oid: curve
    for curve in (
        _Curve("P-256", "1.2.840.10045.3.1.7",
               0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF,
               0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
               0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
               0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
               0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551, "sha256"),
        _Curve("P-384", "1.3.132.0.34",
               0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFFFF0000000000000000FFFFFFFF,
               0xB3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF,
               0xAA87CA22BE8B05378EB1C71EF320AD746E1D3B628BA79B9859F741E082542A385502F25DBF55296C3A545E3872760AB7,
               0x3617DE4A96262C6F5D9E98BF9292DC29F8F41DBD289A147CE9DA3113B5F0B8C00A60B1CE1D7E819D7A431D7C90EA0E5F,
               0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973,
               "sha384"),
        _Curve("P-521", "1.3.132.0.35", 2**521 - 1,
               int("0051953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF109E156193951EC7E937B1652C0BD3BB1BF07"
                   "3573DF883D2C34F1EF451FD46B503F00", 16),
               int("00C6858E06B70404E9CD9E3ECB662395B4429C648139053FB521F828AF606B4D3DBAA14B5E77EFE75928FE1DC127A2FFA8DE"
                   "3348B3C1856A429BF97E7E31C2E5BD66", 16),
               int("011839296A789A3BC0045C8A5FB42C7D1BD998F54449579B446817AFBD17273E662C97EE72995EF42640C550B9013FAD0761"
                   "353C7086A272C24088BE94769FD16650", 16),
               int("01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03B"
                   "B5C9B8899C47AEBB6FB71E91386409", 16),
               "sha512"),
    )
}
EC_PUBLIC_KEY_OID = "1.2.840.10045.2.1"


@dataclass(frozen=True)
class PublicKey:
    """An EC public key on a named NIST curve; source says where it came from (for messages)."""

    curve: _Curve
    x: int
    y: int
    source: str

    @property
    def fingerprint(self) -> str:
        """sha256 of the key's PEM (SubjectPublicKeyInfo): model_signing's key hint, and what
        `openssl pkey -pubin -in key.pub | sha256sum` prints."""
        return hashlib.sha256(self.pem().encode()).hexdigest()

    def pem(self) -> str:
        point = b"\x04" + self.x.to_bytes(self.curve.size, "big") + self.y.to_bytes(self.curve.size, "big")
        algorithm = _der(0x30, _der(0x06, _oid_bytes(EC_PUBLIC_KEY_OID)) + _der(0x06, _oid_bytes(self.curve.oid)))
        text = base64.b64encode(_der(0x30, algorithm + _der(0x03, b"\x00" + point))).decode()
        lines = [text[i:i + 64] for i in range(0, len(text), 64)]
        return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"


def load_public_key(path: Path) -> PublicKey:
    """The PEM public key (SubjectPublicKeyInfo: `openssl pkey -pubout`, cosign.pub) in path."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SignatureError(f"{path}: the public key cannot be read ({error.strerror or error})") from None
    return public_key_from_pem(data, str(path))


def public_key_from_pem(data: bytes, source: str) -> PublicKey:
    """The EC public key in PEM data (a SubjectPublicKeyInfo block); source names it in refusals."""
    text = data.decode("ascii", errors="replace")
    if "PRIVATE KEY-----" in text:  # never echo it
        raise SignatureError(f"{source}: holds a private key: configure its public half (openssl pkey -in key.pem "
                             "-pubout -out key.pub) and keep the private key out of the server")
    begin, end = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"
    if begin not in text or end not in text.split(begin, 1)[1]:
        raise SignatureError(f"{source}: not a PEM public key (expected a {begin} block: openssl pkey -pubout)")
    body = text.split(begin, 1)[1].split(end, 1)[0]
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
        spki, rest = _read(der, 0x30)
        algorithm, spki = _read(spki, 0x30)
        kind, algorithm = _read(algorithm, 0x06)
        curve_oid, _ = _read(algorithm, 0x06) if algorithm[:1] == b"\x06" else (b"", b"")
        bits, _ = _read(spki, 0x03)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{source}: not a PEM public key (its base64 or DER is malformed)") from None
    if rest or _oid_text(kind) != EC_PUBLIC_KEY_OID:
        raise SignatureError(f"{source}: not an EC public key: model signing uses EC keys (P-256, P-384 or P-521)")
    curve = CURVES.get(_oid_text(curve_oid)) if curve_oid else None
    if curve is None:
        raise SignatureError(f"{source}: an EC key on an unsupported curve (model signing takes P-256, P-384, P-521)")
    try:
        x, y = _decode_point(curve, bits[1:] if bits[:1] == b"\x00" else b"")
    except ValueError as error:
        raise SignatureError(f"{source}: not a valid {curve.name} public key ({error})") from None
    return PublicKey(curve, x, y, source)


# ---- verification ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """What a valid signature says: whose key signed, the model's root digest, every file's sha256."""

    key_fingerprint: str
    root_digest: str
    files: dict[str, str]  # path relative to the folder (posix) -> sha256 hex, recomputed and equal to the signed one


def verify_model(model_dir: Path, key: PublicKey, *, signature: Path | None = None,
                 ignore: Iterable[str] = ()) -> Verified:
    """Check model_dir against its signature (model_dir/model.sig unless given) made with key's private half.

    ignore: more paths (relative to model_dir) outside the signature, like model_signing's --ignore-paths: files a
    server itself writes beside a model (a download cache's marker); never anything that is loaded."""
    signature = signature or model_dir / SIGNATURE_FILE
    if not model_dir.is_dir():
        raise SignatureError(f"{model_dir}: no such directory, so no signed model to verify")
    try:
        raw = signature.read_bytes()
    except FileNotFoundError:
        raise SignatureError(f"{signature}: missing: the model is not signed, and this server serves only models "
                             f"signed by key {key.fingerprint} ({RESIGN})") from None
    except OSError as error:
        raise SignatureError(f"{signature}: cannot be read ({error.strerror or error})") from None
    statement = _verified_statement(raw, signature, key)
    subject, signed, ignored = _signed_manifest(statement, signature)
    root = model_dir.resolve()
    try:  # the signature file itself is not signed (model_signing leaves it out: it is written afterwards)
        ignored.add(PurePosixPath(signature.resolve().relative_to(root).as_posix()))
    except ValueError:
        pass
    ignored.update(PurePosixPath(p) for p in (*GIT_PATHS, *ignore))
    present = _files(root, model_dir, ignored)
    actual = {name: _sha256(model_dir / name) for name in sorted(present & signed.keys())}
    added, removed = sorted(present - signed.keys()), sorted(signed.keys() - present)
    changed = [name for name, digest in actual.items() if digest != signed[name]]
    if added or removed or changed:
        if present and not any(digest == signed[name] for name, digest in actual.items()):
            raise SignatureError(
                f"{model_dir}: {signature.name} was made for another model ({subject['name']!r}, root sha256 "
                f"{subject['digest']}): none of its {len(signed)} files matches this folder: use this model's own "
                f"signature, or {RESIGN}")
        problems = [f"{what} {_names(names)}" for what, names in
                    (("changed", changed), ("added", added), ("removed", removed)) if names]
        raise SignatureError(f"{model_dir}: does not match its signature {signature.name} ({'; '.join(problems)}): "
                             f"restore the signed files, or retrain and {RESIGN}")
    return Verified(key.fingerprint, subject["digest"], actual)


def _verified_statement(raw: bytes, signature: Path, key: PublicKey) -> dict[str, Any]:
    """The in-toto statement in the bundle, once its signature holds for key."""
    try:
        bundle = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SignatureError(f"{signature}: unreadable or truncated signature bundle ({error}): {RESIGN}") from None
    _check_shape(bundle, signature)
    media = _field(bundle, signature, "mediaType")
    if media != BUNDLE_MEDIA_TYPE:
        raise SignatureError(f"{signature}: a bundle of type {media!r}, not {BUNDLE_MEDIA_TYPE} (model_signing's "
                             f"key method writes that): {RESIGN}")
    hint = _field(bundle, signature, "verificationMaterial", "publicKey", "hint", required=False)
    if hint and hint != key.fingerprint:
        raise SignatureError(f"{signature}: signed by another key: the signature names key {hint}, the configured "
                             f"public key {key.source} is {key.fingerprint}: configure the signer's public key, or "
                             f"{RESIGN}")
    payload_type = _field(bundle, signature, "dsseEnvelope", "payloadType")
    if payload_type != PAYLOAD_TYPE:
        raise SignatureError(f"{signature}: signs a {payload_type!r} payload, not {PAYLOAD_TYPE}: {RESIGN}")
    signatures = _field(bundle, signature, "dsseEnvelope", "signatures")
    if not isinstance(signatures, list) or not signatures:
        raise SignatureError(f"{signature}: the bundle holds no signature: {RESIGN}")
    payload = _b64(_field(bundle, signature, "dsseEnvelope", "payload"), signature, "dsseEnvelope.payload")
    der = _b64(_field(signatures[0], signature, "sig"), signature, "dsseEnvelope.signatures[0].sig")
    pae = b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)  # DSSE v1
    if not _ecdsa_verify(key, pae, der):
        raise SignatureError(f"{signature}: the signature does not verify with the configured public key "
                             f"{key.source} ({key.fingerprint}): signed by another key, or altered: {RESIGN}")
    try:
        statement = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SignatureError(f"{signature}: the signed statement is not JSON ({error}): {RESIGN}") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise SignatureError(f"{signature}: the signed payload is not an in-toto {STATEMENT_TYPE}: {RESIGN}")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise SignatureError(f"{signature}: predicate {statement.get('predicateType')!r}, not {PREDICATE_TYPE} "
                             f"(model_signing 1.x writes that; older signatures are not read here): {RESIGN}")
    return statement


def _signed_manifest(statement: dict[str, Any], signature: Path
                     ) -> tuple[dict[str, str], dict[str, str], set[PurePosixPath]]:
    """(subject {name, digest}, {file: sha256}, ignored paths) from a statement, the root digest checked."""
    subjects = _field(statement, signature, "subject")
    if not isinstance(subjects, list) or len(subjects) != 1:
        raise SignatureError(f"{signature}: the statement must have exactly one subject (the model): {RESIGN}")
    subject = {"name": str(_field(subjects[0], signature, "name")),
               "digest": str(_field(subjects[0], signature, "digest", "sha256"))}
    serialization = _field(statement, signature, "predicate", "serialization")
    method = _field(serialization, signature, "method")
    if method != "files":  # hash_type is not read: each resource names its algorithm, as model_signing reads it
        raise SignatureError(f"{signature}: serialized as {method!r}; this server checks the default serialization "
                             "(a sha256 per file): sign without shards")
    ignored = _field(serialization, signature, "ignore_paths", required=False) or []
    resources = _field(statement, signature, "predicate", "resources")
    if not isinstance(resources, list) or not isinstance(ignored, list):
        raise SignatureError(f"{signature}: predicate.resources or ignore_paths is not a list: {RESIGN}")
    signed: dict[str, str] = {}
    root = hashlib.sha256()
    for resource in resources:
        name, algorithm, digest = (_field(resource, signature, key) for key in ("name", "algorithm", "digest"))
        try:
            root.update(bytes.fromhex(digest))
        except (TypeError, ValueError):
            raise SignatureError(f"{signature}: the digest of {name!r} is not hex: {RESIGN}") from None
        if algorithm != "sha256" or not isinstance(name, str):
            raise SignatureError(f"{signature}: resource {name!r} is not a sha256 of a file: {RESIGN}")
        signed[str(PurePosixPath(name))] = bytes.fromhex(digest).hex()  # "./a" is "a"; repeated: the last, as there
    if root.hexdigest() != subject["digest"]:
        raise SignatureError(f"{signature}: inconsistent: the root digest {subject['digest']} is not that of its "
                             f"files ({root.hexdigest()}): {RESIGN}")
    if not signed:
        raise SignatureError(f"{signature}: signs no file: {RESIGN}")
    # paths outside the folder (absolute, ..) match nothing in it, as in model_signing
    kept = {PurePosixPath(str(p)) for p in ignored}
    return subject, signed, {p for p in kept if not p.is_absolute() and ".." not in p.parts}


def _files(root: Path, shown: Path, ignored: set[PurePosixPath]) -> set[str]:
    """Every regular file under root (posix paths relative to it) but the ignored ones; symlinks are refused."""
    found: set[str] = set()
    pending = [PurePosixPath()]
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(root / folder))
        except OSError as error:
            raise SignatureError(f"{shown / folder}: cannot be listed ({error.strerror or error})") from None
        for entry in entries:
            relative = folder / entry.name
            # as model_signing: symlinks (allow_symlinks is off by default) and special files are refused even
            # where ignored paths are, whose files are left out
            if entry.is_symlink():
                raise SignatureError(f"{shown / relative}: a symbolic link: a signed model holds regular files only "
                                     "(copy the target into the folder, then sign it)")
            if entry.is_dir(follow_symlinks=False):
                pending.append(relative)
            elif not entry.is_file(follow_symlinks=False):
                raise SignatureError(f"{shown / relative}: not a regular file or folder: remove it from the model")
            elif not any(relative.is_relative_to(p) for p in ignored):
                found.add(str(relative))
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
    except OSError as error:
        raise SignatureError(f"{path}: cannot be read ({error.strerror or error})") from None
    return digest.hexdigest()


def _names(names: list[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _field(data: Any, signature: Path, *path: str, required: bool = True) -> Any:
    """data[path[0]][path[1]]...; a missing field of a required one is a malformed signature."""
    for key in path:
        if not isinstance(data, dict) or key not in data:
            if not required:
                return None
            raise SignatureError(f"{signature}: not a model signature bundle (no {'.'.join(path)}): {RESIGN}")
        data = data[key]
    return data


def _check_shape(bundle: Any, signature: Path) -> None:
    """The bundle's parts have the fields and types of its schema, no others: model_signing's parser (pydantic,
    strict, extra="forbid") refuses the rest, so this does too, even in parts the signature does not cover."""
    objects = {"": {"mediaType", "verificationMaterial", "dsseEnvelope", "messageSignature"},
               "verificationMaterial": {"publicKey", "tlogEntries", "certificate", "x509CertificateChain",
                                        "timestampVerificationData"},
               "verificationMaterial.publicKey": {"hint", "rawBytes", "keyDetails"},  # the last two: ignored by it
               "dsseEnvelope": {"payload", "payloadType", "signatures"}}
    for where, fields in objects.items():
        data = _field(bundle, signature, *where.split(".")) if where else bundle
        unknown = sorted(set(data) - fields) if isinstance(data, dict) else ["(not an object)"]
        if unknown:
            raise SignatureError(f"{signature}: not a model signature bundle ({where or 'the bundle'}: {unknown[0]}): "
                                 f"{RESIGN}")
    material, envelope = bundle["verificationMaterial"], bundle["dsseEnvelope"]
    tlog, signatures = material.get("tlogEntries", []), envelope.get("signatures")
    typed = (isinstance(material["publicKey"].get("hint"), (str, type(None)))
             and isinstance(tlog, list) and all(isinstance(entry, dict) for entry in tlog)
             and all(isinstance(envelope.get(key), str) for key in ("payload", "payloadType"))
             and isinstance(signatures, list) and bool(signatures)
             and all(isinstance(entry, dict) and not set(entry) - {"sig", "keyid"} and isinstance(entry.get("sig"), str)
                     and isinstance(entry.get("keyid"), (str, type(None))) for entry in signatures))
    if not typed:
        raise SignatureError(f"{signature}: not a model signature bundle (a field is missing or of the wrong type): "
                             f"{RESIGN}")


def _b64(value: Any, signature: Path, name: str) -> bytes:
    try:  # protobuf's JSON writes bytes as base64, and reads the URL-safe alphabet too
        return base64.b64decode(str(value).replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{signature}: {name} is not base64 (truncated or altered): {RESIGN}") from None


# ---- DER and ECDSA --------------------------------------------------------------------------------------------------


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + content


def _read(data: bytes, tag: int) -> tuple[bytes, bytes]:
    """(content, rest) of the DER element at the start of data, which must have tag; strict DER lengths."""
    if len(data) < 2 or data[0] != tag:
        raise ValueError(f"expected DER tag {tag:#x}")
    n, start = data[1], 2
    if n & 0x80:
        size = n & 0x7F
        if not 1 <= size <= 4 or len(data) < 2 + size or data[2] == 0:
            raise ValueError("bad DER length")
        n, start = int.from_bytes(data[2:2 + size], "big"), 2 + size
        if n < 0x80:
            raise ValueError("non-minimal DER length")
    if len(data) < start + n:
        raise ValueError("truncated DER")
    return data[start:start + n], data[start + n:]


def _oid_bytes(oid: str) -> bytes:
    first, second, *rest = (int(part) for part in oid.split("."))
    out = bytearray([first * 40 + second])
    for value in rest:
        chunk = [value & 0x7F]
        while value := value >> 7:
            chunk.append(0x80 | (value & 0x7F))
        out += bytes(reversed(chunk))
    return bytes(out)


def _oid_text(data: bytes) -> str:
    if not data:
        return ""
    parts, value = [str(data[0] // 40), str(data[0] % 40)], 0
    for byte in data[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(str(value))
            value = 0
    return ".".join(parts)


def _decode_point(curve: _Curve, point: bytes) -> tuple[int, int]:
    p, size = curve.p, curve.size
    if len(point) == 1 + 2 * size and point[0] == 4:
        x, y = int.from_bytes(point[1:1 + size], "big"), int.from_bytes(point[1 + size:], "big")
    elif len(point) == 1 + size and point[0] in (2, 3):  # compressed: p = 3 (mod 4) on all three curves
        x = int.from_bytes(point[1:], "big")
        y = pow((x * x * x - 3 * x + curve.b) % p, (p + 1) // 4, p)
        if y % 2 != point[0] % 2:
            y = p - y
    else:
        raise ValueError("not an encoded curve point")
    if not (x < p and y < p and (y * y - (x * x * x - 3 * x + curve.b)) % p == 0):
        raise ValueError("the point is not on the curve")
    return x, y  # the curves have prime order (cofactor 1): on the curve is in the group


_Jacobian = tuple[int, int, int]  # (X, Y, Z): x = X/Z^2, y = Y/Z^3; Z = 0 is the point at infinity


def _double(pt: _Jacobian, p: int) -> _Jacobian:
    x, y, z = pt
    if not y or not z:
        return (1, 1, 0)
    delta, gamma = z * z % p, y * y % p
    beta, alpha = x * gamma % p, 3 * (x - delta) * (x + delta) % p  # a = -3
    x3 = (alpha * alpha - 8 * beta) % p
    z3 = ((y + z) ** 2 - gamma - delta) % p
    return x3, (alpha * (4 * beta - x3) - 8 * gamma * gamma) % p, z3


def _add(a: _Jacobian, b: _Jacobian, p: int) -> _Jacobian:
    if not a[2]:
        return b
    if not b[2]:
        return a
    z1z1, z2z2 = a[2] * a[2] % p, b[2] * b[2] % p
    u1, u2 = a[0] * z2z2 % p, b[0] * z1z1 % p
    s1, s2 = a[1] * b[2] * z2z2 % p, b[1] * a[2] * z1z1 % p
    h, r = (u2 - u1) % p, (s2 - s1) % p
    if not h:
        return _double(a, p) if not r else (1, 1, 0)
    hh = h * h % p
    hhh, v = h * hh % p, u1 * hh % p
    x3 = (r * r - hhh - 2 * v) % p
    return x3, (r * (v - x3) - s1 * hhh) % p, a[2] * b[2] * h % p


def _ecdsa_verify(key: PublicKey, message: bytes, der: bytes) -> bool:
    """ECDSA over message with key's curve hash; der is the DER SEQUENCE {r, s} model_signing writes (strict)."""
    curve = key.curve
    try:
        sequence, rest = _read(der, 0x30)
        r_bytes, sequence = _read(sequence, 0x02)
        s_bytes, sequence = _read(sequence, 0x02)
    except ValueError:
        return False
    for value in (r_bytes, s_bytes):  # positive, minimal integers only (what OpenSSL accepts)
        if not value or value[0] & 0x80 or (len(value) > 1 and value[0] == 0 and not value[1] & 0x80):
            return False
    r, s = int.from_bytes(r_bytes, "big"), int.from_bytes(s_bytes, "big")
    if rest or sequence or not (0 < r < curve.n and 0 < s < curve.n):
        return False
    digest = hashlib.new(curve.hash, message).digest()
    e = int.from_bytes(digest, "big") >> max(0, 8 * len(digest) - curve.n.bit_length())
    w = pow(s, -1, curve.n)
    u1, u2 = e * w % curve.n, r * w % curve.n
    g, q = (curve.gx, curve.gy, 1), (key.x, key.y, 1)
    table = {(0, 1): q, (1, 0): g, (1, 1): _add(g, q, curve.p)}  # Shamir's trick: u1*G + u2*Q in one pass
    acc: _Jacobian = (1, 1, 0)
    for i in range(max(u1.bit_length(), u2.bit_length()) - 1, -1, -1):
        acc = _double(acc, curve.p)
        bits = ((u1 >> i) & 1, (u2 >> i) & 1)
        if bits != (0, 0):
            acc = _add(acc, table[bits], curve.p)
    x, _, z = acc
    if not z:
        return False
    return x * pow(z * z, -1, curve.p) % curve.p % curve.n == r
