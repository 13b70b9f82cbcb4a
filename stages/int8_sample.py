"""Stage `int8_sample`: the training images that calibrate the networks' int8 quantization
(`precision: int8`, with `engine: openvino`; docs/backends.md), recorded in
`data/int8/sample.json`, which git keeps.

Post-training quantization (NNCF) runs a few hundred images through the network to set its int8
ranges. Both splits must be extracted by the same quantized network, so the sample is drawn from
the training split: up to SAMPLE_SIZE rows of `data/resized/train.h5`, chosen by a fixed seed
(not the `seed` param: a grid over seeds must not re-extract). The file holds the sample's size
and the md5 of its rows and pixels, and each extractor depends on it as params: with int8, new
training images that change the sample rerun both splits' extraction, as they must; with any
other precision the file says `none`, rewritten with the same bytes, and reruns nothing.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stages import cli, h5io
from stages.params import load_params

SAMPLE_JSON = "data/int8/sample.json"
TRAIN_IMAGES = "data/resized/train.h5"
SAMPLE_SIZE = 300  # NNCF's default subset size
SAMPLE_SEED = 0
PARAMS = ("precision",)


def sample_rows(n: int) -> np.ndarray:
    """The sampled rows of a training split of `n` images, ascending."""
    rng = np.random.default_rng(SAMPLE_SEED)
    return np.sort(rng.choice(n, min(n, SAMPLE_SIZE), replace=False))


def sample_md5(images: h5py.Dataset, rows: np.ndarray) -> str:
    """The md5 of the rows' indices and pixels: the sample, whatever else the split holds."""
    digest = hashlib.md5(np.asarray(rows, np.int64).tobytes())
    for row in rows:
        digest.update(np.ascontiguousarray(images[int(row)]).tobytes())
    return digest.hexdigest()


def record(precision: str, images_h5: str) -> dict[str, Any]:
    """What `SAMPLE_JSON` holds: `none` unless `precision` is int8."""
    if precision != "int8":
        return {"int8_sample": "none"}
    h5io.require(images_h5, ("images", "names"), "Run `dvc repro resize@train` first.")
    with h5py.File(images_h5, "r") as f:
        rows = sample_rows(len(f["images"]))
        return {"int8_sample": {"images": len(rows), "seed": SAMPLE_SEED,
                                "md5": sample_md5(f["images"], rows)}}


def recorded(path: str = SAMPLE_JSON) -> str:
    """The md5 of the sample `path` records for int8 (the extractors' side of this stage)."""
    import json

    try:
        rec = json.loads(Path(path).read_text()).get("int8_sample")
    except (OSError, ValueError, AttributeError):
        rec = None
    if not isinstance(rec, dict) or not rec.get("md5"):
        raise cli.MissingInput(f"{path}: records no int8 sample. Run `dvc repro` (stage "
                               "int8_sample draws it from the training images)")
    return str(rec["md5"])


def load(md5: str, images_h5: str = TRAIN_IMAGES) -> np.ndarray:
    """The sample's pixels, uint8 (k, W, W, 3), checked against the `md5` the features were
    quantized with."""
    h5io.require(images_h5, ("images",), "int8 quantizes the networks on a sample of the "
                 "training images: run `dvc repro` (or `dvc pull data/resized/train.h5`)")
    with h5py.File(images_h5, "r") as f:
        rows = sample_rows(len(f["images"]))
        if sample_md5(f["images"], rows) != md5:
            raise cli.MissingInput(
                f"{images_h5}: its int8 sample (md5 {sample_md5(f['images'], rows)}) is not the "
                f"one the network was quantized with ({md5}): the training images changed. Run "
                "`dvc repro`")
        return np.stack([f["images"][int(r)] for r in rows])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", default=TRAIN_IMAGES)
    ap.add_argument("--out", default=SAMPLE_JSON)
    args = ap.parse_args(argv)

    def work() -> None:
        rec = record(load_params(keys=PARAMS)["precision"], args.images)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        h5io.write_json(args.out, rec)
        if rec["int8_sample"] != "none":
            cli.say("int8_sample", f"{rec['int8_sample']['images']} training images calibrate "
                    f"the int8 networks (md5 {rec['int8_sample']['md5']})")

    cli.run("int8_sample", work)


if __name__ == "__main__":
    main()
