"""The submission: clipping, ordering, the headers of the two-class, K-class, labelled and
named-by-file files, how the test rows are read against the model's classes, the summary that
`dvc metrics show` prints."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest

from stages.evaluation import probabilities
from stages.feature_files import Rows
from stages.predict import clip_probs, read_test_rows, summary, write_submission
from stages.testset import TestSet, TestSetError


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
    write_submission(str(out), TestSet(ids=np.array([3, 1, 2])), binary([0.3, 0.1, 0.2]),
                     ["cat", "dog"])
    assert out.read_text().splitlines() == ["id,label", "1,0.100000", "2,0.200000", "3,0.300000"]
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_k_class_submission_names_the_classes_in_label_order(tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    probs = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    write_submission(str(out), TestSet(ids=np.array([7, 5])), probs, ["b, c", "x", "y"])
    assert rows(out) == [["id", "b, c", "x", "y"], ["5", "0.600000", "0.300000", "0.100000"],
                         ["7", "0.200000", "0.500000", "0.300000"]]


def test_labelled_submission_names_rows_by_path_with_the_true_class(tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    test = TestSet(names=np.array(["Cat/9.jpg", "Dog/1.jpg"], object), labels=np.array([0, 1]))
    write_submission(str(out), test, binary([0.25, 0.875]), ["Cat", "Dog"])
    assert rows(out) == [["id", "label", "true_class"], ["Cat/9.jpg", "0.250000", "Cat"],
                         ["Dog/1.jpg", "0.875000", "Dog"]]


def test_submission_refuses_mismatched_lengths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 ids but 2 predictions"):
        write_submission(str(tmp_path / "pred.csv"), TestSet(ids=np.array([1, 2, 3])),
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
    with h5py.File(tmp_path / "m.h5", "a") as f:
        f.attrs["classes"] = ["cat", "dog"]  # as train_head records them
    with h5io.create_h5(tmp_path / "fused.h5") as f:
        h5io.write_array(f, "features", x)
        h5io.write_row_info(f, {"names": np.array([f"{i}.jpg" for i in range(10, 15)], object),
                                "ids": np.arange(10, 15)}, None)
    with pytest.raises(h5io.NonFinite, match=r"test features: 2 row\(s\) .*: 11\.jpg, 13\.jpg$"):
        predict(str(tmp_path / "m.h5"), str(tmp_path / "fused.h5"))


def test_files_of_any_name_are_rows_named_by_their_path(tmp_path: Path) -> None:
    rows = Rows(names=np.array(["IMG_0001.jpg", "scan 2.png", "x/photo.jpg"], object))
    test = read_test_rows(rows, ["cat", "dog"])
    assert test.ids is None and test.labels is None
    out = tmp_path / "pred.csv"
    write_submission(str(out), test, binary([0.25, 0.5, 0.75]), ["cat", "dog"])
    assert rows_of(out) == [["id", "label"], ["IMG_0001.jpg", "0.250000"],
                            ["scan 2.png", "0.500000"], ["x/photo.jpg", "0.750000"]]


def rows_of(path: Path) -> list[list[str]]:
    return list(csv.reader(path.open()))


def test_folders_named_like_training_classes_are_a_labelled_set() -> None:
    # The test side lists its own folders (here only Dog): labels map to the model's classes.
    rows = Rows(names=np.array(["Dog/1.jpg", "Dog/2.jpg"], object), labels=np.array([0, 0]),
                classes=["Dog"])
    test = read_test_rows(rows, ["Bird", "Cat", "Dog"])
    assert list(test.labels) == [2, 2] and list(test.names) == ["Dog/1.jpg", "Dog/2.jpg"]


def test_folders_that_are_not_classes_are_plain_folders_of_images() -> None:
    rows = Rows(names=np.array(["patient1/a.dcm", "patient2/b.dcm"], object),
                labels=np.array([0, 1]), classes=["patient1", "patient2"])
    test = read_test_rows(rows, ["NORMAL", "PNEUMONIA"])
    assert test.labels is None and list(test.names) == ["patient1/a.dcm", "patient2/b.dcm"]


def test_kaggle_ids_in_a_top_folder_stay_the_submission() -> None:
    rows = Rows(names=np.array(["1.jpg", "2.jpg"], object), ids=np.array([1, 2]))
    assert list(read_test_rows(rows, ["cat", "dog"]).ids) == [1, 2]


def test_a_test_folder_beside_training_classes_is_named() -> None:
    rows = Rows(names=np.array(["Cat/1.jpg", "Horse/2.jpg", "Zebra/3.jpg"], object),
                labels=np.array([0, 1, 2]), classes=["Cat", "Horse", "Zebra"])
    with pytest.raises(TestSetError, match=r"test folder\(s\) Horse, Zebra are not training "
                                           r"classes \(Cat, Dog\), while Cat are"):
        read_test_rows(rows, ["Cat", "Dog"])


def test_loose_images_beside_class_folders_are_named() -> None:
    rows = Rows(names=np.array(["3.jpg", "Cat/1.jpg", "Dog/2.jpg"], object))
    with pytest.raises(TestSetError, match=r"mixes images in class folders \(Cat, Dog\) with "
                                           r"loose images \(3\.jpg\)"):
        read_test_rows(rows, ["Cat", "Dog"])


def test_clinical_scores_come_from_the_unclipped_probabilities() -> None:
    raw = binary([0.0001, 0.002, 0.9999, 0.001])  # clipped, three rows tie at 0.005
    labels = np.array([0, 1, 1, 0])
    s = summary(clip_probs(raw, 0.005), ["cat", "dog"], labels, raw)
    assert s["test_auc"] == pytest.approx(1.0)  # unclipped: every positive above every negative
    clipped = summary(clip_probs(raw, 0.005), ["cat", "dog"], labels)
    assert clipped["test_auc"] < 1.0  # the ties the clip made
    assert s["test_loss"] == clipped["test_loss"]  # the submission's log loss, clipped


def test_folders_that_differ_from_the_classes_only_in_case_are_named() -> None:
    """`Cat/`, `Dog/` against Kaggle's `cat`, `dog`: not a silent unlabelled set."""
    rows = Rows(names=np.array(["Cat/1.jpg", "Dog/2.jpg"], object), labels=np.array([0, 1]),
                classes=["Cat", "Dog"])
    with pytest.raises(TestSetError, match=r"Cat, Dog differ from the training classes cat, dog "
                                           r"only in case"):
        read_test_rows(rows, ["cat", "dog"])


def head_and_features(folder: Path, model_attrs: dict[str, list[str]],
                      features_attrs: dict[str, list[str]], names: list[str] | None = None
                      ) -> tuple[str, str]:
    """A 4-feature head recording `model_attrs` (two classes, cat and dog), and test rows of
    fused features recording `features_attrs`: two named by file, or `names` (`cat/…` and
    `dog/…`: a labelled set). (model path, features path)."""
    import keras

    from stages import h5io

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.save(folder / "m.h5")
    with h5py.File(folder / "m.h5", "a") as f:
        f.attrs.update({"classes": ["cat", "dog"], **model_attrs})
    names = names or ["1.jpg", "2.jpg"]
    info = {"names": np.array(names, object)}
    classes = sorted({n.split("/")[0] for n in names if "/" in n}) or None
    if classes:
        info["labels"] = np.array([classes.index(n.split("/")[0]) for n in names])
    with h5io.create_h5(folder / "fused.h5") as f:
        # Rows that differ: the model's probabilities differ, and the scores are defined.
        h5io.write_array(f, "features", np.random.default_rng(0).normal(
            size=(len(names), 4)).astype(np.float32))
        h5io.write_row_info(f, info, classes)
        f.attrs.update(features_attrs)
    return str(folder / "m.h5"), str(folder / "fused.h5")


def test_test_features_from_another_random_network_are_refused(tmp_path: Path) -> None:
    """With weights: none the seed decides the network, and no extractor reruns for it: the
    test split, extracted later under another seed, would be scored by a head trained on other
    features. The model records what its features came from; predict compares."""
    from stages import cli
    from stages.predict import predict

    trained = {"networks": ["xception"], "weights": ["none, seed 2017"]}
    for seed, ok in ((2017, True), (1, False)):
        model, fused = head_and_features(
            tmp_path, trained, {"networks": ["xception"], "weights": [f"none, seed {seed}"]})
        if ok:
            assert len(predict(model, fused)[1]) == 2
        else:
            with pytest.raises(cli.MissingInput, match=r"extracted with weights \['none, seed 1'\]"
                                                       r", but .* \['none, seed 2017'\]"):
                predict(model, fused)


def test_test_features_scaled_otherwise_are_refused(tmp_path: Path) -> None:
    """A weight file's `preprocess` is part of what made the features: the model records each
    network's, and predict refuses test features whose input was scaled otherwise."""
    from stages import cli
    from stages.predict import predict

    made = {"networks": ["inception_v3"], "weights": ["keras_weights/r.h5"]}
    model, fused = head_and_features(tmp_path, {**made, "preprocess": ["scale_0_1"]},
                                     {**made, "preprocess": ["network"]})
    with pytest.raises(cli.MissingInput, match=r"extracted with preprocess \['network'\], but "
                                               r".* \['scale_0_1'\]"):
        predict(model, fused)


@pytest.mark.parametrize(("key", "trained", "made", "message"), [
    ("precision", ["float32"], ["mixed_float16"],
     r"extracted with precision \['mixed_float16'\], but .*m\.h5 was trained on features "
     r"extracted with \['float32'\]\. Run `dvc repro` \(both splits follow `precision`\)$"),
    ("weights_md5", ["0" * 32], ["f" * 32],
     r"extracted with weight files of md5 \['f{32}'\], but .*m\.h5 was trained on features "
     r"extracted with \['0{32}'\]\. Run `dvc repro` \(both splits follow the weight files "
     r"in keras_weights/\)$"),
    ("engine", ["openvino"], ["tensorflow"],
     r"extracted with engine \['tensorflow'\], but .*m\.h5 was trained on features "
     r"extracted with \['openvino'\]\. Run `dvc repro` \(both splits follow `engine`\)$"),
])
def test_test_features_of_another_precision_or_weight_file_are_refused(
        tmp_path: Path, key: str, trained: list[str], made: list[str], message: str) -> None:
    """Outside DVC (a features file or a model from elsewhere) the test features can come from
    another `precision` or another version of the weight file than the training features:
    compared as the networks, weights and preprocessing are, in one line naming both files."""
    from stages import cli
    from stages.predict import predict

    common = {"networks": ["xception"], "weights": ["keras_weights/x.h5"],
              "preprocess": ["network"], "precision": ["float32"], "weights_md5": ["0" * 32]}
    model, fused = head_and_features(tmp_path, {**common, key: trained}, {**common, key: made})
    with pytest.raises(cli.MissingInput, match=message) as e:
        predict(model, fused)
    assert fused in str(e.value) and "\n" not in str(e.value)
    model, fused = head_and_features(tmp_path, {**common, key: trained}, {**common, key: trained})
    assert len(predict(model, fused)[1]) == 2


def test_the_intervals_say_whether_they_count_groups_or_images() -> None:
    from stages.predict import groups_of_rows

    names = np.array(["cat/person1_a.jpg", "cat/person1_b.jpg", "dog/person2_a.jpg",
                      "dog/scan.jpg"], object)
    assert groups_of_rows(names, "") == (None, [])
    groups, missed = groups_of_rows(names[:3], r"^(person\d+)_")
    assert list(groups) == ["person1", "person1", "person2"] and missed == []
    assert groups_of_rows(names, r"^(person\d+)_") == (None, ["dog/scan.jpg"])
    labels, probs = np.array([0, 0, 1, 1]), binary([0.2, 0.4, 0.7, 0.6])
    by_image = summary(probs, ["cat", "dog"], labels, missed=1)
    assert (by_image["interval_unit"], by_image["group_pattern_missed"]) == ("image", 1)
    by_group = summary(probs, ["cat", "dog"], labels, groups=np.array(["a", "a", "b", "c"]),
                       missed=0)
    assert (by_group["interval_unit"], by_group["group_pattern_missed"]) == ("group", 0)
    assert "group_pattern_missed" not in summary(probs, ["cat", "dog"], labels)  # no pattern
    assert "interval_unit" not in summary(probs, ["cat", "dog"], None)  # no intervals


LABELLED = ["cat/person1_a.jpg", "cat/person1_b.jpg", "cat/person2_a.jpg", "dog/person3_a.jpg",
            "dog/person4_a.jpg", "dog/scan 7.jpg"]


def run_predict(folder: Path, pattern: str) -> None:
    """The stage's main in `folder`, on its m.h5 and fused.h5, with `group_pattern`."""
    from stages import predict

    (folder / "params.yaml").write_text(f"group_pattern: '{pattern}'\n")
    predict.main(["--model", "m.h5", "--features", "fused.h5", "--out", "pred.csv",
                  "--report", "predict.json", "--eval-dir", "reports/test"])


def test_a_pattern_that_misses_test_paths_is_said_and_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    """The intervals count images where group_pattern misses a test path: said on stderr
    (the pattern as written, how many, which) and in summary.json; not where it matches all."""
    import json

    monkeypatch.chdir(tmp_path)
    head_and_features(tmp_path, {}, {}, LABELLED)
    run_predict(tmp_path, r"^(person\d+)_")
    err = capsys.readouterr().err
    assert ("predict: group_pattern `^(person\\d+)_` does not match 1 of 6 test path(s) "
            "(dog/scan 7.jpg), so the test scores' intervals count images as independent, not "
            "groups (patients): narrower than they should be where a patient has several images "
            "(reports/test/summary.json: interval_unit image)\n") in err
    summary = json.loads((tmp_path / "reports/test/summary.json").read_text())
    assert (summary["interval_unit"], summary["group_pattern_missed"]) == ("image", 1)
    run_predict(tmp_path, r"^(person\d+|scan \d+)")
    assert "does not match" not in capsys.readouterr().err
    summary = json.loads((tmp_path / "reports/test/summary.json").read_text())
    assert (summary["interval_unit"], summary["group_pattern_missed"]) == ("group", 0)


def test_the_eval_folder_is_replaced_whole_and_a_refusal_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DVC keeps predict's outputs (persist): a labelled run's reliability diagram does not stay
    beside an unlabelled run's files, and a run that stops leaves the last run's outputs as
    they were, with no temporary file."""
    monkeypatch.chdir(tmp_path)
    made = {"networks": ["xception"], "weights": ["none, seed 1"], "precision": ["float32"]}
    head_and_features(tmp_path, made, made, LABELLED)
    run_predict(tmp_path, "")
    assert (tmp_path / "reports/test/reliability.png").is_file()
    head_and_features(tmp_path, made, made)  # two images named by file: no scores
    run_predict(tmp_path, "")
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                   if p.is_file())
    assert "reports/test/reliability.png" not in files
    assert "reports/test/summary.json" in files
    before = {f: (tmp_path / f).read_bytes() for f in files}
    head_and_features(tmp_path, made, {**made, "precision": ["mixed_float16"]}, LABELLED)
    with pytest.raises(SystemExit, match="extracted with precision"):
        run_predict(tmp_path, "")
    for f in ("pred.csv", "predict.json", "reports/test/summary.json"):
        assert (tmp_path / f).read_bytes() == before[f], f
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["test"]
    assert not list(tmp_path.glob(".*tmp*"))
