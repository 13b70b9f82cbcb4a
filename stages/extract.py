"""Stages `extract_inception` and `extract_xception`: resized images → 2048-d features.

One module for both: `--backbone` picks the network from the registry. Images stream from the
resized HDF5 files in batches (tf.data, prefetched so reading overlaps compute) and features stream
back to disk, so memory does not grow with the number of images.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from stages import h5io
from stages.backbones import BACKBONES, Backbone, WeightsError, build
from stages.params import load_params

FEATURE_CHUNK = 256  # rows per HDF5 chunk of the feature matrices
RESIZE_HINT = "Run `dvc repro resize` first."


def setup_precision(precision: str) -> Any:
    """Set Keras' dtype policy and pick the distribution strategy; return the strategy."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if precision == "mixed_float16" and not gpus:
        raise ValueError("params.yaml: 'precision' is 'mixed_float16', which needs a GPU; "
                         "on a CPU use 'mixed_bfloat16' (AVX-512-BF16/AMX) or 'float32'")
    keras.mixed_precision.set_global_policy(precision)
    # Several GPUs: mirror the network so every GPU works. One or none: no strategy overhead.
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def features(model: Any, preprocess: Any, images: h5py.Dataset, batch_size: int,
             strategy: Any, desc: str) -> Iterator[np.ndarray]:
    """Yield float32 feature batches for `images` (uint8, N×W×W×3), in row order."""
    import tensorflow as tf

    n, w = images.shape[0], images.shape[1]

    def batches() -> Iterator[np.ndarray]:
        yield from h5io.iter_batches(images, batch_size)

    ds = tf.data.Dataset.from_generator(
        batches, output_signature=tf.TensorSpec((None, w, w, 3), tf.uint8)
    ).prefetch(2)
    ds = strategy.experimental_distribute_dataset(ds)

    @tf.function
    def step(x: tf.Tensor) -> tf.Tensor:
        y = model(preprocess(tf.cast(x, tf.float32)), training=False)
        return tf.cast(y, tf.float32)  # mixed precision computes in 16 bits, stores float32

    with tqdm(total=n, desc=desc, unit="img", mininterval=2.0, file=sys.stderr) as bar:
        for x in ds:
            out = strategy.gather(strategy.run(step, args=(x,)), axis=0).numpy()
            bar.update(len(out))
            yield out


def extract(backbone: Backbone, train_h5: str, test_h5: str, out: str, weights: str,
            precision: str, batch_size: int, seed: int) -> None:
    """Write `out` with `train`, `test` (float32, N×D), `labels` and `ids` in resized order."""
    for p, keys in ((train_h5, ("images", "labels")), (test_h5, ("images", "ids"))):
        h5io.require(p, keys, RESIZE_HINT)
    strategy = setup_precision(precision)
    with strategy.scope():
        model = build(backbone, _width(train_h5), weights, seed)
    with h5py.File(train_h5, "r") as tr, h5py.File(test_h5, "r") as te, h5io.create_h5(out) as f:
        for split, src in (("train", tr), ("test", te)):
            rows = h5io.Appender(f, split, (backbone.dim,), np.float32, FEATURE_CHUNK)
            for batch in features(model, backbone.preprocess, src["images"], batch_size,
                                  strategy, f"{backbone.name} {split}"):
                rows.append(batch)
        h5io.write_array(f, "labels", tr["labels"][:])
        h5io.write_array(f, "ids", te["ids"][:])
        f.attrs["backbone"] = backbone.name


def _width(path: str) -> int:
    with h5py.File(path, "r") as f:
        return int(f["images"].shape[1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", required=True, choices=sorted(BACKBONES))
    ap.add_argument("--train", default="data/resized/train.h5")
    ap.add_argument("--test", default="data/resized/test.h5")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    params = load_params()
    try:
        extract(BACKBONES[args.backbone], args.train, args.test, args.out, params["weights"],
                params["precision"], params["extract_batch_size"], params["seed"])
    except (WeightsError, FileNotFoundError, ValueError) as e:
        sys.exit(f"extract {args.backbone}: {e}")
    print(f"extract {args.backbone}: features written to {Path(args.out)}")


if __name__ == "__main__":
    main()
