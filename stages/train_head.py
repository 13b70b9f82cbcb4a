"""Stage `train_head`: Dropout + Dense(1, sigmoid) on the fused features, best val_loss kept.

The split is stratified by class and seeded (the original took the last 20% of a cats-then-dogs
array, so its "validation" set was all dogs). Keras does the training loop, the checkpointing and,
through dvclive, the per-epoch log that `dvc plots show` draws.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stages import h5io
from stages.params import load_params


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


def build_head(dim: int, dropout: float, learning_rate: float) -> Any:
    import keras

    inputs = keras.Input((dim,), name="features")
    x = keras.layers.Dropout(dropout)(inputs)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs, name="head")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model


def best_epoch(history: dict[str, list[float]]) -> int:
    """0-based epoch that ModelCheckpoint(save_best_only) keeps: the first lowest val_loss."""
    return int(np.argmin(history["val_loss"]))


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


def train(x: np.ndarray, y: np.ndarray, params: dict[str, Any], model_path: str,
          live_dir: str | None = "dvclive") -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Train the head, checkpoint the best val_loss epoch to `model_path`; return the metrics
    of that epoch and the per-epoch history."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(params["seed"])
    tf.config.experimental.enable_op_determinism()
    train_idx, val_idx = stratified_split(y, params["val_split"], params["seed"])
    model = build_head(x.shape[1], params["dropout"], params["learning_rate"])
    callbacks: list[Any] = []
    live = None
    if live_dir is not None:
        from dvclive import Live
        from dvclive.keras import DVCLiveCallback

        live = Live(dir=live_dir, save_dvc_exp=False, dvcyaml=None)
        callbacks.append(DVCLiveCallback(live=live))
    y = y.astype(np.float32)
    with h5io.atomic_path(model_path) as tmp:
        callbacks.append(keras.callbacks.ModelCheckpoint(
            str(tmp), monitor="val_loss", mode="min", save_best_only=True, verbose=0))
        hist = model.fit(
            x[train_idx], y[train_idx], validation_data=(x[val_idx], y[val_idx]),
            batch_size=params["batch_size"], epochs=params["epochs"], shuffle=True,
            callbacks=callbacks, verbose=2,
        ).history
    best = best_epoch(hist)
    return {
        "val_loss": float(hist["val_loss"][best]),
        "val_accuracy": float(hist["val_accuracy"][best]),
        "loss": float(hist["loss"][best]),
        "accuracy": float(hist["accuracy"][best]),
        "best_epoch": best + 1,
        "epochs": len(hist["val_loss"]),
        "n_train": len(train_idx),
        "n_val": len(val_idx),
    }, hist


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--features", default="data/features/fused.h5")
    ap.add_argument("--model", default="models/model_2.h5")
    ap.add_argument("--metrics", default="metrics.json")
    ap.add_argument("--live-dir", default="dvclive")
    ap.add_argument("--figure", default="reports/history.png")
    args = ap.parse_args(argv)

    params = load_params()
    try:
        h5io.require(args.features, ("train", "labels"), "Run `dvc repro concat` first.")
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"train_head: {e}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with h5py.File(args.features, "r") as f:
        x, y = f["train"][:], f["labels"][:]  # N × 4096 float32: 400 MB at full scale
    metrics, history = train(x, y, params, args.model, args.live_dir)
    h5io.write_json(args.metrics, metrics)
    plot_history(history, args.figure)
    print(f"train_head: best epoch {metrics['best_epoch']}/{metrics['epochs']}: val_loss "
          f"{metrics['val_loss']:.4f}, val_accuracy {metrics['val_accuracy']:.4f} "
          f"({metrics['n_train']} train, {metrics['n_val']} val) → {Path(args.model)}")


if __name__ == "__main__":
    main()
