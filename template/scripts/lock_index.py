"""The package indexes: the user's pip settings (`pip config`, PIP_* variables), handed to the build as a pip.conf
secret and to uv as UV_* variables, never written into a lock (URLs may carry credentials); and the sha256 of every
file of a pinned version, read from the indexes' own listings when several platforms' locks are merged."""

from __future__ import annotations

import base64
import configparser
import json
import os
import re
import ssl
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

from lock_files import LockError, canonical, log

PIP_KEYS = ("index-url", "extra-index-url", "find-links", "trusted-host")
# uv reads no pip.conf: each pip setting has an environment variable (lists: space- or comma-separated)
UV_ENV = {
    "index-url": ("UV_INDEX_URL", " "),
    "extra-index-url": ("UV_EXTRA_INDEX_URL", " "),
    "find-links": ("UV_FIND_LINKS", ","),
    "trusted-host": ("UV_INSECURE_HOST", " "),
}


def pip_settings(keys: tuple[str, ...] = PIP_KEYS) -> dict[str, list[str]]:
    """The user's pip index settings: `pip config` first, environment variables on top (as pip itself does)."""
    found: dict[str, list[str]] = {}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        m = re.match(r"^[\w:.-]*?\.?([a-z-]+)='(.*)'$", line.strip())
        if m and m.group(1) in keys:
            found[m.group(1)] = m.group(2).split()
    for key in keys:
        value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if value:
            found[key] = value.split()
    return found


def uv_env(settings: dict[str, list[str]]) -> dict[str, str]:
    """The pip index settings as uv's environment variables."""
    return {UV_ENV[key][0]: UV_ENV[key][1].join(values) for key, values in settings.items()
            if key in UV_ENV and values}


def requirement_urls(project: Path) -> list[str]:
    """Index URLs named inside requirements/*.in (a framework's own wheel index, say)."""
    found = []
    for path in sorted((project / "requirements").glob("*.in")):
        found += re.findall(r"^\s*--(?:extra-)?index-url[ =]\s*(\S+)", path.read_text(), flags=re.MULTILINE)
    return found


def is_loopback(url: str) -> bool:
    return urlsplit(url).hostname in ("localhost", "127.0.0.1", "::1")


def usable_in_container(value: str) -> bool:
    """Local paths and file:// URLs of this machine do not exist inside the build."""
    return urlsplit(value).scheme in ("http", "https") or not value.startswith(("/", ".", "file:"))


def write_pip_conf(settings: dict[str, list[str]], path: Path) -> bool:
    """Write a pip.conf for the build secret; True if any setting points at this machine's loopback."""
    conf = configparser.ConfigParser()
    conf["global"] = {}
    loopback = False
    for key, values in settings.items():
        kept = [v for v in values if key == "trusted-host" or usable_in_container(v)]
        for dropped in set(values) - set(kept):
            log(f"not passing pip {key} {dropped!r} to the build: it is a path on this machine")
        if kept:
            conf["global"][key] = "\n".join(kept) if len(kept) > 1 else kept[0]
        loopback |= any(map(is_loopback, kept))
    with path.open("w") as f:
        conf.write(f)
    path.chmod(0o600)
    return loopback


class IndexHashes:
    """sha256 of every file of a pinned version, from the indexes' simple pages (PEP 691 JSON or PEP 503 HTML, whose
    links carry `#sha256=`), as pip-tools and uv take them; looked up once per package, a few at a time."""

    def __init__(self, indexes: list[str], cafile: str | None = None):
        self.indexes = list(dict.fromkeys(index.rstrip("/") + "/" for index in indexes))
        self.context = ssl.create_default_context(cafile=cafile) if cafile else None
        self.listed: dict[str, dict[str, set[str]]] = {}

    @classmethod
    def of(cls, project: Path) -> IndexHashes:
        """The indexes the builds use (the user's pip settings and the .in files' own) and pip's CA bundle."""
        settings = pip_settings((*PIP_KEYS, "cert"))
        indexes = (settings.get("index-url") or ["https://pypi.org/simple"]) + settings.get("extra-index-url", [])
        indexes += requirement_urls(project)
        return cls([i for i in indexes if urlsplit(i).scheme in ("http", "https")], (settings.get("cert") or [None])[0])

    def fetch(self, names: list[str]) -> None:
        todo = [name for name in dict.fromkeys(map(canonical, names)) if name not in self.listed]
        with ThreadPoolExecutor(8) as pool:
            self.listed.update(pool.map(lambda name: (name, self.files_of(name)), todo))

    def files_of(self, name: str) -> dict[str, set[str]]:
        """{version: sha256s} of a package over every index."""
        found: dict[str, set[str]] = {}
        for index in self.indexes:
            for filename, digest in self.page(urljoin(index, f"{name}/")):
                version = file_version(filename, name)
                if version and digest:
                    found.setdefault(version, set()).add(digest)
        return found

    def page(self, url: str) -> list[tuple[str, str]]:
        parts = urlsplit(url)
        headers = {"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1", "User-Agent": "make-lock"}
        if parts.username:  # credentials in the URL: basic auth, never in a log line
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
            url = urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60,
                                        context=self.context) as response:
                body = response.read().decode("utf-8", "replace")
                kind = response.headers.get("Content-Type", "")
        except OSError as error:
            if getattr(error, "code", None) in (403, 404):  # not on this index (PyTorch's answers 403)
                return []
            raise LockError(f"cannot read {urlsplit(url).hostname}'s page of {url.rstrip('/').rsplit('/', 1)[-1]} "
                            f"for its hashes ({error}): check the index settings and the network, then run make lock"
                            ) from error
        if "json" in kind:
            return [(f["filename"], f.get("hashes", {}).get("sha256", "")) for f in json.loads(body)["files"]]
        return [(unquote(href.split("#", 1)[0].rsplit("/", 1)[-1]), digest) for href, digest in
                re.findall(r'href="([^"]+?#sha256=([0-9a-f]{64}))"', body)]

    def __call__(self, name: str, version: str) -> list[str]:
        self.fetch([name])
        return sorted(self.listed[canonical(name)].get(version, ()))


def file_version(filename: str, name: str) -> str:
    """The version in a wheel's or an sdist's file name, if the file is `name`'s."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        return parts[1] if len(parts) >= 5 and canonical(parts[0]) == name else ""
    for suffix in (".tar.gz", ".zip", ".tar.bz2"):
        if filename.endswith(suffix):
            base, _, version = filename[: -len(suffix)].rpartition("-")
            return version if canonical(base) == name else ""
    return ""
