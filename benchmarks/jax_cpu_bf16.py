"""Benchmark: bfloat16 against float32 on this machine's CPU through Keras on JAX (XLA:CPU).

    python3 benchmarks/jax_cpu_bf16.py            # both networks, 299 px: minutes on 16 cores
    python3 benchmarks/jax_cpu_bf16.py --width 75 --batch 4 --rounds 2   # a smoke run

Not the extract stage's CPU path: on TensorFlow, `mixed_bfloat16` on a CPU is oneDNN's
whole-graph rewrite of a float32 network (`stages/devices.py`; `benchmarks/bench_bf16.py`
times it). Here it is Keras' `mixed_bfloat16` dtype policy compiled by XLA for the CPU, what
`KERAS_BACKEND=jax` extraction does on a CPU; it runs where TensorFlow is missing (a GPU
machine with JAX), to learn what that machine's CPU kind gives at bfloat16.

For each network, the stage's Keras model (`stages.keras_extract.extractor`: uint8 in, cast,
`preprocess_input`, network, float32 features out; weights none, seeded) at float32 and at
`mixed_bfloat16`, compiled first (the compile time is printed), then `--rounds` rounds, each
timing `--batches` batches of each precision back to back, in alternating order: the best
rate of each, and bf16 ÷ float32 per round (paired: the same minute of the host). The
features' relative difference says bfloat16 really ran. Needs keras, jax, numpy, h5py only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["STAGES_SKIP_ENVIRONMENT_CHECK"] = "1"  # the machine's own stack, not the lock's

import numpy as np  # noqa: E402

from benchmarks.machine_load import cpu_line  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default="inception_v3,xception")
    ap.add_argument("--width", type=int, default=299)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=2, help="timed batches per precision and round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import jax
    import keras

    from stages import keras_extract
    from stages.backbones import BACKBONES

    print(cpu_line())
    print(f"keras {keras.__version__} on {keras.backend.backend()} (jax {jax.__version__}, "
          f"{jax.default_backend()}: {jax.devices()[0].device_kind}); Keras' mixed_bfloat16 "
          f"policy compiled by XLA, NOT the stage's TensorFlow oneDNN rewrite; batch "
          f"{args.batch} at {args.width} px, {args.rounds} rounds of {args.batches} batches",
          flush=True)
    batch = np.random.default_rng(1).integers(0, 256, (args.batch, args.width, args.width, 3),
                                              dtype=np.uint8)
    x = keras.ops.convert_to_tensor(batch)
    table = []
    for net in args.nets.split(","):
        models, feats = {}, {}
        for precision in ("float32", "mixed_bfloat16"):
            models[precision] = keras_extract.extractor(BACKBONES[net], args.width, "none",
                                                        precision, 1)
            t = time.perf_counter()
            feats[precision] = np.asarray(models[precision].predict_on_batch(x))
            print(f"{net} {precision}: compiled and first batch in {time.perf_counter() - t:.1f} s",
                  flush=True)
        a, b = feats["float32"], feats["mixed_bfloat16"]
        diff = float(np.max(np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1)))
        rates: dict[str, list[float]] = {"float32": [], "mixed_bfloat16": []}
        for r in range(args.rounds):
            order = ("float32", "mixed_bfloat16") if r % 2 == 0 else ("mixed_bfloat16", "float32")
            for precision in order:
                t = time.perf_counter()
                for _ in range(args.batches):
                    y = models[precision].predict_on_batch(x)
                np.asarray(y)
                rates[precision].append(args.batches * args.batch / (time.perf_counter() - t))
            print(f"{net} round {r + 1}: float32 {rates['float32'][-1]:.1f} img/s, "
                  f"mixed_bfloat16 {rates['mixed_bfloat16'][-1]:.1f} img/s", flush=True)
        per_round = " ".join(f"{b / f:.2f}" for f, b in zip(rates["float32"],
                                                            rates["mixed_bfloat16"], strict=True))
        table.append((net, max(rates["float32"]), max(rates["mixed_bfloat16"]), per_round, diff))

    print("\n| network | float32 best img/s | mixed_bfloat16 best img/s | bf16 ÷ float32, best | "
          "bf16 ÷ float32, each round | max rel. diff of features |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for net, f32, bf16, per_round, diff in table:
        print(f"| {net} | {f32:.1f} | {bf16:.1f} | ×{bf16 / f32:.2f} | {per_round} | {diff:.1e} |")


if __name__ == "__main__":
    main()
