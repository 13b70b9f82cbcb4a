"""Extraction through Keras alone, on any backend (TensorFlow, JAX, PyTorch).

The network is wrapped in a Keras model that takes the uint8 batch, casts it, applies the
network's own `preprocess_input` and returns float32 features, so the float32 copy of the
pixels exists only per batch, on the device. Batches go through Keras' own compiled predict
step (`predict_on_batch`: jitted on JAX, eager on PyTorch, as Keras' `jit_compile="auto"`
decides), every batch padded to the same shape, so a compiling backend compiles once per run. A
reader thread keeps the next batches read from HDF5 while the device works.

TensorFlow keeps its own path in `stages.extract` (a tf.function over a tf.data pipeline,
MirroredStrategy over several GPUs, oneDNN's bfloat16 rewrite on CPUs), which it had before
the other backends came; `stages.feature_files` writes the features for both.

Nothing here imports TensorFlow, DVC or the YAML reader, so the GPU benchmark
(`benchmarks/gpu_extract.py`) runs it where only Keras, JAX or PyTorch, h5py and numpy exist.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from stages import h5io
from stages.backbones import Backbone, build, preprocessing


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Layers built inside take `precision`'s dtype policy; the global policy is restored after
    (it matters only when layers are built, and tests build several models in one process)."""
    import keras

    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(old)


def extractor(backbone: Backbone, width: int, weights: str, policy: str, seed: int,
              preprocess: str = "network") -> Any:
    """uint8 (N, width, width, 3) → float32 (N, dim): cast, preprocessing, network, cast."""
    import keras

    with dtype_policy(policy):
        net = build(backbone, width, weights, seed)
    pixels = keras.Input((width, width, 3), dtype="uint8")
    x = preprocessing(backbone, preprocess)(keras.ops.cast(pixels, "float32"))
    return keras.Model(pixels, keras.ops.cast(net(x), "float32"), name=f"{backbone.name}_u8")


def prefetched(batches: Iterator[np.ndarray], depth: int = 2) -> Iterator[np.ndarray]:
    """`batches`, read ahead by a thread (h5py releases the GIL while it reads)."""
    q: queue.Queue[Any] = queue.Queue(depth)
    end = object()

    def read() -> None:
        try:
            for b in batches:
                q.put(b)
        except BaseException as e:  # handed to the consumer, raised there
            q.put(e)
        q.put(end)

    threading.Thread(target=read, daemon=True).start()
    while (item := q.get()) is not end:
        if isinstance(item, BaseException):
            raise item
        yield item


def padded(batch: np.ndarray, batch_size: int) -> np.ndarray:
    """A short last batch filled up with zero rows: one shape for the whole run, so a compiling
    backend (JAX, TensorFlow's XLA) compiles once. The caller drops the padding rows' output."""
    if len(batch) == batch_size:
        return batch
    pad = np.zeros((batch_size - len(batch), *batch.shape[1:]), batch.dtype)
    return np.concatenate([batch, pad])


def feature_batches(model: Any, images: h5py.Dataset, batch_size: int) -> Iterator[np.ndarray]:
    """float32 features of `images` (uint8, N×W×W×3), in row order, one batch at a time."""
    for batch in prefetched(h5io.iter_batches(images, batch_size)):
        yield np.asarray(model.predict_on_batch(padded(batch, batch_size)))[:len(batch)]
