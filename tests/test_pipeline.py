"""The whole pipeline through real `dvc` commands, in a temporary git repo with generated JPEGs.

The contract's checks read the session's one full run (`baseline`); the tests that change
params work on one copy of it, in file order: repro again, then params changes, each asserting
which stages run. (Experiments, which rerun only the head, are run and compared in
test_tracking.py; a change of `width`, which reruns every stage, is tested over linked outputs
in test_cache_links.py.)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import (
    REPO,
    copy_project,
    dvc,
    make_project,
    project_files,
    ran_stages,
    run,
    set_params,
)

N_PER_CLASS, N_TEST = 12, 6  # the baseline's data

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def repo(baseline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(baseline, tmp_path_factory.mktemp("pipeline") / "p")


def test_outputs_match_the_contract(baseline: Path) -> None:
    repo = baseline
    with h5py.File(repo / "data/resized/train.h5") as f:
        images, labels, names = f["images"], f["labels"][:], f["names"][:].astype(str)
        assert images.dtype == np.uint8 and images.shape == (2 * N_PER_CLASS, 75, 75, 3)
        assert labels.dtype == np.uint8 and list(labels) == [0] * N_PER_CLASS + [1] * N_PER_CLASS
        # cat.0.jpg is pure red: RGB order puts 255 in channel 0 (the original fed BGR).
        red = images[list(names).index("cat.0.jpg")].reshape(-1, 3).mean(axis=0)
        assert red[0] > 240 and red[1] < 15 and red[2] < 15, red
    with h5py.File(repo / "data/resized/test.h5") as f:
        assert f["images"].shape == (N_TEST, 75, 75, 3) and f["images"].dtype == np.uint8
        assert f["ids"].dtype == np.int64 and list(f["ids"][:]) == list(range(1, N_TEST + 1))
    for split, n in (("train", 2 * N_PER_CLASS), ("test", N_TEST)):
        for name, dim in (("inception_v3", 2048), ("xception", 2048), ("fused", 4096)):
            with h5py.File(repo / f"data/features/{split}/{name}.h5") as f:
                assert f["features"].dtype == np.float32
                assert f["features"].shape == (n, dim)
                if split == "train":
                    assert list(f["labels"][:]) == list(labels)
                    assert list(f["names"].asstr()[:]) == list(names)
                    assert list(f.attrs["classes"]) == ["cat", "dog"]
                else:  # an unlabelled Kaggle test set: ids, no labels or classes
                    assert list(f["ids"][:]) == list(range(1, N_TEST + 1))
                    assert "labels" not in f and "classes" not in f.attrs
        with h5py.File(repo / f"data/features/{split}/fused.h5") as fu, \
                h5py.File(repo / f"data/features/{split}/inception_v3.h5") as fi, \
                h5py.File(repo / f"data/features/{split}/xception.h5") as fx:
            np.testing.assert_array_equal(fu["features"][:, :2048], fi["features"][:])
            np.testing.assert_array_equal(fu["features"][:, 2048:], fx["features"][:])
            assert list(fu.attrs["networks"]) == ["inception_v3", "xception"]
            assert len(fu["previews"]) == n
    assert not (repo / "data/features/fused.h5").exists()  # the layout before the split

    rows = list(csv.reader((repo / "pred.csv").open()))
    assert rows[0] == ["id", "label"]
    ids = [int(r[0]) for r in rows[1:]]
    probs = np.array([float(r[1]) for r in rows[1:]])
    assert ids == list(range(1, N_TEST + 1))
    assert np.all((probs >= 0.005) & (probs <= 0.995))

    metrics = json.loads((repo / "metrics.json").read_text())
    for key in ("val_loss", "val_accuracy", "best_epoch", "n_train", "n_val", "val_auc",
                "val_balanced_accuracy", "val_sensitivity", "val_specificity",
                "n_groups_train", "n_groups_val", "threshold", "temperature", "val_ece",
                "val_auc_low", "val_auc_high", "val_sensitivity_low", "val_specificity_high"):
        assert key in metrics
    assert metrics["threshold"] == 0.5 and metrics["temperature"] == 1.0  # the defaults
    assert metrics["n_train"] + metrics["n_val"] == 2 * N_PER_CLASS
    assert metrics["n_groups_train"] == metrics["n_train"]  # no group_pattern: an image each
    assert 1 <= metrics["best_epoch"] <= 2
    for picture in ("history.png", "val_mistakes.png", "val/reliability.png"):
        assert (repo / "reports" / picture).read_bytes()[:4] == b"\x89PNG"
    history = list(csv.DictReader((repo / "reports/history.csv").open()))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    best = history[metrics["best_epoch"] - 1]
    assert float(best["val_loss"]) == pytest.approx(metrics["val_loss"])
    for split in ("val", "test"):
        for plot in ("confusion_matrix", "roc", "precision_recall"):
            assert (repo / "reports" / split / "plots/sklearn" / f"{plot}.json").is_file()
    val_rows = list(csv.reader((repo / "reports/val/predictions.csv").open()))
    assert val_rows[0] == ["id", "label", "true_class", "predicted_class"]
    assert len(val_rows) == 1 + metrics["n_val"]
    assert {r[2] for r in val_rows[1:]} == {"cat", "dog"} and val_rows[1][0] in set(names)
    report = json.loads((repo / "reports/predict.json").read_text())
    assert report == {"n_test": N_TEST, "classes": ["cat", "dog"]}  # unlabelled: nothing scored
    summary = json.loads((repo / "reports/test/summary.json").read_text())
    assert summary["mean_prob"]["dog"] == pytest.approx(probs.mean(), abs=1e-6)
    with h5py.File(repo / "models/model_2.h5") as f:  # what predict reads of the model
        assert list(f.attrs["classes"]) == ["cat", "dog"]
        assert list(f.attrs["networks"]) == ["inception_v3", "xception"]
        assert list(f.attrs["weights"]) == ["keras_weights", "keras_weights"]


def test_two_class_predictions_are_the_original_heads(baseline: Path) -> None:
    """Dropout + Dense(1, sigmoid) as the original built it, and pred.csv is its sigmoid on
    the fused test features, clipped: recomputed here from the saved weights alone."""
    with h5py.File(baseline / "models/model_2.h5") as f:
        weights = f["model_weights/dense"]
        kernel = weights[next(k for k in _datasets(weights) if k.endswith("kernel"))][:]
        bias = weights[next(k for k in _datasets(weights) if k.endswith("bias"))][:]
    with h5py.File(baseline / "data/features/test/fused.h5") as f:
        x = f["features"][:].astype(np.float64)
    expected = np.clip(1 / (1 + np.exp(-(x @ kernel + bias)[:, 0])), 0.005, 0.995)
    got = [float(r[1]) for r in list(csv.reader((baseline / "pred.csv").open()))[1:]]
    np.testing.assert_allclose(got, expected, atol=2e-6)


def _datasets(group: h5py.Group) -> list[str]:
    names: list[str] = []
    group.visit(lambda n: names.append(n) if isinstance(group[n], h5py.Dataset) else None)
    return names


def test_model_opens_in_safe_mode(baseline: Path) -> None:
    import keras

    model = keras.models.load_model(baseline / "models/model_2.h5", safe_mode=True, compile=False)
    assert model.input_shape == (None, 4096) and model.output_shape == (None, 1)
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Dropout", "Dense"]
    assert model.layers[-1].activation.__name__ == "sigmoid"


def test_second_repro_runs_nothing(repo: Path) -> None:
    p = dvc(repo, "repro")
    assert ran_stages(p) == []
    assert "up to date" in p.stdout


def test_extract_batch_size_reruns_only_predict(repo: Path) -> None:
    """Speed only: no extractor reruns. predict reads the whole params file (a typo'd key must
    stop it), so it would run, in seconds, and so would `report`, which lists every param
    (`--dry`: the stages whose own inputs changed)."""
    set_params(repo, extract_batch_size=4)
    assert ran_stages(dvc(repo, "repro", "--dry")) == ["predict", "report"]


def test_precision_reruns_the_extractors_not_resize(repo: Path) -> None:
    """`--dry` names the stages whose own inputs changed, without running them (a real run of
    both networks would double this test's cost). What follows them reruns when their outputs
    change, as a new `width` shows by rerunning everything (test_cache_links.py)."""
    set_params(repo, precision="mixed_bfloat16")
    ran = ran_stages(dvc(repo, "repro", "--dry"))
    extractors = [f"extract_{n}@{s}" for n in ("inception", "xception") for s in ("train", "test")]
    # (int8_sample reads `precision` too: a second, its file still `none`)
    assert sorted(ran) == sorted(["int8_sample", *extractors, "predict", "report"])


def test_engine_reruns_the_extractors_and_int8_draws_its_sample_first(repo: Path) -> None:
    """`engine` is an extractor param; int8 (OpenVINO's) also reruns `int8_sample`, whose
    file the extractors take as params. int8 without OpenVINO stops with the params, naming
    the command that sets both."""
    extractors = [f"extract_{n}@{s}" for n in ("inception", "xception") for s in ("train", "test")]
    set_params(repo, engine="openvino", precision="float32")
    assert sorted(ran_stages(dvc(repo, "repro", "--dry"))) == sorted(
        [*extractors, "predict", "report"])
    set_params(repo, precision="int8")
    assert sorted(ran_stages(dvc(repo, "repro", "--dry"))) == sorted(
        ["int8_sample", *extractors, "predict", "report"])
    set_params(repo, engine="tensorflow")
    p = dvc(repo, "repro", check=False)
    assert p.returncode != 0 and ran_stages(p) == ["int8_sample"]
    assert ("'precision' is 'int8', which OpenVINO runs: set 'engine' to 'openvino' too "
            "(`dvc exp run -S engine=openvino -S precision=int8`") in p.stderr
    set_params(repo, precision="float32")


# What an experiment's run writes that git or DVC keeps: none of it may be lost to a bad value.
KEPT = ("models/model_2.h5", "metrics.json", "reports/history.png", "reports/history.csv",
        "reports/val/predictions.csv", "reports/val_mistakes.png", "pred.csv",
        "reports/predict.json", "reports/test/summary.json")


def test_a_bad_value_loses_nothing(repo: Path) -> None:
    """DVC removes a stage's outputs before running it. train_head's and predict's are
    `persist`, so a value that stops them (a `group_pattern` that misses every file, typed as a
    user typed it; a `clip` out of range) keeps every output of the last run, the ones git
    keeps included, and the one line says so."""
    set_params(repo, precision="float32", engine="tensorflow",
               extract_batch_size=16)  # back from the --dry tests
    assert ran_stages(dvc(repo, "repro")) == []
    before = {path: (repo / path).read_bytes() for path in KEPT}
    p = run(repo, "bash", "-c", """dvc exp run -S "group_pattern='^(person\\d+)'" """,
            check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and ran_stages(p) == ["train_head"], out
    assert "The last run's outputs are untouched" in out and "Traceback" not in out
    set_params(repo, group_pattern="", clip=0.7)
    p = dvc(repo, "repro", check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and ran_stages(p) == ["predict"]
    assert "predict: params.yaml: 'clip' is 0.7; it must be a number in [0, 0.5)" in out
    assert "The last run's outputs are untouched" in out and "Traceback" not in out
    assert {path: (repo / path).read_bytes() for path in KEPT} == before
    set_params(repo, clip=0.005)
    assert ran_stages(dvc(repo, "repro")) == []  # the last run's outputs, recorded as they are


def test_a_bad_value_upstream_is_undone_by_dvc_checkout(repo: Path) -> None:
    """The other stages' outputs are all in DVC's cache (resize's report too), so the one
    command their message names, `dvc checkout`, restores every one of them."""
    resized = ("data/resized/train.h5", "data/resized/train_skipped.csv",
               "reports/resize/train.json")
    before = {path: (repo / path).read_bytes() for path in resized}
    set_params(repo, width=50)
    p = dvc(repo, "repro", check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and ran_stages(p) == ["resize@train"], out
    assert "`dvc checkout` puts the last run's back" in out and "Traceback" not in out
    assert not (repo / "data/resized/train.h5").exists()
    dvc(repo, "checkout")
    assert {path: (repo / path).read_bytes() for path in resized} == before
    set_params(repo, width=75)
    assert ran_stages(dvc(repo, "repro")) == []


def test_missing_data_stops_at_resize_with_help(tmp_path: Path) -> None:
    # A fresh clone: no data/raw/train at all. DVC itself stops at resize and names the path
    # (no placeholder lives there, so a teammate's --allow-missing sees the data as missing).
    root = make_project(tmp_path / "empty", data=False)
    p = dvc(root, "repro", check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and ran_stages(p) == []
    assert "'resize@train'" in out and "data/raw/train" in out
    # The folder exists but holds no images: the stage says where the data goes and how to get it.
    (root / "data/raw/train").mkdir()
    (root / "data/raw/train/Thumbs.db").write_bytes(b"x")
    (root / "data/raw/test").mkdir()
    p = dvc(root, "repro", "resize@train", check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and ran_stages(p) == ["resize@train"]
    assert "data/raw/train: holds no images" in out and "kaggle competitions download" in out


def test_a_typo_in_a_new_key_is_no_silent_experiment(repo: Path) -> None:
    """`dvc exp run -S dropuot=0.3` fails in DVC, whose hint says `+dropuot=0.3`: that adds a
    key no stage depends on but predict (the whole file), which stops naming it. No
    experiment in which nothing ran."""
    before = len(experiments_of(repo))
    p = dvc(repo, "exp", "run", "-S", "+dropuot=0.3", check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and ran_stages(p) == ["predict"]
    assert "unknown key 'dropuot'. Did you mean 'dropout'? Delete its line from params.yaml (or " \
           "`git checkout params.yaml` to drop every uncommitted change)" in out
    assert "once the value is fixed" not in out  # the key has to go, not a value be fixed
    assert len(experiments_of(repo)) == before
    run(repo, "git", "checkout", "params.yaml")
    dvc(repo, "checkout")


def experiments_of(repo: Path) -> list[str]:
    return dvc(repo, "exp", "ls", "--name-only").stdout.split()


def test_a_test_project_holds_none_of_the_users_inputs(tmp_path: Path) -> None:
    """After the README's data step (`dvc add` of the images and weights, the `.dvc` files and
    the user's params committed) the suite still builds its projects from the project's files
    alone: a copied `data/raw/train.dvc` would make DVC see the test data as changed."""
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone))
    for name in ("data/raw/train.dvc", "data/raw/test.dvc", "keras_weights.dvc"):
        (clone / name).write_text("outs:\n- md5: 0.dir\n  path: x\n")
    set_params(clone, width=160, weights="keras_weights")
    run(clone, "git", "add", "-f", "data/raw", "keras_weights.dvc", "params.yaml")
    run(clone, "git", "commit", "-qm", "data: my images")
    files = project_files(clone)
    assert "dvc.yaml" in files and "stages/train_head.py" in files
    assert not [f for f in files if f.endswith(".dvc")], files
    assert "params.yaml" not in files  # make_project writes the contract's defaults


def test_an_operating_point_and_calibration_rerun_only_the_head(repo: Path) -> None:
    """Issue 25: each `threshold` form, `calibrate` and `folds` rerun train_head and predict,
    nothing else (dry runs); one real run with all three: the threshold chosen out of fold
    reaches its target there, the temperature is folded into the saved model and recorded,
    every training image is in reports/val/predictions.csv once, the Kaggle submission keeps
    its `id,label`."""
    run(repo, "git", "checkout", "params.yaml")
    dvc(repo, "checkout")
    for value in ("threshold=youden", "threshold=sensitivity:0.95", "calibrate=temperature",
                  "folds=5"):
        key, _, v = value.partition("=")
        set_params(repo, **{key: v})
        assert ran_stages(dvc(repo, "repro", "--dry")) == ["train_head", "predict",
                                                          "report"], value
        run(repo, "git", "checkout", "params.yaml")
    # issue 32: with folds, every training image is validated once, out of fold
    p = dvc(repo, "exp", "run", "-S", "threshold=sensitivity:0.95", "-S", "calibrate=temperature",
            "-S", "folds=3")
    assert ran_stages(p) == ["train_head", "predict", "report"]
    assert "3 folds (val_split unused)" in p.stdout
    metrics = json.loads((repo / "metrics.json").read_text())
    assert metrics["val_sensitivity"] >= 0.95 and metrics["temperature"] > 0
    assert metrics["val_sensitivity_low"] < metrics["val_sensitivity"] <= metrics[
        "val_sensitivity_high"]
    assert metrics["threshold_low"] < metrics["threshold"] < metrics["threshold_high"]
    assert metrics["val_auc_fold_sd"] is None or metrics["val_auc_fold_sd"] >= 0
    with h5py.File(repo / "models/model_2.h5") as f:
        assert f.attrs["threshold"] == metrics["threshold"]
        assert f.attrs["temperature"] == metrics["temperature"]
    val = list(csv.DictReader((repo / "reports/val/predictions.csv").open()))
    with h5py.File(repo / "data/resized/train.h5") as f:
        assert sorted(r["id"] for r in val) == sorted(f["names"].asstr()[:])
    assert metrics["n_val"] == len(val) and {r["fold"] for r in val} == {"1", "2", "3"}
    decided = ["dog" if float(r["label"]) >= metrics["threshold"] else "cat" for r in val]
    assert [r["predicted_class"] for r in val] == decided
    assert next(csv.reader((repo / "pred.csv").open())) == ["id", "label"]
    run(repo, "git", "checkout", "params.yaml")
    dvc(repo, "checkout")
