"""Benchmark: feature extraction on a GPU through Keras on JAX or PyTorch, no TensorFlow needed.

    KERAS_BACKEND=jax python3 benchmarks/gpu_extract.py            # or torch (not yet run on a GPU)
    KERAS_BACKEND=jax python3 benchmarks/gpu_extract.py --n 256 --width 75 --batch-sizes 16,32
                                                                   # a CPU smoke run, ~1 min

Needs only this project, the keras wheel and what a JAX or PyTorch GPU machine already has
(numpy, h5py, tqdm): no TensorFlow, DVC or params file. Where nothing can be fetched, carry
the keras wheel and the two small packages it needs that such machines lack (README.md,
"Backends"): `pip download --no-deps keras==<the lock's> namex optree -d .whl`, then there
`pip install --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site …`.

For both networks, at `float32` and the backend's mixed precision (`mixed_bfloat16` on
Ampere and later GPUs), for each batch size, on N synthetic 299×299 uint8 images in HDF5 files
laid out as `resize` writes them (weights none, seeded: nothing is downloaded):
- `compile s`: the first batch (tracing and compilation: one per run, every batch being padded
  to one shape);
- `compute img/s`: the network alone on a batch already on the device (cast, preprocessing,
  network, float32 features back to the host);
- `stage img/s`: the stage's own path (`stages.keras_extract`, `stages.feature_files`: HDF5
  read by a reader thread, host→device copy, network, features written to HDF5), one split, as
  a stage runs it;
- `peak GPU GiB`: the backend's peak device memory (PyTorch: during the setting; JAX cannot
  reset it, so its column is the peak so far in the run).
Then the data path alone: the HDF5 read and the host→device copy, in images/s, so that a stage
rate under the compute rate says which part limits it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ["STAGES_SKIP_ENVIRONMENT_CHECK"] = "1"  # the machine's own stack, not the lock's

import h5py  # noqa: E402
import numpy as np  # noqa: E402


def reset_peak() -> None:
    import keras

    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    """Peak device memory since the last reset (JAX: since the process started)."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", 0) / 2**30


def sync(x: object) -> None:
    np.asarray(x)  # to the host: waits for the device


def synthetic(folder: Path, n: int, width: int) -> str:
    """train.h5 (n random images), as `resize` writes it."""
    from benchmarks.synthetic import write_resized

    train, _ = write_resized(folder, n, 1, width, lambda rng, label: rng.integers(
        0, 256, (width, width, 3), dtype=np.uint8))
    return str(train)


def data_path(train: str, batch: int) -> tuple[float, float]:
    """HDF5 read and host→device copy alone, images/s."""
    import keras

    from stages import h5io

    with h5py.File(train) as f:
        images = f["images"]
        t = time.perf_counter()
        batches = list(h5io.iter_batches(images, batch))
        read = len(images) / (time.perf_counter() - t)
    full = [b for b in batches if len(b) == batch] or batches[:1]
    batch = len(full[0])
    device_sync(keras.ops.convert_to_tensor(full[0]))  # the backend's start-up, untimed
    t = time.perf_counter()
    for b in full:
        device_sync(keras.ops.convert_to_tensor(b))
    return read, len(full) * batch / (time.perf_counter() - t)


def device_sync(x: object) -> None:
    """Wait until `x` is on the device (JAX copies asynchronously; CUDA streams too)."""
    if hasattr(x, "block_until_ready"):
        x.block_until_ready()
    elif type(x).__module__.startswith("torch"):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4096, help="training images (test: half as many)")
    ap.add_argument("--width", type=int, default=299)
    ap.add_argument("--batch-sizes", default="32,64,128,256")
    ap.add_argument("--precisions", default="float32,mixed_bfloat16")
    ap.add_argument("--nets", default="inception_v3,xception")
    ap.add_argument("--compute-batches", type=int, default=20, help="timed batches, compute")
    args = ap.parse_args()

    import keras

    from stages import feature_files, keras_extract
    from stages.backbones import BACKBONES

    backend = keras.backend.backend()
    device = "cpu"
    if backend == "jax":
        import jax

        device = f"{jax.devices()[0].device_kind} ({jax.default_backend()})"
    elif backend == "torch":
        import torch

        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"keras {keras.__version__} on {backend}, {device}; {args.n} images "
          f"at {args.width} px", flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-extract-") as tmp:
        train = synthetic(Path(tmp), args.n, args.width)
        for net in args.nets.split(","):
            backbone = BACKBONES[net]
            for precision in args.precisions.split(","):
                model = keras_extract.extractor(backbone, args.width, "none", precision, 1)
                for bs in (int(b) for b in args.batch_sizes.split(",")):
                    reset_peak()
                    batch = np.random.default_rng(1).integers(
                        0, 256, (bs, args.width, args.width, 3), dtype=np.uint8)
                    t = time.perf_counter()
                    sync(model.predict_on_batch(batch))
                    compile_s = time.perf_counter() - t
                    x = keras.ops.convert_to_tensor(batch)  # on the device
                    sync(model.predict_on_batch(x))
                    t = time.perf_counter()
                    for _ in range(args.compute_batches):
                        y = model.predict_on_batch(x)
                    sync(y)
                    compute = args.compute_batches * bs / (time.perf_counter() - t)
                    out = str(Path(tmp) / "features.h5")
                    t = time.perf_counter()
                    feature_files.stream_to_h5(
                        lambda images, bs=bs, m=model: keras_extract.feature_batches(m, images, bs),
                        backbone.name, int(model.output_shape[-1]), train, out, progress=False)
                    stage = args.n / (time.perf_counter() - t)
                    rows.append((net, precision, bs, compile_s, compute, stage, peak_gib()))
                    print(f"| {net} | {precision} | {bs} | {compile_s:.1f} | {compute:,.0f} | "
                          f"{stage:,.0f} | {stage / compute:.0%} | {rows[-1][-1]:.1f} |",
                          flush=True)
        read, copy = data_path(train, 128)

    print("\n| network | precision | batch | compile s | compute img/s | stage img/s | "
          "stage/compute | peak GPU GiB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for net, precision, bs, c, comp, stage, peak in rows:
        print(f"| {net} | {precision} | {bs} | {c:.1f} | {comp:,.0f} | {stage:,.0f} | "
              f"{stage / comp:.0%} | {peak:.1f} |")
    print(f"\ndata path alone (batch {min(128, args.n)}): HDF5 read {read:,.0f} img/s, "
          f"host→device copy {copy:,.0f} img/s")


if __name__ == "__main__":
    main()
