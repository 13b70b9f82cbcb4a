"""The validation split: stratified by class, seeded, and with `group_pattern` kept by group.

The original took the last 20% of a cats-then-dogs array, so its "validation" set was all dogs;
here every class keeps its share on both sides. Images of one patient (or any group that
`group_pattern` names) are never on both sides: a model that has seen a patient's other X-ray
would look better on validation than it is, and no reviewer in medical imaging accepts that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from stages.cli import UserError


class SplitError(UserError, ValueError):
    """The training set cannot give every class a place on both sides of the split."""


def stratified_split(labels: np.ndarray, val_split: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val), each sorted: `val_split` of every class, drawn with `seed`."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_val = round(len(idx) * val_split)
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)  # both sides keep every class
        val.append(rng.permutation(idx)[:n_val])
    val_idx = np.sort(np.concatenate(val))
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def grouped_split(labels: np.ndarray, groups: np.ndarray, val_split: float, seed: int,
                  classes: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val), each sorted, with every group wholly on one side, and each class's
    share of validation images as close to `val_split` as whole groups allow.

    Groups are taken in a seeded random order (not largest first: then the same large groups
    would make up validation whatever the seed), and one goes to validation when that brings
    the classes' counts closer to their targets (relative to each class's size, so a rare class
    counts as much as a common one). Then a class missing from a side takes its smallest group
    there that no other class needs where it is (a group may hold several classes: a patient
    with images in two class folders); where none can move, SplitError says so.
    """
    names, inverse = np.unique(groups, return_inverse=True)
    n_classes = int(labels.max()) + 1
    counts = np.zeros((len(names), n_classes))
    np.add.at(counts, (inverse, labels.astype(np.int64)), 1)
    total = counts.sum(axis=0)
    target = total * val_split
    scale = np.maximum(target, 1.0)

    def distance(val: np.ndarray) -> float:
        return float(np.sum(np.abs(val - target) / scale))

    order = np.random.default_rng(seed).permutation(len(names))
    in_val = np.zeros(len(names), bool)
    val = np.zeros(n_classes)
    for g in order:
        if distance(val + counts[g]) < distance(val):
            in_val[g] = True
            val += counts[g]
    _every_class_on_both_sides(counts, in_val, order, classes)
    return np.flatnonzero(~in_val[inverse]), np.flatnonzero(in_val[inverse])


def _every_class_on_both_sides(counts: np.ndarray, in_val: np.ndarray, order: np.ndarray,
                               classes: Sequence[str]) -> None:
    """Move groups (in place) until every class with two or more groups is on both sides; each
    move fixes one class's missing side and takes no class off the side it leaves, so this
    ends. Where no group can move, raise SplitError naming the classes."""
    n_groups = (counts > 0).sum(axis=0)

    def missing() -> list[tuple[int, bool]]:
        return [(c, side) for side in (True, False)
                for c in np.flatnonzero(~counts[in_val == side].any(axis=0) & (n_groups >= 2))]

    def movable(g: int) -> bool:
        rest = counts[(in_val == in_val[g]) & (np.arange(len(counts)) != g)].any(axis=0)
        return bool(np.all(rest | (counts[g] == 0) | (n_groups < 2)))

    while todo := missing():
        c, side = todo[0]
        holders = [g for g in order if counts[g, c] > 0 and in_val[g] != side and movable(g)]
        if not holders:
            names = sorted({classes[c] if c < len(classes) else f"label {c}" for c, _ in todo})
            raise SplitError(
                f"class(es) {', '.join(names)} cannot be on both sides of the validation split: "
                "their groups (group_pattern) also hold other classes' only images on one "
                "side. Check the pattern, or add images of more groups")
        in_val[min(holders, key=lambda g: counts[g].sum())] = side


def groups_of(names: Sequence[str], pattern: str) -> np.ndarray:
    """Each image's group: `pattern` searched in its path below the class folder (the file name,
    for flat class folders and Kaggle names); the first capture group, else the whole match.
    `""`: every image its own group. A name the pattern does not match stops, naming it."""
    if not pattern:
        return np.arange(len(names)).astype(str)
    rx = re.compile(pattern)
    groups, missed = [], []
    for name in names:
        m = rx.search(name.split("/", 1)[1] if "/" in name else name)
        if m is None:
            missed.append(name)
            continue
        groups.append(m.group(1) if rx.groups and m.group(1) is not None else m.group(0))
    if missed:
        shown = ", ".join(missed[:10]) + (f" … and {len(missed) - 10} more"
                                          if len(missed) > 10 else "")
        raise SplitError(
            f"params.yaml: 'group_pattern' {pattern!r} does not match {len(missed)} training "
            f"file(s): {shown}. It is searched in each file's path below its class folder; fix "
            "the pattern (docs/medical.md has examples) or set it to \"\"")
    return np.asarray(groups, dtype=str)


def check_splittable(labels: np.ndarray, groups: np.ndarray, classes: Sequence[str],
                     grouped: bool) -> None:
    """Every class needs two images (two groups, with `group_pattern`), one for each side:
    otherwise it would be missing from validation, or validation would be empty."""
    short = []
    for c, name in enumerate(classes):
        members = groups[labels == c]
        n = len(np.unique(members)) if grouped else len(members)
        if n < 2:
            short.append(f"{name} ({n} {'group' if grouped else 'image'}{'' if n == 1 else 's'})")
    if short:
        unit = "groups (group_pattern)" if grouped else "images"
        raise SplitError(
            f"the validation split needs at least 2 {unit} of every class, one for each side; "
            f"too few in: {', '.join(short)}. Add images of these classes or remove their "
            "folders")


def split(labels: np.ndarray, groups: np.ndarray, val_split: float, seed: int, grouped: bool,
          classes: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: by group when `grouped`, else image by image (the original's
    stratified split, unchanged)."""
    if grouped:
        return grouped_split(labels, groups, val_split, seed, classes)
    return stratified_split(labels, val_split, seed)
