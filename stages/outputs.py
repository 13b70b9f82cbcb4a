"""Where the classify tool writes (stages/classify.py): each output checked before TensorFlow
starts, so that minutes of scoring do not end in an IsADirectoryError, and the folders it
fills (`--cam`, `--export`) written beside the old one and swapped in at the end: a run that
stops leaves the old one as it was, a new one never lies beside an earlier run's pictures."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from stages import cli
from stages.cli import UserError

CAM_H5 = "cam.h5"


class OutputError(UserError, ValueError):
    """An output path the tool cannot write to: a folder where a file goes, and so on."""


def check_file(path: str | os.PathLike[str], option: str) -> None:
    """`path` can be written as a file (`--out`, `--mistakes-out`)."""
    if Path(path).is_dir():
        raise OutputError(f"{option} {path}: is a folder; give a file name")


def is_cam_output(path: Path) -> bool:
    """What an earlier `--cam` run wrote: its pictures and cam.h5 (or their temporary names)."""
    return path.is_file() and (path.suffix == ".png" or path.name == CAM_H5
                               or (path.name.startswith(".") and ".tmp" in path.name))


def check_cam_folder(folder: str | os.PathLike[str]) -> None:
    """`folder` is new, or holds an earlier `--cam` output only (which the new one replaces)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--cam {folder}: is a file; give a folder")
    if folder.is_dir():
        other = sorted(p.name for p in folder.iterdir() if not is_cam_output(p))
        if other:
            raise OutputError(f"--cam {folder}: holds {cli.some(other, 5)}, not only an earlier "
                              "--cam output (PNGs and cam.h5, which a new one replaces); give a "
                              "new folder")


def check_export_folder(folder: str | os.PathLike[str]) -> None:
    """`folder` is new, or an earlier SavedModel (which the new one replaces)."""
    folder = Path(folder)
    if folder.exists() and not (folder / "saved_model.pb").is_file():
        # Replace an earlier export, never a folder of something else (`--export reports`).
        raise OutputError(f"--export {folder}: exists and is no SavedModel; give a new folder")


@contextlib.contextmanager
def replaced(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """An empty temporary sibling of `folder` to write into; when the block succeeds it takes
    `folder`'s place (`swap`), otherwise it is removed and `folder` is left as it was."""
    folder = Path(folder).absolute()
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # a killed run's, whose pid this one reuses
    tmp.mkdir(parents=True)
    try:
        yield tmp
        swap(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def swap(new: Path, folder: Path) -> None:
    """`new` renamed to `folder`; an earlier `folder` moved aside first and removed after, or
    put back where the second rename fails (never left under its hidden name)."""
    old = folder.with_name(f".{folder.name}.old{os.getpid()}")
    if folder.exists():
        folder.rename(old)
    try:
        new.rename(folder)
    except BaseException:
        if old.exists():
            old.rename(folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
