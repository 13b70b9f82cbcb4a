"""Shared test helpers: a copy of the project in a temporary git + DVC repo, with real JPEGs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `import imagegen`

import imagegen

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("stages", "dvc.yaml", "params.yaml", "keras_weights", "data", ".gitignore",
                 ".dvcignore")
# Small enough for CI on 2 cores: 75 px is the smallest both networks accept.
TINY = {"width": 75, "weights": "none", "epochs": 2, "extract_batch_size": 16}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": "", "DVC_NO_ANALYTICS": "1",
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t"}


def run(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in `cwd`; on an unexpected failure the assertion shows its output."""
    p = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    if check:
        cmd = " ".join(args)
        assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(cwd, sys.executable, "-m", "dvc", *args, check=check)


def ran_stages(p: subprocess.CompletedProcess[str]) -> list[str]:
    """The stages that `dvc repro` / `dvc exp run` really executed, in order."""
    return re.findall(r"Running stage '([^']+)'", p.stdout + p.stderr)


def set_params(root: Path, **changes: object) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params.update(changes)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(root: Path, per_class: int = 12, n_test: int = 6, data: bool = True,
                 **params: object) -> Path:
    """A fresh git + DVC repo holding the project, tiny params and (optionally) generated data."""
    root.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns(
                "__pycache__", "*.jpg", "*.h5", "*.zip"))
        elif src.exists():
            shutil.copy2(src, root / name)
    run(root, "git", "init", "-q", "-b", "main")
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    if data:
        imagegen.kaggle_train(root / "data/raw/train", per_class)
        imagegen.test_set(root / "data/raw/test", n_test)
    set_params(root, **{**TINY, **params})
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "project")
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")
