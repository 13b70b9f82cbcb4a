"""The images handed to the classify tool: files, folders or `.zip`s, listed and decoded by the
same code as the `resize` stage (stages/images.py, stages/decode.py), so that a file gives the
classifier the pixels it gives the pipeline."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages import cli, limits
from stages.decode import load_rgb
from stages.images import DataError, Source, check_utf8_names, list_test
from stages.pool import parallel_map

HELP = "Give image files (any format `resize` reads, DICOM too), folders or .zip files of them"


@dataclass(frozen=True)
class Entry:
    source: Source
    name: str   # within the source
    shown: str  # as the user will find it: the path given, or the folder's or zip's plus name


def entries(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[Entry], list[str]]:
    """(the images, in the order given, each folder's or zip's by folder then name; the
    non-image files of folders and zips, left out). A file named on its own is read whatever
    its name (an extensionless DICOM, say); a path that does not exist stops it, by name."""
    found: list[Entry] = []
    ignored: list[str] = []
    for path in map(Path, paths):
        if not path.exists():
            raise DataError(f"{path}: does not exist. {HELP}")
        if path.is_dir() or (path.suffix.lower() == ".zip" and zipfile.is_zipfile(path)):
            source = Source(path, help=HELP)
            listing = list_test(source)
            found += [Entry(source, f, f"{path}/{f}") for f in listing.files]
            ignored += [f"{path}/{f}" for f in listing.ignored]
        else:
            source = Source(path.parent, help=HELP)
            check_utf8_names(source, [path.name])  # as a folder's names are (images.py)
            found.append(Entry(source, path.name, str(path)))
    return found, ignored


def decoded(found: Sequence[Entry], width: int, workers: int | None = None
            ) -> Iterator[tuple[Entry, np.ndarray | Exception]]:
    """Each entry with its uint8 (width, width, 3) RGB pixels, or the reason it cannot be
    decoded, in order, decoded on `workers` threads (default: the cores) under resize's pixel
    limit."""
    workers = workers or limits.default_workers()
    limit = limits.max_pixels(workers)
    results = parallel_map(lambda i: load_rgb(found[i].source, found[i].name, width, limit),
                           range(len(found)), workers)  # type: ignore[arg-type]
    yield from zip(found, results, strict=True)  # type: ignore[misc]


def load_all(paths: Sequence[str | os.PathLike[str]], width: int) -> np.ndarray:
    """Every image of `paths` as uint8 (n, width, width, 3); any that cannot be decoded stop
    it, each named with its reason."""
    found, _ = entries(paths)
    images, bad = [], []
    for entry, result in decoded(found, width):
        if isinstance(result, Exception):
            bad.append(f"{entry.shown} ({result})")
        else:
            images.append(result)
    if bad:
        raise DataError(f"{len(bad)} image(s) cannot be decoded: {cli.some(bad, 5)}. Replace or "
                        "remove them")
    return np.stack(images) if images else np.zeros((0, width, width, 3), np.uint8)
