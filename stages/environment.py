"""Is this the project's environment? Checked before a stage imports anything heavy.

dvc.yaml runs every stage as `python3 -m stages.<name>`, and DVC runs that through the shell
with whatever `python3` comes first on PATH: the project's virtual environment when it is
activated, the system's Python when it is not (even when DVC itself was started as
`.venv/bin/dvc`). A stage on the wrong interpreter would fail deep inside an import, or, worse,
run on other versions of TensorFlow or OpenCV and write other bytes; so it stops here, with one
line that says what is wrong and how to fix it. Standard library only: this must run where
nothing is installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path

# The Pythons the pinned TensorFlow ships wheels for that the code supports (3.11+);
# pyproject.toml's requires-python and README.md say the same (tests/test_environment.py).
SUPPORTED = ((3, 11), (3, 13))
# Import name → distribution: what every stage needs, and whose version decides the bytes the
# stages write (decoding, resampling, the networks, the HDF5 files), checked against the lock.
# (Every third-party module a stage imports, but the optional backends' jax and torch:
# tests/test_environment.py checks it against the stages' imports.)
NEEDED = {
    "numpy": "numpy", "h5py": "h5py", "ruamel.yaml": "ruamel.yaml", "tqdm": "tqdm", "cv2": None,
    "numba": "numba", "tensorflow": "tensorflow", "keras": "keras",
    "matplotlib": "matplotlib", "pydicom": "pydicom", "openvino": "openvino", "nncf": "nncf",
}
PINNED = ("tensorflow", "keras", "openvino", "numpy", "opencv-python-headless", "h5py", "numba",
          "pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg")
LOCK = "requirements.txt"
SKIP = "STAGES_SKIP_ENVIRONMENT_CHECK"  # set by benchmarks/gpu_extract.py only
HOW_TO_FIX = (
    "Run DVC from the project's virtual environment: `. .venv/bin/activate`, then `dvc repro` "
    "(create it with `python3 -m venv .venv && .venv/bin/pip install -r requirements.txt`; "
    "docs/install.md)"
)


class EnvironmentProblem(RuntimeError):
    """This interpreter cannot run the stages as the lock file says."""


def pins(lock: str | os.PathLike[str]) -> dict[str, str]:
    """`name==version` lines of a pip requirements file → {normalised name: version}."""
    out = {}
    for line in Path(lock).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#]+)", line)
        if m:
            out[normalise(m.group(1))] = m.group(2)
    return out


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def problems(version: tuple[int, int], find: Callable[[str], object],
             installed: Mapping[str, str | None], pinned: Mapping[str, str]) -> list[str]:
    """What keeps this interpreter from running the stages; empty if nothing does.

    `find`: import name → a spec or None; `installed`: distribution → version or None;
    `pinned`: the lock's versions (empty where no lock file is at hand).
    """
    lo, hi = SUPPORTED
    if not lo <= version <= hi:
        return [f"Python {version[0]}.{version[1]} is not supported: the project runs on Python "
                f"{lo[0]}.{lo[1]} to {hi[0]}.{hi[1]} (the pinned TensorFlow has no wheels for "
                "newer ones); make the virtual environment with one of those (docs/install.md "
                "says how when python3 is another version)"]
    missing = [name for name in NEEDED if find(name) is None]
    if missing:
        return [f"it lacks {', '.join(missing)}"]
    wrong = [f"{d} {installed[d]} (the lock pins {pinned[d]})" for d in PINNED
             if d in pinned and installed.get(d) not in (None, pinned[d])]
    return [f"it has {', '.join(wrong)}"] if wrong else []


def find_module(name: str) -> ModuleSpec | None:
    """Where module `name` would be imported from, or None where it cannot be; runs none of its
    packages' code. (importlib.util.find_spec imports the parent of a dotted name, which may be
    slow, and raises ModuleNotFoundError where that parent is missing.)"""
    top, *parts = name.split(".")
    spec = importlib.util.find_spec(top)  # a top-level name: looked up, not imported
    for i in range(len(parts)):
        if spec is None or spec.submodule_search_locations is None:
            return None
        spec = PathFinder.find_spec(".".join([top, *parts[:i + 1]]),
                                    list(spec.submodule_search_locations))
    return spec


def _installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check(lock: str | os.PathLike[str] = LOCK) -> None:
    """Raise EnvironmentProblem naming this interpreter, what is wrong and the fix."""
    pinned = pins(lock) if Path(lock).is_file() else {}
    found = problems(sys.version_info[:2], find_module,
                     {d: _installed(d) for d in PINNED}, pinned)
    if found:
        raise EnvironmentProblem(
            f"{sys.executable} is not the project's environment: {'; '.join(found)}. "
            + HOW_TO_FIX)
