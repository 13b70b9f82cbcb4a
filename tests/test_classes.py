"""Your own labelled images: three class folders and a labelled test set, end to end through
`dvc repro`. The classes differ visibly (each its own colour), so even random-init features let
the softmax head learn them; the folders are created in another order than their sorted names,
which decide the labels.

The project is the session's run with its outputs linked to DVC's cache (docs/sharing.md, "One
copy on disk"), its images replaced by the class folders, the training images first, then the
test images: each change reruns its own side of the pipeline only (training and test images flow
through stages of their own), and between them every stage reruns over read-only linked outputs
of the previous data, which must stay intact in the cache."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import h5py
import imagegen
import numpy as np
import pytest
from conftest import ALL, dvc, linked_copy, ran_stages, run, set_params
from linkcheck import assert_cache_intact, assert_every_output_linked, cache_objects

from stages.backbones import BACKBONES

CREATED = ("zebra", "ant", "moth")  # colours by this order: zebra red, ant blue, moth green
CLASSES = sorted(CREATED)  # labels 0, 1, 2: ant, moth, zebra
PER_CLASS, PER_TEST_CLASS, CLIP = 15, 4, 0.005

pytestmark = pytest.mark.pipeline


CACHE_BEFORE: dict[Path, str] = {}  # the cache objects before the classes' run
RAN: dict[str, list[str]] = {}  # the stages each change of images ran
SAID: dict[str, tuple[str, str]] = {}  # what each change's `dvc repro` printed (out, err)
UNLABELLED: list[list[str]] = []  # pred.csv between the two: 3 classes, Kaggle's test images
SIDE = ("resize", "extract_inception", "extract_xception", "concat")


@pytest.fixture(scope="module")
def repo(baseline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = linked_copy(baseline, tmp_path_factory.mktemp("classes") / "p")
    CACHE_BEFORE.update(cache_objects(root))
    # Random-init features are tiny (~1e-4): adam needs a large step and a few epochs (cheap).
    # The class folders run on OpenVINO (the session's run, TensorFlow): its test side first,
    # so that each change of images below reruns its own side only.
    set_params(root, epochs=20, learning_rate=0.3, engine="openvino")
    RAN["engine"] = ran_stages(dvc(root, "repro", "concat@test"))
    for split, per_class, seed in (("train", PER_CLASS, 0), ("test", PER_TEST_CLASS, 1)):
        shutil.rmtree(root / "data/raw" / split)  # links to the cache: the objects stay
        imagegen.class_folders(root / "data/raw" / split, CREATED, per_class, seed=seed)
        dvc(root, "add", "-q", f"data/raw/{split}")  # the README's data step again
        p = dvc(root, "repro")
        RAN[split], SAID[split] = ran_stages(p), (p.stdout, p.stderr)
        if split == "train":
            UNLABELLED.extend(csv.reader((root / "pred.csv").open()))
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", "repro")
    return root


def test_the_engine_reruns_the_extractors_and_is_recorded_down_to_the_model(repo: Path) -> None:
    assert sorted(RAN["engine"]) == sorted(f"{g}@test" for g in SIDE[1:])
    for split in ("train", "test"):
        for net in ("inception_v3", "xception"):
            with h5py.File(repo / f"data/features/{split}/{net}.h5") as f:
                assert f.attrs["engine"] == "openvino"
    with h5py.File(repo / "models/model_2.h5") as f:
        assert list(f.attrs["engine"]) == ["openvino", "openvino"]


def test_new_training_images_rerun_no_test_side_stage(repo: Path) -> None:
    # (int8_sample too: its file stays `none`, a second's work, unless precision is int8)
    assert sorted(RAN["train"]) == sorted([*(f"{g}@train" for g in SIDE), "int8_sample",
                                           "train_head", "predict", "report"])


def test_new_test_images_rerun_only_the_test_side_and_predict(repo: Path) -> None:
    """The model is not retrained for new images to score; pred.csv then holds their rows (the
    labelled set's, test_pred_csv_has_a_column_per_class_…)."""
    assert sorted(RAN["test"]) == sorted([*(f"{g}@test" for g in SIDE), "predict", "report"])


def test_every_stage_reran_over_read_only_linked_outputs(repo: Path) -> None:
    """Each stage wrote its new outputs beside the linked old ones, never into them."""
    # (but pick_weights: it reads `weights` alone, unchanged here)
    assert sorted(RAN["train"] + RAN["test"]) == sorted(
        s for s in [*ALL, "predict", "report"] if s != "pick_weights")
    assert_cache_intact(repo, CACHE_BEFORE)
    assert len(cache_objects(repo)) > len(CACHE_BEFORE)  # the new outputs joined the old ones
    assert_every_output_linked(repo)


def test_an_unlabelled_test_set_gets_a_column_per_class(repo: Path) -> None:
    """Between the two changes: three classes, and Kaggle's numbered test images."""
    assert UNLABELLED[0] == ["id", *CLASSES]
    assert [int(r[0]) for r in UNLABELLED[1:]] == list(range(1, 7))
    for row in UNLABELLED[1:]:
        assert sum(float(v) for v in row[1:]) == pytest.approx(1, abs=3e-6)


def submission(repo: Path) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """pred.csv as (header, ids, probabilities, true classes); its predicted_class column
    checked against the probabilities (K classes: the most probable)."""
    rows = list(csv.reader((repo / "pred.csv").open()))
    header = rows[0]
    assert header[-2:] == ["true_class", "predicted_class"], header
    probs = np.array([[float(v) for v in r[1:-2]] for r in rows[1:]])
    assert [r[-1] for r in rows[1:]] == [header[1 + i] for i in probs.argmax(axis=1)]
    return header[:-1], [r[0] for r in rows[1:]], probs, [r[-2] for r in rows[1:]]


def test_classes_are_the_sorted_folder_names_everywhere(repo: Path) -> None:
    # The test side records its own folders, which here are every class.
    for path in ("data/resized/train.h5", "data/resized/test.h5",
                 "data/features/train/fused.h5", "data/features/test/fused.h5"):
        with h5py.File(repo / path) as f:
            assert list(f.attrs["classes"]) == CLASSES, path
    with h5py.File(repo / "models/model_2.h5") as f:
        assert list(f.attrs["classes"]) == CLASSES
    with h5py.File(repo / "data/resized/train.h5") as f:
        assert list(f["labels"][:]) == [0] * PER_CLASS + [1] * PER_CLASS + [2] * PER_CLASS
        # zebra (label 2) was made red: RGB order, sorted labels
        zebra = f["images"][2 * PER_CLASS:].reshape(-1, 3).mean(axis=0)
        assert zebra[0] > zebra[2] + 50
    report = json.loads((repo / "reports/predict.json").read_text())
    assert report["classes"] == CLASSES
    assert "dog" not in json.dumps(report) + (repo / "pred.csv").read_text()


def test_three_classes_train_a_softmax_head(repo: Path) -> None:
    import keras

    model = keras.models.load_model(repo / "models/model_2.h5", compile=False, safe_mode=True)
    assert model.output_shape == (None, 3)
    assert model.layers[-1].activation.__name__ == "softmax"
    metrics = json.loads((repo / "metrics.json").read_text())
    assert math.isfinite(metrics["val_loss"]) and metrics["val_loss"] >= 0
    assert metrics["val_accuracy"] >= 0.8  # chance is 1/3
    history = list(csv.DictReader((repo / "reports/history.csv").open()))
    losses = [float(r[k]) for r in history for k in ("loss", "val_loss")]
    assert all(math.isfinite(v) and v >= 0 for v in losses)  # a sigmoid on 0/1/2 went negative


def test_pred_csv_has_a_column_per_class_and_rows_that_sum_to_one(repo: Path) -> None:
    header, ids, probs, truth = submission(repo)
    assert header == ["id", *CLASSES, "true_class"]
    n = len(CREATED) * PER_TEST_CLASS
    assert ids == [f"{c}/{i}.jpg" for c in CLASSES for i in range(PER_TEST_CLASS)]
    assert truth == [c for c in CLASSES for _ in range(PER_TEST_CLASS)]
    assert probs.shape == (n, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=3e-6)  # 6 decimals per column
    assert probs.min() >= CLIP - 1e-6 and probs.max() <= 1 - 2 * CLIP + 1e-6


def test_the_labelled_test_set_is_scored_as_pred_csv_says(repo: Path) -> None:
    _, _, probs, truth = submission(repo)
    labels = np.array([CLASSES.index(t) for t in truth])
    p_true = probs[np.arange(len(labels)), labels]
    report = json.loads((repo / "reports/predict.json").read_text())
    assert report["test_loss"] == pytest.approx(-np.mean(np.log(p_true)), abs=1e-4)
    assert report["test_accuracy"] == np.mean(probs.argmax(axis=1) == labels)
    assert 0 <= report["test_auc"] <= 1 and "test_sensitivity" not in report  # K > 2: macro
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    [data] = [d["data"] for d in shown.values()]
    assert data["reports/predict.json"]["data"]["test_accuracy"] == report["test_accuracy"]


def test_the_classify_tool_scores_the_class_folders_as_predict(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`Classifier` on the labelled test folders: predict's probabilities of the same images
    (softmax, three classes, a trained head) to 1e-5, and each image's map of its predicted
    class averages, with the bias, to that class's logit."""
    from stages import predict
    from stages.classify import Classifier

    monkeypatch.chdir(repo)  # the model's weights: keras_weights/ of the project
    test, raw, classes = predict.predict("models/model_2.h5", "data/features/test/fused.h5")
    clf = Classifier.load()
    assert clf.classes == classes == CLASSES
    e = clf.explain(clf.pixels_of([f"data/raw/test/{n}" for n in test.names]))
    np.testing.assert_allclose(e.probs, raw, atol=1e-5)
    assert len(set(e.predicted)) > 1  # the comparison can fail: not one class for all
    shares = np.sum([g.mean(axis=(1, 2), dtype=np.float64) for g in e.grids], axis=0)
    np.testing.assert_allclose(shares + e.bias, e.logits, atol=1e-4)


def test_an_openvino_model_classifies_without_tensorflow(repo: Path) -> None:
    """`classify` on a model of OpenVINO features runs OpenVINO's cached networks and the head
    in NumPy: neither TensorFlow nor Keras is imported, and the probabilities are predict's."""
    import subprocess
    import sys

    from conftest import ENV, REPO

    from stages import predict

    test, raw, _ = predict.predict(str(repo / "models/model_2.h5"),
                                   str(repo / "data/features/test/fused.h5"))
    code = ("import sys; from stages import classify; classify.main(['--out', 'one.csv', "
            f"'data/raw/test/{test.names[0]}']); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True,
                       env={**ENV, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().endswith("[]"), p.stdout
    assert "starting openvino" in p.stderr
    [row] = list(csv.DictReader((repo / "one.csv").open()))
    assert [float(row[c]) for c in CLASSES] == pytest.approx(list(raw[0]), abs=1e-5)
    (repo / "one.csv").unlink()


def test_classify_metrics_of_the_test_folder_are_predicts_test_metrics(repo: Path,
                                                                      tmp_path: Path) -> None:
    """`classify data/raw/test --metrics FILE` (an outside set's command) on the labelled test
    folder: the scores and intervals of reports/predict.json, the interval unit of
    reports/test/summary.json, and the confusion matrix's counts (three classes, softmax)."""
    import subprocess
    import sys
    from collections import Counter

    from conftest import ENV, REPO

    out = tmp_path / "outside.json"
    p = subprocess.run([sys.executable, "-m", "stages.classify", "data/raw/test", "--metrics",
                        str(out)], cwd=repo, capture_output=True, text=True,
                       env={**ENV, "PYTHONPATH": str(REPO)})
    assert p.returncode == 0, p.stderr
    got = json.loads(out.read_text())
    report = json.loads((repo / "reports/predict.json").read_text())
    summary = json.loads((repo / "reports/test/summary.json").read_text())
    assert set(report) <= set(got) and report["n_test"] == len(CLASSES) * PER_TEST_CLASS
    for key, value in report.items():  # probabilities agree to ~1e-6: the scores do too
        assert got[key] == (value if isinstance(value, (str, list)) or value is None
                            else pytest.approx(value, abs=1e-5)), key
    assert got["test_accuracy"] == report["test_accuracy"]
    assert got["interval_unit"] == summary["interval_unit"] == "image"
    assert (got["clip"], got["n_skipped"]) == (CLIP, 0)
    matrix = json.loads((repo / "reports/test/plots/sklearn/confusion_matrix.json").read_text())
    counts = Counter((m["actual"], m["predicted"]) for m in matrix)
    assert got["confusion"] == {t: {c: counts[(t, c)] for c in CLASSES} for t in CLASSES}
    assert p.stdout.startswith(f"classify: outside set data/raw/test: {report['n_test']} images "
                               "(ant 4, moth 4, zebra 4)\n"), p.stdout


def test_confusion_matrices_and_the_mistakes_picture_are_declared_plots(repo: Path,
                                                                      tmp_path: Path) -> None:
    from test_tracking import html_specs

    dvc(repo, "plots", "show", "-o", str(tmp_path))
    html = (tmp_path / "index.html").read_text()
    specs = html_specs(html)
    _, _, _, truth = submission(repo)
    test_cm = specs["Test_confusion_matrix"]["data"]["values"]
    assert sorted(v["actual"] for v in test_cm) == sorted(truth)
    val_cm = specs["Validation_confusion_matrix"]["data"]["values"]
    assert {v["actual"] for v in val_cm} == set(CLASSES)
    for curve in ("ROC", "precision-recall"):  # micro-averaged over the three classes
        assert specs[f"Test_{curve}"]["data"]["values"]
    assert "val_mistakes.png" in html
    assert (repo / "reports/val_mistakes.png").read_bytes()[:4] == b"\x89PNG"


def test_a_zip_of_the_test_folder_and_the_way_back_extract_nothing(repo: Path) -> None:
    """A zip made of the labelled test folder the usual way (`zip -r test.zip test`) is read as
    the folder: `resize@test` runs (it reads the zip) and writes the same file, so nothing is
    extracted again and `pred.csv` names the rows alike (they were `test/ant/…`, extracted
    anew); then the README's way back to the labelled test set extracts nothing: its test
    side comes back from the run-cache, and `predict` (whose outputs are `persist`, kept when a
    bad param stops it, so not run-cached) runs again in seconds, writing the same bytes."""
    before = (repo / "pred.csv").read_bytes()
    shutil.make_archive(str(repo / "data/raw/test"), "zip", repo / "data/raw", "test")
    ran = ran_stages(dvc(repo, "exp", "run", "-S", "test_data=data/raw/test.zip"))
    assert ran == ["resize@test", "predict", "report"], ran
    assert (repo / "pred.csv").read_bytes() == before
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    back = next(ln.split("#")[0].split() for ln in readme.splitlines()
                if ln.startswith("dvc exp run -S test_data=data/raw/test "))
    p = dvc(repo, *back[1:])
    assert ran_stages(p) == ["predict", "report"], p.stdout
    assert "Stage 'resize@test' is cached - skipping run" in p.stdout
    assert (repo / "pred.csv").read_bytes() == before
    (repo / "data/raw/test.zip").unlink()


def test_a_run_says_what_it_does_while_the_user_waits(repo: Path) -> None:
    """Each extraction was silent for 7–13 s before its bar (TensorFlow starting, the network
    built and compiled), and predict for 5–8 s: each says what it is doing, in order, and ends
    with what it did. (On OpenVINO here: its networks were converted by the engine's run, so
    nothing is converted again.)"""
    out, err = SAID["test"]  # apart: DVC passes each stream on by itself
    n = len(CLASSES) * PER_TEST_CLASS
    for net in ("inception_v3", "xception"):
        lines = [ln for ln in re.split(r"[\r\n]+", err) if ln.startswith(f"extract {net}:")
                 or ln.startswith(f"{net} test:")]
        assert lines[0] == (f"extract {net}: {n} images of data/resized/test.h5; starting "
                            "openvino"), lines
        assert lines[1] == (f"extract {net}: building {net} at 75 px with the weights in "
                            f"keras_weights/{BACKBONES[net].weights_file}, through OpenVINO at "
                            "float32 (the network converted once, then cached)"), lines
        assert re.match(rf"{net} test: +0%", lines[2]) and re.match(
            rf"{net} test: +100%.* {n}/{n} ", lines[-1]), lines  # the bar, then nothing
        assert re.search(rf"^extract {net}: {n} images of data/resized/test.h5 → "
                         rf"data/features/test/{net}.h5 in \d+ s$", out, re.M), out
    assert f"predict: {n} test rows of data/features/test/fused.h5; starting tensorflow" in err
