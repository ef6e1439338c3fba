"""Every venv of the images is installed by scripts/venv.py from a hashed lock, and an image for another architecture
gets its venvs from the build machine's own pip, not under emulation.

On an amd64 runner building linux/arm64 (or an Apple Silicon laptop building linux/amd64) every RUN step is emulated,
and pip (unpacking, bytecode) is most of a build: 34x slower than natively here (BENCHMARKS.md). With VENV=cross
(make passes it) the Dockerfile's cross-build stage runs on the build platform (`FROM --platform=$BUILDPLATFORM`) and
calls scripts/venv.py with `--arch "$TARGETARCH"`, which installs the target's wheels from the lock's entries for the
target machine. Here: the cross stages of every render of several platforms (and their absence elsewhere), and the
script with a real pip against wheels made on the spot: plain and cross installs, the lock's stamp, the serve lock's
split in two parts, --python, --move-to, the pipconf secret and EXTRA_INDEX_URL. tests/test_engine_platforms.py
builds the arm64 images this way and serves from them under emulation."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from helpers.answers import MATRIX, REPO
from helpers.combos import COMBOS, Combo
from helpers.dockerfile import Dockerfile
from helpers.wheels import make_wheel, sha256

SCRIPTS = REPO / "template" / "scripts"
SCRIPT = SCRIPTS / "venv.py"
# venv.py with its fixed paths (/opt/venv, /run/secrets/pipconf) pointed at the test's folders: argv VENV PIPCONF ARGS
RUNNER = f"""
import importlib.util, sys
from pathlib import Path
sys.path.insert(0, {str(SCRIPTS)!r})  # lock.py, beside venv.py as in the images
spec = importlib.util.spec_from_file_location("venv_script", {str(SCRIPT)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.VENV, module.PIPCONF = Path(sys.argv[1]), Path(sys.argv[2])
sys.exit(module.main(sys.argv[3:]))
"""
MACHINES = {"x86_64": "amd64", "aarch64": "arm64"}
HOST = platform.machine()
OTHER = next(machine for machine in MACHINES if machine != HOST)


def cross_install(combo: Combo) -> bool:
    """copier.yml's cross_install, from the answers: several platforms, a builder with its own Python."""
    return len(combo.platforms.split(",")) > 1 and not MATRIX["base_image"][combo.base_image].get("python_apt")


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: c.id)
def test_each_render_of_several_platforms_installs_the_other_architecture_natively(
        render_combo: Callable[[Combo], Path], combo: Combo) -> None:
    path = render_combo(combo) / "Dockerfile"
    text = path.read_text()
    native, *others = Dockerfile.each(path)
    if not cross_install(combo):  # one platform, or apt's Python on the builder: the image's own pip only
        assert not others and native.venv is None
        assert not [name for name in native.stages if "cross" in name or name.startswith("native-")]
        assert "VENV" not in text and "$BUILDPLATFORM" not in text and "--arch" not in text
        assert native.stages["train"].base == "train-venv"
        return
    (cross,) = others
    # a bare `docker buildx build --platform <other>` works (native: emulated); the comment says what to pass
    assert native.global_args["VENV"] == "native" and "--build-arg VENV=cross" in text
    assert "FROM ${VENV}-train-venv AS train" in text
    stage = native.stages["cross-build"]
    assert stage.platform == "$BUILDPLATFORM" and stage.base == "${BUILDER_IMAGE}"
    assert stage.all("ARG")[0].args.split()[0] == "TARGETARCH"
    # venv.py imports lock_files.py (the platform view of a merged lock) and runs prune_venv.py beside it
    sources = " ".join(i.args for i in stage.all("COPY"))
    assert all(f"scripts/{name}" in sources for name in ("venv.py", "lock_files.py", "prune_venv.py")), sources
    (run,) = [r for r in stage.all("RUN") if r.venv_calls()]
    assert "type=secret,id=pipconf" in run.mounts() and "type=cache,id=/root/.cache/pip,target=/var/cache" in run.mounts()
    assert run.args.count('--arch "$TARGETARCH"') == 3, run.args
    calls = run.venv_calls()
    assert [(Path(c[2]).name, c[c.index("--arch") + 1], c[c.index("--move-to") + 1]) for c in calls] == [
        ("train.txt", "$TARGETARCH", "/opt/train"), ("1.txt", "$TARGETARCH", "/opt/serve-1"),
        ("2.txt", "$TARGETARCH", "/opt/serve-2")]
    # VENV picks the install: the cross-build stage is built for VENV=cross only, and then for both images
    for reading, built in ((native, False), (cross, True)):
        for target in ("train", "serve"):
            assert ("cross-build" in reading.reachable(target)) == built, (reading.venv, target)
            assert (f"native-{target}-venv" in reading.reachable(target)) == (not built), (reading.venv, target)


@pytest.fixture()
def wheels(tmp_path: Path) -> Path:
    """A find-links folder: a package with a wheel per machine (different contents), one with a script and a data
    file, one for each machine only, one pure that requires a package the folder lacks."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    for machine in MACHINES:
        make_wheel(folder, "native", "1.0", f"manylinux_2_17_{machine}.manylinux2014_{machine}",
                   files={"native/__init__.py": f"MACHINE = {machine!r}\n"})
        make_wheel(folder, only_name(machine), "3.0", f"manylinux2014_{machine}", files={f"{only_name(machine)}.py": ""})
    make_wheel(folder, "tool", "2.0", files={"tool/__init__.py": "def main():\n    print('tool')\n"},
               scripts={"tool": "tool:main"}, data={"share/tool/README": "data\n"})
    make_wheel(folder, "needy", "1.0", files={"needy.py": ""}, requires=["missing-package>=1"])
    return folder


def only_name(machine: str) -> str:
    return "only" + machine.replace("_", "")


def only(machine: str) -> tuple[str, str, str]:
    """The lock entry of the package with a wheel for `machine` only, marked for that machine."""
    return f"{only_name(machine)}==3.0", f'platform_machine == "{machine}"', f"{only_name(machine)}-*"


def lock(folder: Path, entries: list[tuple[str, str, str]], platforms: str = "linux/amd64,linux/arm64") -> str:
    """A hashed lock, stamped as scripts/lock.py stamps them: (name==version, marker, wheel file glob)."""
    lines = [f"# inputs sha256:0 (python 3.13, python:3.13-slim-trixie ({platforms}), pip-tools; `make lock-check`)"]
    for spec, marker, pattern in entries:
        hashes = [f"    --hash=sha256:{sha256(w)}" for w in sorted(folder.glob(pattern))]
        assert hashes, pattern
        lines += [f"{spec}{f' ; {marker}' if marker else ''} \\", *[h + " \\" for h in hashes[:-1]], hashes[-1]]
    return "\n".join(lines) + "\n"


def venv_py(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
            pipconf: Path | None = None) -> subprocess.CompletedProcess:
    """scripts/venv.py ARGS, its venv at tmp_path/venv; pip reads no config of this machine, the index is
    `env`'s (by default: the wheels folder only, as --no-index --find-links)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "EXTRA_INDEX_URL"}
    # no pip.conf of this machine's user or of /etc/xdg (where the pipconf secret makes pip read config files)
    base |= {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_CACHE_DIR": "1", "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
             "XDG_CONFIG_DIRS": str(tmp_path / "xdg")}
    env = {**base, **(env if env is not None else {"PIP_NO_INDEX": "1",
                                                     "PIP_FIND_LINKS": str(tmp_path / "wheels")})}
    return subprocess.run([sys.executable, "-c", RUNNER, str(tmp_path / "venv"), str(pipconf or tmp_path / "none"),
                           *args], capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path, env=env)


def write_lock(tmp_path: Path, text: str, name: str = "serve.txt") -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


def site_packages(env_dir: Path) -> Path:
    return next((env_dir / "lib").glob("python3.*/site-packages"))


def installed(env_dir: Path) -> set[str]:
    return {p.name.split("-")[0] for p in site_packages(env_dir).glob("*.dist-info")}


def test_a_plain_install_puts_the_locks_pins_in_a_venv_without_pip(tmp_path: Path, wheels: Path) -> None:
    lock_path = write_lock(tmp_path, lock(wheels, [("native==1.0", "", "native-*"), ("tool==2.0", "", "tool-*"),
                                                   ("needy==1.0", "", "needy-*"), only(HOST), only(OTHER)]))
    result = venv_py(tmp_path, lock_path)
    assert result.returncode == 0, result.stderr
    env_dir = tmp_path / "venv"
    site = site_packages(env_dir)
    assert f"MACHINE = {HOST!r}" in (site / "native" / "__init__.py").read_text()
    # this machine's entries only; needy's requirement not resolved (--no-deps: the lock is the whole venv)
    assert installed(env_dir) == {"native", "tool", "needy", only_name(HOST)}
    assert not (site / "pip").exists(), "the runtime images carry no installer"
    script = env_dir / "bin" / "tool"
    assert script.read_text().splitlines()[0] == f"#!{env_dir / 'bin' / 'python'}"
    assert subprocess.run([script], capture_output=True, text=True, check=True, timeout=600).stdout == "tool\n"


def test_a_pin_whose_hash_differs_is_refused(tmp_path: Path, wheels: Path) -> None:
    text = lock(wheels, [("tool==2.0", "", "tool-*")])
    text = re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, text)
    result = venv_py(tmp_path, write_lock(tmp_path, text))
    assert result.returncode == 1 and "THESE PACKAGES DO NOT MATCH THE HASHES" in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: pip could not install serve.txt (above: the package)"


def test_the_other_architectures_wheels_go_into_the_venv_with_its_scripts_and_data(tmp_path: Path,
                                                                                   wheels: Path) -> None:
    text = lock(wheels, [("native==1.0", "", "native-*"), ("tool==2.0", "", "tool-*"), only(HOST), only(OTHER)])
    result = venv_py(tmp_path, write_lock(tmp_path, text), "--arch", MACHINES[OTHER])
    assert result.returncode == 0, result.stderr
    env_dir = tmp_path / "venv"
    site = site_packages(env_dir)
    # the other machine's wheel, though pip ran on this one; this machine's entry left out, not failed on
    assert f"MACHINE = {OTHER!r}" in (site / "native" / "__init__.py").read_text()
    assert installed(env_dir) == {"native", "tool", only_name(OTHER)}
    # scripts and data where a plain install in the venv puts them, the scripts run by the venv's Python
    script = env_dir / "bin" / "tool"
    assert script.read_text().splitlines()[0] == f"#!{env_dir / 'bin' / 'python'}"
    assert (env_dir / "share" / "tool" / "README").read_text() == "data\n"
    assert not any((site / name).exists() for name in ("bin", "share"))
    assert subprocess.run([script], capture_output=True, text=True, check=True, timeout=600).stdout == "tool\n"


def test_the_build_machines_own_architecture_is_a_plain_install(tmp_path: Path, wheels: Path) -> None:
    text = lock(wheels, [("native==1.0", "", "native-*"), only(HOST), only(OTHER)])
    result = venv_py(tmp_path, write_lock(tmp_path, text), "--arch", MACHINES[HOST])
    assert result.returncode == 0, result.stderr
    site = site_packages(tmp_path / "venv")
    assert f"MACHINE = {HOST!r}" in (site / "native" / "__init__.py").read_text()
    assert installed(tmp_path / "venv") == {"native", only_name(HOST)}


def last_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result
    return result.stderr.strip().splitlines()[-1]


def test_a_package_without_a_wheel_for_the_target_says_how_to_build_it(tmp_path: Path, wheels: Path) -> None:
    spec, _, pattern = only(HOST)  # unmarked: a lock that says the other machine needs it too
    line = last_line(venv_py(tmp_path, write_lock(tmp_path, lock(wheels, [(spec, "", pattern)])),
                             "--arch", MACHINES[OTHER]))
    assert line == (f"error: pip could not install serve.txt (above: the package): a package without a "
                    f"linux/{MACHINES[OTHER]} wheel builds under emulation with --build-arg VENV=native")


def test_a_lock_not_made_for_the_target_is_refused(tmp_path: Path, wheels: Path) -> None:
    text = lock(wheels, [("native==1.0", "", "native-*")], platforms=f"linux/{MACHINES[HOST]}")
    line = last_line(venv_py(tmp_path, write_lock(tmp_path, text), "--arch", MACHINES[OTHER]))
    assert line == (f"error: serve.txt was not locked for linux/{MACHINES[OTHER]}: add it to PLATFORMS in the "
                    "Dockerfile and run `make lock`")
    # the stamp names this machine's platform: its own install goes on
    assert venv_py(tmp_path, str(tmp_path / "serve.txt"), "--arch", MACHINES[HOST]).returncode == 0


def test_an_architecture_without_a_cross_install_says_what_to_do(tmp_path: Path, wheels: Path) -> None:
    text = lock(wheels, [("native==1.0", "", "native-*")])
    line = last_line(venv_py(tmp_path, write_lock(tmp_path, text), "--arch", "riscv64"))
    assert line == "error: no cross install for linux/riscv64: build it with --build-arg VENV=native"


SPLIT_LOCK = """\
# inputs sha256:0 (python 3.13, python:3.13-slim-trixie (linux/amd64,linux/arm64), pip-tools; `make lock-check`)
#
#    pip-compile --generate-hashes
#
fastapi==0.115.0 \\
    --hash=sha256:1111111111111111111111111111111111111111111111111111111111111111
    # via -r serve.in
numpy==2.1.0 ; platform_machine == "x86_64" \\
    --hash=sha256:2222222222222222222222222222222222222222222222222222222222222222
numpy==2.1.1 ; platform_machine == "aarch64" \\
    --hash=sha256:3333333333333333333333333333333333333333333333333333333333333333
pydantic-core==2.23.0 ; platform_machine == "x86_64" \\
    --hash=sha256:4444444444444444444444444444444444444444444444444444444444444444
Scikit_Learn==1.5.2 \\
    --hash=sha256:5555555555555555555555555555555555555555555555555555555555555555
    # via -r serve.in
uvicorn==0.30.0 \\
    --hash=sha256:6666666666666666666666666666666666666666666666666666666666666666
"""


def test_the_serve_lock_splits_into_its_large_packages_and_the_rest(tmp_path: Path) -> None:
    (tmp_path / "serve.txt").write_text(SPLIT_LOCK)
    result = venv_py(tmp_path, "split", str(tmp_path / "serve.txt"), str(tmp_path / "parts"))
    assert result.returncode == 0, result.stderr
    heading = "".join(SPLIT_LOCK.splitlines(keepends=True)[:4])
    entries = re.split(r"(?m)^(?=[A-Za-z])", SPLIT_LOCK)[1:]
    by_name: dict[str, str] = {}
    for entry in entries:  # numpy's two entries (one per machine) together
        by_name[entry.split("=")[0]] = by_name.get(entry.split("=")[0], "") + entry
    first, second = ((tmp_path / "parts" / f"{n}.txt").read_text() for n in (1, 2))
    # the heading (the stamp venv.py checks) in both; each entry, hashes and markers with it, in one part only
    assert first == heading + by_name["numpy"] + by_name["Scikit_Learn"]
    assert second == heading + by_name["fastapi"] + by_name["pydantic-core"] + by_name["uvicorn"]


def test_the_two_parts_install_into_one_venv_and_an_empty_part_installs_nothing(tmp_path: Path,
                                                                                wheels: Path) -> None:
    text = lock(wheels, [("native==1.0", "", "native-*"), ("tool==2.0", "", "tool-*")])
    parts = tmp_path / "parts"
    (tmp_path / "serve.txt").write_text(text)
    assert venv_py(tmp_path, "split", str(tmp_path / "serve.txt"), str(parts)).returncode == 0
    assert (parts / "1.txt").read_text() == text.splitlines(keepends=True)[0]  # no large package: the heading only
    for number, moved in ((1, "serve-1"), (2, "serve-2")):  # as the serve image's two layers are made
        result = venv_py(tmp_path, str(parts / f"{number}.txt"), "--move-to", str(tmp_path / moved))
        assert result.returncode == 0, result.stderr
    # the empty part: a venv without packages (the serve image's COPY of it still finds the folder)
    assert installed(tmp_path / "serve-1") == set() and (tmp_path / "serve-1" / "bin" / "python").exists()
    assert installed(tmp_path / "serve-2") == {"native", "tool"}
    # one venv, both parts in it: where the serve image has pip (slim)
    for number in (2, 1):
        assert venv_py(tmp_path, str(parts / f"{number}.txt")).returncode == 0
    assert installed(tmp_path / "venv") == {"native", "tool"}


def test_the_venv_points_at_the_serve_images_interpreter_and_moves(tmp_path: Path, wheels: Path) -> None:
    """--python a path this machine lacks (distroless keeps its Python in /usr/bin) is linked to this Python, and
    the venv made for it; --move-to moves the venv once installed."""
    python = tmp_path / "usr" / "bin" / "python3"
    python.parent.mkdir(parents=True)
    text = lock(wheels, [("native==1.0", "", "native-*")])
    result = venv_py(tmp_path, write_lock(tmp_path, text), "--python", str(python), "--move-to",
                     str(tmp_path / "serve-1"))
    assert result.returncode == 0, result.stderr
    assert python.is_symlink() and python.resolve() == Path(os.path.realpath(sys.executable)).resolve()
    assert not (tmp_path / "venv").exists()
    moved = tmp_path / "serve-1"
    config = dict(line.split(" = ", 1) for line in (moved / "pyvenv.cfg").read_text().splitlines() if " = " in line)
    assert config["home"] == str(python.parent), config
    assert installed(moved) == {"native"}


def test_the_pipconf_secret_is_pips_config_when_given(tmp_path: Path, wheels: Path) -> None:
    lock_path = write_lock(tmp_path, lock(wheels, [("native==1.0", "", "native-*")]))
    pipconf = tmp_path / "pipconf"
    pipconf.write_text("")  # no secret given: BuildKit mounts an empty file
    no_index = {"PIP_NO_INDEX": "1"}  # nothing to install from but what the pip.conf names
    assert venv_py(tmp_path, lock_path, env=no_index, pipconf=pipconf).returncode == 1
    pipconf.write_text(f"[global]\nfind-links = {wheels}\n")
    result = venv_py(tmp_path, lock_path, env=no_index, pipconf=pipconf)
    assert result.returncode == 0, result.stderr
    assert installed(tmp_path / "venv") == {"native"}


def index(folder: Path, wheels: list[Path]) -> str:
    """A PEP 503 index of these wheels in a folder: its file:// URL."""
    for wheel in wheels:
        project = folder / wheel.name.split("-")[0].replace("_", "-")
        project.mkdir(parents=True, exist_ok=True)
        (project / wheel.name).write_bytes(wheel.read_bytes())
        with (project / "index.html").open("a") as page:
            page.write(f'<a href="{wheel.name}#sha256={sha256(wheel)}">{wheel.name}</a>\n')
    folder.mkdir(parents=True, exist_ok=True)
    return folder.as_uri()


def test_the_frameworks_extra_index_is_passed_to_pip(tmp_path: Path, wheels: Path) -> None:
    lock_path = write_lock(tmp_path, lock(wheels, [("tool==2.0", "", "tool-*")]))
    env = {"PIP_INDEX_URL": index(tmp_path / "empty", [])}  # the main index has nothing
    assert venv_py(tmp_path, lock_path, env=env).returncode == 1
    extra = index(tmp_path / "extra", sorted(wheels.glob("tool-*")))
    result = venv_py(tmp_path, lock_path, env={**env, "EXTRA_INDEX_URL": extra})
    assert result.returncode == 0, result.stderr
    assert installed(tmp_path / "venv") == {"tool"}
