"""Stage `concat`: the two backbones' features side by side → 4096-d fused features.

Rows are copied in blocks, so memory stays bounded; labels and ids must agree between the files
(they come from the same resized tensors), otherwise the rows would not describe the same image.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack

import h5py
import numpy as np

from stages import h5io
from stages.backbones import FUSED_ORDER

ROWS = 4096  # rows per copy block: 4096 × 4096 float32 = 64 MB


def concat(inputs: list[str], out: str) -> None:
    """Write `out` with `train`, `test` = the inputs' matrices concatenated along columns."""
    for p in inputs:
        h5io.require(p, ("train", "test", "labels", "ids"), "Run `dvc repro` for the extractors.")
    with ExitStack() as stack:
        files = [stack.enter_context(h5py.File(p, "r")) for p in inputs]
        for key in ("labels", "ids"):
            first = files[0][key][:]
            for p, f in zip(inputs[1:], files[1:], strict=True):
                if not np.array_equal(first, f[key][:]):
                    raise ValueError(f"{p}: '{key}' differ from {inputs[0]}; the feature files "
                                     "come from different resized data. Rerun `dvc repro`.")
        f_out = stack.enter_context(h5io.create_h5(out))
        for split in ("train", "test"):
            n = files[0][split].shape[0]
            dim = sum(f[split].shape[1] for f in files)
            rows = h5io.Appender(f_out, split, (dim,), np.float32, 256)
            for start in range(0, n, ROWS):
                rows.append(np.concatenate([f[split][start:start + ROWS] for f in files], axis=1))
        h5io.write_array(f_out, "labels", files[0]["labels"][:])
        h5io.write_array(f_out, "ids", files[0]["ids"][:])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--features-dir", default="data/features")
    ap.add_argument("--out", default="data/features/fused.h5")
    args = ap.parse_args(argv)
    inputs = [f"{args.features_dir}/{name}.h5" for name in FUSED_ORDER]
    try:
        concat(inputs, args.out)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"concat: {e}")
    print(f"concat: {' + '.join(FUSED_ORDER)} → {args.out}")


if __name__ == "__main__":
    main()
