"""Stage `resize`, once per split: the training or the test images → uint8 RGB tensors in
HDF5, streamed in batches.

Training images that cannot be decoded are skipped and listed in a report; a test image that
cannot be decoded stops the stage (a submission with a missing id is worse than none). The two
splits are separate DVC stages (`resize@train`, `resize@test`), so new test images never touch
the training side.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from stages import cli, h5io, limits, testset
from stages.decode import load_rgb
from stages.images import TEST_HELP, DataError, Listing, Source, list_test, list_train
from stages.params import WEIGHTS_DIR, load_params
from stages.pool import parallel_map

WRITE_BATCH = 64  # images per HDF5 write: bounded memory, few calls
SPLITS = ("train", "test")
# What the stage reads of params.yaml, as dvc.yaml's `params:` writes it (`${key}`: the split).
PARAMS = ("${key}_data", "width")
# Read by the test split only to check its folders early (check_test_folders): no dvc.yaml
# param, since it never changes the output, and a new training path must not rerun the test side.
CHECK_ONLY = ("train_data",)


def decoded(source: Source, listing: Listing, width: int, workers: int, desc: str,
            max_pixels: int | None = None) -> Iterator[tuple[int, np.ndarray | Exception]]:
    """(index into listing.files, image or the reason it failed), in listing order. Images over
    `max_pixels` (default: what memory allows `workers` threads, stages/limits.py) fail."""
    limit = limits.max_pixels(workers) if max_pixels is None else max_pixels
    fn = partial(load_rgb, source, width=width, max_pixels=limit)
    results = parallel_map(fn, listing.files, workers)
    bar = tqdm(results, total=len(listing.files), desc=desc, unit="img", mininterval=1.0,
               file=sys.stderr)
    yield from enumerate(bar)  # type: ignore[misc]


def resize_split(source: Source, listing: Listing, out: str, width: int, workers: int,
                 max_pixels: int | None = None, split: str = "train") -> list[tuple[str, str]]:
    """Write `out`: `images` and the rows' `names`, and `labels`, `ids` and the `classes`
    attribute where the listing has them; return the skipped files and reasons.

    Training images that cannot be decoded are skipped (the skip report names them as they are
    in the source, to be found there); on the test side any of them stops the stage, since every
    listed image must get its prediction. `names` leave out the folders every file shares, so a
    folder and its zip give the same bytes.
    """
    skipped: list[tuple[str, str]] = []
    with h5io.create_h5(out) as f:
        images = h5io.Appender(f, "images", (width, width, 3), np.uint8)
        kept: list[int] = []
        batch: list[np.ndarray] = []
        for i, result in decoded(source, listing, width, workers, f"resize {split}", max_pixels):
            if isinstance(result, Exception):
                skipped.append((listing.files[i], str(result)))
                continue
            kept.append(i)
            batch.append(result)
            if len(batch) >= WRITE_BATCH:
                images.append(np.stack(batch))
                batch.clear()
        if batch:
            images.append(np.stack(batch))
        if split == "test" and skipped:
            # Raising inside create_h5 discards the temporary file: no half-finished test.h5.
            raise DataError(
                f"{source.path}: {len(skipped)} test image(s) cannot be decoded, and every test "
                f"image needs a prediction: {'; '.join(f'{n} ({r})' for n, r in skipped)}. "
                "Replace or remove these files and rerun.")
        if split == "train":
            _check_training_set(source, listing, kept, skipped)
        h5io.write_row_info(f, _row_info(listing, kept), listing.classes or None)
    return skipped


def _row_info(listing: Listing, kept: list[int]) -> dict[str, np.ndarray]:
    names = listing.names
    info = {"names": np.asarray([names[i] for i in kept], object)}
    if listing.labels:
        info["labels"] = np.asarray([listing.labels[i] for i in kept],
                                    h5io.label_dtype(len(listing.classes)))
    if listing.ids:
        info["ids"] = np.asarray([listing.ids[i] for i in kept], np.int64)
    return info


def _check_training_set(source: Source, listing: Listing, kept: list[int],
                        skipped: list[tuple[str, str]]) -> None:
    """What must remain of a training set once undecodable images are skipped."""
    if not kept:
        raise DataError(f"{source.path}: none of the {len(listing.files)} training images could "
                        f"be decoded; first failures: {skipped[:5]}")
    counts = np.bincount([listing.labels[i] for i in kept], minlength=len(listing.classes))
    if np.count_nonzero(counts) < 2:
        raise DataError(f"{source.path}: after skipping {len(skipped)} undecodable images only "
                        f"class '{listing.classes[int(np.argmax(counts))]}' remains; need at "
                        "least two classes")
    # The validation split needs an image of every class on each side: say so now, not after
    # the hours of extraction (train_head checks groups, which it alone knows, again).
    short = [f"{c} ({n})" for c, n in zip(listing.classes, counts, strict=True) if n < 2]
    if short:
        after = f" after skipping {len(skipped)} undecodable" if skipped else ""
        raise DataError(
            f"{source.path}: the validation split needs at least 2 images of every class, one "
            f"for each side; too few{after} in: {', '.join(short)}. Add images of these classes "
            "or remove their folders")


def write_skipped(path: str, skipped: list[tuple[str, str]]) -> None:
    with h5io.atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "reason"])
        w.writerows(skipped)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--split", choices=SPLITS, required=True,
                    help="which images: param train_data or test_data")
    ap.add_argument("--out", required=True, help="the resized HDF5 file")
    ap.add_argument("--skipped", required=True, help="CSV of the undecodable files skipped")
    ap.add_argument("--report", required=True, help="counts, for dvc metrics")
    ap.add_argument("--model", default="models/model_2.h5",
                    help="test split: the trained model, whose classes the test folders are "
                    "checked against early when the training data is not here (not a dependency)")
    ap.add_argument("--workers", type=int, default=limits.default_workers(),
                    help="decoding threads (default: the cores this process may use); each may "
                    "hold one image, so more workers mean a lower pixel limit per image (fewer do "
                    "not raise it: OPENCV_IO_MAX_IMAGE_PIXELS does)")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error(f"--workers must be at least 1, got {args.workers}")

    def work() -> None:
        params = load_params(keys=[k.replace("${key}", args.split) for k in PARAMS])
        check_weights_folder()
        width = params["width"]
        train = args.split == "train"
        # List before decoding anything: missing data or bad names fail in seconds.
        source = Source(params[f"{args.split}_data"], **({} if train else {"help": TEST_HELP}))
        listing = list_train(source) if train else list_test(source)
        if train:
            h5io.check_classes(listing.classes)
        else:
            check_test_folders(listing, args.model)
            if len(listing.classes) > h5io.MAX_CLASSES:  # folders by the thousand (a patient
                listing.classes, listing.labels = [], []  # each) are no classes: by path
        skipped = resize_split(source, listing, args.out, width, args.workers,
                               limits.max_pixels(args.workers), args.split)
        write_skipped(args.skipped, skipped)
        counts = {"images": len(listing.files) - len(skipped), "skipped": len(skipped),
                  "ignored_files": len(listing.ignored)}
        if train:
            counts["classes"] = listing.classes
        elif listing.classes:
            counts["folders"] = len(listing.classes)  # a count: they may be one per patient
        h5io.write_json(args.report, counts)
        print(f"resize {args.split}: {counts['images']} images ({describe(listing, train)}) at "
              f"{width}×{width}; skipped {len(skipped)} undecodable (see {args.skipped}), "
              f"ignored {len(listing.ignored)} non-image files")

    cli.run(f"resize {args.split}", work)


def check_test_folders(listing: Listing, model: str) -> None:
    """Read the test folders against the training classes now, where they can be seen, so that
    a labelled set with misnamed folders stops before the extraction, not after it in
    `predict` (which checks again, against the model). Not a dependency of the stage: this
    only ever stops it, its output is the same either way."""
    classes = training_classes(model)
    if classes:
        testset.read(listing.names, classes)


def training_classes(model: str) -> list[str]:
    """The training data's classes (what the next model learns), else the trained model's (a
    teammate who pulled only the model); [] where neither can be read."""
    train_data = load_params(keys=CHECK_ONLY)["train_data"]
    if Path(train_data).exists():
        try:
            return list_train(Source(train_data)).classes
        except DataError:  # resize@train says what is wrong with it
            return []
    if Path(model).is_file():
        with h5py.File(model, "r") as f:
            return [str(c) for c in f.attrs.get("classes", [])]
    return []


def describe(listing: Listing, train: bool) -> str:
    """What the summary line says of a listing's layout."""
    if train or listing.classes:
        shown = ", ".join(listing.classes[:8]) + (" …" if len(listing.classes) > 8 else "")
        return f"{'classes' if train else 'folders'} {shown}"
    return "Kaggle ids" if listing.ids else "named by file"


def check_weights_folder() -> None:
    """`pick_weights` depends on keras_weights/ whatever `weights` says (DVC tracks local weights
    there): without it DVC would stop after this stage, once its work is done."""
    if not Path(WEIGHTS_DIR).is_dir():
        raise cli.MissingInput(
            f"{WEIGHTS_DIR}/: missing. The pipeline depends on it even with weights: "
            f"imagenet (it is where local weight files go); make it, empty, and track it: "
            f"`mkdir -p {WEIGHTS_DIR} && dvc add {WEIGHTS_DIR}` (README.md, 'Quickstart')")


if __name__ == "__main__":
    main()
