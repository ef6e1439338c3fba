#!/usr/bin/env python3
"""Sign and verify the images with cosign 2.x (docs/signing.md). Standard library only (Python 3.9+).

    python3 scripts/image_signing.py keys         # make keys: one EC P-256 key pair, never over an existing one
    python3 scripts/image_signing.py sign REF     # make sign-image: sign REF (an image pushed without make release)
    python3 scripts/image_signing.py verify REF   # make verify-image: exit 0 when REF is signed, 1 when not
    python3 scripts/image_signing.py deploy REF   # make deploy: verify REF when a public key is configured

REF is <registry>/<name>@sha256:<64 hex>, or sha256:<64 hex> of IMAGE. scripts/release.py signs what it pushes with
Signer. Settings (make/signing.mk sets them): SIGNING_KEY, SIGNING_PUBLIC_KEY, SIGNING_IDENTITY, SIGNING_OIDC_ISSUER,
SIGNING_TLOG, REGISTRY_HTTP, COSIGN, and COSIGN_PASSWORD for a key in cosign's own format.

One key for images and models: keys/signing.key is a plain PEM EC private key (PKCS#8, what OpenSSF model signing
reads), keys/signing.pub its public key (SPKI PEM, what cosign and a model verifier read). cosign signs only with a
key in its own encrypted format: each release writes the key in that format to a private temporary folder and removes
it after signing (`cosign import-key-pair` does the same, but Debian's cosign 2.5 refuses every EC key there).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_KEY = "keys/signing.key"
DEFAULT_PUBLIC_KEY = "keys/signing.pub"
KEYLESS = "keyless"
DIGEST_REF = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
# key references cosign resolves itself (KMS, Vault, Kubernetes secret, hardware token, GitLab variable)
COSIGN_REFS = re.compile(r"^([a-z0-9]+://|pkcs11:)")
GET_COSIGN = ("install cosign 2.x (Debian 13: apt-get install cosign; other systems: a v2 release binary from "
              "https://github.com/sigstore/cosign/releases), or set COSIGN=/path/to/cosign")
PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.DOTALL)
COSIGN_PEM = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
# DER of the OIDs an EC key names: id-ecPublicKey, and the curves cosign and OpenSSF model signing both take
EC_PUBLIC_KEY = bytes.fromhex("2a8648ce3d0201")
CURVES = {bytes.fromhex("2a8648ce3d030107"): "P-256", bytes.fromhex("2b81040022"): "P-384",
          bytes.fromhex("2b81040023"): "P-521"}


class SigningError(Exception):
    """Signing or verifying cannot go on; the message is one line that says why and what to do."""


def flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "no", "false"):
        return False
    if value in ("1", "yes", "true"):
        return True
    raise SigningError(f"{name}={value}: say 1 or 0")


def cosign_binary() -> str:
    """cosign's path, checked to be 2.x (3.x signs in another format and fetches its signing config online)."""
    name = os.environ.get("COSIGN") or "cosign"
    found = shutil.which(name)
    if not found:
        raise SigningError(f"{name} not found: {GET_COSIGN}")
    result = subprocess.run([found, "version", "--json"], capture_output=True, text=True, timeout=60, check=False)
    try:
        version = json.loads(result.stdout).get("gitVersion", "")
    except ValueError:
        version = ""
    major = re.match(r"^v?(\d+)\.", version)
    if major and int(major.group(1)) != 2:  # a distribution's own build may say `devel`: taken as it comes
        raise SigningError(f"{found} is cosign {version}; this project signs and verifies with cosign 2.x "
                           f"(docs/signing.md): {GET_COSIGN}")
    return found


def registry_flags() -> list[str]:
    return ["--allow-http-registry"] if flag("REGISTRY_HTTP") else []


def pem_blocks(text: str) -> list[tuple[str, bytes]]:
    return [(kind, base64.b64decode("".join(body.split()))) for kind, body in PEM.findall(text)]


def fingerprint(public_pem: str) -> str:
    """sha256 of the public key's PEM as openssl writes it (`openssl pkey -pubin -in KEY | sha256sum`): the key hint
    of OpenSSF Model Signing, so the served model's /metadata (signed_by) names the key the same way."""
    blocks = [der for kind, der in pem_blocks(public_pem) if kind == "PUBLIC KEY"]
    if not blocks:
        raise SigningError("not a PEM public key (-----BEGIN PUBLIC KEY-----)")
    text = base64.b64encode(blocks[0]).decode()
    pem = "-----BEGIN PUBLIC KEY-----\n" + "\n".join(text[i:i + 64] for i in range(0, len(text), 64))
    return "sha256:" + hashlib.sha256((pem + "\n-----END PUBLIC KEY-----\n").encode()).hexdigest()


# ---- DER: just enough to turn an EC private key into the PKCS#8 that cosign's key format holds ----------------------

def der_read(data: bytes, at: int = 0) -> tuple[int, bytes, int]:
    """(tag, contents, offset after) of the DER element at `at`."""
    tag, length, at = data[at], data[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        length, at = int.from_bytes(data[at:at + count], "big"), at + count
    return tag, data[at:at + length], at + length


def der_children(contents: bytes) -> list[tuple[int, bytes]]:
    children, at = [], 0
    while at < len(contents):
        tag, value, at = der_read(contents, at)
        children.append((tag, value))
    return children


def der(tag: int, contents: bytes) -> bytes:
    size = len(contents)
    length = bytes([size]) if size < 0x80 else bytes([0x80 | ((size.bit_length() + 7) // 8)]) + size.to_bytes(
        (size.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + contents


def ec_pkcs8(kind: str, data: bytes) -> bytes:
    """The PKCS#8 DER of an EC private key: a PEM `PRIVATE KEY` as it is, a SEC1 `EC PRIVATE KEY` wrapped."""
    try:
        if kind == "PRIVATE KEY":
            _, algorithm = der_children(der_read(data)[1])[:2]
            oids = [value for tag, value in der_children(algorithm[1]) if tag == 0x06]
            if oids[:1] == [EC_PUBLIC_KEY] and oids[1:2] and oids[1] in CURVES:
                return data
        elif kind == "EC PRIVATE KEY":
            fields = der_children(der_read(data)[1])
            curve = [der_children(value)[0][1] for tag, value in fields if tag == 0xA0]
            if curve and curve[0] in CURVES:
                algorithm = der(0x30, der(0x06, EC_PUBLIC_KEY) + der(0x06, curve[0]))
                return der(0x30, der(0x02, b"\x00") + algorithm + der(0x04, data))
    except (IndexError, ValueError):
        pass
    raise SigningError("not an EC P-256, P-384 or P-521 private key (make keys writes one)")


# ---- cosign's key format: scrypt, then NaCl's secretbox (XSalsa20 and Poly1305), as go-securesystemslib writes ------

def _rotl(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (32 - shift))) & 0xFFFFFFFF


def _salsa20_rounds(state: list[int]) -> list[int]:
    x = list(state)
    for _ in range(10):
        for a, b, c, d in ((0, 4, 8, 12), (5, 9, 13, 1), (10, 14, 2, 6), (15, 3, 7, 11),
                           (0, 1, 2, 3), (5, 6, 7, 4), (10, 11, 8, 9), (15, 12, 13, 14)):
            x[b] ^= _rotl((x[a] + x[d]) & 0xFFFFFFFF, 7)
            x[c] ^= _rotl((x[b] + x[a]) & 0xFFFFFFFF, 9)
            x[d] ^= _rotl((x[c] + x[b]) & 0xFFFFFFFF, 13)
            x[a] ^= _rotl((x[d] + x[c]) & 0xFFFFFFFF, 18)
    return x


def _salsa20_state(key: bytes, middle: bytes) -> list[int]:
    k = [int.from_bytes(key[i:i + 4], "little") for i in range(0, 32, 4)]
    m = [int.from_bytes(middle[i:i + 4], "little") for i in range(0, 16, 4)]
    return [0x61707865, *k[:4], 0x3320646E, *m, 0x79622D32, *k[4:], 0x6B206574]


def secretbox_seal(message: bytes, nonce: bytes, key: bytes) -> bytes:
    """NaCl's crypto_secretbox (golang.org/x/crypto/nacl/secretbox.Seal): the Poly1305 tag, then the ciphertext."""
    x = _salsa20_rounds(_salsa20_state(key, nonce[:16]))
    subkey = b"".join(x[i].to_bytes(4, "little") for i in (0, 5, 10, 15, 6, 7, 8, 9))  # HSalsa20
    stream = b""
    for counter in range((32 + len(message) + 63) // 64):
        state = _salsa20_state(subkey, nonce[16:24] + counter.to_bytes(8, "little"))
        stream += b"".join(((word + state[i]) & 0xFFFFFFFF).to_bytes(4, "little")
                           for i, word in enumerate(_salsa20_rounds(state)))
    ciphertext = bytes(byte ^ stream[32 + i] for i, byte in enumerate(message))
    r = int.from_bytes(stream[:16], "little") & 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF
    accumulator, prime = 0, (1 << 130) - 5
    for at in range(0, len(ciphertext), 16):
        accumulator = (accumulator + int.from_bytes(ciphertext[at:at + 16] + b"\x01", "little")) * r % prime
    tag = (accumulator + int.from_bytes(stream[16:32], "little")) % (1 << 128)
    return tag.to_bytes(16, "little") + ciphertext


def cosign_key(pkcs8: bytes, password: str) -> str:
    """The PEM of cosign's encrypted key format (go-securesystemslib's `encrypted`, scrypt's legacy parameters)."""
    salt, nonce = secrets.token_bytes(32), secrets.token_bytes(24)
    box_key = hashlib.scrypt(password.encode(), salt=salt, n=32768, r=8, p=1, maxmem=64 << 20, dklen=32)
    sealed = {"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1},
                      "salt": base64.b64encode(salt).decode()},
              "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
              "ciphertext": base64.b64encode(secretbox_seal(pkcs8, nonce, box_key)).decode()}
    body = base64.b64encode(json.dumps(sealed, separators=(",", ":")).encode()).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----", *lines,
                      "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----", ""])


def write_private(path: Path, data: bytes) -> None:
    """A new file only its owner can read (never over an existing one)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)


# ---- signing (make release) -----------------------------------------------------------------------------------------

class Signer:
    """What scripts/release.py signs with, checked before it builds anything. `with Signer() as signer:` then
    signer.sign(ref) for each pushed index and signer.attest(ref, sbom) for each platform's SBOM. `signer.key` is
    None when the images go unsigned (no SIGNING_KEY: the default key file absent, or SIGNING_KEY empty)."""

    def __init__(self, say=print):
        self.say = say
        self.setting = os.environ.get("SIGNING_KEY", DEFAULT_KEY).strip()
        self.key: str | None = None
        self.env: dict[str, str] = {}
        self.what = ""
        self.tmp: tempfile.TemporaryDirectory | None = None
        self.tlog = flag("SIGNING_TLOG")
        self.seconds = 0.0

    def configured(self) -> bool:
        """False when there is nothing to sign with: SIGNING_KEY empty, or the default key file absent."""
        return bool(self.setting) and not (self.setting == DEFAULT_KEY and not Path(DEFAULT_KEY).is_file())

    def __enter__(self) -> Signer:
        setting = self.setting
        if not self.configured():
            self.say(f"the images will be unsigned: no signing key ({setting or 'SIGNING_KEY is empty'}); "
                     f"`make keys` makes one (docs/signing.md)")
            return self
        self.cosign = cosign_binary()
        if setting == KEYLESS:
            self.key, self.what, self.tlog = KEYLESS, "keyless, with this job's OIDC identity", True
            return self
        if COSIGN_REFS.match(setting) and not setting.startswith("env://"):
            self.key, self.what = setting, setting
            return self
        if setting.startswith("env://"):
            name = setting[len("env://"):]
            text, self.what = os.environ.get(name, ""), f"the key in ${name}"
            if not text:
                raise SigningError(f"SIGNING_KEY={setting}: the environment variable {name} is empty or unset")
        else:
            path = Path(setting)
            if not path.is_file():
                raise SigningError(f"SIGNING_KEY={setting}: no such file")
            text, self.what = path.read_text(errors="replace"), setting
        blocks = pem_blocks(text)
        if not blocks:
            raise SigningError(f"SIGNING_KEY={setting}: not a PEM private key")
        kind, data = blocks[0]
        self.tmp = tempfile.TemporaryDirectory(prefix="signing-")  # 0700: this user's only
        if kind in COSIGN_PEM:  # cosign's own format: its password comes from COSIGN_PASSWORD
            if "COSIGN_PASSWORD" not in os.environ and not sys.stdin.isatty():
                raise SigningError(f"SIGNING_KEY={setting} is a cosign key: set COSIGN_PASSWORD to its password "
                                   f"(empty for none)")
            if setting.startswith("env://"):
                self.key = str(Path(self.tmp.name) / "cosign.key")
                write_private(Path(self.key), text.encode())
            else:
                self.key = setting
            return self
        if kind == "ENCRYPTED PRIVATE KEY":
            raise SigningError(f"SIGNING_KEY={setting} is an encrypted PKCS#8 key: keep it unencrypted in a secret "
                               f"store, or import it into cosign's format (cosign import-key-pair) and set "
                               f"COSIGN_PASSWORD")
        if kind not in ("PRIVATE KEY", "EC PRIVATE KEY"):
            raise SigningError(f"SIGNING_KEY={setting}: a PEM {kind}, not a private key")
        try:
            pkcs8 = ec_pkcs8(kind, data)
        except SigningError as error:
            raise SigningError(f"SIGNING_KEY={setting}: {error}") from None
        password = secrets.token_urlsafe(24)
        self.key, self.env = str(Path(self.tmp.name) / "cosign.key"), {"COSIGN_PASSWORD": password}
        if hasattr(hashlib, "scrypt"):
            write_private(Path(self.key), cosign_key(pkcs8, password).encode())
        else:  # a Python without OpenSSL's scrypt (Apple's own python3): cosign converts it
            pem = Path(self.tmp.name) / "signing.pem"
            body = base64.b64encode(pkcs8).decode()
            write_private(pem, ("-----BEGIN PRIVATE KEY-----\n" + "\n".join(
                body[i:i + 64] for i in range(0, len(body), 64)) + "\n-----END PRIVATE KEY-----\n").encode())
            self.cosign_run(["import-key-pair", "--key", str(pem), "--output-key-prefix",
                             str(Path(self.tmp.name) / "cosign")])
        return self

    def __exit__(self, *exc) -> None:
        if self.tmp:
            self.tmp.cleanup()

    def cosign_run(self, args: list[str], quiet: bool = False) -> None:
        cmd = [self.cosign, *args]
        print("+ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
        result = subprocess.run(cmd, env={**os.environ, **self.env}, stdin=subprocess.DEVNULL, check=False,
                                text=True, stdout=subprocess.PIPE if quiet else None, timeout=600)
        if result.returncode != 0:
            raise SigningError(f"`cosign {' '.join(args[:2])} ...` failed (exit {result.returncode}): see its "
                               f"output above")

    def common(self) -> list[str]:
        key = [] if self.key == KEYLESS else ["--key", str(self.key), f"--tlog-upload={str(self.tlog).lower()}"]
        return [*key, "-y", *registry_flags()]

    def verify_command(self, ref: str) -> str:
        """How to verify the image `ref` this signer signed: a make command."""
        command = f"make verify-image IMAGE_DIGEST={ref}"
        if self.key != KEYLESS:
            return command
        identity = ci_identity()
        if not identity:
            return command + " SIGNING_IDENTITY=<the signing job's identity> SIGNING_OIDC_ISSUER=<its issuer>"
        return command + f" SIGNING_IDENTITY={identity[0]} SIGNING_OIDC_ISSUER={identity[1]}"

    def sign(self, ref: str) -> None:
        """Sign the index `ref` (<registry>/<name>@sha256:...) and, --recursive, each manifest it lists."""
        self.cosign_run(["sign", *self.common(), "--recursive", ref])

    def attest(self, ref: str, sbom: Path) -> None:
        """Attach the SPDX SBOM `sbom` to the image `ref` as an attestation signed by the same key."""
        self.cosign_run(["attest", *self.common(), "--type", "spdxjson", "--predicate", str(sbom), ref])


def ci_identity() -> tuple[str, str] | None:
    """(identity, issuer) that Sigstore's certificate names for a keyless signature of this CI job, if it is
    GitHub's or GitLab's."""
    env = os.environ
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_WORKFLOW_REF"):
        return (f"{env.get('GITHUB_SERVER_URL', 'https://github.com')}/{env['GITHUB_WORKFLOW_REF']}",
                "https://token.actions.githubusercontent.com")
    if env.get("GITLAB_CI") == "true" and env.get("CI_SERVER_URL"):
        ref = f"refs/tags/{env['CI_COMMIT_TAG']}" if env.get("CI_COMMIT_TAG") else \
            f"refs/heads/{env.get('CI_COMMIT_BRANCH', '')}"
        return (f"{env['CI_SERVER_URL']}/{env.get('CI_PROJECT_PATH', '')}//"
                f"{env.get('CI_CONFIG_PATH') or '.gitlab-ci.yml'}@{ref}", env["CI_SERVER_URL"])
    return None


# ---- verifying (make verify-image, make deploy) ---------------------------------------------------------------------

def full_ref(value: str, who: str) -> str:
    image = os.environ.get("IMAGE", "")
    if re.fullmatch(r"sha256:[0-9a-f]{64}", value) and image:
        value = f"{image}@{value}"
    if not DIGEST_REF.match(value):
        raise SigningError(f"IMAGE_DIGEST=<registry>/<name>@sha256:<64 hex digits> is required, got "
                           f"'{value}' ({who} checks a digest, never a tag: make release prints them, digests.env "
                           f"holds them)")
    return value


def why_not(output: str) -> str:
    """cosign verify's failure, in words."""
    if "no signatures found" in output or "no matching attestations" in output:
        return "it has no signature"
    if "no matching signatures" in output:
        return "its signatures are by another key, or it changed after signing"
    if "MANIFEST_UNKNOWN" in output or "manifest unknown" in output:
        return "the registry has no such digest"
    if "server gave HTTP response to HTTPS client" in output:
        return "the registry speaks plain HTTP: add REGISTRY_HTTP=1"
    if re.search(r"UNAUTHORIZED|DENIED|authentication required", output):
        return "the registry refused the read: log in first (docker login)"
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    return (errors or [line for line in output.splitlines() if line.strip()] or ["cosign failed"])[-1].strip()


def verify(value: str, who: str) -> int:
    ref = full_ref(value, who)
    identity = os.environ.get("SIGNING_IDENTITY", "").strip()
    if identity:
        issuer = os.environ.get("SIGNING_OIDC_ISSUER", "").strip()
        if not issuer:
            raise SigningError("SIGNING_IDENTITY needs SIGNING_OIDC_ISSUER (GitHub: "
                               "https://token.actions.githubusercontent.com; docs/signing.md)")
        cosign = cosign_binary()
        args, by = ["--certificate-identity", identity, "--certificate-oidc-issuer", issuer], identity
    else:
        public = os.environ.get("SIGNING_PUBLIC_KEY", DEFAULT_PUBLIC_KEY).strip()
        if not public or not Path(public).is_file():
            raise SigningError(f"no public key to verify with ({public or 'SIGNING_PUBLIC_KEY is empty'}): set "
                               f"SIGNING_PUBLIC_KEY=<file>, or `make keys` for a pair of your own (docs/signing.md)")
        by = f"{public} ({fingerprint(Path(public).read_text())})"
        cosign = cosign_binary()
        args = ["--key", public, *([] if flag("SIGNING_TLOG") else ["--insecure-ignore-tlog"])]
    result = subprocess.run([cosign, "verify", *args, *registry_flags(), ref], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=300, check=False)
    if result.returncode == 0:
        print(f"{who}: {ref} is signed by {by}")
        return 0
    print(f"{who}: {ref} is NOT signed by {by}: {why_not(result.stderr + result.stdout)}", file=sys.stderr)
    return 1


def deploy_check(value: str, who: str = "deploy") -> int:
    """make deploy (and k8s-train): verify when a public key (or a keyless identity) is configured; say so when none
    is."""
    public = os.environ.get("SIGNING_PUBLIC_KEY", DEFAULT_PUBLIC_KEY).strip()
    configured = os.environ.get("SIGNING_IDENTITY", "").strip() or (
        public and (public != DEFAULT_PUBLIC_KEY or Path(public).is_file()))
    if not configured:
        print(f"{who}: the image's signature is not checked: no {public or 'SIGNING_PUBLIC_KEY'} "
              f"(make keys; docs/signing.md)")
        return 0
    return verify(value, who)


# ---- make keys ------------------------------------------------------------------------------------------------------

def openssl(*args: str, data: bytes = b"") -> bytes:
    result = subprocess.run(["openssl", *args], input=data, capture_output=True, timeout=60, check=False)
    if result.returncode != 0:
        raise SigningError(f"openssl {' '.join(args[:1])} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def make_keys() -> int:
    private = Path(os.environ.get("SIGNING_KEY", DEFAULT_KEY).strip() or DEFAULT_KEY)
    public = Path(os.environ.get("SIGNING_PUBLIC_KEY", DEFAULT_PUBLIC_KEY).strip() or DEFAULT_PUBLIC_KEY)
    if str(private) == KEYLESS or COSIGN_REFS.match(str(private)):
        raise SigningError(f"SIGNING_KEY={private} is not a file: make keys writes files (default {DEFAULT_KEY})")
    if not shutil.which("openssl"):
        raise SigningError("openssl not found: install it (every Linux distribution and macOS have it)")
    if private.is_file() and public.is_file():
        print(f"keys: {private} and {public} exist: left as they are (a new pair: docs/signing.md, rotating the key)")
        return 0
    if public.is_file():
        raise SigningError(f"{public} exists without {private}: its private half lives elsewhere (a CI secret?); "
                           f"no new pair over it (a new pair: docs/signing.md, rotating the key)")
    private.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    public.parent.mkdir(parents=True, exist_ok=True)
    made = not private.is_file()
    if made:
        # SEC1 from ecparam, then PKCS#8 (what every tool reads): two steps every OpenSSL and LibreSSL know
        sec1 = openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout")
        write_private(private, openssl("pkcs8", "-topk8", "-nocrypt", data=sec1))
    kind = pem_blocks(private.read_text(errors="replace"))[:1]
    if not kind or kind[0][0] not in ("PRIVATE KEY", "EC PRIVATE KEY"):
        raise SigningError(f"{private} is not a plain PEM EC private key: its public half cannot be written")
    ec_pkcs8(*kind[0])
    public_pem = openssl("ec", "-pubout", data=private.read_bytes())
    public.write_bytes(public_pem)
    print(f"keys: {'wrote' if made else 'kept'} {private} (the private key, EC P-256{', mode 600' if made else ''}) "
          f"and wrote {public} (its public key, {fingerprint(public_pem.decode())})")
    print(f"  {private}: stays on the machine that signs, or goes into a CI secret; never into git or an image "
          f"(.gitignore and .dockerignore leave it out)")
    print(f"  {public}: commit it (git add {public}); make verify-image and make deploy check against it")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(private)], capture_output=True, check=False)
    if ignored.returncode == 1:  # 0: ignored; 128: not a git repository (or no git)
        print(f"keys: WARNING: git does not ignore {private}: add it to .gitignore before any commit", file=sys.stderr)
    return 0


def sign(value: str, who: str) -> int:
    ref = full_ref(value, who)
    signer = Signer()
    if not signer.configured():
        raise SigningError(f"no signing key ({signer.setting or 'SIGNING_KEY is empty'}): `make keys` makes one, "
                           f"or set SIGNING_KEY (docs/signing.md)")
    with signer:
        signer.sign(ref)
        print(f"{who}: {ref} signed ({signer.what}); {signer.verify_command(ref)} checks it")
    return 0


def main(argv: list[str]) -> int:
    usage = "usage: image_signing.py keys | sign <ref> | verify <ref> | deploy <ref> [<make target>]"
    counts = {"keys": (1,), "sign": (2,), "verify": (2,), "deploy": (2, 3)}
    if not argv or len(argv) not in counts.get(argv[0], ()):
        print(usage, file=sys.stderr)
        return 2
    who = {"sign": "sign-image", "verify": "verify-image",
           "deploy": argv[2] if len(argv) > 2 else "deploy"}.get(argv[0], argv[0])
    try:
        if argv[0] == "keys":
            return make_keys()
        if argv[0] == "sign":
            return sign(argv[1], who)
        if argv[0] == "verify":
            return verify(argv[1], who)
        return deploy_check(argv[1], who)
    except SigningError as error:
        print(f"{who}: {error}", file=sys.stderr)
        return 1 if argv[0] == "keys" else 2

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
