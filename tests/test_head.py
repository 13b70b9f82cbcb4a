"""The fast head: same checkpoint logic as a plain Keras fit, the input pipeline feeds what
`fit(shuffle=True)` + Dropout would, per-epoch logs reach the callbacks, same seed → same bytes."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from stages import decision, evaluation, h5io, previews
from stages import train_head as th
from stages.params import DEFAULTS
from stages.split import stratified_split


def problem(n: int = 400, dim: int = 1024, flip: float = 0.3, seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative features with a weak class signal and `flip` of the labels wrong: more
    columns than training rows, so the head learns the signal, then memorises the wrong labels
    and val_loss rises again before the last epoch."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.uint8)
    x = rng.normal(0, 1, (n, dim)) + np.outer(2.0 * y - 1.0, rng.normal(0, 0.1, dim))
    y = np.where(rng.random(n) < flip, 1 - y, y).astype(np.uint8)
    return np.maximum(x, 0).astype(np.float32), y


def reference_fit(x: np.ndarray, y: np.ndarray, params: dict[str, Any], path: Path
                  ) -> dict[str, list[float]]:
    """The original's way: fit on numpy arrays, ModelCheckpoint(save_best_only)."""
    import keras

    keras.utils.set_random_seed(params["seed"])
    tr, va = stratified_split(y, params["val_split"], params["seed"])
    model = th.build_head(x.shape[1], params["dropout"], params["learning_rate"])
    ckpt = keras.callbacks.ModelCheckpoint(str(path), monitor="val_loss", save_best_only=True)
    yf = y.astype(np.float32)
    return model.fit(x[tr], yf[tr], validation_data=(x[va], yf[va]),
                     batch_size=params["batch_size"], epochs=params["epochs"], shuffle=True,
                     callbacks=[ckpt], verbose=0).history


def val_loss_of(path: Path, x: np.ndarray, y: np.ndarray, params: dict[str, Any]) -> float:
    import keras

    _, va = stratified_split(y, params["val_split"], params["seed"])
    model = keras.models.load_model(path, compile=False, safe_mode=True)
    p = np.clip(model.predict(x[va], verbose=0)[:, 0].astype(np.float64), 1e-7, 1 - 1e-7)
    t = y[va]
    return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))


def test_fast_head_checkpoints_the_same_epoch_as_a_reference_fit(tmp_path: Path) -> None:
    # One batch per epoch and no dropout: shuffling and dropout masks cannot differ, so the two
    # loops must agree epoch by epoch, and keep the same (not the last) epoch.
    x, y = problem()
    params = {**DEFAULTS, "epochs": 12, "dropout": 0.0, "learning_rate": 0.03, "batch_size": 512}
    ref = reference_fit(x, y, params, tmp_path / "ref.h5")
    result = th.train(x, y, params, str(tmp_path / "fast.h5"))
    metrics, hist = result.metrics, result.history

    np.testing.assert_allclose(hist["val_loss"], ref["val_loss"], rtol=1e-4)
    np.testing.assert_allclose(hist["loss"], ref["loss"], rtol=1e-4)
    best = int(np.argmin(ref["val_loss"]))
    assert 0 < best < params["epochs"] - 1, ref["val_loss"]  # the problem overfits, as meant
    assert metrics["best_epoch"] == best + 1
    assert metrics["val_loss"] == pytest.approx(min(hist["val_loss"]))
    # The file holds that epoch's weights, for both.
    for name in ("ref.h5", "fast.h5"):
        assert val_loss_of(tmp_path / name, x, y, params) == pytest.approx(
            metrics["val_loss"], rel=1e-4)


def test_saved_head_is_dropout_dense_and_reproducible(tmp_path: Path) -> None:
    import keras

    x, y = problem(n=60, dim=32, flip=0)
    params = {**DEFAULTS, "epochs": 3}
    digests = []
    for i, seed in enumerate((1, 1, 2)):
        path = tmp_path / f"m{i}.h5"
        metrics = th.train(x, y, {**params, "seed": seed}, str(path)).metrics
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1] != digests[2]
    # the contract's keys, and no more: each is a column of `dvc exp show`
    scores = ("val_auc", "val_balanced_accuracy", "val_sensitivity", "val_specificity",
              "val_accuracy")
    assert set(metrics) == {"val_loss", "best_epoch", "best_epoch_val_loss", "n_train",
                            "n_val", "n_groups_train",
                            "n_groups_val", "threshold", "threshold_low", "threshold_high",
                            "temperature", "val_ece", *scores,
                            *(f"{s}_{end}" for s in scores for end in ("low", "high"))}
    model = keras.models.load_model(tmp_path / "m0.h5", safe_mode=True)
    assert [type(layer).__name__ for layer in model.layers] == ["InputLayer", "Dropout", "Dense"]
    assert model.layers[1].rate == params["dropout"]
    assert model.optimizer is not None  # saved with its optimizer state, as before


def test_pipeline_shuffles_and_drops_out_like_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    monkeypatch.setattr(th, "CHUNK_ROWS", 32)  # several chunks: 4 batches of 8 each
    n, dim, bs, rate = 100, 512, 8, 0.5
    x = np.arange(1, n + 1, dtype=np.float32)[:, None] * np.ones((1, dim), np.float32)
    ds = th.train_dataset(tf.constant(x), tf.constant(np.arange(n, dtype=np.float32)),
                          np.arange(n), bs, seed=3, dropout=rate)
    epochs = [list(ds), list(ds)]
    orders = []
    for chunks in epochs:
        assert [len(c[1]) for c in chunks] == [32, 32, 32, 4]  # whole batches, last partial
        xs = np.concatenate([c[0].numpy() for c in chunks])
        rows = np.concatenate([c[1].numpy() for c in chunks]).astype(int)
        assert sorted(rows) == list(range(n))  # each row once per epoch
        orders.append(rows)
        kept = xs != 0
        assert abs(kept.mean() - (1 - rate)) < 0.01
        np.testing.assert_allclose(xs[kept], (x[rows] / (1 - rate))[kept])  # scaled survivors
    assert not np.array_equal(orders[0], orders[1])  # a fresh shuffle every epoch
    masks = [np.concatenate([c[0].numpy() for c in e]) != 0 for e in epochs]
    assert not np.array_equal(masks[0], masks[1])  # fresh masks every epoch


def test_chunked_steps_are_fits_batch_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given the same rows in the same order, the chunk trainer takes exactly fit's steps."""
    import keras
    import tensorflow as tf

    monkeypatch.setattr(th, "CHUNK_ROWS", 16)
    x, y = problem(n=100, dim=32, flip=0)
    yf = y.astype(np.float32)
    runs = []
    for chunked in (False, True):
        keras.utils.set_random_seed(0)
        model = th.build_head(x.shape[1], 0.0, 0.01)
        if chunked:  # chunks of 16 rows: batches 8, 8 | 8, 8 | ... | 4, as fit's below
            trainer = th.trainer_for(model, 8, dropout_in_pipeline=True)
            hist = trainer.fit(tf.data.Dataset.from_tensor_slices((x, yf)).batch(16),
                               epochs=3, shuffle=False, verbose=0).history
        else:
            hist = model.fit(x, yf, batch_size=8, epochs=3, shuffle=False, verbose=0).history
        runs.append((hist, model.get_weights(), int(model.optimizer.iterations)))
    (h0, w0, it0), (h1, w1, it1) = runs
    assert it0 == it1 == 3 * 13
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(h1[key], h0[key], rtol=1e-5)
    for a, b in zip(w1, w0, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_every_epoch_reaches_the_callbacks(tmp_path: Path) -> None:
    # Many steps per execution must not hide epochs from the history or the checkpoint.
    x, y = problem(n=200, dim=16, flip=0)
    params = {**DEFAULTS, "epochs": 4}
    hist = th.train(x, y, params, str(tmp_path / "m.h5")).history
    assert len(hist["val_loss"]) == 4
    th.write_history(hist, str(tmp_path / "history.csv"))
    rows = (tmp_path / "history.csv").read_text().splitlines()
    assert rows[0] == "epoch,loss,val_loss,accuracy,val_accuracy"
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]  # from 1, as best_epoch
    assert [float(r.split(",")[2]) for r in rows[1:]] == hist["val_loss"]


def test_a_loss_that_is_not_a_number_stops_training_naming_the_epochs() -> None:
    hist = {"loss": [0.5, 0.4, float("nan")], "val_loss": [0.6, float("inf"), float("nan")]}
    with pytest.raises(h5io.NonFinite, match=r"epoch\(s\) 2, 3; no model was kept.*0\.001"):
        th.check_history(hist, 0.001)
    th.check_history({"loss": [0.5], "val_loss": [0.6]}, 0.001)  # finite: nothing to say


def test_diverging_training_stops_instead_of_checkpointing_a_wrong_epoch(tmp_path: Path) -> None:
    x, y = problem(n=60, dim=8, flip=0)
    x[:] = 3e38  # logits overflow float32: the loss is infinite, then NaN
    params = {**DEFAULTS, "epochs": 5, "learning_rate": 10.0}
    with pytest.raises(h5io.NonFinite, match="training diverged"):
        th.train(x, y, params, str(tmp_path / "m.h5"))
    assert not (tmp_path / "m.h5").exists()  # no checkpoint that looks finished


def test_balanced_class_weights_are_scikit_learns() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0] * 30 + [1] * 90 + [2] * 5)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    np.testing.assert_allclose(th.class_weights(y, 3, "balanced"), expected)
    np.testing.assert_array_equal(th.class_weights(y, 3, "none"), [1, 1, 1])


def test_class_weights_weigh_the_training_loss_as_defined(tmp_path: Path) -> None:
    """With a learning rate too small to move the weights and no dropout, the first epoch's
    training loss is the mean over the training rows of w(class) × the row's cross-entropy
    under the initial model: weights n / (K · n_class), as `fit(class_weight=…)` applies them."""
    import keras

    x, y = problem(n=200, dim=16, flip=0)
    y[:150] = 1  # imbalanced: 175 of class 1
    params = {**DEFAULTS, "epochs": 1, "dropout": 0.0, "learning_rate": 1e-12, "batch_size": 8,
              "class_weight": "balanced"}
    losses = {}
    for mode in ("none", "balanced"):
        path = tmp_path / f"{mode}.h5"
        result = th.train(x, y, {**params, "class_weight": mode}, str(path))
        losses[mode] = result.history["loss"][0]
    tr, _ = stratified_split(y, params["val_split"], params["seed"])
    model = keras.models.load_model(tmp_path / "balanced.h5", compile=False)
    p = np.clip(model.predict(x[tr], verbose=0)[:, 0].astype(np.float64), 1e-7, 1 - 1e-7)
    ce = -(y[tr] * np.log(p) + (1 - y[tr]) * np.log(1 - p))
    w = th.class_weights(y[tr], 2, "balanced")[y[tr]]
    assert len(tr) % params["batch_size"] == 0  # whole batches: Keras' mean is the row mean
    assert losses["none"] == pytest.approx(ce.mean(), rel=1e-4)
    assert losses["balanced"] == pytest.approx((w * ce).mean(), rel=1e-4)
    assert losses["balanced"] != pytest.approx(losses["none"], rel=1e-3)


def test_grouped_training_reports_its_groups(tmp_path: Path) -> None:
    x, y = problem(n=120, dim=16, flip=0)
    groups = np.array([f"p{i // 3}" for i in range(120)])  # 3 images a patient
    y = (np.arange(120) // 3 % 2).astype(np.uint8)  # a patient's images share a class
    result = th.train(x, y, {**DEFAULTS, "epochs": 1}, str(tmp_path / "m.h5"), groups=groups)
    m = result.metrics
    assert m["n_groups_train"] + m["n_groups_val"] == 40
    assert m["n_train"] + m["n_val"] == 120 and m["n_val"] == 3 * m["n_groups_val"]
    assert not set(groups[result.val_idx]) & set(np.delete(groups, result.val_idx))


def test_a_threshold_with_more_than_two_classes_stops_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 25: K > 2 classes take their most probable class; a threshold other than 0.5
    stops train_head before any training, naming the fix."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("threshold: youden\n")
    with h5io.create_h5(tmp_path / "fused.h5") as f:
        h5io.write_array(f, "features", np.zeros((9, 4), np.float32))
        h5io.write_array(f, "previews", np.zeros((9, 1), np.uint8))
        h5io.write_row_info(f, {"names": np.array([f"{i}.jpg" for i in range(9)], object),
                                "labels": np.arange(9, dtype=np.uint8) % 3}, ["a", "b", "c"])
    with pytest.raises(SystemExit, match=r"^train_head: params\.yaml: 'threshold' is 'youden', "
                                         r"but with 3 classes .* Set threshold: 0\.5"):
        th.main(["--features", "fused.h5"])
    assert not (tmp_path / "models").exists()


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, th.Trained]]:
    """The overfitting problem, 5:3 imbalanced and trained with class weights, without and
    with `calibrate: temperature` (same seed: the same training, the same checkpoint)."""
    folder = tmp_path_factory.mktemp("calibrated")
    x, y = problem()
    y[:120] = 1
    params = {**DEFAULTS, "epochs": 12, "dropout": 0.0, "learning_rate": 0.03,
              "batch_size": 512, "class_weight": "balanced"}
    runs = {}
    for mode in ("none", "temperature"):
        path = folder / f"{mode}.h5"
        runs[mode] = path, th.train(x, y, {**params, "calibrate": mode}, str(path))
    return runs


def test_val_loss_is_the_saved_models_and_the_checkpoints_is_beside_it(
        calibrated: dict[str, tuple[Path, th.Trained]]) -> None:
    """Issue 31, point 3: `val_loss` was Keras' of the checkpointed epoch, before calibration,
    while the saved model and every other validation figure are calibrated. Now it is the
    saved model's validation log loss, and Keras' is `best_epoch_val_loss`; without
    calibration the two agree (Keras' validation loss is unweighted, class_weight or not)."""
    x, y = problem()
    y[:120] = 1
    params = {**DEFAULTS, "val_split": 0.2, "seed": DEFAULTS["seed"]}
    for path, result in calibrated.values():
        m = result.metrics
        assert m["best_epoch_val_loss"] == result.history["val_loss"][m["best_epoch"] - 1]
        assert m["val_loss"] == pytest.approx(val_loss_of(path, x, y, params), rel=1e-5)
        assert m["val_loss"] == pytest.approx(
            evaluation.log_loss(y[result.val_idx], result.val_probs), rel=1e-6)
    plain, scaled = calibrated["none"][1].metrics, calibrated["temperature"][1].metrics
    assert plain["best_epoch_val_loss"] == scaled["best_epoch_val_loss"]  # the same epoch
    assert plain["val_loss"] == pytest.approx(plain["best_epoch_val_loss"], rel=1e-6)
    assert scaled["temperature"] > 1.5  # an overfitted head: overconfident
    assert scaled["val_loss"] < scaled["best_epoch_val_loss"] - 0.02


def datasets(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with h5py.File(path) as f:
        out: dict[str, np.ndarray] = {}
        f.visititems(lambda n, o: out.update({n: o[()]}) if isinstance(o, h5py.Dataset)
                     else None)
        return out, {k: str(v) for k, v in f.attrs.items()}


def test_calibration_divides_the_checkpoint_and_keeps_the_rest(
        calibrated: dict[str, tuple[Path, th.Trained]], tmp_path: Path) -> None:
    """Issue 31, point 20: the temperature goes in through Keras (`set_weights`, `save`), not
    into a Keras-internal HDF5 path. The file is the checkpoint's (an epoch before the last),
    optimizer state and all, but for the Dense weights divided by T; same seed, same bytes."""
    import keras

    (plain_path, _), (path, scaled) = calibrated["none"], calibrated["temperature"]
    assert scaled.metrics["best_epoch"] < len(scaled.history["loss"])  # not the last epoch
    t = scaled.metrics["temperature"]
    (a, a_attrs), (b, b_attrs) = datasets(plain_path), datasets(path)
    assert sorted(a) == sorted(b) and any(k.startswith("optimizer_weights/") for k in a)
    for key in a:
        if key.startswith("model_weights/dense/"):
            np.testing.assert_array_equal(b[key], (a[key] / t).astype(a[key].dtype))
        else:
            np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    assert {k: v for k, v in a_attrs.items() if v != b_attrs[k]} == {"temperature": "1.0"}
    model = keras.models.load_model(path, compile=False, safe_mode=True)
    x, y = problem()
    kernel, bias = keras.models.load_model(plain_path, compile=False).get_layer(
        "dense").get_weights()
    logits = x[scaled.val_idx].astype(np.float64) @ kernel + bias
    np.testing.assert_allclose(model.predict(x[scaled.val_idx], verbose=0)[:, 0],
                               1 / (1 + np.exp(-logits[:, 0] / t)), rtol=1e-5)
    y[:120] = 1
    again = tmp_path / "again.h5"
    th.train(x, y, {**DEFAULTS, "epochs": 12, "dropout": 0.0, "learning_rate": 0.03,
                    "batch_size": 512, "class_weight": "balanced", "calibrate": "temperature"},
             str(again))
    assert again.read_bytes() == path.read_bytes()


def test_calibrate_says_which_of_its_two_causes_left_no_temperature(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 31, point 13: "the head makes no mistake there" was said of a head making 9 of
    18 validation mistakes with nearly constant logits, for which a larger val_split is no
    cure."""
    model = th.build_head(4, 0.5, 0.001)
    x = np.random.default_rng(0).random((18, 4)).astype(np.float32)
    y = np.arange(18) % 2
    model.get_layer("dense").set_weights([np.full((4, 1), 1e-4, np.float32),
                                          np.array([0.3], np.float32)])
    assert th.calibrate(model, x, y) == 1.0
    said = capsys.readouterr().err
    assert "9 of 18 mistakes" in said and "a larger val_split will not help" in said, said
    assert "no mistake" not in said and said.count("\n") == 1
    np.testing.assert_array_equal(model.get_layer("dense").get_weights()[1],
                                  np.float32([0.3]))  # untouched

    model.get_layer("dense").set_weights([np.zeros((4, 1), np.float32),
                                          np.array([0.3], np.float32)])
    assert th.calibrate(model, x, np.ones(18, int)) == 1.0  # all class 1, all right
    said = capsys.readouterr().err
    assert "makes no mistake there" in said and "A larger val_split" in said, said


def tiny_features(path: Path, n: int = 40, dim: int = 16) -> None:
    """A training fused.h5 of `n` rows, two classes a learnable shift apart, with previews."""
    rng = np.random.default_rng(0)
    labels = (np.arange(n) % 2).astype(np.uint8)
    x = (rng.random((n, dim)) + 0.5 * labels[:, None]).astype(np.float32)
    with h5io.create_h5(path) as f:
        h5io.write_array(f, "features", x)
        previews.write(f, rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8))
        h5io.write_row_info(f, {"names": np.array([f"{i}.jpg" for i in range(n)], object),
                                "labels": labels}, ["cat", "dog"])


def test_the_stage_replaces_its_validation_folder_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """DVC keeps (`persist`) the last run's reports/val: no file of it may stay beside the new
    ones. predictions.csv decides at the threshold as the model did (the threshold is one of
    its values), and the summary line prints the saved model's val_loss."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("epochs: 3\nthreshold: youden\n")
    tiny_features(tmp_path / "fused.h5")
    stale = tmp_path / "reports/val/plots/sklearn/stale.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    (tmp_path / "reports/val/old.png").write_text("an earlier run's")
    th.main(["--features", "fused.h5"])
    assert not stale.exists() and not (tmp_path / "reports/val/old.png").exists()
    assert sorted(str(p.relative_to(tmp_path / "reports/val"))
                  for p in (tmp_path / "reports/val").rglob("*") if p.is_file()) == [
        "plots/calibration.json", "plots/sklearn/confusion_matrix.json",
        "plots/sklearn/precision_recall.json", "plots/sklearn/roc.json", "predictions.csv",
        "reliability.png"]
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "history.csv", "history.png", "val", "val_mistakes.png"]  # no temporary folder left
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    rows = list(csv.DictReader((tmp_path / "reports/val/predictions.csv").open()))
    p1 = np.array([float(r["label"]) for r in rows])
    # youden: midway between two validation scores, which bound its range (issue 32, point 3)
    low, high = metrics["threshold_low"], metrics["threshold_high"]
    assert low < metrics["threshold"] < high and low in p1 and high in p1
    assert not ((p1 > low) & (p1 < high)).any()
    again = decision.predicted(evaluation.probabilities(p1[:, None]), metrics["threshold"])
    assert [["cat", "dog"][c] for c in again] == [r["predicted_class"] for r in rows]
    out = capsys.readouterr().out
    assert f"val_loss {metrics['val_loss']:.4f}," in out
    assert (f"threshold {metrics['threshold']:.4g}: val sensitivity "
            f"{metrics['val_sensitivity']:.4f}, specificity {metrics['val_specificity']:.4f}"
            in out)


def test_with_folds_every_training_image_is_in_the_validation_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 32, point 1: reports/val/predictions.csv holds every training image once, out of
    fold, with its fold and the saved head's own probability (which `classify --mistakes`
    checks the model against); the run says that val_split is unused."""
    import keras

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("epochs: 3\nfolds: 3\nval_split: 0.5\n")
    tiny_features(tmp_path / "fused.h5")
    th.main(["--features", "fused.h5"])
    rows = list(csv.DictReader((tmp_path / "reports/val/predictions.csv").open()))
    assert sorted(r["id"] for r in rows) == sorted(f"{i}.jpg" for i in range(40))
    assert sorted({r["fold"] for r in rows}) == ["1", "2", "3"]
    with h5py.File("fused.h5") as f:
        x = f["features"][:]
    model = keras.models.load_model("models/model_2.h5", compile=False, safe_mode=True)
    saved = model.predict(x, verbose=0)[:, 0]
    assert [float(r["model_label"]) for r in rows] == pytest.approx(saved.tolist(), abs=1e-6)
    assert [float(r["label"]) for r in rows] != pytest.approx(saved.tolist(), abs=1e-6)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_val"] == 40 and "val_auc_fold_sd" in metrics
    out = capsys.readouterr().out
    assert "3 folds (val_split unused)" in out and "(40 images out of fold)" in out
    assert "fold3_val_loss" in Path("reports/history.csv").read_text().splitlines()[0]


@pytest.fixture(scope="module")
def folded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, th.Trained, np.ndarray]:
    """Issue 32, point 1: `folds: 4` on the overfitting problem, grouped by pairs of images,
    calibrated; (the saved model, the result, the groups)."""
    path = tmp_path_factory.mktemp("folded") / "m.h5"
    x, y = problem(n=200, dim=64, flip=0.1)
    groups = np.array([f"p{i // 2}" for i in range(200)])
    params = {**DEFAULTS, "epochs": 6, "folds": 4, "calibrate": "temperature",
              "threshold": "youden", "learning_rate": 0.01}
    return path, th.train(x, y, params, str(path), groups=groups), groups


def test_the_saved_head_is_the_mean_of_the_fold_heads(
        folded: tuple[Path, th.Trained, np.ndarray]) -> None:
    """The saved model is one Dense head whose logits are the mean of the K fold heads'
    logits, divided by the temperature fitted out of fold: the original's shape, so predict,
    classify, the maps and the export read it unchanged."""
    import keras

    path, result, _ = folded
    x, _ = problem(n=200, dim=64, flip=0.1)
    model = keras.models.load_model(path, compile=False, safe_mode=True)
    assert [layer.name for layer in model.layers] == ["features", "dropout", "dense"]
    assert result.heads is not None and len(result.heads) == 4
    t = result.metrics["temperature"]
    assert t != 1.0  # a temperature was fitted, and is folded in
    mean = np.mean([x.astype(np.float64) @ k + b for k, b in result.heads], axis=0)[:, 0] / t
    assert th.logits_of(model, x) == pytest.approx(mean, abs=1e-4)
    probs = model.predict(x, verbose=0)[:, 0]
    assert result.saved_probs is not None
    assert result.saved_probs[:, 1] == pytest.approx(probs, abs=1e-6)


def test_every_training_image_validates_once_by_the_head_that_did_not_train_on_it(
        folded: tuple[Path, th.Trained, np.ndarray]) -> None:
    _, result, groups = folded
    x, y = problem(n=200, dim=64, flip=0.1)
    assert (result.val_idx == np.arange(200)).all()
    assert result.fold is not None and sorted(set(result.fold.tolist())) == [0, 1, 2, 3]
    for g in np.unique(groups):  # a patient's images in one fold
        assert len(set(result.fold[groups == g].tolist())) == 1
    t = result.metrics["temperature"]
    assert result.heads is not None
    for i, (kernel, bias) in enumerate(result.heads):
        rows = result.fold == i
        z = (x[rows].astype(np.float64) @ kernel + bias)[:, 0] / t
        assert result.val_probs[rows, 1] == pytest.approx(1 / (1 + np.exp(-z)), abs=1e-9)
    m = result.metrics
    assert m["n_val"] == m["n_train"] == 200 and m["n_groups_val"] == 100
    assert m["val_loss"] == pytest.approx(evaluation.log_loss(y, result.val_probs), rel=1e-6)
    # the threshold and temperature come from the out-of-fold predictions
    assert m["threshold"] == decision.resolve_threshold("youden", y, result.val_probs[:, 1])
    assert len(result.histories) == 4 and len(result.history["val_loss"]) == 6


def test_each_scores_spread_over_the_folds_is_recorded(
        folded: tuple[Path, th.Trained, np.ndarray]) -> None:
    _, result, _ = folded
    _, y = problem(n=200, dim=64, flip=0.1)
    m = result.metrics
    assert result.fold is not None
    aucs = [evaluation.scores(y[result.fold == i], result.val_probs[result.fold == i], "v_",
                              threshold=m["threshold"])["v_auc"] for i in range(4)]
    assert m["val_auc_fold_sd"] == pytest.approx(np.std(aucs, ddof=1))
    for name in th.FOLD_SCORES:
        assert m[f"val_{name}_fold_sd"] > 0


def test_the_fold_history_writes_the_mean_and_each_fold(
        folded: tuple[Path, th.Trained, np.ndarray], tmp_path: Path) -> None:
    _, result, _ = folded
    th.write_history(result.history, str(tmp_path / "h.csv"), result.histories)
    rows = list(csv.DictReader((tmp_path / "h.csv").open()))
    assert len(rows) == 6 and float(rows[0]["val_loss"]) == pytest.approx(
        np.mean([h["val_loss"][0] for h in result.histories]))
    assert float(rows[5]["fold3_val_loss"]) == result.histories[2]["val_loss"][5]
    th.plot_history(result.histories, str(tmp_path / "h.png"))
    assert (tmp_path / "h.png").stat().st_size > 10_000


def test_a_split_that_chooses_from_little_is_said_in_one_line() -> None:
    """Issue 32, point 3: perfectly separated validation predictions, or a class with fewer
    than 20 images there, are named with their counts, and `folds` suggested."""
    classes = ["NORMAL", "PNEUMONIA"]
    labels = np.array([0] * 52 + [1] * 9)
    p1 = np.where(labels == 1, 0.9, 0.1) + np.linspace(0, 0.05, 61)
    probs = evaluation.probabilities(p1[:, None])
    note = th.few_images_note(labels, probs, classes, folds=0)
    assert "\n" not in note
    assert "few images of PNEUMONIA 9 on the validation split" in note
    assert "perfectly separated on the validation split (NORMAL 52, PNEUMONIA 9)" in note
    assert "-S folds=5" in note
    labels = np.array([0] * 40 + [1] * 40)
    overlap = evaluation.probabilities(np.linspace(0.1, 0.9, 80)[::-1][:, None])
    assert th.few_images_note(labels, overlap, classes, folds=0) == ""
    assert "out of fold" in th.few_images_note(labels[:30], overlap[:30], classes, folds=5)
