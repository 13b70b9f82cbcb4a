"""The submission: clipping, ordering, the headers of the two-class, K-class and labelled files,
the summary that `dvc metrics show` prints."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from stages.evaluation import probabilities
from stages.predict import TestSet, clip_probs, summary, write_submission


def binary(p1: list[float]) -> np.ndarray:
    return probabilities(np.array(p1)[:, None])


def test_two_classes_clip_p1_at_both_ends() -> None:
    p = clip_probs(binary([0.0, 0.001, 0.5, 0.999, 1.0]), 0.005)
    np.testing.assert_allclose(p[:, 1], [0.005, 0.005, 0.5, 0.995, 0.995])
    np.testing.assert_allclose(p.sum(axis=1), 1)


def test_clip_zero_leaves_probabilities() -> None:
    p = binary([0.0, 0.3, 1.0])
    np.testing.assert_array_equal(clip_probs(p, 0.0), p)


def test_k_classes_shrink_towards_uniform() -> None:
    rng = np.random.default_rng(0)
    raw = rng.dirichlet(np.full(4, 0.1), size=200)  # many near-certain rows
    raw[0] = [1.0, 0.0, 0.0, 0.0]
    p = clip_probs(raw, 0.005)
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-12)
    assert p.min() >= 0.005 - 1e-15 and p.max() <= 1 - 3 * 0.005 + 1e-15
    assert (np.argsort(p, axis=1) == np.argsort(raw, axis=1)).all()  # order kept
    np.testing.assert_allclose(p[0], [0.985, 0.005, 0.005, 0.005])


def test_k_classes_refuse_a_clip_that_cannot_hold() -> None:
    with pytest.raises(ValueError, match=r"'clip' is 0\.3, but with 4 classes it must be below"):
        clip_probs(np.full((2, 4), 0.25), 0.3)


def rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open()))


def test_submission_has_header_and_ascending_ids(tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    write_submission(str(out), TestSet(np.array([3, 1, 2])), binary([0.3, 0.1, 0.2]),
                     ["cat", "dog"])
    assert out.read_text().splitlines() == ["id,label", "1,0.100000", "2,0.200000", "3,0.300000"]
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_k_class_submission_names_the_classes_in_label_order(tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    write_submission(str(out), TestSet(np.array([7, 5])), probs, ["b, c", "x", "y"])
    assert rows(out) == [["id", "b, c", "x", "y"], ["5", "0.600000", "0.300000", "0.100000"],
                         ["7", "0.200000", "0.500000", "0.300000"]]


def test_labelled_submission_names_rows_by_path_with_the_true_class(tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    test = TestSet(np.arange(2), np.array(["Cat/9.jpg", "Dog/1.jpg"], object), np.array([0, 1]))
    write_submission(str(out), test, binary([0.25, 0.875]), ["Cat", "Dog"])
    assert rows(out) == [["id", "label", "true_class"], ["Cat/9.jpg", "0.250000", "Cat"],
                         ["Dog/1.jpg", "0.875000", "Dog"]]


def test_submission_refuses_mismatched_lengths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 ids but 2 predictions"):
        write_submission(str(tmp_path / "pred.csv"), TestSet(np.array([1, 2, 3])),
                         binary([0.1, 0.2]), ["cat", "dog"])
    assert not (tmp_path / "pred.csv").exists()


def test_summary_names_the_classes_and_scores_a_labelled_set() -> None:
    probs = binary([0.1, 0.9, 0.8, 0.2])
    s = summary(probs, ["cat", "dog"], None)
    assert s == {"n_test": 4, "classes": ["cat", "dog"],
                 "mean_prob": {"cat": pytest.approx(0.5), "dog": pytest.approx(0.5)},
                 "predicted_share": {"cat": 0.5, "dog": 0.5}}
    scored = summary(probs, ["cat", "dog"], np.array([0, 1, 0, 0]))
    assert scored["test_accuracy"] == 0.75
    assert scored["test_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.9, 0.2, 0.8])))


def test_features_that_are_not_numbers_stop_naming_the_rows(tmp_path: Path) -> None:
    import keras

    from stages import h5io
    from stages.predict import predict

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.save(tmp_path / "m.h5")
    x = np.ones((5, 4), np.float32)
    x[1, 2], x[3, 0] = np.nan, np.inf
    with h5io.create_h5(tmp_path / "fused.h5") as f:
        h5io.write_array(f, "test", x)
        h5io.write_row_info(f, {"ids": np.array([10, 11, 12, 13, 14])}, ["cat", "dog"])
    with pytest.raises(h5io.NonFinite, match=r"test features: 2 row\(s\) .*: 11, 13$"):
        predict(str(tmp_path / "m.h5"), str(tmp_path / "fused.h5"))
