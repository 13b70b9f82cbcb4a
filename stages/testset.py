"""A test set read against the training classes: a labelled set, or images scored by name.

The test side is listed without the training data (its stages are its own, so new images to
score never touch the training side), so its resized file keeps the test set's folders as they
are. What they mean needs the classes: `predict` reads them from the model; `resize@test` from
the training data or the model where it can see them, to stop before the extraction (that check
only ever stops the stage, its output never depends on it, so it is no dependency of it).

- A lone top folder named like a training class is that class (`Malignant/patient1/IM1.png`:
  a one-class labelled set); any other lone top folder is a wrapper, dropped from the names.
- Folders that are all training classes: a labelled set. Some of them: stops, naming the rest.
- Folders none of which is a class: images scored by name, when they clearly are not classes:
  every folder name holds a digit (patient IDs, study numbers, dates: `patient7`, `P0001`,
  `2024-05-01`), there are loose images beside them, or there are more than HDF5 can name.
  Otherwise, and whenever a folder is a near miss of a class (`cats` for `cat`, `Cat` for
  `cat`), it stops, naming the folders and the classes: a labelled set scored as an unlabelled
  one would give no test scores, and say so nowhere.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from stages import h5io
from stages.cli import UserError, some

_TEST_ID = re.compile(r"^(\d{1,18})\.[^.]+$")  # 18 digits: every id fits the int64 `ids`
FIX = "(then `dvc repro`; docs/data.md, 'Your own images: the layouts')"


class TestSetError(UserError, ValueError):
    """The test folders cannot be read as a labelled test set nor as folders of images."""

    __test__ = False  # not a pytest test class


@dataclass
class TestSet:
    """The test rows as `pred.csv` names them, and what they are: Kaggle's numbers (`ids`, the
    submission), or paths relative to test_data without wrapper folders (`names`), with each
    row's training-class index where the set is labelled."""

    __test__ = False  # not a pytest test class
    ids: np.ndarray | None = None
    names: np.ndarray | None = None
    labels: np.ndarray | None = None

    def row_ids(self) -> list[str]:
        return [str(i) for i in (self.ids if self.ids is not None else self.names)]  # type: ignore[union-attr]


def read(names: Sequence[str], classes: Sequence[str]) -> TestSet:
    """Read a test set's row names (as its resized file stores them, in its order) against the
    training `classes`; TestSetError where the folders are neither (see the module doc)."""
    rel = _without_wrappers(list(names), classes)
    folders = sorted({n.split("/", 1)[0] for n in rel if "/" in n})
    loose = [n for n in rel if "/" not in n]
    if not folders:
        ids = kaggle_ids(rel)
        if ids:
            return TestSet(ids=np.asarray(ids, np.int64))
        return TestSet(names=np.asarray(rel, object))
    known = [f for f in folders if f in classes]
    if known:
        others = [f for f in folders if f not in classes]
        if others:
            raise TestSetError(
                f"test folder(s) {', '.join(others)} are not training classes "
                f"({', '.join(classes)}), while {', '.join(known)} are"
                f"{_did_you_mean(others, classes)}; a labelled test set holds one subfolder "
                f"per training class. Rename or remove them {FIX}")
        if loose:
            raise TestSetError(
                f"the test set mixes images in class folders ({', '.join(known)}) with loose "
                f"images ({', '.join(loose[:5])}{' …' if len(loose) > 5 else ''}): a labelled "
                f"test set holds every image in a class folder. Move or remove them {FIX}")
        if len(known) == 1:
            _not_a_wrapper_of_classes(known[0], rel, classes)
        index = {c: i for i, c in enumerate(classes)}
        return TestSet(names=np.asarray(rel, object),
                       labels=np.array([index[n.split("/", 1)[0]] for n in rel]))
    _no_near_miss(folders, classes)
    if loose or len(folders) > h5io.MAX_CLASSES or all(_has_digit(f) for f in folders):
        return TestSet(names=np.asarray(rel, object))
    raise TestSetError(
        f"test folder(s) {some(folders, 10)} are not training classes ({', '.join(classes)}). A "
        "labelled test set names its folders exactly as the classes; folders of images to "
        "score need names with a digit (patient IDs, dates, batch numbers: `patient7/`), or "
        f"the images loose. Rename the folders {FIX}")


def parse_test_id(name: str) -> int | None:
    """`123.jpg` → 123; None if the name is not a number."""
    m = _TEST_ID.match(PurePosixPath(name).name)
    return int(m.group(1)) if m else None


def kaggle_ids(names: Sequence[str]) -> list[int]:
    """Each name's number when every name is a loose `<id>.<ext>` and no number repeats;
    otherwise none, and rows are named by their files."""
    ids = [parse_test_id(n) if "/" not in n else None for n in names]
    if not ids or any(i is None for i in ids) or len(set(ids)) < len(ids):
        return []
    return ids  # type: ignore[return-value]


def _without_wrappers(rel: list[str], classes: Sequence[str]) -> list[str]:
    """Drop lone top folders that are not classes (`batch2/IMG_0001.jpg` → `IMG_0001.jpg`),
    so a folder and a zip of it name rows alike; stop at one named like a class."""
    while rel and all("/" in n for n in rel):
        top = rel[0].split("/", 1)[0]
        if top in classes or any(n.split("/", 1)[0] != top for n in rel):
            break
        _no_near_miss([top], classes)
        rel = [n.split("/", 1)[1] for n in rel]
    return rel


def _not_a_wrapper_of_classes(folder: str, rel: Sequence[str], classes: Sequence[str]) -> None:
    """`cat/cat/1.jpg`, `cat/dog/2.jpg`: the class cat, or a wrapper `cat` around the classes?
    Either reading could be silently wrong; ask."""
    inner = {n.split("/")[1] for n in rel if n.count("/") >= 2}
    if inner and inner <= set(classes) and inner != {folder} and all(
            n.count("/") >= 2 for n in rel):
        raise TestSetError(
            f"test folder {folder} is a training class and holds only folders named like "
            f"training classes ({', '.join(sorted(inner))}): is it the class {folder} or a "
            f"wrapper around a labelled set? Move the class folders up, out of {folder}/, or "
            f"rename them {FIX}")


def near_misses(folders: Sequence[str], classes: Sequence[str]) -> dict[str, str]:
    """Each folder that is not a class but looks like one (other case, a plural, a typo) →
    that class."""
    lower = {c.lower(): c for c in classes}
    out = {}
    for f in folders:
        if f in classes:
            continue
        key = f.lower()
        for k in (key, key.removesuffix("s"), key.removesuffix("es")):
            if k in lower:
                out[f] = lower[k]
                break
        else:
            close = difflib.get_close_matches(key, list(lower), n=1, cutoff=0.8)
            if close:
                out[f] = lower[close[0]]
    return out


def _no_near_miss(folders: Sequence[str], classes: Sequence[str]) -> None:
    misses = near_misses(folders, classes)
    if not misses:
        return
    if all(f.lower() == c.lower() for f, c in misses.items()):
        raise TestSetError(
            f"test folder(s) {', '.join(misses)} differ from the training classes "
            f"{', '.join(misses.values())} only in case; class names are case-sensitive. "
            f"Rename the folders as the classes are named {FIX}")
    raise TestSetError(
        f"test folder(s) {some(list(folders), 10)} are not training classes "
        f"({', '.join(classes)}){_did_you_mean(list(misses), classes)}. A labelled test set "
        f"names its folders exactly as the classes. Rename the folders {FIX}")


def _did_you_mean(folders: Sequence[str], classes: Sequence[str]) -> str:
    misses = near_misses(folders, classes)
    return ("; did you mean " + ", ".join(f"{f} → {c}" for f, c in misses.items()) + "?"
            if misses else "")


def _has_digit(name: str) -> bool:
    return any(ch.isdigit() for ch in name)

