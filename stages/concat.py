"""Stage `concat`: the two backbones' features side by side → 4096-d fused features, with
everything else the head needs: the rows' labels, names, ids and classes, and a small JPEG
preview of every training image (stages/previews.py).

Rows are copied in blocks, so memory stays bounded; the rows' labels, names, ids and classes
must agree between the files (they come from the same resized tensors), otherwise the rows would
not describe the same image.
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack

import h5py
import numpy as np

from stages import cli, h5io, previews
from stages.backbones import FUSED_ORDER

ROWS = 4096  # rows per copy block: 4096 × 4096 float32 = 64 MB
def concat(inputs: list[str], out: str, resized_train: str) -> None:
    """Write `out` with `train`, `test` = the inputs' matrices concatenated along columns, the
    rows' info and the previews of `resized_train`'s images."""
    for p in inputs:
        h5io.require(p, ("train", "test", "labels", "ids"), "Run `dvc repro` for the extractors.")
    h5io.require(resized_train, ("images",), "Run `dvc repro resize`.")
    with ExitStack() as stack:
        files = [stack.enter_context(h5py.File(p, "r")) for p in inputs]
        info, classes = h5io.read_row_info(files[0]), h5io.classes_of(files[0])
        for p, f in zip(inputs[1:], files[1:], strict=True):
            other = h5io.read_row_info(f)
            for key in sorted(set(info) | set(other)):
                if key not in info or key not in other or \
                        not np.array_equal(info[key], other[key]):
                    raise h5io.MissingInput(
                        f"{p}: '{key}' differ from {inputs[0]}; the feature files come from "
                        "different resized data. Rerun `dvc repro`.")
            if h5io.classes_of(f) != classes:
                raise h5io.MissingInput(f"{p}: classes differ from {inputs[0]}. Rerun "
                                        "`dvc repro`.")
        f_out = stack.enter_context(h5io.create_h5(out))
        for split in ("train", "test"):
            n = files[0][split].shape[0]
            dim = sum(f[split].shape[1] for f in files)
            rows = h5io.Appender(f_out, split, (dim,), np.float32, 256)
            for start in range(0, n, ROWS):
                rows.append(np.concatenate([f[split][start:start + ROWS] for f in files], axis=1))
        h5io.write_row_info(f_out, info, classes)
        with h5py.File(resized_train, "r") as tr:
            if len(tr["images"]) != len(info["labels"]):
                raise h5io.MissingInput(
                    f"{resized_train}: {len(tr['images'])} images, but the features have "
                    f"{len(info['labels'])} rows. Rerun `dvc repro`.")
            previews.write(f_out, tr["images"])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--features-dir", default="data/features")
    ap.add_argument("--images", default="data/resized/train.h5",
                    help="the resized training images, for the previews")
    ap.add_argument("--out", default="data/features/fused.h5")
    args = ap.parse_args(argv)
    inputs = [f"{args.features_dir}/{name}.h5" for name in FUSED_ORDER]

    def work() -> None:
        concat(inputs, args.out, args.images)
        print(f"concat: {' + '.join(FUSED_ORDER)} → {args.out}")

    cli.run("concat", work)


if __name__ == "__main__":
    main()
