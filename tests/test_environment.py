"""The install: a lock that pins everything, the Pythons it supports, and stages that refuse the
wrong interpreter with one line that says how to fix it."""

from __future__ import annotations

import ast
import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ENV, REPO, dvc, make_project, ran_stages, stages_of
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from stages import environment
from stages.environment import NEEDED, PINNED, SUPPORTED, pins, problems

LOCKS = ("requirements.txt", "requirements-gpu.txt")
OPTIONAL_BACKENDS = {"jax", "torch"}  # Keras backends for extraction (stages/devices.py)


def direct_requirements(path: Path) -> list[Requirement]:
    """The requirements of a pip input file, following `-r` includes."""
    reqs = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            reqs += direct_requirements(path.parent / line[3:].strip())
        elif line:
            reqs.append(Requirement(line))
    return reqs


@pytest.mark.parametrize(("source", "lock"), [("requirements.in", "requirements.txt"),
                                              ("requirements-gpu.in", "requirements-gpu.txt")])
def test_every_direct_requirement_is_pinned_in_its_lock(source: str, lock: str) -> None:
    pinned = pins(REPO / lock)
    for req in direct_requirements(REPO / source):
        name = environment.normalise(req.name)
        assert name in pinned, f"{source}: {req.name} is not in {lock}: regenerate it (README)"
        assert req.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name}=={pinned[name]}, but {source} asks for {req}: regenerate it")


def test_every_line_of_the_locks_is_an_exact_pin() -> None:
    for lock in LOCKS:
        for line in (REPO / lock).read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                assert re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==\S+( ; .+)?$", line), (lock, line)


def test_the_gpu_lock_keeps_every_cpu_pin() -> None:
    cpu, gpu = pins(REPO / "requirements.txt"), pins(REPO / "requirements-gpu.txt")
    assert {k: gpu.get(k) for k in cpu} == cpu
    assert any(name.startswith("nvidia-cudnn") for name in gpu)


def test_supported_pythons_are_stated_alike_everywhere() -> None:
    (lo_major, lo_minor), (hi_major, hi_minor) = SUPPORTED
    declared = SpecifierSet(tomllib.loads((REPO / "pyproject.toml").read_text())
                            ["project"]["requires-python"])
    for minor in range(8, 20):
        version = f"{lo_major}.{minor}"
        assert (version in declared) == (lo_minor <= minor <= hi_minor), version
    assert f"Python {lo_major}.{lo_minor}–{hi_major}.{hi_minor}" in (REPO / "README.md").read_text()


def test_this_interpreter_is_the_projects() -> None:
    environment.check(REPO / "requirements.txt")  # else every stage would refuse to start


def test_wrong_python_version_names_it_and_the_range() -> None:
    found = problems((3, 14), lambda _: object(), {}, {})
    assert len(found) == 1 and "Python 3.14 is not supported" in found[0]
    assert "3.11 to 3.13" in found[0]


def test_missing_packages_are_named() -> None:
    found = problems((3, 11), lambda name: None if name in ("cv2", "keras") else object(), {}, {})
    assert found == ["it lacks cv2, keras"]


def test_needed_names_every_module_the_stages_import() -> None:
    """Third-party modules imported anywhere in stages/ (the optional backends aside): a stage
    must not fail on an import that the check let through."""
    imported = set()
    for path in (REPO / "stages").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module)
    third_party = {m for m in imported if m.split(".")[0] not in sys.stdlib_module_names
                   and m.split(".")[0] != "stages"}
    covered = {m for m in third_party if any(m == n or m.startswith(n + ".") for n in NEEDED)}
    assert third_party - covered == OPTIONAL_BACKENDS
    assert all(any(m == n or m.startswith(n + ".") for m in third_party) for n in NEEDED)


def test_find_module_runs_no_package_code_and_never_raises() -> None:
    # importlib.util.find_spec("ruamel.yaml") imports `ruamel` first, and raises
    # ModuleNotFoundError where `ruamel` is missing; the check must say "it lacks" instead.
    code = ("import sys\n"
            "from stages.environment import find_module\n"
            "assert find_module('ruamel.yaml').name == 'ruamel.yaml'\n"
            "assert find_module('numpy.linalg') is not None\n"
            "assert find_module('no_such_package.yaml') is None\n"
            "assert find_module('numpy.no_such_module') is None\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ruamel', 'numpy')))\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
    found = problems((3, 11), environment.find_module, {}, {})
    assert found == []  # this environment has them all


def test_other_versions_of_pinned_packages_are_named() -> None:
    installed = {d: "1.0" for d in PINNED} | {"tensorflow": "2.15.0"}
    pinned = {d: "1.0" for d in PINNED} | {"tensorflow": "2.21.0"}
    found = problems((3, 12), lambda _: object(), installed, pinned)
    assert found == ["it has tensorflow 2.15.0 (the lock pins 2.21.0)"]
    assert problems((3, 12), lambda _: object(), installed, {}) == []  # no lock at hand


def test_pins_reads_names_extras_and_markers(tmp_path: Path) -> None:
    lock = tmp_path / "r.txt"
    lock.write_text("# comment\nOpenCV_Python.Headless==4.14.0.94\n    # via x\n"
                    "dvc[s3]==3.67.1\npywin32==312 ; sys_platform == 'win32'\n")
    assert pins(lock) == {"opencv-python-headless": "4.14.0.94", "dvc": "3.67.1",
                          "pywin32": "312"}


def test_every_stage_runs_the_python3_on_path() -> None:
    """`python3`: what stock Linux has (no `python`), and what an active venv puts first."""
    for name, stage in stages_of().items():
        assert stage["cmd"].startswith("python3 -m stages."), name


def bare_python3(folder: Path) -> Path:
    """A `python3` on PATH that is this Python without its site-packages: a stock system
    Python, where none of the project's packages are installed."""
    folder.mkdir()
    exe = folder / "python3"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return folder


@pytest.mark.pipeline
def test_a_stage_on_the_wrong_python_says_how_to_fix_it(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_project(tmp_path / "p", per_class=2, n_test=1)
    bare = bare_python3(tmp_path / "bin")
    # DVC itself from this environment (as `.venv/bin/dvc` without activating the venv), the
    # stages' python3 from the system.
    monkeypatch.setitem(ENV, "PATH", os.pathsep.join([str(bare), os.environ["PATH"]]))
    p = dvc(root, "repro", check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and ran_stages(p) in (["resize@train"], ["resize@test"],
                                                    ["pick_weights"])
    assert "is not the project's environment: it lacks" in out
    assert ". .venv/bin/activate" in out and "Traceback" not in out
    assert not list((root / "data/resized").glob("*.h5"))
