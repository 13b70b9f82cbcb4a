"""Groups (patients, with `group_pattern`) found in both the training and the test set.

A test image of a patient the head was trained on scores that patient's other X-rays, not a new
patient: the test figures then overstate what the model does on people it has never seen. They
must be none; `predict` says so on its run and the report lists them (stages/report.py).
Standard library and NumPy only: both stages call it before anything heavy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from stages import cli, split


def shared_groups(train_names: Sequence[str], test_names: Sequence[str], pattern: str
                  ) -> list[tuple[str, int, int]]:
    """(group, its training images, its test images) for every group that `pattern` finds in
    both sets, sorted by group; names it does not match are left out (the training side stops
    on those in train_head; the test side's are counted in the test summary). [] without a
    pattern: every image is then its own group."""
    if not pattern:
        return []
    train = Counter(split.match_groups(list(train_names), pattern)[0].tolist())
    test = Counter(split.match_groups(list(test_names), pattern)[0].tolist())
    return [(g, train[g], test[g]) for g in sorted(set(train) & set(test))]


def warning(shared: list[tuple[str, int, int]], pattern: str) -> str:
    """The one line a run prints where groups are in both sets; '' where none is."""
    if not shared:
        return ""
    ids = [g for g, _, _ in shared]
    n_test = sum(t for _, _, t in shared)
    return (f"WARNING: {len(shared)} group(s) of group_pattern {split.shown(pattern)} are in "
            f"both the training and the test set ({cli.some(ids, 10)}; {n_test} test image(s)): "
            "the test figures are then not of new patients. Move their test images out of "
            "test_data, or their training images out of train_data")
