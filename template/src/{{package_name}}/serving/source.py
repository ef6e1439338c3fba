"""Fetch a model bundle (a .tar.gz of a model directory, from `make publish`) at server start: verified, then cached."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

METADATA = "metadata.json"
COMPLETE = ".complete"  # written last: a cache directory without it is never used
CHUNK = 1 << 20
TRANSIENT = (TimeoutError, ConnectionError, http.client.IncompleteRead)


class SourceError(Exception):
    """One line naming the URL or path and the problem (the server prints it and exits 1)."""


class _CacheWriteError(Exception):
    """Writing the download failed: a problem with cache_dir, not with the network (never retried)."""


def redact(uri: str) -> str:
    """The URI as it may be shown: no user:password, no query string (presigned URLs carry signatures there)."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "..." if parts.query else "", ""))


def read_token(env: Mapping[str, str]) -> str | None:
    """MODEL_TOKEN, or the file MODEL_TOKEN_FILE names (a Docker secret); never baked into the image."""
    token, token_file = env.get("MODEL_TOKEN", "").strip(), env.get("MODEL_TOKEN_FILE", "").strip()
    if token and token_file:
        raise SourceError("MODEL_TOKEN and MODEL_TOKEN_FILE are both set (set one)")
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise SourceError(f"MODEL_TOKEN_FILE {token_file}: cannot be read ({error.strerror or error})") from None
        if not token:
            raise SourceError(f"MODEL_TOKEN_FILE {token_file}: is empty")
    return token or None


def fetch_bundle(uri: str, sha256: str | None, cache_dir: Path, *, allow_unverified: bool = False,
                 token: str | None = None, timeout: float = 30.0, retries: int = 3, backoff: float = 1.0,
                 opener: urllib.request.OpenerDirector | None = None) -> Path:
    """Return a directory holding the bundle's files (metadata.json, artifact) for uri, downloading it at most once."""
    shown = redact(uri)
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError as error:
        raise SourceError(f"MODEL_URI {shown}: not a URL ({error})") from None
    if parts.scheme.lower() not in ("http", "https", "file"):
        raise SourceError(f"MODEL_URI {shown}: unsupported scheme {parts.scheme!r} (use http, https or file)")
    if parts.scheme.lower() != "file" and not parts.hostname:
        raise SourceError(f"MODEL_URI {shown}: has no host")
    if token is not None and not re.fullmatch(r"[\x21-\x7e]+", token):
        raise SourceError("MODEL_TOKEN: empty or has characters an HTTP header cannot carry")  # never echo it
    expected = (sha256 or "").strip().lower()
    if expected:
        if not re.fullmatch(r"[0-9a-f]{64}", expected):
            raise SourceError(f"MODEL_SHA256 {sha256!r}: not a sha256 (64 hex characters)")
        key = expected
    elif allow_unverified:
        key = "unverified-" + hashlib.sha256(uri.encode()).hexdigest()
        log.warning("MODEL_URI %s: MODEL_SHA256 is not set, the model bundle is NOT VERIFIED; pickle-based "
                    "artifacts (joblib, pickle) run code when loaded: serve only bundles you trust", shown)
    else:
        raise SourceError(f"MODEL_URI {shown}: MODEL_SHA256 is required (the sha256 `make publish` prints)")

    final = cache_dir / key
    if expected and (final / COMPLETE).is_file():
        log.info("model bundle %s found in cache", key[:12])
        return final  # content-addressed and complete: no network needed
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(dir=cache_dir, prefix=".download-", suffix=".part")
    except OSError as error:
        raise SourceError(f"{cache_dir}: cannot write the model cache ({error.strerror or error})") from None
    staging: str | None = None
    try:
        with os.fdopen(fd, "w+b") as out:
            actual = _download(parts, shown, out, token, timeout, retries, backoff, opener)
        if expected and actual != expected:
            raise SourceError(f"MODEL_URI {shown}: sha256 {actual} does not match MODEL_SHA256 {expected}")
        staging = tempfile.mkdtemp(dir=cache_dir, prefix=".extract-")
        _extract(Path(part), Path(staging), shown)
        if not (Path(staging) / METADATA).is_file():
            raise SourceError(f"MODEL_URI {shown}: bundle has no {METADATA} at its top level")
        os.chmod(staging, 0o755)
        (Path(staging) / COMPLETE).write_text(actual + "\n")
        _install(Path(staging), final, replace=not expected)
        log.info("model bundle %s downloaded from %s", actual[:12], shown)
        return final
    except (OSError, _CacheWriteError) as error:
        reason = getattr(error, "strerror", None) or error
        raise SourceError(f"{cache_dir}: cannot write the model cache ({reason})") from None
    finally:  # whatever happened (even KeyboardInterrupt), nothing half-written stays behind
        Path(part).unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _download(parts: urllib.parse.SplitResult, shown: str, out: IO[bytes], token: str | None,
              timeout: float, retries: int, backoff: float, opener: urllib.request.OpenerDirector | None) -> str:
    """Stream the URI into out and return its sha256; retry only what may succeed on its own (network, 429, 5xx)."""
    if parts.scheme.lower() == "file":
        path = urllib.request.url2pathname(parts.path)
        if parts.netloc not in ("", "localhost") or not os.path.isabs(path):
            raise SourceError(f"MODEL_URI {shown}: a file URI needs an absolute path (file:///path)")
        try:
            source = open(path, "rb")  # noqa: SIM115 (closed below)
        except OSError as error:
            raise SourceError(f"MODEL_URI {shown}: cannot be read ({error.strerror or error})") from None
        with source:
            return _copy(source, out)
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])))
    if token:  # unredirected: never forwarded to another host on a redirect
        request.add_unredirected_header("Authorization", f"Bearer {token}")
    elif parts.username is not None:
        pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_unredirected_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    opener = opener or urllib.request.build_opener()
    attempts = retries + 1
    for attempt in range(attempts):
        try:
            with opener.open(request, timeout=timeout) as response:
                return _copy(response, out)
        except urllib.error.HTTPError as error:
            error.close()
            problem = f"HTTP {error.code} {error.reason}"
            if error.code != 429 and error.code < 500:
                raise SourceError(f"MODEL_URI {shown}: {problem}") from None
            if attempt == retries:
                raise SourceError(f"MODEL_URI {shown}: {problem} after {_plural(attempts)}") from None
        except (urllib.error.URLError, *TRANSIENT) as error:
            problem = str(error.reason if isinstance(error, urllib.error.URLError) else error) or type(error).__name__
            if attempt == retries:
                raise SourceError(f"MODEL_URI {shown}: unreachable after {_plural(attempts)} ({problem})") from None
        except (OSError, http.client.HTTPException, ValueError) as error:  # TLS, protocol: retrying will not help
            raise SourceError(f"MODEL_URI {shown}: download failed ({type(error).__name__}: {error})") from None
        delay = backoff * 2**attempt
        log.warning("MODEL_URI %s: %s; retrying in %.1f s (attempt %d of %d)",
                    shown, problem, delay, attempt + 2, attempts)
        time.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises


def _copy(source: IO[bytes], out: IO[bytes]) -> str:
    out.seek(0)
    out.truncate()  # a retry starts over
    digest = hashlib.sha256()
    while block := source.read(CHUNK):
        digest.update(block)
        try:
            out.write(block)
        except OSError as error:  # the disk, not the network: never retried as a network error
            raise _CacheWriteError(error.strerror or error) from None
    return digest.hexdigest()


def _extract(archive: Path, target: Path, shown: str) -> None:
    """Extract without letting a member escape target: the "data" filter, or the same checks on older Pythons."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(target, filter="data")
                return
            for member in tar.getmembers():
                name = member.name
                if os.path.isabs(name) or ".." in Path(name).parts or not (member.isfile() or member.isdir()):
                    raise SourceError(f"MODEL_URI {shown}: unsafe bundle member {name!r}")
            tar.extractall(target)
    except tarfile.TarError as error:
        if isinstance(error, getattr(tarfile, "FilterError", ())):
            raise SourceError(f"MODEL_URI {shown}: unsafe bundle member ({error})") from None
        raise SourceError(f"MODEL_URI {shown}: not a .tar.gz bundle ({error})") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise SourceError(f"MODEL_URI {shown}: not a .tar.gz bundle ({error})") from None


def _install(staging: Path, final: Path, *, replace: bool) -> None:
    """Rename staging to final; a complete final from a concurrent start is kept unless replace (unverified)."""
    try:
        os.rename(staging, final)
        return
    except OSError:
        if not final.exists():
            raise
    if not replace and (final / COMPLETE).is_file():
        shutil.rmtree(staging)  # another process won the race with the same verified bundle
        return
    trash = tempfile.mkdtemp(dir=final.parent, prefix=".old-")
    try:
        os.rename(final, Path(trash) / final.name)
        os.rename(staging, final)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def _plural(attempts: int) -> str:
    return f"{attempts} attempt" + ("" if attempts == 1 else "s")
