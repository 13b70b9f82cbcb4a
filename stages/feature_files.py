"""Feature files: one split's features from one network (`data/features/<split>/<net>.h5`) or
fused (`fused.h5`), as float32 `features` (rows × D) with the rows' `names`, `labels`, `ids` and
`classes` copied from the split's resized file, so that every file describes its own rows.

Written by the extractors on every Keras backend (TensorFlow's own path and Keras' compiled
predict step alike) and read by `concat`, `train_head` and `predict`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from stages import h5io

FEATURE_CHUNK = 256  # rows per HDF5 chunk of the feature matrices
# What made a network's features, recorded in its feature file, carried by `concat` as one list
# per key (the fused networks' in column order) and kept by the model (`train_head`): `predict`
# compares the weights and scaling of both splits, the classify tool rebuilds the networks and
# checks their weight files (stages/classifier.py). `weights`: `weights_of`; `preprocess`: the
# input scaling (params.PREPROCESS); `precision`: the param; `weights_md5`: the md5 of the weight
# file in keras_weights/ ("" for ImageNet's download or random weights); `engine`: the param
# (what ran the network: its features differ from another engine's at rounding level);
# `int8_sample`: with precision int8, the md5 of the training images that calibrated it
# (stages/int8_sample.py), else "".
MADE_WITH = ("weights", "preprocess", "precision", "weights_md5", "engine", "int8_sample")


def stream_to_h5(batches_of: Callable[[h5py.Dataset], Iterator[np.ndarray]], backbone: str,
                 dim: int, images_h5: str, out: str, progress: bool = True,
                 made_with: dict[str, str] | None = None) -> None:
    """The features of `images_h5`'s images, from `batches_of(images)` (float32 batches of
    `dim` columns, in row order), into `out` with the rows' info; a progress bar (`progress`).
    `made_with`: what made them (MADE_WITH), recorded; with Keras' engine, also the Keras
    backend that computed them (`keras_backend`)."""
    from tqdm import tqdm

    made = {"weights": "", "preprocess": "network", "precision": "float32", "weights_md5": "",
            "engine": "tensorflow", "int8_sample": "", **(made_with or {})}

    name = f"{backbone} {Path(images_h5).stem}"  # "xception train"
    with h5py.File(images_h5, "r") as src, h5io.create_h5(out) as f:
        info = h5io.read_row_info(src)
        rows = h5io.Appender(f, "features", (dim,), np.float32, FEATURE_CHUNK)
        with tqdm(total=len(src["images"]), desc=name, unit="img", mininterval=2.0,
                  file=sys.stderr, disable=not progress) as bar:
            for batch in batches_of(src["images"]):
                h5io.check_finite(batch, info["names"], f"{name} features (with precision: "
                                  "float32 they stay finite)", len(rows))
                rows.append(batch)
                bar.update(len(batch))
        h5io.write_row_info(f, info, h5io.classes_if_any(src))
        f.attrs["backbone"] = backbone
        if made["engine"] == "tensorflow":  # Keras' (KERAS_BACKEND may pick JAX or PyTorch)
            import keras

            f.attrs["keras_backend"] = keras.backend.backend()  # which one computed them
        for key, value in made.items():
            f.attrs[key] = value


def weights_of(weights: str, seed: int) -> str:
    """One network's `weights` entry as the features depend on it: random weights depend on
    `seed`, which is no param of the extractors (with real weights it changes nothing), so the
    two splits, extracted apart, could come from two different random networks. A file is its
    path, so that the network can be rebuilt from the record (backbones.build)."""
    return f"none, seed {seed}" if weights == "none" else weights


def weights_from(recorded: str) -> tuple[str, int]:
    """The inverse of `weights_of`: (the `weights` value, the seed of a random network), to
    rebuild the network that made the features (the classify tool)."""
    if recorded.startswith("none, seed "):
        return "none", int(recorded.removeprefix("none, seed "))
    return recorded, 0


@dataclass
class Rows:
    """What a feature file says of its rows."""

    names: np.ndarray                 # str: paths relative to the split's data folder
    labels: np.ndarray | None = None  # class indices (a test set's: of its own folders)
    ids: np.ndarray | None = None     # Kaggle's numbered test images
    classes: list[str] | None = None  # index = label

    @classmethod
    def read(cls, f: h5py.File) -> Rows:
        info = h5io.read_row_info(f)
        return cls(info["names"], info.get("labels"), info.get("ids"), h5io.classes_if_any(f))

