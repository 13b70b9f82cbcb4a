"""The validation split: stratified by class and seeded (the original's tail split was all dogs)."""

from __future__ import annotations

import numpy as np

from stages.train_head import best_epoch, stratified_split


def test_split_is_stratified_disjoint_and_complete() -> None:
    labels = np.array([0] * 100 + [1] * 60)  # cats then dogs, as the original's array
    tr, va = stratified_split(labels, 0.2, seed=2017)
    assert len(np.intersect1d(tr, va)) == 0
    assert sorted(np.concatenate([tr, va])) == list(range(160))
    assert np.sum(labels[va] == 0) == 20 and np.sum(labels[va] == 1) == 12
    # The original's validation_split=0.2 took the last 32 rows: all dogs.
    assert np.sum(labels[-32:] == 0) == 0 and np.sum(labels[va] == 0) > 0


def test_split_is_the_same_for_the_same_seed_and_differs_otherwise() -> None:
    labels = np.repeat([0, 1], 50)
    a = stratified_split(labels, 0.2, 2017)
    b = stratified_split(labels, 0.2, 2017)
    c = stratified_split(labels, 0.2, 7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_tiny_classes_keep_both_sides() -> None:
    tr, va = stratified_split(np.array([0, 0, 1, 1]), 0.2, 0)
    assert sorted(np.unique(np.array([0, 0, 1, 1])[va])) == [0, 1]
    assert len(tr) == 2


def test_best_epoch_is_the_first_lowest_val_loss() -> None:
    assert best_epoch({"val_loss": [0.5, 0.3, 0.3, 0.4]}) == 1
