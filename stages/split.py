"""The validation split: stratified by class, seeded, and with `group_pattern` kept by group.

The original took the last 20% of a cats-then-dogs array, so its "validation" set was all dogs;
here every class keeps its share on both sides. Images of one patient (or any group that
`group_pattern` names) are never on both sides: a model that has seen a patient's other X-ray
would look better on validation than it is, and no reviewer in medical imaging accepts that.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from stages.cli import ParamsError, UserError, some


class SplitError(UserError, ValueError):
    """The training set cannot give every class a place on both sides of the split."""


class PatternError(SplitError, ParamsError):
    """`group_pattern` misses training files: a param to fix (its stage says so)."""


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
    counts as much as a common one). Then, where a class is missing from a side (a group may
    hold several classes: a patient with images in two class folders), as few groups as
    possible move (`_every_class_on_both_sides`); SplitError only where no placement of whole
    groups puts every class on both sides.
    """
    names, inverse = np.unique(groups, return_inverse=True)
    n_classes = int(labels.max()) + 1
    counts = np.zeros((len(names), n_classes))
    np.add.at(counts, (inverse, labels.astype(np.int64)), 1)
    total = counts.sum(axis=0)
    target = total * val_split
    scale = np.maximum(target, 1.0)

    def distance(val: np.ndarray) -> np.ndarray:
        """Distance to the targets of one count vector, or of each row of several."""
        return np.sum(np.abs(val - target) / scale, axis=-1)

    order = np.random.default_rng(seed).permutation(len(names))
    in_val = np.zeros(len(names), bool)
    val = np.zeros(n_classes)
    for g in order:
        if distance(val + counts[g]) < distance(val):
            in_val[g] = True
            val += counts[g]
    _every_class_on_both_sides(counts, in_val, order, distance, classes)
    return np.flatnonzero(~in_val[inverse]), np.flatnonzero(in_val[inverse])


# The searches' limit (`_Budget`), about a second; real sets need a few hundred steps.
SEARCH_STEPS = 1_000_000

Distance = Callable[[np.ndarray], Any]


def _every_class_on_both_sides(counts: np.ndarray, in_val: np.ndarray, order: np.ndarray,
                               distance: Distance, classes: Sequence[str]) -> None:
    """Move as few groups as possible (in place) so that every class with two or more groups
    is on both sides; where no placement of whole groups does that, SplitError says so.

    First a placement is proved to exist: a class holding a group that no other class still
    to place holds can be put on both sides last, by moving that group, so such classes are
    set aside one by one (`_peel`); the rest, the core (classes sharing mixed groups, usually
    none), is searched exactly (`_search`), and the classes set aside are then repaired in
    reverse order. That placement bounds the second search, from where the seeded pass left
    the groups, for the fewest moves (the split keeps its share), then the closest counts."""
    present = counts > 0
    needy = np.flatnonzero(present.sum(axis=0) >= 2)  # a class in one group stays on one side
    if (present[in_val].any(axis=0) & present[~in_val].any(axis=0))[needy].all():
        return
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))  # ties go to the seeded order: the split stays seeded

    def named(part: list[int]) -> str:
        return ", ".join(sorted(classes[c] if c < len(classes) else f"label {c}"
                                for c in part))

    # No placement below moves more than two groups per class: a class with more groups than
    # that on each side stays on both whatever moves, and the searches can leave it out.
    short = np.minimum(present[in_val].sum(axis=0), present[~in_val].sum(axis=0))
    needy = needy[short[needy] <= 2 * len(needy)]
    budget = _Budget(SEARCH_STEPS)
    proof = in_val.copy()
    peeled, core = _peel(present, needy)
    for part in _components(present, core):
        found = _search(counts, present, proof, rank, part, distance, budget)
        if found is False:
            raise SplitError(
                f"class(es) {named(part)} cannot be on both sides of the validation split: "
                "their groups (group_pattern) hold several of these classes each, and no "
                "placement of whole groups puts every one of them on both sides. Check the "
                "pattern, or add images of more groups")
        if found is None:
            raise SplitError(
                f"class(es) {named(part)}: their groups (group_pattern) hold several of these "
                "classes each, and a search of about a second found no placement of whole "
                "groups that puts every one of them on both sides of the validation split, nor "
                "proved there is none. Check the pattern, or add images of more groups")
    _repair_set_aside(counts, present, proof, rank, peeled, core, needy, distance)
    # The fewest moves are at most the proof's, which leaves more classes out.
    needy = needy[short[needy] <= np.sum(proof != in_val)]
    for part in _components(present, [int(c) for c in needy]):
        _search(counts, present, in_val, rank, part, distance, budget, proof)


def _peel(present: np.ndarray, needy: np.ndarray) -> tuple[list[int], list[int]]:
    """(the classes set aside, in order; the core's classes). A class holding a group that no
    other remaining class holds is set aside: whatever the others' placement, moving that
    group puts it on both sides. Setting classes aside frees more groups; the core that stays
    is the same whatever the order."""
    remaining = [int(c) for c in needy]
    n_held = present[:, remaining].sum(axis=1)  # the remaining classes each group holds
    peeled = []
    while remaining:
        own = present[n_held == 1][:, remaining].any(axis=0)
        if not own.any():
            break
        c = remaining.pop(int(np.argmax(own)))
        n_held -= present[:, c]
        peeled.append(c)
    return peeled, remaining


def _repair_set_aside(counts: np.ndarray, present: np.ndarray, in_val: np.ndarray,
                      rank: np.ndarray, peeled: list[int], core: list[int], needy: np.ndarray,
                      distance: Distance) -> None:
    """Put the classes `_peel` set aside on both sides (in place), last set aside first, each
    by one move at most that keeps the core and the classes already repaired on both sides:
    `_peel` left each a group none of those holds, so there is always one."""
    settled = np.zeros(counts.shape[1], bool)
    settled[core] = True
    needed = np.zeros(counts.shape[1], bool)
    needed[needy] = True
    for c in reversed(peeled):
        on = present[in_val].any(axis=0) & present[~in_val].any(axis=0)
        settled[c] = True  # from here on kept on both sides (c itself: it has two groups)
        if on[c]:
            continue
        side = not present[in_val, c].any()  # the side c is missing from
        holders = np.flatnonzero(present[:, c] & (in_val != side))
        held = present[holders] & ~settled  # the classes each move may take off a side
        last = present[in_val != side].sum(axis=0) < 2  # those the side left would lose
        keeps = ~(present[holders] & settled & last).any(axis=1)
        lost = (held & needed & on & last).sum(axis=1)  # each one more move later
        sign = 1 if side else -1
        dist = distance(counts[in_val].sum(axis=0) + sign * counts[holders])
        pick = np.lexsort((rank[holders], dist, lost, ~keeps))[0]
        in_val[holders[pick]] = side


def _components(present: np.ndarray, part: list[int]) -> list[list[int]]:
    """`part` in connected parts (classes sharing a group), each searched alone, so that
    independent parts add their search steps instead of multiplying them."""
    held = present[:, part].astype(np.int64)
    shared = held.T @ held > 0
    parts: list[list[int]] = []
    seen: set[int] = set()
    for i in range(len(part)):
        if i in seen:
            continue
        members, todo = [], [i]
        seen.add(i)
        while todo:
            j = todo.pop()
            members.append(part[j])
            for k in map(int, np.flatnonzero(shared[j])):
                if k not in seen:
                    seen.add(k)
                    todo.append(k)
        parts.append(sorted(members))
    return parts


def _search(counts: np.ndarray, present: np.ndarray, in_val: np.ndarray, rank: np.ndarray,
            part: list[int], distance: Distance, budget: _Budget,
            known: np.ndarray | None = None) -> bool | None:
    """Place the groups holding `part`'s classes (in place) so that each of those classes is
    on both sides. True: placed; False: no placement exists; None: none found before the
    budget ran out. Without `known`, any placement will do; with it (a placement that does),
    the one moving the fewest groups from where they are, then keeping the classes' counts
    closest to their targets, or `known` itself, where the budget runs out first.

    Depth-first branch and bound over moves: a class missing from a side needs one of its
    groups on the other side to move there, so each branch moves one of them, and the groups
    tried in the branches before it stay where they are (so every placement is reached once,
    and the search is exact). The fewest moves are never more than two per class (one group
    on each side is enough), which bounds the depth."""
    local = np.flatnonzero(present[:, part].any(axis=1))  # the groups that matter here
    held = present[np.ix_(local, part)]
    most = int(held.sum(axis=1).max())  # the most missing sides one move can fill
    size = counts[local]
    x = in_val[local].copy()
    n_val = held[x].sum(axis=0)
    n_train = held[~x].sum(axis=0)
    val = counts[in_val].sum(axis=0)
    fixed = np.zeros(len(local), bool)  # moved already, or passed over in an earlier branch
    best: dict[str, Any] = {"key": None, "x": None}
    if known is not None:
        moved = known[local] != x
        best["key"] = (int(moved.sum()),
                       float(distance(val + (size[moved] * np.where(x[moved], -1, 1)[:, None])
                                      .sum(axis=0))))
        best["x"] = known[local].copy()

    def limit() -> int:
        return best["key"][0] if best["key"] is not None else 2 * len(part)

    def visit(moves: int) -> None:
        no_val, no_train = np.flatnonzero(n_val == 0), np.flatnonzero(n_train == 0)
        if not len(no_val) and not len(no_train):
            key = (moves, float(distance(val)))
            if best["key"] is None or key < best["key"]:
                best["key"], best["x"] = key, x.copy()
            if known is None:
                raise _Stop  # any placement will do
            return
        if moves + -(-(len(no_val) + len(no_train)) // most) > limit():
            return  # too many sides missing for the moves left
        free = ~fixed
        # the groups each missing class could send over
        to_val = (held[:, no_val] & (~x & free)[:, None]).sum(axis=0)
        to_train = (held[:, no_train] & (x & free)[:, None]).sum(axis=0)
        missing = [(int(n), int(j), True) for n, j in zip(to_val, no_val, strict=True)]
        missing += [(int(n), int(j), False) for n, j in zip(to_train, no_train, strict=True)]
        _, j, side = min(missing)  # the most constrained first: the fewest groups to try
        cands = np.flatnonzero(held[:, j] & (x != side) & free)
        sign = 1 if side else -1
        done = ((n_val + sign * held[cands] > 0).all(axis=1)
                & (n_train - sign * held[cands] > 0).all(axis=1))
        dist = distance(val + sign * size[cands])
        budget.spend(len(x) * len(missing) + len(cands) * (len(part) + size.shape[1]))
        tried = []
        for i in np.lexsort((rank[local[cands]], dist, ~done)):  # finishing, closest first
            if moves + 1 > limit() or (moves + 1 == limit() and not done[i]):
                break  # the rest cannot do better: sorted by (not done, distance)
            g = cands[i]
            x[g] = side
            fixed[g] = True
            n_val[:] += sign * held[g]
            n_train[:] -= sign * held[g]
            val[:] += sign * size[g]
            visit(moves + 1)
            x[g] = not side
            n_val[:] -= sign * held[g]
            n_train[:] += sign * held[g]
            val[:] -= sign * size[g]
            tried.append(g)  # stays where it is in the later branches
            if done[i] and moves + 1 == limit():
                break  # a finished branch at the bound: the later ones are farther
        fixed[tried] = False

    try:
        visit(0)
    except _Stop:
        if best["x"] is None:
            return None
    if best["x"] is None:
        return False
    in_val[local] = best["x"]
    return True


class _Stop(Exception):
    """Ends a search early: a placement found where any will do, or the budget spent."""


class _Budget:
    """The steps the searches of one split may take, all together: about a microsecond each,
    so that a pathological training set stops in seconds, saying so."""

    def __init__(self, steps: int) -> None:
        self.left = steps

    def spend(self, cells: int) -> None:
        """One visit: some 30 steps of Python, and a step per 100 numpy cells."""
        self.left -= 30 + cells // 100
        if self.left < 0:
            raise _Stop


def groups_of(names: Sequence[str], pattern: str) -> np.ndarray:
    """Each image's group: `pattern` searched in its path below the class folder (the file name,
    for flat class folders and Kaggle names); the first capture group, else the whole match.
    `""`: every image its own group. A name the pattern does not match stops, naming it."""
    if not pattern:
        return np.arange(len(names)).astype(str)
    groups, missed = match_groups(names, pattern)
    if missed:
        raise PatternError(
            f"params.yaml: 'group_pattern' {shown(pattern)} does not match {len(missed)} "
            f"training file(s): {some(missed, 10)}. It is searched in each file's path below its "
            "class folder; fix the pattern (docs/medical.md has examples) or set it to \"\"")
    return groups


def match_groups(names: Sequence[str], pattern: str) -> tuple[np.ndarray, list[str]]:
    """(the groups of the names `pattern` matches, in order; the names it misses), as
    groups_of finds them."""
    rx = re.compile(pattern)
    groups, missed = [], []
    for name in names:
        m = rx.search(name.split("/", 1)[1] if "/" in name else name)
        if m is None:
            missed.append(name)
            continue
        groups.append(m.group(1) if rx.groups and m.group(1) is not None else m.group(0))
    return np.asarray(groups, dtype=str), missed


def shown(pattern: str) -> str:
    r"""`group_pattern` in a message as written in params.yaml, not as Python's repr, whose
    doubled backslashes (`'^(person\\d+)'`) read as if DVC had doubled them."""
    return f"`{pattern}`"


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




def folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int, grouped: bool
          ) -> np.ndarray:
    """Each row's fold, 0 … k−1: stratified by class, every group (with `grouped`) in one fold,
    seeded. Groups (images, without `grouped`) are dealt largest first, equal sizes in a
    seeded order, each to the fold it brings closest to a k-th of every class (relative to the
    class's size, so a rare class counts as much as a common one; ties: the fold with fewest
    rows); no fold stays empty. NumPy, as the split: scikit-learn's StratifiedGroupKFold does
    the same, but the TensorFlow stages keep scikit-learn out (stages/quiet.py). FoldsError
    where there are fewer groups (or images) than folds."""
    labels = np.asarray(labels).astype(np.int64)
    names, inverse = np.unique(groups if grouped else np.arange(len(labels)),
                               return_inverse=True)
    if len(names) < k:
        unit = "groups (group_pattern)" if grouped else "images"
        raise FoldsError(f"params.yaml: 'folds' is {k}, but the training set has {len(names)} "
                         f"{unit}: at most {len(names)} folds. Lower folds, or set it to 0 for "
                         "one validation split")
    counts = np.zeros((len(names), int(labels.max()) + 1))
    np.add.at(counts, (inverse.ravel(), labels), 1)
    target = counts.sum(axis=0) / k
    scale = np.maximum(target, 1.0)
    shuffled = np.random.default_rng(seed).permutation(len(names))
    order = shuffled[np.argsort(-counts.sum(axis=1)[shuffled], kind="stable")]
    filled = np.zeros((k, counts.shape[1]))
    where = np.empty(len(names), np.int64)
    for left, g in zip(range(len(order), 0, -1), order, strict=True):
        gain = (np.abs(filled + counts[g] - target) - np.abs(filled - target)) / scale
        cost = gain.sum(axis=1)
        empty = filled.sum(axis=1) == 0
        if empty.sum() >= left:  # as many groups left as empty folds: one each
            cost = np.where(empty, cost, np.inf)
        best = np.flatnonzero(cost == cost.min())
        f = int(best[np.argmin(filled[best].sum(axis=1))])
        where[g] = f
        filled[f] += counts[g]
    return where[inverse.ravel()]


class FoldsError(SplitError, ParamsError):
    """`folds` larger than the training set's groups (or images)."""
