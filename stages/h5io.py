"""HDF5 and output-file helpers shared by every stage.

Outputs are written under a temporary name in the same folder and renamed when complete, so a
killed stage never leaves a file that looks finished. HDF5 files are written without timestamps
(h5py's default libver; "latest" stamps group headers with times), so the same inputs give the
same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stages.cli import MissingInput, UserError

STR = h5py.string_dtype()
# What describes the rows, travelling with them from a split's resized file to its feature
# files: `names` (paths relative to the data folder), `labels` (class indices; a test set's
# index its own top folders) and, for Kaggle's numbered test images, `ids`. The class names, in
# label order, travel as the `classes` attribute.
ROW_INFO = ("labels", "names", "ids")
# HDF5 keeps an attribute in its object's header, which holds 64 KiB; h5py stores each class name
# there as a 16-byte reference to the name: 4,090 names fit, whatever their length (measured).
MAX_CLASSES = 4090


def label_dtype(n_classes: int) -> np.dtype:
    """The smallest unsigned integer that holds every label: uint8 up to 256 classes (so a
    two-class file keeps its bytes), wider beyond."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if n_classes <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise ValueError(f"{n_classes} classes")


def read_row_info(f: h5py.File) -> dict[str, np.ndarray]:
    """The ROW_INFO datasets a file holds (names as str)."""
    return {k: f[k].asstr()[:] if h5py.check_string_dtype(f[k].dtype) else f[k][:]
            for k in ROW_INFO if k in f}


def classes_of(f: h5py.File) -> list[str]:
    if "classes" not in f.attrs:
        raise MissingInput(f"{f.filename}: records no class names; it was written by an older "
                         "version of the pipeline. Rerun `dvc repro`.")
    return [str(c) for c in f.attrs["classes"]]


def classes_if_any(f: h5py.File) -> list[str] | None:
    """The class names of a file whose rows may have none (an unlabelled test set)."""
    return classes_of(f) if "classes" in f.attrs else None


def check_classes(classes: Sequence[str]) -> None:
    """More class names than an HDF5 attribute holds stop, saying the limit (checked when the
    classes are listed, before any image is decoded)."""
    if len(classes) > MAX_CLASSES:
        raise UserError(
            f"{len(classes):,} classes: at most {MAX_CLASSES:,} class names fit in the HDF5 "
            "attribute that records them with every file. Merge classes into fewer folders")


def set_classes(f: h5py.File, classes: Sequence[str]) -> None:
    check_classes(classes)
    f.attrs["classes"] = list(classes)


def write_row_info(f: h5py.File, info: dict[str, np.ndarray], classes: Sequence[str] | None
                   ) -> None:
    for key in ROW_INFO:
        if key in info:
            write_array(f, key, info[key])
    if classes is not None:
        set_classes(f, classes)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds.

    The temporary name keeps the suffix (Keras picks the format from it). An existing `path` is
    unlinked rather than written into: DVC may have linked it read-only to its cache.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def create_h5(path: str | os.PathLike[str]) -> Iterator[h5py.File]:
    """Open a new HDF5 file for writing under a temporary name; renamed on success."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield f


def md5(path: str | os.PathLike[str]) -> str:
    """The md5 of a file, read in 1 MB blocks (as DVC names what it caches)."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: str | os.PathLike[str], data: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_array(f: h5py.File, name: str, data: np.ndarray) -> None:
    f.create_dataset(name, data=data, track_times=False,
                     dtype=STR if data.dtype == object else None)  # object: str, from .asstr()


class Appender:
    """An HDF5 dataset that grows along axis 0, written batch by batch (bounded memory)."""

    def __init__(self, f: h5py.File, name: str, shape: tuple[int, ...], dtype: Any,
                 chunk_rows: int = 1) -> None:
        self.ds = f.create_dataset(
            name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
            chunks=(chunk_rows, *shape) if shape else (max(chunk_rows, 4096),),
            track_times=False,
        )
        vlen = h5py.check_vlen_dtype(self.ds.dtype)
        self._vlen_array = vlen is not None and vlen not in (str, bytes)

    def append(self, rows: np.ndarray | list[Any]) -> None:
        n = len(rows)
        if n == 0:
            return
        start = self.ds.shape[0]
        self.ds.resize(start + n, axis=0)
        if self._vlen_array:
            # h5py turns a batch of equal-length arrays into one 2-D array, which a dataset of
            # variable-length rows cannot take ("Can't broadcast (1, 9236) -> (1,)"): row by row.
            for i, row in enumerate(rows):
                self.ds[start + i] = row
        else:
            self.ds[start:start + n] = rows

    def __len__(self) -> int:
        return int(self.ds.shape[0])


def iter_batches(ds: h5py.Dataset, batch_size: int) -> Iterator[np.ndarray]:
    """Read a dataset in consecutive row batches; never more than one batch in memory."""
    for start in range(0, ds.shape[0], batch_size):
        yield ds[start:start + batch_size]


def require(path: str | os.PathLike[str], keys: tuple[str, ...], hint: str) -> None:
    """Fail with a message that names the file and the fix when an input is missing or wrong."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: not found. {hint}")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in keys if k not in f]
    except OSError as e:  # not HDF5, or damaged
        raise MissingInput(f"{path}: cannot be read as HDF5 ({e}). {hint}") from None
    if missing:
        raise MissingInput(f"{path}: has no dataset(s) {missing}; it was written by an older "
                           f"version of the pipeline or another program. {hint}")


def check_finite(rows: np.ndarray, names: Sequence[str], what: str, start: int = 0) -> None:
    """Stop, naming the rows, where `rows` (one row per image) holds NaN or an infinity: a
    number that is not a number must not become a prediction or a checkpoint."""
    bad = np.flatnonzero(~np.isfinite(rows.reshape(len(rows), -1)).all(axis=1))
    if len(bad):
        shown = ", ".join(str(names[start + i]) for i in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise NonFinite(f"{what}: {len(bad)} row(s) hold NaN or infinite values: {shown}{more}")


class NonFinite(UserError, ValueError):
    """Numbers that are not numbers where a result is made from them."""
