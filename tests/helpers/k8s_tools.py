"""kubectl and kustomize for the Kubernetes tests, cosign for the image signing tests: Debian trixie's packages,
unpacked into a cache folder.

Installed the way tools/container-engine installs its plugins: apt-get against a private sources list and state
directory under /var/tmp (the machine's own apt configuration is never touched), `apt-get download`, then
`dpkg-deb -x` of the package. Nothing is installed system-wide; a second session finds the binaries cached.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

STATE = Path(os.environ.get("MLDT_K8S_TOOLS", "/var/tmp/mldt-k8s-tools"))
# trixie package -> the binary it carries (kubectl 1.32, kustomize 5.6, cosign 2.5)
PACKAGES = {"kubectl": "usr/bin/kubectl", "kustomize": "usr/bin/kustomize", "cosign": "usr/bin/cosign"}
KUBERNETES = ("kubectl", "kustomize")


class ToolError(Exception):
    """A tool cannot be installed here; the message says which and why."""


def _debian_mirror() -> str:
    """The Debian archive of this machine's own apt sources (deb822 or one-line format)."""
    candidates: list[str] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        candidates += [line.split()[1] for line in path.read_text().splitlines() if line.startswith("URIs:")]
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if path.is_file():
            candidates += [line.split()[1] for line in path.read_text().splitlines() if line.startswith("deb ")]
    for uri in candidates:
        if "security" not in uri:
            return uri.rstrip("/")
    raise ToolError("no Debian archive in this machine's apt sources (/etc/apt/sources.list*)")


def _apt(*args: str) -> subprocess.CompletedProcess:
    trixie = STATE / "trixie"
    for sub in ("lists/partial", "archives/partial"):
        (trixie / sub).mkdir(parents=True, exist_ok=True)
    sources = trixie / "sources.list"
    if not sources.is_file():
        sources.write_text(f"deb {_debian_mirror()} trixie main\n")
    # an empty dpkg status: a kubectl the machine may have installed from elsewhere must not shadow trixie's
    status = trixie / "status"
    status.touch()
    cmd = ["apt-get", "-q", f"-o=Dir::Etc::sourcelist={sources}", "-o=Dir::Etc::sourceparts=/nonexistent",
           f"-o=Dir::State::lists={trixie / 'lists'}", f"-o=Dir::Cache::archives={trixie / 'archives'}", f"-o=Dir::State::status={status}", *args]
    result = subprocess.run(cmd, cwd=trixie, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise ToolError(f"apt-get {' '.join(args)} (trixie) failed: {result.stderr.strip().splitlines()[-1:]}")
    return result


def install(bin_dir: Path = STATE / "bin", names: tuple[str, ...] = KUBERNETES) -> Path:
    """The tools `names` (kubectl and kustomize unless told; keys of PACKAGES) in bin_dir (downloaded once); returns
    bin_dir. Several test processes at once install them once: the first holds a lock on the state folder, the
    others wait and find the binaries."""
    if all((bin_dir / name).is_file() for name in names):
        return bin_dir
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _install(bin_dir, names)


def _install(bin_dir: Path, names: tuple[str, ...]) -> Path:
    missing = [name for name in names if not (bin_dir / name).is_file()]
    if not missing:
        return bin_dir
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            raise ToolError(f"{tool} not found: the tests install Debian's {', '.join(missing)} with it")
    if not any((STATE / "trixie" / "lists").glob("*Packages*")):
        _apt("update")
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in missing:
        _apt("download", name)
        debs = sorted((STATE / "trixie").glob(f"{name}_*.deb"))
        if not debs:
            raise ToolError(f"apt-get download {name} (trixie) left no .deb in {STATE / 'trixie'}")
        unpacked = STATE / "trixie" / f"x-{name}"
        shutil.rmtree(unpacked, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(unpacked)], check=True, timeout=300)
        binary = unpacked / PACKAGES[name]
        if not binary.is_file():
            raise ToolError(f"{debs[-1].name} holds no /{PACKAGES[name]}")
        shutil.copy2(binary, bin_dir / name)
        (bin_dir / name).chmod(0o755)
        shutil.rmtree(unpacked, ignore_errors=True)
    return bin_dir
