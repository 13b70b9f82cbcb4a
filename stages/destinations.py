"""Where the classify tool writes (stages/classify.py): each output checked before TensorFlow
starts, so that minutes of scoring do not end in an IsADirectoryError. The folders it fills
(`--cam`, `--export`) are then written beside the old one and swapped in at the end
(`outputs.atomic_dir`): a run that stops leaves the old one as it was, and a new one never lies
beside an earlier run's pictures. Not a stage's module: no dvc.yaml stage depends on it."""

from __future__ import annotations

import os
import re
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


# The pictures a `--cam` run names (`classify.classify`): the image's index, then its name.
CAM_PNG = re.compile(r"\d+_.+\.png")


def is_cam_output(path: Path) -> bool:
    """A file an earlier `--cam` run wrote: its cam.h5 or one of its numbered pictures."""
    return path.is_file() and (path.name == CAM_H5 or CAM_PNG.fullmatch(path.name) is not None)


def check_cam_folder(folder: str | os.PathLike[str]) -> None:
    """`folder` is new (or empty), or holds an earlier `--cam` output only, which the new one
    replaces whole: its cam.h5 and numbered PNGs. A folder of the user's own PNGs is refused,
    or they would be deleted with it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--cam {folder}: is a file; give a folder")
    if folder.is_dir() and any(folder.iterdir()):
        other = sorted(p.name for p in folder.iterdir() if not is_cam_output(p))
        if other or not (folder / CAM_H5).is_file():
            held = cli.some(other, 5) if other else "no cam.h5"
            raise OutputError(f"--cam {folder}: holds {held}, not only an earlier --cam output "
                              "(its cam.h5 and numbered PNGs, which a new one replaces); give a "
                              "new folder")


def check_export_folder(folder: str | os.PathLike[str]) -> None:
    """`folder` is new, or an earlier SavedModel (which the new one replaces)."""
    folder = Path(folder)
    if folder.exists() and not (folder / "saved_model.pb").is_file():
        # Replace an earlier export, never a folder of something else (`--export reports`).
        raise OutputError(f"--export {folder}: exists and is no SavedModel; give a new folder")
