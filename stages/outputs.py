"""A stage's folder outputs replaced whole (files: `h5io.atomic_path`).

`train_head`'s and `predict`'s outputs are `persist` in dvc.yaml, so DVC no longer deletes them
before the stage runs (a stage that stops on a bad param keeps the last run's outputs): each
folder they write is therefore built under a temporary name and swapped in at the end, or no
file of an earlier run (a reliability diagram of a test set that is now unlabelled) would stay
beside the new ones.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new, empty temporary sibling folder; if the block succeeds it replaces `path`
    whole. On failure `path` is as it was and the temporary folder is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    old = path.with_name(f".{path.name}.old{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.is_symlink() or path.is_file():
            path.unlink()  # DVC may have linked it to its cache
        elif path.exists():
            path.rename(old)
        try:
            tmp.rename(path)
        except BaseException:
            if old.exists():
                old.rename(path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
