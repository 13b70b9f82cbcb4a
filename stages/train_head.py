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
from dataclasses import dataclass
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
PARAMS = ("dropout", "learning_rate", "batch_size", "epochs", "val_split", "seed",
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


def epoch_lines(epochs: int, n_batches: int) -> Any:
    """One line per epoch, in batches of `batch_size` (Keras' own progress line counts its
    steps, which here are chunks of batches: "1/1" for an epoch of 30 batches)."""
    import keras

    class EpochLine(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            shown = " - ".join(f"{k} {float(v):.4f}" for k, v in (logs or {}).items()
                               if k in HISTORY_KEYS)
            print(f"epoch {epoch + 1}/{epochs}: {shown} ({n_batches} batches, "
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


def write_history(history: dict[str, list[float]], path: str) -> None:
    """Per-epoch loss and accuracy, train and validation, epochs counted from 1 (as
    `best_epoch` in metrics.json and the PNG count them): what `dvc plots show` draws."""
    with h5io.atomic_path(path) as tmp, tmp.open("w") as f:
        f.write(",".join(("epoch", *HISTORY_KEYS)) + "\n")
        for i in range(len(history["loss"])):
            f.write(",".join([str(i + 1), *(repr(float(history[k][i])) for k in HISTORY_KEYS)])
                    + "\n")


def plot_history(history: dict[str, list[float]], path: str) -> None:
    """The original's two figures in one PNG (accuracy, loss; train vs validation), for people
    who will not open `dvc plots show`'s HTML."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("accuracy", "loss"), strict=True):
        ax.plot(epochs, history[key], label="train")
        ax.plot(epochs, history[f"val_{key}"], label="validation")
        ax.axvline(best_epoch(history) + 1, color="grey", ls=":", label="checkpoint")
        ax.set(title=key, xlabel="epoch", ylabel=key)
        ax.legend()
    fig.tight_layout()
    with h5io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, metadata={"Software": None})
    plt.close(fig)


@dataclass
class Trained:
    """What `train` returns: the checkpointed epoch's metrics, the per-epoch history, and the
    checkpointed model's class probabilities on the validation rows."""

    metrics: dict[str, Any]
    history: dict[str, list[float]]
    val_idx: np.ndarray
    val_probs: np.ndarray


def train(x: np.ndarray, y: np.ndarray, params: dict[str, Any], model_path: str,
          n_classes: int = 2, groups: np.ndarray | None = None,
          dropout_in_pipeline: bool = True, model_attrs: dict[str, Any] | None = None,
          classes: list[str] | None = None) -> Trained:
    """Train the head, checkpoint the best val_loss epoch to `model_path` (with `model_attrs`
    as HDF5 attributes); return the metrics of that epoch, the per-epoch history and that
    model's validation probabilities. `groups`: each row's group, for a grouped split (None:
    row by row). `dropout_in_pipeline`: dropout drawn in the input pipeline (False: the plain
    Keras layer, for the benchmark's comparison)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(params["seed"])
    tf.config.experimental.enable_op_determinism()
    grouped = groups is not None
    groups = groups if grouped else np.arange(len(y)).astype(str)
    train_idx, val_idx = split.split(y, groups, params["val_split"], params["seed"], grouped,
                                     classes or ())
    model = build_head(x.shape[1], params["dropout"], params["learning_rate"], n_classes)
    trainer = trainer_for(model, params["batch_size"], dropout_in_pipeline)
    # One tensor of the features, gathered from by both datasets: no per-split copies.
    xt = tf.convert_to_tensor(x)
    yt = tf.convert_to_tensor(y.astype(np.float32 if n_classes == 2 else np.int32))
    mode = params.get("class_weight", "none")
    weights = None if mode == "none" else tf.convert_to_tensor(
        class_weights(y[train_idx], n_classes, mode)[y.astype(np.int64)].astype(np.float32))
    train_ds = train_dataset(xt, yt, train_idx, params["batch_size"], params["seed"],
                             params["dropout"] if dropout_in_pipeline else 0.0, weights)
    n_batches = math.ceil(len(train_idx) / params["batch_size"])
    with h5io.atomic_path(model_path) as tmp:
        saver = checkpoint(model, str(tmp))
        callbacks = [saver, keras.callbacks.TerminateOnNaN(),
                     epoch_lines(params["epochs"], n_batches)]
        hist = trainer.fit(
            train_ds, validation_data=val_dataset(xt, yt, val_idx), epochs=params["epochs"],
            callbacks=callbacks, verbose=0,
            shuffle=False,  # the dataset shuffles itself, every epoch
        ).history
        check_history(hist, params["learning_rate"])
        temperature = 1.0
        if params.get("calibrate", "none") == "temperature":
            restore(model, saver.saved)  # the checkpointed epoch, not the last one
            temperature = calibrate(model, x[val_idx], y[val_idx])
            if temperature != 1.0:
                model.save(tmp)  # as the checkpoint was saved: Keras' HDF5, optimizer state in
        best_model = keras.models.load_model(tmp, compile=False, safe_mode=True)  # as predict
        val_probs = evaluation.probabilities(
            best_model.predict(x[val_idx], batch_size=VAL_BATCH_SIZE, verbose=0))
        val_loss = decision.logit_log_loss(logits_of(best_model, x[val_idx]), y[val_idx])
        threshold = (decision.resolve_threshold(params.get("threshold", 0.5), y[val_idx],
                                                val_probs[:, 1]) if n_classes == 2 else 0.5)
        # predict (and anyone who loads the model) decides with these; the temperature is in
        # the weights already, recorded for the reader.
        attrs = {**(model_attrs or {}), "threshold": threshold, "temperature": temperature}
        with h5py.File(tmp, "a") as f:
            for key, value in attrs.items():
                f.attrs[key] = value
    best = best_epoch(hist)
    val_y = y[val_idx]
    # Few keys: every one is a column in `dvc exp show`. The training loss and accuracy are
    # in reports/history.csv; a key `epochs` would clash with the param of that name there.
    metrics = {
        # the saved (calibrated) model's, as every other figure here; from its logits and
        # unweighted, as Keras' validation loss (class_weight weighs the training loss only)
        "val_loss": val_loss,
        # the checkpointed model's decisions at the threshold (Keras' history: at 0.5)
        "val_accuracy": evaluation.accuracy(val_y, val_probs, threshold=threshold),
        **evaluation.scores(val_y, val_probs, "val_", threshold=threshold),
        "threshold": threshold,
        "temperature": temperature,
        "val_ece": decision.ece(val_y, val_probs),
        **intervals.intervals(val_y, val_probs, threshold, "val_",
                              groups[val_idx] if grouped else None),
        "best_epoch": best + 1,
        # Keras' val_loss of that epoch: before calibration (without, val_loss to rounding)
        "best_epoch_val_loss": float(hist["val_loss"][best]),
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "n_groups_train": len(np.unique(groups[train_idx])),
        "n_groups_val": len(np.unique(groups[val_idx])),
    }
    return Trained(metrics, hist, val_idx, val_probs)


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
    logits = logits_of(model, x_val)
    t = decision.fit_temperature(logits, y_val)
    if t is None:
        cli.say("train_head", "calibrate: no temperature fits the validation split, so it is "
                "left at 1: " + decision.why_no_temperature(logits, y_val))
        return 1.0
    if t != 1.0:
        layer.set_weights([(kernel / t).astype(kernel.dtype), (bias / t).astype(bias.dtype)])
    return t


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
        write_history(result.history, args.history)
        plot_history(result.history, args.figure)
        val_labels = y[val_idx]
        threshold = metrics["threshold"]
        decided = decision.predicted(val_probs, threshold)
        # whole: DVC keeps (`persist`) the folder of the last run, whose files must all go
        with outputs.atomic_dir(args.eval_dir) as eval_dir:
            evaluation.write_plots(eval_dir, classes, val_labels, val_probs,
                                   threshold=threshold, split="val")
            evaluation.write_predictions(
                eval_dir / "predictions.csv", list(names[val_idx]), val_probs, classes,
                [classes[int(c)] for c in val_labels],
                {"predicted_class": [classes[int(c)] for c in decided],
                 **({"group": list(groups[val_idx])} if grouped else {})}, exact=True)
        wrong = evaluation.worst_mistakes(val_labels, val_probs, threshold=threshold)
        with h5py.File(args.features, "r") as f:
            pictures = previews.read(f, val_idx[wrong])
        evaluation.mistakes_figure(args.mistakes, pictures, names[val_idx[wrong]], classes,
                                   val_labels[wrong], val_probs[wrong], threshold=threshold)
        print(f"train_head: {len(classes)} classes, best epoch {metrics['best_epoch']}/"
              f"{len(result.history['loss'])}: val_loss {metrics['val_loss']:.4f}, val_accuracy "
              f"{metrics['val_accuracy']:.4f}, val_auc {evaluation.fmt(metrics['val_auc'])} "
              f"({metrics['n_train']} train, {metrics['n_val']} val"
              + (f"; {metrics['n_groups_train']} + {metrics['n_groups_val']} groups"
                 if grouped else "") + f") → {Path(args.model)}"
              + (f"; threshold {threshold:.4g}" if threshold != 0.5 else "")
              + (f"; temperature {metrics['temperature']:.3f}"
                 if params["calibrate"] != "none" else ""))

    cli.run("train_head", work)


if __name__ == "__main__":
    main()
