"""Quality of `mixed_bfloat16` features on real photos with real weights, against float32.

    python -m benchmarks.bf16_quality --resized data/resized/train.h5 --net xception

Takes a `train.h5` that `resize` wrote from real labelled photos and the `keras_weights/`
folder of the working directory (genuine ImageNet weights: README, "Weights"), extracts the
network's features at float32 and at `mixed_bfloat16` with the stage's own code (on a CPU: the
oneDNN rewrite; emulated where the CPU lacks bfloat16, the same arithmetic, slower), and prints
- the relative difference per image, ‖f_bf16 − f_32‖ / ‖f_32‖ (max and median), and the lowest
  cosine similarity;
- the head's best validation loss and accuracy trained on each (the stage's `train`: same
  split, Dropout + Dense, `--epochs`), over `--seeds` seeds, so that the seed-to-seed spread is
  the yardstick for "within noise".
"""

from __future__ import annotations

import argparse
import os
import tempfile
from statistics import mean, pstdev

import h5py
import numpy as np

os.environ.setdefault("EXTRACT_BF16_EMULATED", "1")


def features(net: str, resized: str, precision: str, out: str) -> np.ndarray:
    from stages import extract
    from stages.backbones import BACKBONES

    extract.extract(BACKBONES[net], resized, out, "keras_weights", precision, 32, 2017)
    with h5py.File(out) as f:
        return f["features"][:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resized", default="data/resized/train.h5")
    ap.add_argument("--net", default="xception")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    a = ap.parse_args()

    from stages import quiet

    quiet.tensorflow()
    from stages import train_head
    from stages.params import DEFAULTS

    with h5py.File(a.resized) as f:
        labels = f["labels"][:]
    with tempfile.TemporaryDirectory() as tmp:
        feats = {p: features(a.net, a.resized, p, f"{tmp}/{p}.h5")
                 for p in ("float32", "mixed_bfloat16")}
        f32, bf16 = (feats[p].astype(np.float64) for p in ("float32", "mixed_bfloat16"))
        rel = np.linalg.norm(bf16 - f32, axis=1) / np.linalg.norm(f32, axis=1)
        cos = (bf16 * f32).sum(1) / np.linalg.norm(bf16, axis=1) / np.linalg.norm(f32, axis=1)
        print(f"{a.net}, {len(f32)} images: bf16 vs float32 relative difference max "
              f"{rel.max():.2%}, median {np.median(rel):.2%}; lowest cosine {cos.min():.5f}")
        print("\n| precision | best val_loss | best val_accuracy | seeds |")
        print("| --- | ---: | ---: | ---: |")
        for p, x in feats.items():
            losses, accs = [], []
            for seed in range(a.seeds):
                params = {**DEFAULTS, "epochs": a.epochs, "seed": 2017 + seed}
                r = train_head.train(x, labels, params, f"{tmp}/head-{p}-{seed}.h5")
                losses.append(r.metrics["val_loss"])
                accs.append(r.metrics["val_accuracy"])
            print(f"| {p} | {mean(losses):.4f} ± {pstdev(losses):.4f} | "
                  f"{mean(accs):.4f} ± {pstdev(accs):.4f} | {a.seeds} |")


if __name__ == "__main__":
    main()
