"""Shared test helpers: a copy of the project in a temporary git + DVC repo, with real JPEGs.

The tests must pass wherever a user runs them: with their own data in `data/raw`, with their
own params and DVC or git settings, with the venv's python called by path and not activated.
So a test project holds only the project's own files (what git tracks or would track, none of
the user's data or outputs), its params are the contract's defaults plus the tiny ones below, and
every command runs with this interpreter first on PATH and with DVC's and git's user-wide
settings replaced by the tests' own.

`baseline` is the one full `dvc repro` of the session: tests that only read its outputs use it
as it is, tests that change something work on a copy (`copy_project`), which is cheap.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml
from filelock import FileLock

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `import imagegen`

import imagegen

from benchmarks import synthetic
from stages.backbones import BACKBONES
from stages.params import DEFAULTS, WEIGHTS_DIR

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("stages", "dvc.yaml", "data", ".gitignore", ".dvcignore", "requirements.txt",
                 "models/.gitignore", "reports/.gitignore")
ALL = ["pick_weights", "int8_sample"] + [
    f"{s}@{split}" for s in ("resize", "extract_inception", "extract_xception", "concat")
    for split in ("train", "test")] + ["train_head", "predict", "report"]
# Small enough for CI on 2 cores: 75 px is the smallest both networks accept.
TINY = {"width": 75, "weights": "none", "epochs": 2, "extract_batch_size": 16}

# User-wide settings that would change what the tests see, replaced by empty ones of our own.
_HOME = Path(tempfile.mkdtemp(prefix="dvc-cats-tests-"))
atexit.register(shutil.rmtree, _HOME, True)
(_HOME / "gitconfig").write_text("[user]\n\tname = t\n\temail = t@t\n")
for _d in ("dvc-global", "dvc-system", "keras"):
    (_HOME / _d).mkdir()
# Keras of this process too (the unit tests build networks here): TensorFlow, no ~/.keras.
os.environ["KERAS_HOME"] = str(_HOME / "keras")
# OpenVINO's converted networks: one cache for the session (its processes and the stages'),
# none in the user's ~/.cache.
os.environ["OPENVINO_IR_CACHE"] = str(_HOME / "openvino")
os.environ.pop("KERAS_BACKEND", None)

ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GIT_"))},
    # The stages run `python3` from PATH: this interpreter's, whether its venv is active or not.
    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": "", "DVC_NO_ANALYTICS": "1",
    "DVC_GLOBAL_CONFIG_DIR": str(_HOME / "dvc-global"),
    "DVC_SYSTEM_CONFIG_DIR": str(_HOME / "dvc-system"),
    "GIT_CONFIG_GLOBAL": str(_HOME / "gitconfig"), "GIT_CONFIG_NOSYSTEM": "1",
}


def start(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a command in `cwd` in the background (two "machines" working at once); `env`
    adds to the tests' environment."""
    return subprocess.Popen(args, cwd=cwd, env={**ENV, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Wait for a started command; on an unexpected failure the assertion shows its output."""
    out, err = p.communicate()
    if check:
        cmd = " ".join(map(str, p.args))  # type: ignore[arg-type]
        assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{out}\n{err}"
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def run(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return finish(start(cwd, *args, env=env), check)


def dvc(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return run(cwd, sys.executable, "-m", "dvc", *args, check=check, env=env)


def dvc_start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return start(cwd, sys.executable, "-m", "dvc", *args)


def ran_stages(p: subprocess.CompletedProcess[str]) -> list[str]:
    """The stages that `dvc repro` / `dvc exp run` really executed, in order."""
    return re.findall(r"Running stage '([^']+)'", p.stdout + p.stderr)


def stages_of(root: Path = REPO) -> dict[str, dict[str, Any]]:
    """dvc.yaml's stages as DVC runs them: a `foreach` group as one stage per item
    (`resize@train`), with `${key}`/`${item}` filled in (`${params}` references left as they
    are)."""
    out = {}
    for name, spec in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].items():
        if "foreach" not in spec:
            out[name] = spec
            continue
        items = spec["foreach"]
        for key, item in (items.items() if isinstance(items, dict) else ((i, i) for i in items)):
            text = yaml.safe_dump(spec["do"]).replace("${key}", key)
            if not isinstance(item, dict):
                text = text.replace("${item}", str(item))
            out[f"{name}@{key}"] = yaml.safe_load(text)
    return out


def set_params(root: Path, **changes: object) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params.update(changes)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def project_files(repo: Path = REPO) -> list[str]:
    """The project's files as a clone of it holds them, and new modules of `stages/` not yet
    committed (so they are tested); never the user's data, weights or outputs, even where
    git does not ignore them."""
    def git_files(*args: str) -> list[str]:
        p = subprocess.run(["git", "ls-files", *args], cwd=repo, capture_output=True, text=True)
        return p.stdout.splitlines() if p.returncode == 0 else []

    files = git_files("--", *PROJECT_FILES) + git_files("-o", "--exclude-standard", "--",
                                                        "stages/*.py")
    # The user's own inputs, committed as the README's data step says: not the project's.
    files = [f for f in files if not (f.startswith("data/raw/") and f.endswith(".dvc"))]
    if files:
        return sorted(f for f in set(files) if (repo / f).is_file())
    # Not a git checkout (an unpacked archive): the same files, by the ignore files' rules.
    found = [f.relative_to(repo) for name in PROJECT_FILES
             for f in ([repo / name] if (repo / name).is_file() else (repo / name).rglob("*"))]
    return sorted(str(f) for f in found if (repo / f).is_file() and "__pycache__" not in f.parts
                  and f.parts[:2] not in (("data", "raw"), ("data", "resized"),
                                          ("data", "features")) and f.suffix != ".h5")


def make_project(root: Path, per_class: int = 12, n_test: int = 6, data: bool = True,
                 **params: object) -> Path:
    """A fresh git + DVC repo holding the project, tiny params and (optionally) generated data."""
    root.mkdir(parents=True, exist_ok=True)
    for rel in project_files():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    run(root, "git", "init", "-q", "-b", "main")
    dvc(root, "init", "-q")
    if data:
        imagegen.kaggle_train(root / "data/raw/train", per_class)
        imagegen.test_set(root / "data/raw/test", n_test)
    # The contract's defaults, not the user's params.yaml (which `dvc exp run -S` edits).
    (root / "params.yaml").write_text(
        yaml.safe_dump({**DEFAULTS, **TINY, **params}, sort_keys=False))
    if data:
        track_inputs(root)
    else:
        (root / "keras_weights").mkdir()
        dvc(root, "add", "-q", "keras_weights")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "project")
    return root


def track_inputs(root: Path) -> None:
    """The README's data step: the raw images and the local weights folder (empty with
    `weights: none`) become DVC-tracked inputs."""
    (root / "keras_weights").mkdir(exist_ok=True)
    dvc(root, "add", "-q", "data/raw/train", "data/raw/test", "keras_weights")


def copy_project(src: Path, dest: Path) -> Path:
    """A second working copy of a test project: its git history, DVC cache, outputs and data.
    Cheaper than a `dvc repro` by far; DVC rehashes the copied files once (they are tiny)."""
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns("tmp"))
    return dest


# README, "One copy on disk", says `reflink,hardlink,symlink`; the tests leave out reflinks,
# which stat cannot tell from copies (on XFS, Btrfs, APFS the link checks would fail).
LINKS = "hardlink,symlink"


def linked_copy(src: Path, dest: Path) -> Path:
    """A copy of a test project whose outputs are links to its DVC cache, as the README's
    experiment workflow sets it up once per clone."""
    copy_project(src, dest)
    dvc(dest, "config", "--local", "cache.type", LINKS)
    dvc(dest, "checkout", "--relink")
    return dest


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def experiments(repo: Path) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json` by experiment name ("baseline": the commit they are based on)."""
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    exps = {}
    for rev in shown:
        if rev["rev"] != "workspace":
            exps["baseline"] = rev["data"]
        for exp in rev.get("experiments") or []:
            exps[exp["name"]] = exp["revs"][0]["data"]
    return exps


def exp_lock_md5(repo: Path, name: str) -> dict[str, str]:
    """The md5 of every stage output that experiment `name`'s commit records in dvc.lock."""
    rev = next(e["revs"][0]["rev"] for r in json.loads(dvc(repo, "exp", "show", "--json").stdout)
               for e in (r.get("experiments") or []) if e["name"] == name)
    lock = yaml.safe_load(run(repo, "git", "show", f"{rev}:dvc.lock").stdout)
    return {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


def shared(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder `name`, built once per test session even when pytest-xdist's workers each
    ask for it: the first builds it under a file lock, the others wait and then reuse it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    base = factory.getbasetemp().parent if worker else factory.getbasetemp()
    target, done = base / name, base / f"{name}.done"
    with FileLock(base / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)  # a worker's failed try
            build(target)
            done.touch()
    return target


# The card's two, and the network test_networks.py adds as the README says: its weight file is
# there from the start, so adding its stage reruns no other extractor (they depend on the folder).
BASELINE_WEIGHTS = ("inception_v3", "xception", "resnet50")


def _run_baseline(root: Path) -> None:
    make_project(root, weights=WEIGHTS_DIR)
    for name in BASELINE_WEIGHTS:  # random-init networks, saved as Keras' notop files
        save_notop(name, root / WEIGHTS_DIR / BACKBONES[name].weights_file, seed=1)
    dvc(root, "add", WEIGHTS_DIR)  # the README's "Weights": the files, versioned
    run(root, "git", "commit", "-qam", "local weights")
    p = dvc(root, "repro")
    assert sorted(ran_stages(p)) == sorted(ALL)
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "repro")


@pytest.fixture(scope="session")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole pipeline run once, committed: 12 cats, 12 dogs, 6 test images, tiny params,
    on local weight files (`weights: keras_weights`: random-init networks saved as Keras'
    notop files), with the raw images and the weights DVC-tracked as the README's data step
    leaves them.

    Read it, never change it or run dvc in it (another worker may be reading it): copy it with
    `copy_project` instead.
    """
    return shared(tmp_path_factory, "baseline", _run_baseline)


def rel_err(f: np.ndarray, ref: np.ndarray) -> float:
    """Max over rows of ‖f − ref‖ / ‖ref‖ (features against a reference)."""
    num = np.linalg.norm(f.astype(np.float64) - ref, axis=1)
    return float(np.max(num / np.linalg.norm(ref.astype(np.float64), axis=1)))


def write_resized(root: Path, n_train: int, n_test: int, width: int) -> Path:
    """`root`/train.h5 and test.h5 laid out as the resize stage writes them (Kaggle layout):
    smooth random colour fields plus noise, features that differ from image to image."""
    import cv2

    def draw(rng: np.random.Generator, label: int) -> np.ndarray:
        small = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
        img = cv2.resize(small, (width, width), interpolation=cv2.INTER_CUBIC)
        img += rng.normal(0, 20, (width, width, 3))
        return np.clip(img, 0, 255).astype(np.uint8)

    synthetic.write_resized(root, n_train, n_test, width, draw)
    return root


def save_notop(backbone: str, path: Path, seed: int, width: int = 75) -> None:
    """A random-init network saved in the legacy HDF5 layout of Keras' own notop files."""
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(seed)
    b = BACKBONES[backbone]
    model = getattr(b.keras_module(), b.builder)(
        include_top=False, weights=None, input_shape=(width, width, 3), pooling="avg")
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
