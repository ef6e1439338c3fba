"""An image for another architecture installs its venvs with the build machine's own pip, not under emulation.

On an amd64 runner building linux/arm64 (or an Apple Silicon laptop building linux/amd64) every RUN step is emulated,
and pip (unpacking, bytecode) is most of a build: 34x slower than natively here (BENCHMARKS.md). The Dockerfile's
cross stages run on the build platform (`FROM --platform=$BUILDPLATFORM`) and call scripts/cross_install.py, which
installs the target's wheels from the lock's entries for the target machine. Here: the stages each pair of
architectures picks (every render), and the script with a real pip against wheels made on the spot.
tests/test_engine_platforms.py builds the arm64 images this way and serves from them under emulation."""

from __future__ import annotations

import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.answers import MATRIX, REPO
from helpers.combos import COMBOS, Combo
from helpers.dockerfile import Dockerfile
from helpers.wheels import make_wheel, sha256

SCRIPT = REPO / "template" / "scripts" / "cross_install.py"
ARCHES = [platform.split("/")[1] for platform in MATRIX["platforms"]]
PAIRS = [(target, builder) for target in ARCHES for builder in ARCHES]


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: c.id)
def test_each_pair_of_architectures_picks_its_install(render_combo: Callable[[Combo], Path], combo: Combo) -> None:
    path = render_combo(combo) / "Dockerfile"
    for target, builder in PAIRS:
        dockerfile = Dockerfile.read(path, target=target, builder=builder)
        for image in ("train", "serve"):
            names = [stage.name for stage in dockerfile.chain(image)]
            if image == "serve" and "serve-venv" in dockerfile.stages:  # no pip in the serve image: a copied venv
                names = [stage.name for stage in dockerfile.chain("serve-venv")]
            cross = f"deps-{image}-cross"
            if target == builder:  # installed in the image's own stages, with the target's own pip
                assert cross not in names and f"deps-{image}" in names, (target, builder, names)
                continue
            # else pip runs on the build machine's platform, and the image gets the venv it made
            chain = dockerfile.chain(cross)
            assert cross in names or any(f"--from={cross} /opt/venv" in copy.args for stage in dockerfile.chain(image)
                                         for copy in stage.all("COPY")), (target, builder, names)
            assert chain[-1].name == "python-build" and chain[-1].platform == "$BUILDPLATFORM"
            install = dockerfile.stages[cross].all("RUN")[-1].args
            assert f'/tmp/cross_install.py /tmp/{image}.txt /opt/venv "${{TARGETARCH}}"' in install
            assert "--mount=type=secret,id=pipconf" in install
            assert dockerfile.stages[cross].all("ARG")[-1].args == "TARGETARCH"
    # a builder that sets no TARGETARCH for FROM (Podman 4) gets a stage that exists: the image's own install
    text = path.read_text()
    assert "FROM ${TARGETARCH:-amd64}-on-${INSTALL_ARCH:-${TARGETARCH:-amd64}}-train-venv AS train" in text


@pytest.fixture()
def wheels(tmp_path: Path) -> Path:
    """An index folder: a package with a wheel per machine (different contents), one with a script and a data file,
    one for x86_64 only and one pure."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    for machine in ("x86_64", "aarch64"):
        make_wheel(folder, "native", "1.0", f"manylinux_2_17_{machine}.manylinux2014_{machine}",
                   files={"native/__init__.py": f"MACHINE = {machine!r}\n"})
    make_wheel(folder, "tool", "2.0", files={"tool/__init__.py": "def main():\n    print('tool')\n"},
               scripts={"tool": "tool:main"}, data={"share/tool/README": "data\n"})
    make_wheel(folder, "intelonly", "3.0", "manylinux1_x86_64", files={"intelonly.py": ""})
    return folder


def lock(folder: Path, entries: list[tuple[str, str, str]], platforms: str = "linux/amd64,linux/arm64") -> str:
    """A hashed lock, stamped as scripts/lock.py stamps them: (name==version, marker, wheel file glob)."""
    lines = [f"# inputs sha256:0 (python 3.13, python:3.13-slim-trixie ({platforms}), pip-tools; `make lock-check`)"]
    for spec, marker, pattern in entries:
        hashes = [f"    --hash=sha256:{sha256(w)}" for w in sorted(folder.glob(pattern))]
        lines += [f"{spec}{f' ; {marker}' if marker else ''} \\", *[h + " \\" for h in hashes[:-1]], hashes[-1]]
    return "\n".join(lines) + "\n"


def cross_install(tmp_path: Path, text: str, arch: str, folder: Path) -> tuple[subprocess.CompletedProcess, Path]:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    (tmp_path / "serve.txt").write_text(text)
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "serve.txt"), str(env_dir), arch,
                             "--no-index", "--find-links", str(folder)], capture_output=True, text=True, timeout=300,
                            check=False)
    return result, env_dir


def site_packages(env_dir: Path) -> Path:
    return next((env_dir / "lib").glob("python3.*/site-packages"))


def test_the_targets_wheels_go_into_the_venv_with_its_scripts_and_data(tmp_path: Path, wheels: Path) -> None:
    text = lock(wheels, [("native==1.0", "", "native-*"), ("tool==2.0", "", "tool-*"),
                         ("intelonly==3.0", 'platform_machine == "x86_64"', "intelonly-*")])
    result, env_dir = cross_install(tmp_path, text, "arm64", wheels)
    assert result.returncode == 0, result.stderr
    site = site_packages(env_dir)
    # the aarch64 wheel, though pip ran on another machine; the x86_64-only entry left out, not failed on
    assert "MACHINE = 'aarch64'" in (site / "native" / "__init__.py").read_text()
    assert not (site / "intelonly.py").exists()
    # scripts and data where a plain install in the venv puts them, the scripts run by the venv's Python
    script = env_dir / "bin" / "tool"
    assert script.read_text().splitlines()[0] == f"#!{env_dir / 'bin' / 'python'}"
    assert (env_dir / "share" / "tool" / "README").read_text() == "data\n"
    assert not any((site / name).exists() for name in ("bin", "share"))
    assert subprocess.run([script], capture_output=True, text=True, check=True, timeout=600).stdout == "tool\n"


def test_the_same_lock_installs_for_amd64(tmp_path: Path, wheels: Path) -> None:
    text = lock(wheels, [("native==1.0", "", "native-*"),
                         ("intelonly==3.0", 'platform_machine == "x86_64"', "intelonly-*")])
    result, env_dir = cross_install(tmp_path, text, "amd64", wheels)
    assert result.returncode == 0, result.stderr
    site = site_packages(env_dir)
    assert "MACHINE = 'x86_64'" in (site / "native" / "__init__.py").read_text() and (site / "intelonly.py").exists()


def last_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result
    return result.stderr.strip().splitlines()[-1]


def test_a_package_without_a_wheel_for_the_target_says_how_to_build_it(tmp_path: Path, wheels: Path) -> None:
    text = lock(wheels, [("intelonly==3.0", "", "intelonly-*")])  # unmarked: a lock that says arm64 needs it
    line = last_line(cross_install(tmp_path, text, "arm64", wheels)[0])
    assert line.startswith("error: pip could not install serve.txt's wheels for linux/arm64")
    assert "--build-arg INSTALL_ARCH=arm64" in line


def test_a_lock_not_made_for_the_target_is_refused(tmp_path: Path, wheels: Path) -> None:
    text = lock(wheels, [("native==1.0", "", "native-*")], platforms="linux/amd64")
    line = last_line(cross_install(tmp_path, text, "arm64", wheels)[0])
    assert line == ("error: serve.txt was not locked for linux/arm64: add it to PLATFORMS in the Dockerfile and run "
                    "`make lock`")


def test_an_architecture_without_a_cross_install_says_what_to_do(tmp_path: Path, wheels: Path) -> None:
    text = lock(wheels, [("native==1.0", "", "native-*")])
    line = last_line(cross_install(tmp_path, text, "riscv64", wheels)[0])
    assert "no cross install for linux/riscv64" in line and "--build-arg INSTALL_ARCH=riscv64" in line
