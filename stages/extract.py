"""Stages `extract_<network>` (`extract_inception`, `extract_xception`, …), once per split:
one split's resized images → the network's pooled features (2048-d for the card's two).

One module for every network: `--backbone` picks it from the registry. Images stream from the
resized HDF5 file in batches (tf.data, prefetched so reading overlaps compute) and features stream
back to disk, so memory does not grow with the number of images: at most a few uint8 batches and
one batch of activations are alive at a time.

Speed (benchmarks/bench_extract_head.py): the uint8 batch goes into one compiled function that
casts, preprocesses and runs the network, so the float32 copy exists only per batch. On a CPU the
batch size hardly matters (8 to 64 within 5%; memory grows with it); `precision: mixed_bfloat16`
on a CPU with AMX takes oneDNN's whole-graph bfloat16 rewrite, the fastest bfloat16 path
measured (`stages.devices` says why, and why a CPU without AMX is refused it). On a GPU,
XLA compiles the function (as Keras' own `predict` does there) and the last batch is padded to
full size, so that one shape, hence one compilation, serves all.

With `engine: openvino` the stage runs `stages.openvino_engine` instead: the same network,
converted once to OpenVINO IR and cached (int8: quantized on the training sample that
`int8_sample` records), never importing TensorFlow once the IR is cached.

Otherwise this is the TensorFlow path, Keras' default backend. With `KERAS_BACKEND=jax` (or
`torch`) the stage runs `stages.keras_extract` instead: the same network and preprocessing
through Keras' own compiled predict step, never importing TensorFlow (docs/backends.md).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stages import (
    cli,
    devices,
    feature_files,
    h5io,
    int8_sample,
    keras_extract,
    openvino_engine,
    quiet,
)
from stages.backbones import BACKBONES, Backbone, build, preprocessing, resolve_weights, weight_path
from stages.params import NetworkWeights, load_params, network_weights

RESIZE_HINT = "Run `dvc repro resize` first."
# What the stage reads of params.yaml. Only `precision` is a dvc.yaml `params:`: of `weights` the
# stage depends on its network's entry alone, which `pick_weights` writes to
# data/weights/<network>.json, a dvc.yaml dep (DVC cannot depend on a key that may be absent);
# `extract_batch_size` changes the speed, not the features (numerically: oneDNN's summation order
# differs with the batch, ~1e-6 relative), and `seed` matters only under `weights: none`
# (tests); rerunning hours of extraction for either would be waste.
PARAMS = ("weights", "precision", "engine", "extract_batch_size", "seed")


def make_strategy() -> Any:
    """Several GPUs: mirror the network so every GPU works. One or none: no strategy overhead."""
    import tensorflow as tf

    return (tf.distribute.MirroredStrategy() if devices.gpu_count() > 1
            else tf.distribute.get_strategy())


def use_xla(strategy: Any) -> bool:
    """Keras' own rule for `jit_compile="auto"`: XLA on one GPU, not on a CPU (where oneDNN's
    convolutions are faster) nor under a distribution strategy."""
    return devices.gpu_count() > 0 and strategy.num_replicas_in_sync == 1


def build_extractor(backbone: Backbone, width: int, weights: str, precision: str,
                    seed: int) -> tuple[Any, Any]:
    """The network under `precision`'s dtype policy, in the strategy's scope; (model, strategy)."""
    devices.check_precision(precision)
    strategy = make_strategy()
    with keras_extract.dtype_policy(devices.keras_policy(precision)), strategy.scope():
        model = build(backbone, width, weights, seed)
    return model, strategy


def compiled_step(model: Any, preprocess: Any, width: int, batch_size: int, strategy: Any,
                  jit: bool) -> Any:
    """uint8 batch → float32 features, as one tf.function (XLA-compiled if `jit`), traced (or
    compiled) once per run."""
    import tensorflow as tf

    spec = tf.TensorSpec((batch_size if jit else None, width, width, 3), tf.uint8)
    # Under a strategy each replica sees its share of the batch: no fixed signature there.
    signature = [spec] if strategy.num_replicas_in_sync == 1 else None

    @tf.function(input_signature=signature, jit_compile=jit)
    def step(x: tf.Tensor) -> tf.Tensor:
        # uint8 in, cast and preprocessed here: the float32 copy of the images exists only
        # one batch at a time (and on a GPU, 4× less data crosses the bus).
        y = model(preprocess(tf.cast(x, tf.float32)), training=False)
        return tf.cast(y, tf.float32)  # mixed precision computes in 16 bits, stores float32

    return step


def features(model: Any, preprocess: Any, images: h5py.Dataset, batch_size: int,
             strategy: Any, jit: bool | None = None,
             step: Any = None) -> Iterator[np.ndarray]:
    """Yield float32 feature batches for `images` (uint8, N×W×W×3), in row order.

    `jit`: XLA-compile the network (None: `use_xla`). With XLA every batch is padded to
    `batch_size` rows, so one compilation serves the whole run. `step`: a `compiled_step` to
    reuse (built here if None).
    """
    import tensorflow as tf

    n, w = images.shape[0], images.shape[1]
    jit = use_xla(strategy) if jit is None else jit
    step = step or compiled_step(model, preprocess, w, batch_size, strategy, jit)

    def batches() -> Iterator[np.ndarray]:
        for batch in h5io.iter_batches(images, batch_size):
            yield keras_extract.padded(batch, batch_size) if jit else batch

    spec = tf.TensorSpec((batch_size if jit else None, w, w, 3), tf.uint8)
    ds = tf.data.Dataset.from_generator(batches, output_signature=spec).prefetch(2)
    ds = strategy.experimental_distribute_dataset(ds)

    done = 0
    for x in ds:
        out = strategy.gather(strategy.run(step, args=(x,)), axis=0).numpy()
        out = out[:n - done]  # drop the padding rows of a last XLA batch
        done += len(out)
        yield out


def write_features(model: Any, backbone: Backbone, strategy: Any, images_h5: str, out: str,
                   batch_size: int, jit: bool | None = None, precision: str = "float32",
                   weights: str = "", preprocess: str = "network",
                   made_with: dict[str, str] | None = None) -> None:
    """Stream one split's images through `model` into `out` (the timed part of the stage).
    `precision`: the param the model was built for (`mixed_bfloat16` on a CPU: the rewrite);
    `weights`: what initialised it, recorded (feature_files.weights_of); `preprocess`: the input
    scaling (backbones.preprocessing), recorded."""
    jit = use_xla(strategy) if jit is None else jit
    scale = preprocessing(backbone, preprocess)
    step = compiled_step(model, scale, _width(images_h5), batch_size, strategy, jit)
    with devices.graph_rewrite(devices.cpu_bf16_rewrite(precision)):
        feature_files.stream_to_h5(
            lambda images: features(model, scale, images, batch_size, strategy, jit, step),
            backbone.name, _dim(model), images_h5, out,
            made_with={"weights": weights, "preprocess": preprocess, "precision": precision,
                       **(made_with or {})})


def extract(backbone: Backbone, images_h5: str, out: str, weights: str | NetworkWeights,
            precision: str, batch_size: int, seed: int, engine: str = "tensorflow") -> None:
    """Write `out` with `features` (float32, rows × D) and the rows' info, in resized order.
    `weights`: the network's entry of the param (a string: that, with its own preprocessing)."""
    h5io.require(images_h5, ("images", "names"), RESIZE_HINT)
    width = _width(images_h5)
    entry = NetworkWeights(weights) if isinstance(weights, str) else weights
    init = feature_files.weights_of(entry.weights, seed)
    file = weight_path(backbone, entry.weights)
    md5 = {"weights_md5": h5io.md5(file) if file is not None and file.is_file() else ""}
    if engine == "openvino":
        extract_openvino(backbone, images_h5, out, openvino_engine.Network(
            backbone, width, init, md5["weights_md5"], entry.preprocess), precision, batch_size)
        return
    if devices.backend() == "tensorflow":
        model, strategy = build_extractor(backbone, width, entry.weights, precision, seed)
        write_features(model, backbone, strategy, images_h5, out, batch_size,
                       precision=precision, weights=init, preprocess=entry.preprocess,
                       made_with=md5)
        return
    devices.check_precision(precision)
    model = keras_extract.extractor(backbone, width, entry.weights, precision, seed,
                                    entry.preprocess)
    feature_files.stream_to_h5(
        lambda images: keras_extract.feature_batches(model, images, batch_size), backbone.name,
        _dim(model), images_h5, out, made_with={"weights": init, "preprocess": entry.preprocess,
                                                "precision": precision, **md5})


def extract_openvino(backbone: Backbone, images_h5: str, out: str, net: openvino_engine.Network,
                     precision: str, batch_size: int) -> None:
    """`extract` through OpenVINO: the network converted once (cached), then compiled at
    `precision` (stages/openvino_engine.py)."""
    devices.check_precision(precision, "openvino")

    def say(line: str) -> None:
        cli.say(f"extract {backbone.name}", line)

    sample = int8_sample.recorded() if precision == "int8" else ""
    xml = (openvino_engine.quantized_file(net, sample, lambda: int8_sample.load(sample), say)
           if sample else openvino_engine.network_file(net, say))
    compiled = openvino_engine.Compiled(xml, precision, batch_size)
    feature_files.stream_to_h5(
        lambda images: openvino_engine.feature_batches(compiled, images), backbone.name,
        int(openvino_engine.meta(xml)["dim"]), images_h5, out,
        made_with={"weights": net.weights, "preprocess": net.preprocess, "precision": precision,
                   "weights_md5": net.weights_md5, "engine": "openvino", "int8_sample": sample})


def _dim(model: Any) -> int:
    """The network's pooled feature size, as Keras built it."""
    return int(model.output_shape[-1])


def _width(path: str) -> int:
    return _shape(path)[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--backbone", required=True, choices=sorted(BACKBONES))
    ap.add_argument("--images", required=True, help="a split's resized HDF5 file")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    stage = f"extract {args.backbone}"

    def work() -> None:
        start = time.perf_counter()
        params = load_params(keys=PARAMS)
        backbone = BACKBONES[args.backbone]
        entry = network_weights(params["weights"], backbone.name)
        resolved = resolve_weights(backbone, entry.weights)  # a missing file: before the
        # seconds of importing TensorFlow
        h5io.require(args.images, ("images", "names"), RESIZE_HINT)
        n, width = _shape(args.images)
        engine = params["engine"]
        if engine == "openvino":
            devices.check_precision(params["precision"], engine)  # before the conversion
        starting = "openvino" if engine == "openvino" else devices.backend()
        cli.say(stage, f"{n:,} images of {args.images}; starting {starting}")
        if starting == "tensorflow":  # (KERAS_BACKEND picks another: docs/backends.md)
            quiet.tensorflow()
        quiet.without_sklearn()
        how = ("; the first batch compiles it" if starting != "openvino" else
               f", through OpenVINO at {params['precision']} (the network converted once, "
               "then cached)")
        cli.say(stage, f"building {backbone.name} at {width} px with "
                f"{_weights_said(resolved, params['seed'])}"
                + ("" if entry.preprocess == "network" else f", input {entry.preprocess}")
                + how)
        extract(backbone, args.images, args.out, entry, params["precision"],
                params["extract_batch_size"], params["seed"], engine)
        print(f"{stage}: {n:,} images of {args.images} → {Path(args.out)} in "
              f"{time.perf_counter() - start:.0f} s", flush=True)

    cli.run(stage, work)


def _shape(path: str) -> tuple[int, int]:
    """(images, width) of a resized file."""
    with h5py.File(path, "r") as f:
        return int(f["images"].shape[0]), int(f["images"].shape[1])


def _weights_said(resolved: str | None, seed: int) -> str:
    if resolved is None:
        return f"random weights (seed {seed})"
    if resolved == "imagenet":
        return "ImageNet weights (Keras' cache; downloaded on first use)"
    return f"the weights in {resolved}"


if __name__ == "__main__":
    main()
