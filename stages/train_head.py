"""Stage `train_head`: Dropout + Dense on the fused features, best val_loss kept.

Two classes: the original's Dense(1, sigmoid) and binary cross-entropy; K > 2: Dense(K, softmax)
and sparse categorical cross-entropy. The split is stratified by class, seeded and, with
`group_pattern`, by group (stages/split.py); `class_weight: balanced` weighs the training loss
against class imbalance. Keras does the training loop and the checkpointing; the checkpointed
model is then evaluated on the validation rows: the per-epoch history, AUC, balanced accuracy,
sensitivity and specificity, every image's prediction (reports/val/predictions.csv), a confusion
matrix, ROC and precision-recall curves for `dvc plots show`, and a picture of the most
confident mistakes (where the Kaggle set's mislabelled photos turn up).

Speed: a step is a batch of 8 through a 4,097-weight model, so per-step overhead, not arithmetic,
sets the original's pace (~2 ms a step on 2 cores). Here the batches come from a tf.data pipeline
built once (shuffled every epoch, no copy of the features) in chunks of 64 batches, and Keras'
train_step runs the 64 optimizer steps of a chunk in one graph loop, 8 chunks per call
(steps_per_execution); dropout's masks are drawn in the pipeline, on another core, because drawing
them is most of a step's arithmetic; validation runs in large batches (the same mean loss, fewer
steps). Same semantics: batch 8, adam, a fresh shuffle and fresh dropout masks every epoch
(TensorFlow's own dropout op, seeded), the best val_loss epoch checkpointed, as Dropout + Dense
with its optimizer state. Keras' progress line counts chunks, not batches.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stages import cli, decision, evaluation, h5io, intervals, outputs, previews, quiet, split
from stages.feature_files import MADE_WITH
from stages.params import load_params

# A Keras step here is a chunk of ~CHUNK_ROWS training rows whose train_step takes one optimizer
# step per batch in it (see `trainer_for`): Keras' per-step overhead (~2 ms on 2 cores, most of
# the original's step) and tf.data's per-element overhead are paid once per chunk, not per batch.
CHUNK_ROWS = 512
STEPS_PER_EXECUTION = 8  # chunks per Keras call; callbacks still see every epoch's logs
VAL_BATCH_SIZE = 1024  # validation loss is a per-sample mean: the batch size changes only speed
# What the stage reads of params.yaml: dvc.yaml lists the same under its `params:`
# (tests/test_dvc_yaml.py checks), so that a change of any of them reruns it.
PARAMS = ("dropout", "learning_rate", "batch_size", "epochs", "val_split", "folds", "seed",
          "group_pattern", "class_weight", "threshold", "calibrate")


def class_weights(train_labels: np.ndarray, n_classes: int, mode: str) -> np.ndarray:
    """Per class, the weight of its images in the training loss: `none`, all 1 (the original);
    `balanced`, n / (K · n_class), scikit-learn's definition, over the training side."""
    if mode == "none":
        return np.ones(n_classes)
    counts = np.bincount(train_labels.astype(np.int64), minlength=n_classes)
    return len(train_labels) / (n_classes * np.maximum(counts, 1))


def loss_for(n_classes: int) -> str:
    return "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"


def build_head(dim: int, dropout: float, learning_rate: float, n_classes: int = 2) -> Any:
    """The head as saved: for two classes the original's Dropout + Dense(1, sigmoid) with binary
    cross-entropy; for K > 2, Dropout + Dense(K, softmax) with sparse categorical cross-entropy
    (labels 0 … K−1). Compiled, with adam."""
    import keras

    # Fixed names (Keras would number a second model's layers "dense_1", ...), so that the
    # same seed gives the same file bytes even when one process trains twice.
    inputs = keras.Input((dim,), name="features")
    x = keras.layers.Dropout(dropout, name="dropout")(inputs)
    units, activation = (1, "sigmoid") if n_classes == 2 else (n_classes, "softmax")
    outputs = keras.layers.Dense(units, activation=activation, name="dense")(x)
    model = keras.Model(inputs, outputs, name="head")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, name="adam"),
                  loss=loss_for(n_classes), metrics=["accuracy"])
    return model


def batches_per_chunk(batch_size: int) -> int:
    return max(1, CHUNK_ROWS // batch_size)


def trainer_for(model: Any, batch_size: int, dropout_in_pipeline: bool) -> Any:
    """The model that `fit` trains, sharing `model`'s layers, weights and optimizer: its Dense
    layer alone on the input (dropout in the pipeline) or `model`'s whole graph. Each element
    it is fed is a chunk of whole batches (the last may be partial): one optimizer step per
    `batch_size` rows, in order, which are exactly the steps `fit` would take over them."""
    import keras
    import tensorflow as tf

    class ChunkTrainer(keras.Model):
        def train_step(self, data: Any) -> Any:
            step = super().train_step  # (x, y) or (x, y, sample weights), sliced alike

            def one_batch(i: tf.Tensor) -> tuple[tf.Tensor]:
                step(tuple(d[i:i + batch_size] for d in data))
                return (i + batch_size,)

            tf.while_loop(lambda i: i < tf.shape(data[0])[0], one_batch, (tf.constant(0),))
            return self.get_metrics_result()  # running means over every batch so far

    if dropout_in_pipeline:
        inputs = keras.Input(model.input_shape[1:], name="features")
        trainer = ChunkTrainer(inputs, model.get_layer("dense")(inputs), name="head_train")
    else:
        trainer = ChunkTrainer(model.inputs, model.outputs, name="head_train")
    trainer.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"],
                    steps_per_execution=STEPS_PER_EXECUTION)
    trainer.optimizer.build(trainer.trainable_variables)  # not creatable inside the loop
    return trainer


def checkpoint(model: Any, path: str) -> Any:
    """ModelCheckpoint(save_best_only on val_loss) that saves `model`, whichever model `fit`
    trains (the trainer shares `model`'s weights and optimizer). Its `saved` is what it saved
    last, in memory: `model`'s weights and its optimizer's variables (`restore` puts them back,
    so that a calibrated model is saved as the checkpoint was, optimizer state included)."""
    import keras

    class SaveModel(keras.callbacks.ModelCheckpoint):
        saved: tuple[list[np.ndarray], list[np.ndarray]] | None = None

        def set_model(self, _trainer: Any) -> None:
            super().set_model(model)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            best = self.best
            super().on_epoch_end(epoch, logs)
            if self.best != best:  # a new best: it saved this epoch
                self.saved = (model.get_weights(),
                              [np.array(v) for v in model.optimizer.variables])

    return SaveModel(path, monitor="val_loss", mode="min", save_best_only=True, verbose=0)


def restore(model: Any, saved: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    """`model`'s weights and optimizer state as `checkpoint` saved them."""
    weights, optimizer = saved
    model.set_weights(weights)
    for variable, value in zip(model.optimizer.variables, optimizer, strict=True):
        variable.assign(value)


def epoch_lines(epochs: int, n_batches: int, label: str = "") -> Any:
    """One line per epoch, in batches of `batch_size` (Keras' own progress line counts its
    steps, which here are chunks of batches: "1/1" for an epoch of 30 batches); `label`
    starts it (the fold)."""
    import keras

    class EpochLine(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            shown = " - ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items()
                               if k in HISTORY_KEYS)
            print(f"{label}epoch {epoch + 1}/{epochs}: {shown} ({n_batches} batches, "
                  f"{time.perf_counter() - self.start:.1f} s)", flush=True)

    return EpochLine()


def check_history(history: dict[str, list[float]], learning_rate: float) -> None:
    """Stop where a loss is NaN or infinite: ModelCheckpoint never keeps such an epoch, so the
    checkpoint and the best epoch would no longer agree."""
    bad = [i + 1 for i, values in enumerate(zip(history["loss"], history["val_loss"],
                                                strict=True))
           if not all(math.isfinite(v) for v in values)]
    if bad:
        raise h5io.NonFinite(
            f"training diverged: the loss is NaN or infinite in epoch(s) "
            f"{', '.join(map(str, bad))}; no model was kept. Lower learning_rate (it is "
            f"{learning_rate}) or check the features (`dvc repro concat`)")


def train_dataset(x: Any, y: Any, idx: np.ndarray, batch_size: int, seed: int,
                  dropout: float = 0.0, weights: Any = None) -> Any:
    """What `fit(x[idx], y[idx], batch_size, shuffle=True)` feeds, built once and without copying
    x, in chunks of `batches_per_chunk` batches: every epoch (every new iterator) a fresh seeded
    permutation of `idx`; with `dropout`, each feature zeroed with that probability and the rest
    scaled by 1 / (1 - dropout), fresh masks every epoch, as the Dropout layer does in training
    (TensorFlow's own dropout op); with `weights` (one per row), each row's sample weight, as
    `fit(class_weight=…)` gives it. `x`, `y`, `weights`: tensors."""
    import tensorflow as tf

    rows = batch_size * batches_per_chunk(batch_size)
    order = (tf.data.Dataset.from_tensor_slices(idx)
             .shuffle(len(idx), seed=seed, reshuffle_each_iteration=True)
             .batch(rows))
    mask_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def gather(chunk: tf.Tensor, mask_seed: tf.Tensor) -> tuple[tf.Tensor, ...]:
        xb = tf.gather(x, chunk)
        if dropout:
            xb = tf.nn.experimental.stateless_dropout(xb, dropout, seed=mask_seed)
        if weights is None:
            return xb, tf.gather(y, chunk)
        return xb, tf.gather(y, chunk), tf.gather(weights, chunk)

    ds = (tf.data.Dataset.zip(order, mask_seeds).map(gather)
          # Known length: Keras then ends each epoch cleanly instead of "ran out of data".
          .apply(tf.data.experimental.assert_cardinality(math.ceil(len(idx) / rows))))
    return ds.prefetch(2)


def val_dataset(x: Any, y: Any, idx: np.ndarray) -> Any:
    """Rows `idx` in order, in batches of VAL_BATCH_SIZE (x, y: tensors; no copy of x)."""
    import tensorflow as tf

    return (tf.data.Dataset.from_tensor_slices(idx).batch(VAL_BATCH_SIZE)
            .map(lambda rows: (tf.gather(x, rows), tf.gather(y, rows)))
            .prefetch(tf.data.AUTOTUNE))


def best_epoch(history: dict[str, list[float]]) -> int:
    """0-based epoch that ModelCheckpoint(save_best_only) keeps: the first lowest val_loss."""
    return int(np.argmin(history["val_loss"]))


HISTORY_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy")


def write_history(history: dict[str, list[float]], path: str,
                  histories: list[dict[str, list[float]]] | None = None) -> None:
    """Per-epoch loss and accuracy, train and validation, epochs counted from 1 (as
    `best_epoch` in metrics.json and the PNG count them): what `dvc plots show` draws. With
    several `histories` (folds), `history` is their mean and each fold's columns follow
    (`fold1_val_loss`, …)."""
    folds = histories if histories and len(histories) > 1 else []
    columns = [(k, history[k]) for k in HISTORY_KEYS] + [
        (f"fold{i + 1}_{k}", h[k]) for i, h in enumerate(folds) for k in HISTORY_KEYS]
    with h5io.atomic_path(path) as tmp, tmp.open("w") as f:
        f.write(",".join(("epoch", *(name for name, _ in columns))) + "\n")
        for i in range(len(history["loss"])):
            f.write(",".join([str(i + 1), *(repr(float(v[i])) for _, v in columns)]) + "\n")


def plot_history(histories: list[dict[str, list[float]]], path: str) -> None:
    """The original's two figures in one PNG (accuracy, loss; train vs validation), for people
    who will not open `dvc plots show`'s HTML. With folds, every fold's curves, each in its
    colour (validation solid, training dashed), its checkpoint a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(histories[0]["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("accuracy", "loss"), strict=True):
        if len(histories) == 1:
            history = histories[0]
            ax.plot(epochs, history[key], label="train")
            ax.plot(epochs, history[f"val_{key}"], label="validation")
            ax.axvline(best_epoch(history) + 1, color="grey", ls=":", label="checkpoint")
        else:
            for i, history in enumerate(histories):
                colour = f"C{i % 10}"
                best = best_epoch(history)
                ax.plot(epochs, history[key], color=colour, ls="--", lw=0.8, alpha=0.6)
                ax.plot(epochs, history[f"val_{key}"], color=colour, lw=1.2,
                        label=f"fold {i + 1}")
                ax.plot(best + 1, history[f"val_{key}"][best], "o", color=colour, ms=4)
            ax.plot([], [], color="grey", ls="--", lw=0.8, label="train (dashed)")
            ax.plot([], [], "o", color="grey", ms=4, label="checkpoint")
        title = key if len(histories) == 1 else f"{key}: {len(histories)} folds, each on its own"
        ax.set(title=title, xlabel="epoch", ylabel=key)
        ax.legend(fontsize=7 if len(histories) > 4 else None)
    fig.tight_layout()
    with h5io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, metadata={"Software": None})
    plt.close(fig)


@dataclass
class Fit:
    """What `train_split` and `train_folds` leave for `train` (the model saved at its path):
    the validation rows (with `folds`, every row, and `fold` each one's fold, from 0), their
    logits and class probabilities (the saved model's, or with `folds` out of fold), the
    per-epoch history (with `folds`, the mean over the folds; `histories` holds each fold's)."""

    val_idx: np.ndarray
    val_logits: np.ndarray  # the saved model's on val_idx, or out of fold
    val_probs: np.ndarray
    temperature: float
    history: dict[str, list[float]]
    histories: list[dict[str, list[float]]]
    summary: dict[str, Any]  # best_epoch … n_groups_val, in metrics.json
    fold: np.ndarray | None = None
    saved_probs: np.ndarray | None = None  # with folds: the saved head's, of every row
    heads: list[tuple[np.ndarray, np.ndarray]] | None = None  # with folds: kernel, bias each


@dataclass
class Trained(Fit):
    """What `train` returns: the fit and its metrics (metrics.json)."""

    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Data:
    """The training set as `fit_head` reads it: the features and labels as arrays and, shared
    by every fold's datasets, as tensors (no per-split copies of the features)."""

    x: np.ndarray
    y: np.ndarray
    xt: Any
    yt: Any
    n_classes: int

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, n_classes: int) -> Data:
        import tensorflow as tf

        return cls(x, y, tf.convert_to_tensor(x),
                   tf.convert_to_tensor(y.astype(np.float32 if n_classes == 2 else np.int32)),
                   n_classes)


def fit_head(data: Data, train_idx: np.ndarray, val_idx: np.ndarray, params: dict[str, Any],
             path: str, dropout_in_pipeline: bool = True, label: str = "") -> tuple[Any, Any,
                                                                                   dict]:
    """One head trained on `train_idx`, its best val_loss epoch on `val_idx` checkpointed to
    `path`: (the model, as after the last epoch; the checkpoint callback, whose `saved` is the
    best epoch's state; the history). `label` ("fold 2/5: ") starts each epoch line."""
    import keras
    import tensorflow as tf

    model = build_head(data.x.shape[1], params["dropout"], params["learning_rate"],
                       data.n_classes)
    trainer = trainer_for(model, params["batch_size"], dropout_in_pipeline)
    mode = params.get("class_weight", "none")
    weights = None if mode == "none" else tf.convert_to_tensor(
        class_weights(data.y[train_idx], data.n_classes, mode)[data.y.astype(np.int64)]
        .astype(np.float32))
    train_ds = train_dataset(data.xt, data.yt, train_idx, params["batch_size"], params["seed"],
                             params["dropout"] if dropout_in_pipeline else 0.0, weights)
    n_batches = math.ceil(len(train_idx) / params["batch_size"])
    saver = checkpoint(model, path)
    callbacks = [saver, keras.callbacks.TerminateOnNaN(),
                 epoch_lines(params["epochs"], n_batches, label)]
    hist = trainer.fit(
        train_ds, validation_data=val_dataset(data.xt, data.yt, val_idx),
        epochs=params["epochs"], callbacks=callbacks, verbose=0,
        shuffle=False,  # the dataset shuffles itself, every epoch
    ).history
    check_history(hist, params["learning_rate"])
    return model, saver, hist


def train(x: np.ndarray, y: np.ndarray, params: dict[str, Any], model_path: str,
          n_classes: int = 2, groups: np.ndarray | None = None,
          dropout_in_pipeline: bool = True, model_attrs: dict[str, Any] | None = None,
          classes: list[str] | None = None) -> Trained:
    """Train the head, save it to `model_path` (with `model_attrs` as HDF5 attributes); return
    the metrics, the per-epoch history and the validation probabilities. `folds` 0: one split
    by `val_split`, the best val_loss epoch checkpointed (`train_split`); K: K heads, one per
    fold, saved as their mean (`train_folds`). `groups`: each row's group, for a grouped split
    (None: row by row). `dropout_in_pipeline`: dropout drawn in the input pipeline (False: the
    plain Keras layer, for the benchmark's comparison)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(params["seed"])
    tf.config.experimental.enable_op_determinism()
    grouped = groups is not None
    groups = groups if grouped else np.arange(len(y)).astype(str)
    data = Data.of(x, y, n_classes)
    with h5io.atomic_path(model_path) as tmp:
        if params.get("folds", 0):
            fit = train_folds(data, params, groups, grouped, tmp, dropout_in_pipeline)
        else:
            fit = train_split(data, params, groups, grouped, classes, tmp, dropout_in_pipeline)
        val_y = y[fit.val_idx]
        p1 = fit.val_probs[:, 1] if n_classes == 2 else None
        threshold = (decision.resolve_threshold(params.get("threshold", 0.5), val_y, p1)
                     if n_classes == 2 else 0.5)
        # predict (and anyone who loads the model) decides with these; the temperature is in
        # the weights already, recorded for the reader.
        attrs = {**(model_attrs or {}), "threshold": threshold,
                 "temperature": fit.temperature}
        with h5py.File(tmp, "a") as f:
            for key, value in attrs.items():
                f.attrs[key] = value
    val_probs = fit.val_probs
    low, high = decision.decision_range(p1, threshold) if n_classes == 2 else (None, None)
    # Few keys: every one is a column in `dvc exp show`. The training loss and accuracy are
    # in reports/history.csv; a key `epochs` would clash with the param of that name there.
    metrics = {
        # the saved (calibrated) model's, as every other figure here (with folds: the
        # out-of-fold predictions'); from logits and unweighted, as Keras' validation loss
        # (class_weight weighs the training loss only)
        "val_loss": decision.logit_log_loss(fit.val_logits, val_y),
        # the decisions at the threshold (Keras' history: at 0.5)
        "val_accuracy": evaluation.accuracy(val_y, val_probs, threshold=threshold),
        **evaluation.scores(val_y, val_probs, "val_", threshold=threshold),
        "threshold": threshold,
        # every threshold in (threshold_low, threshold_high] decides validation alike
        "threshold_low": low,
        "threshold_high": high,
        "temperature": fit.temperature,
        "val_ece": decision.ece(val_y, val_probs),
        **intervals.intervals(val_y, val_probs, threshold, "val_",
                              groups[fit.val_idx] if grouped else None),
        **fit.summary,
    }
    if fit.fold is not None:
        metrics |= fold_spread(val_y, val_probs, fit.val_logits, fit.fold, threshold)
    return Trained(**{f.name: getattr(fit, f.name) for f in fields(fit)}, metrics=metrics)


def train_split(data: Data, params: dict[str, Any], groups: np.ndarray, grouped: bool,
                classes: list[str] | None, tmp: Path, dropout_in_pipeline: bool) -> Fit:
    """`folds: 0`: one head on the seed's split by `val_split`, its best val_loss epoch
    checkpointed to `tmp` (calibrated on the validation rows with `calibrate`)."""
    import keras

    x, y = data.x, data.y
    train_idx, val_idx = split.split(y, groups, params["val_split"], params["seed"], grouped,
                                     classes or ())
    model, saver, hist = fit_head(data, train_idx, val_idx, params, str(tmp),
                                  dropout_in_pipeline)
    temperature = 1.0
    if params.get("calibrate", "none") == "temperature":
        restore(model, saver.saved)  # the checkpointed epoch, not the last one
        temperature = calibrate(model, x[val_idx], y[val_idx])
        if temperature != 1.0:
            model.save(tmp)  # as the checkpoint was saved: Keras' HDF5, optimizer state in
    best_model = keras.models.load_model(tmp, compile=False, safe_mode=True)  # as predict
    val_probs = evaluation.probabilities(
        best_model.predict(x[val_idx], batch_size=VAL_BATCH_SIZE, verbose=0))
    best = best_epoch(hist)
    return Fit(val_idx, logits_of(best_model, x[val_idx]), val_probs, temperature, hist, [hist],
               {"best_epoch": best + 1,
                # Keras' val_loss of that epoch: before calibration (without, val_loss)
                "best_epoch_val_loss": float(hist["val_loss"][best]),
                "n_train": len(train_idx),
                "n_val": len(val_idx),
                "n_groups_train": len(np.unique(groups[train_idx])),
                "n_groups_val": len(np.unique(groups[val_idx]))})


def train_folds(data: Data, params: dict[str, Any], groups: np.ndarray, grouped: bool,
                tmp: Path, dropout_in_pipeline: bool) -> Fit:
    """`folds: K`: K heads, each trained on the other folds and checkpointed on its own; every
    row's out-of-fold logits; one temperature fitted on them (`calibrate`); saved to `tmp`:
    one head whose Dense kernel and bias are the fold heads' means, divided by the
    temperature. Averaging linear heads' logits is one linear head (the mean of x·W_k + b_k is
    x·mean(W) + mean(b)), so the saved model keeps the original's shape and every tool that
    reads it works unchanged."""
    x, y, k = data.x, data.y, params["folds"]
    fold = split.folds(y, groups, k, params["seed"], grouped)
    oof = np.zeros((len(y),) if data.n_classes == 2 else (len(y), data.n_classes))
    kernels, biases, histories, best = [], [], [], []
    for i in range(k):
        train_idx, val_idx = np.flatnonzero(fold != i), np.flatnonzero(fold == i)
        path = tmp.with_name(f"{tmp.stem}.fold{i + 1}{tmp.suffix}")
        try:
            model, saver, hist = fit_head(data, train_idx, val_idx, params, str(path),
                                          dropout_in_pipeline, f"fold {i + 1}/{k}: ")
        finally:
            path.unlink(missing_ok=True)
        restore(model, saver.saved)  # the fold's best epoch on its own held-out rows
        kernel, bias = model.get_layer("dense").get_weights()
        kernels.append(kernel.astype(np.float64))
        biases.append(bias.astype(np.float64))
        oof[val_idx] = logits_of(model, x[val_idx])
        histories.append(hist)
        best.append(best_epoch(hist))
    temperature = 1.0
    if params.get("calibrate", "none") == "temperature":
        temperature = temperature_for(oof, y, "the out-of-fold predictions")
    head = build_head(x.shape[1], params["dropout"], params["learning_rate"], data.n_classes)
    dense = head.get_layer("dense")
    dtype = dense.get_weights()[0].dtype
    dense.set_weights([(np.mean(kernels, axis=0) / temperature).astype(dtype),
                       (np.mean(biases, axis=0) / temperature).astype(dtype)])
    head.save(tmp)
    saved_probs = evaluation.probabilities(head.predict(x, batch_size=VAL_BATCH_SIZE,
                                                        verbose=0))
    logits = oof / temperature
    val_probs = decision.probabilities_of_logits(logits)
    all_rows = np.arange(len(y))
    n_groups = len(np.unique(groups))
    return Fit(all_rows, logits, val_probs, temperature, mean_history(histories), histories,
               {"best_epoch": int(np.median(best)) + 1,  # the folds' median
                "best_epoch_val_loss": float(np.mean(
                    [h["val_loss"][b] for h, b in zip(histories, best, strict=True)])),
                # every row trains K − 1 heads and validates one
                "n_train": len(y), "n_val": len(y),
                "n_groups_train": n_groups, "n_groups_val": n_groups}, fold, saved_probs,
               list(zip(kernels, biases, strict=True)))


def mean_history(histories: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Per key and epoch, the mean over the folds' histories."""
    return {key: np.mean([h[key] for h in histories], axis=0).tolist() for key in histories[0]}


# The scores whose spread over the folds metrics.json holds (`val_<name>_fold_sd`).
FOLD_SCORES = ("loss", "accuracy", "auc", "balanced_accuracy", "sensitivity", "specificity")


def fold_spread(labels: np.ndarray, probs: np.ndarray, logits: np.ndarray, fold: np.ndarray,
                threshold: float) -> dict[str, float | None]:
    """`val_<score>_fold_sd`: the standard deviation (n − 1) over the folds of each score of a
    fold's own out-of-fold rows, decided at `threshold`; None where fewer than two folds
    define it (a fold without one of the classes has no AUC)."""
    per_fold: dict[str, list[float]] = {name: [] for name in FOLD_SCORES}
    for i in np.unique(fold):
        rows = fold == i
        got: dict[str, float | None] = {
            "loss": decision.logit_log_loss(logits[rows], labels[rows]),
            "accuracy": evaluation.accuracy(labels[rows], probs[rows], threshold=threshold),
            **{k.removeprefix("val_"): v for k, v in evaluation.scores(
                labels[rows], probs[rows], "val_", threshold=threshold).items()}}
        for name in FOLD_SCORES:
            value = got.get(name)
            if value is not None and not math.isnan(value):
                per_fold[name].append(value)
    return {f"val_{name}_fold_sd": float(np.std(values, ddof=1)) if len(values) >= 2 else None
            for name, values in per_fold.items()
            if name in ("loss", "accuracy", "auc", "balanced_accuracy") or probs.shape[1] == 2}


def logits_of(model: Any, x: np.ndarray) -> np.ndarray:
    """The head's pre-activations, float64: its Dense layer on `x` (Dropout passes `x` through
    outside training). (N,) for a sigmoid head, (N, K) for a softmax one."""
    kernel, bias = model.get_layer("dense").get_weights()
    logits = x.astype(np.float64) @ kernel.astype(np.float64) + bias
    return logits[:, 0] if logits.shape[1] == 1 else logits


def calibrate(model: Any, x_val: np.ndarray, y_val: np.ndarray) -> float:
    """Fit one temperature on the validation logits (minimum log loss) and divide `model`'s
    Dense kernel and bias by it (`set_weights`): the model itself then gives calibrated
    probabilities, to predict, the classify tool and any Keras user alike, with no custom
    layer, once the caller saves it. Returns the temperature (1.0, the model untouched, where
    none fits; the stage says why)."""
    layer = model.get_layer("dense")
    kernel, bias = layer.get_weights()
    t = temperature_for(logits_of(model, x_val), y_val, "the validation split")
    if t != 1.0:
        layer.set_weights([(kernel / t).astype(kernel.dtype), (bias / t).astype(bias.dtype)])
    return t


def temperature_for(logits: np.ndarray, labels: np.ndarray, where: str) -> float:
    """`decision.fit_temperature` on `where`'s logits; 1.0 where none fits, the stage saying
    why."""
    t = decision.fit_temperature(logits, labels)
    if t is None:
        cli.say("train_head", f"calibrate: no temperature fits {where}, so it is left at 1: "
                + decision.why_no_temperature(logits, labels))
        return 1.0
    return t


def saved_columns(probs: np.ndarray | None, classes: list[str]) -> dict[str, list[str]]:
    """With folds, reports/val/predictions.csv also holds the saved head's probabilities of
    every row (`model_label`; K classes: `model_<class>`), beside the out-of-fold ones: the
    classify tool's `--mistakes` checks the model it is given against these."""
    if probs is None:
        return {}
    columns = probs[:, 1:] if len(classes) == 2 else probs
    names = ["model_label"] if len(classes) == 2 else [f"model_{c}" for c in classes]
    return {name: [repr(float(p)) for p in columns[:, i]] for i, name in enumerate(names)}


# Fewer images of a class than this where the threshold is chosen, and the threshold rides on
# a handful of them (issue 32: across ten seeds of 61 validation X-rays, Youden's threshold
# ranged 0.34 to 0.89).
FEW_IMAGES = 20


def few_images_note(labels: np.ndarray, probs: np.ndarray, classes: list[str], folds: int
                    ) -> str:
    """One line where the validation (or out-of-fold) predictions choose a threshold from
    little: a class with fewer than FEW_IMAGES images there, or two classes perfectly
    separated (any threshold between them decides alike: the choice rests on the two
    closest images). '' otherwise."""
    counts = np.bincount(np.asarray(labels).astype(np.int64), minlength=len(classes))
    few = [f"{classes[c]} {n}" for c, n in enumerate(counts.tolist()) if n < FEW_IMAGES]
    separated = False
    if len(classes) == 2 and counts.min() > 0:
        p1 = probs[:, 1]
        separated = bool(p1[labels == 0].max() < p1[labels == 1].min())
    if not (few or separated):
        return ""
    where = "out of fold" if folds else "on the validation split"
    said = []
    if few:
        said.append(f"few images of {', '.join(few)} {where} (fewer than {FEW_IMAGES})")
    if separated:
        each = ", ".join(f"{c} {n}" for c, n in zip(classes, counts.tolist(), strict=True))
        said.append(f"the two classes perfectly separated {where} ({each})")
    fix = ("`dvc exp run -S folds=5` validates every training image once (docs/medical.md)"
           if not folds else "more images (or patients) are the only remedy")
    return (f"the threshold and validation figures rest on little: {' and '.join(said)}; "
            f"{fix}")


def uncalibrated(logits: np.ndarray, temperature: float) -> np.ndarray | None:
    """The validation probabilities before `temperature` (`Fit.val_logits` are after it), for
    the reliability diagram's "before" curve; None without one (1: nothing to compare)."""
    if temperature == 1.0:
        return None
    return decision.probabilities_of_logits(np.asarray(logits, np.float64) * temperature)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--features", default="data/features/train/fused.h5")
    ap.add_argument("--model", default="models/model_2.h5")
    ap.add_argument("--metrics", default="metrics.json")
    ap.add_argument("--history", default="reports/history.csv")
    ap.add_argument("--figure", default="reports/history.png")
    ap.add_argument("--eval-dir", default="reports/val",
                    help="validation plots and predictions.csv")
    ap.add_argument("--mistakes", default="reports/val_mistakes.png")
    args = ap.parse_args(argv)

    def work() -> None:
        params = load_params(keys=PARAMS)
        h5io.require(args.features, ("features", "labels", "names", "previews"),
                     "Run `dvc repro concat` first.")
        with h5py.File(args.features, "r") as f:
            x, y = f["features"][:], f["labels"][:]  # N × 4096 float32: 400 MB at full scale
            names, classes = f["names"].asstr()[:], h5io.classes_of(f)
            networks = [str(n) for n in f.attrs.get("networks", [])]
            made_with = {key: [str(v) for v in f.attrs.get(key, [])] for key in MADE_WITH}
            width = int(f.attrs.get("width", 0))
        if len(classes) > 2 and params["threshold"] != 0.5:
            raise cli.ParamsError(
                f"params.yaml: 'threshold' is {params['threshold']!r}, but with {len(classes)} "
                "classes every image takes its most probable class: a threshold is for two "
                "classes only. Set threshold: 0.5")
        grouped = bool(params["group_pattern"])
        groups = split.groups_of(names, params["group_pattern"])
        split.check_splittable(y, groups, classes, grouped)
        h5io.check_finite(x, names, f"{args.features}, training features")
        quiet.tensorflow()
        with quiet.filtered():  # stdout (the epoch lines) is untouched
            result = train(x, y, params, args.model, len(classes),
                           groups if grouped else None, classes=classes,
                           model_attrs={"classes": classes, "networks": networks,
                                        **made_with, "width": width})
        metrics, val_idx, val_probs = result.metrics, result.val_idx, result.val_probs
        h5io.write_json(args.metrics, metrics)
        write_history(result.history, args.history, result.histories)
        plot_history(result.histories, args.figure)
        val_labels = y[val_idx]
        threshold = metrics["threshold"]
        decided = decision.predicted(val_probs, threshold)
        extra = {"predicted_class": [classes[int(c)] for c in decided],
                 **({"group": list(groups[val_idx])} if grouped else {})}
        if result.fold is not None:
            extra |= {"fold": [str(i + 1) for i in result.fold],
                      **saved_columns(result.saved_probs, classes)}
        # whole: DVC keeps (`persist`) the folder of the last run, whose files must all go
        with outputs.atomic_dir(args.eval_dir) as eval_dir:
            evaluation.write_plots(eval_dir, classes, val_labels, val_probs,
                                   threshold=threshold, split="val",
                                   before=uncalibrated(result.val_logits, result.temperature),
                                   temperature=result.temperature)
            evaluation.write_predictions(
                eval_dir / "predictions.csv", list(names[val_idx]), val_probs, classes,
                [classes[int(c)] for c in val_labels], extra, exact=True)
        wrong = evaluation.worst_mistakes(val_labels, val_probs, threshold=threshold)
        with h5py.File(args.features, "r") as f:
            pictures = previews.read(f, val_idx[wrong])
        where = ("out of fold" if result.fold is not None else "on the validation split")
        evaluation.mistakes_figure(args.mistakes, pictures, names[val_idx[wrong]], classes,
                                   val_labels[wrong], val_probs[wrong], threshold=threshold,
                                   where=where)
        note = few_images_note(val_labels, val_probs, classes, params["folds"])
        if note:
            cli.say("train_head", note)
        k = params["folds"]
        print(f"train_head: {len(classes)} classes, "
              + (f"{k} folds (val_split unused), best epochs' median {metrics['best_epoch']}/"
                 if k else f"best epoch {metrics['best_epoch']}/")
              + f"{len(result.history['loss'])}: val_loss {metrics['val_loss']:.4f}, "
              f"val_accuracy {metrics['val_accuracy']:.4f}, val_auc "
              f"{evaluation.fmt(metrics['val_auc'])} "
              + (f"({metrics['n_val']} images out of fold"
                 if k else f"({metrics['n_train']} train, {metrics['n_val']} val")
              + (f"; {metrics['n_groups_train']} + {metrics['n_groups_val']} groups"
                 if grouped and not k else f"; {metrics['n_groups_val']} groups"
                 if grouped else "") + f") → {Path(args.model)}"
              + (f"; threshold {threshold:.4g}: val sensitivity "
                 f"{evaluation.fmt(metrics['val_sensitivity'])}, specificity "
                 f"{evaluation.fmt(metrics['val_specificity'])}" if len(classes) == 2 else "")
              + (f"; temperature {metrics['temperature']:.3f}"
                 if params["calibrate"] != "none" else ""))

    cli.run("train_head", work)


if __name__ == "__main__":
    main()
