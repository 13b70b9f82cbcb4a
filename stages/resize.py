"""Stage `resize`: train and test images → uint8 RGB tensors in HDF5, streamed in batches.

Training images that cannot be decoded are skipped and listed in a report; a test image that
cannot be decoded stops the stage (a submission with a missing id is worse than none).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stages import cli, h5io, limits
from stages.decode import load_rgb
from stages.images import DataError, Listing, Source, list_test, list_train
from stages.params import load_params
from stages.pool import parallel_map

WRITE_BATCH = 64  # images per HDF5 write: bounded memory, few calls


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


def resize_train(source: Source, listing: Listing, out: str, width: int, workers: int,
                 max_pixels: int | None = None) -> list[tuple[str, str]]:
    """Write train.h5 (`images`, `labels`, `names`); return the skipped files and reasons.

    `names` leave out the folders every file shares, so a folder and its zip give the same bytes;
    the skip report names files as they are in the source, to be found there.
    """
    src = source.path
    skipped: list[tuple[str, str]] = []
    with h5io.create_h5(out) as f:
        images = h5io.Appender(f, "images", (width, width, 3), np.uint8)
        labels = h5io.Appender(f, "labels", (), h5io.label_dtype(len(listing.classes)))
        names = h5io.Appender(f, "names", (), h5io.STR)
        buf: list[tuple[np.ndarray, int, str]] = []

        def flush() -> None:
            if buf:
                images.append(np.stack([b[0] for b in buf]))
                labels.append(np.array([b[1] for b in buf]))
                names.append([b[2] for b in buf])
                buf.clear()

        stored = listing.names
        for i, result in decoded(source, listing, width, workers, "resize train", max_pixels):
            if isinstance(result, Exception):
                skipped.append((listing.files[i], str(result)))
                continue
            buf.append((result, listing.labels[i], stored[i]))
            if len(buf) >= WRITE_BATCH:
                flush()
        flush()
        kept = np.asarray(labels.ds[:])
        f.attrs["classes"] = listing.classes
        if len(kept) == 0:
            raise DataError(f"{src}: none of the {len(listing.files)} training images could be "
                            f"decoded; first failures: {skipped[:5]}")
        if len(np.unique(kept)) < 2:
            raise DataError(f"{src}: after skipping {len(skipped)} undecodable images only class "
                            f"'{listing.classes[kept[0]]}' remains; need at least two classes")
    return skipped


def resize_test(source: Source, listing: Listing, out: str, width: int, workers: int,
                max_pixels: int | None = None) -> None:
    """Write test.h5 (`images`, `ids`; a labelled test set adds `labels`, `names` and the
    `classes`); any undecodable test image is an error naming them all."""
    src = source.path
    bad: list[str] = []
    with h5io.create_h5(out) as f:
        images = h5io.Appender(f, "images", (width, width, 3), np.uint8)
        h5io.write_array(f, "ids", np.asarray(listing.ids, np.int64))
        if listing.labels:
            h5io.write_array(f, "labels", np.asarray(
                listing.labels, h5io.label_dtype(len(listing.classes))))
            h5io.write_array(f, "names", np.asarray(listing.names, object))
            f.attrs["classes"] = listing.classes
        buf: list[np.ndarray] = []
        for i, result in decoded(source, listing, width, workers, "resize test", max_pixels):
            if isinstance(result, Exception):
                bad.append(f"{listing.files[i]} ({result})")
                continue
            buf.append(result)
            if len(buf) >= WRITE_BATCH:
                images.append(np.stack(buf))
                buf.clear()
        if buf:
            images.append(np.stack(buf))
        if bad:
            # Raising inside create_h5 discards the temporary file: no half-finished test.h5.
            raise DataError(
                f"{src}: {len(bad)} test image(s) cannot be decoded, and every test id needs a "
                f"prediction: {'; '.join(bad)}. Replace these files and rerun."
            )


def write_skipped(path: str, skipped: list[tuple[str, str]]) -> None:
    with h5io.atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "reason"])
        w.writerows(skipped)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out-dir", default="data/resized")
    ap.add_argument("--report", default="reports/resize.json", help="counts, for dvc metrics")
    ap.add_argument("--workers", type=int, default=limits.default_workers(),
                    help="decoding threads (default: the cores this process may use); each may "
                    "hold one image, so more workers mean a lower pixel limit per image (fewer do "
                    "not raise it: OPENCV_IO_MAX_IMAGE_PIXELS does)")
    args = ap.parse_args(argv)
    if args.workers < 1:
        ap.error(f"--workers must be at least 1, got {args.workers}")

    def work() -> None:
        params = load_params()
        width = params["width"]
        out = Path(args.out_dir)
        # List both sets before decoding anything: missing data or bad names fail in seconds.
        train_src, test_src = Source(params["train_data"]), Source(params["test_data"])
        train = list_train(train_src)
        test = list_test(test_src, train.classes)
        # The pixel limit for the real worker count, never above the one OpenCV's own guard
        # loaded with (for the default count): the two guards agree.
        max_pixels = limits.max_pixels(args.workers)
        # Test first: it is the cheaper half and its errors are fatal, so they surface early.
        resize_test(test_src, test, str(out / "test.h5"), width, args.workers, max_pixels)
        skipped = resize_train(train_src, train, str(out / "train.h5"), width, args.workers,
                               max_pixels)
        write_skipped(str(out / "skipped.csv"), skipped)
        counts = {
            "train_images": len(train.files) - len(skipped),
            "train_skipped": len(skipped),
            "train_ignored_files": len(train.ignored),
            "test_images": len(test.files),
            "test_ignored_files": len(test.ignored),
            "classes": train.classes,
        }
        h5io.write_json(args.report, counts)
        labelled = " labelled" if test.labels else ""
        print(
            f"resize: {counts['train_images']} train images ({', '.join(train.classes)}), "
            f"{counts['test_images']}{labelled} test images at {width}×{width}; skipped "
            f"{len(skipped)} undecodable (see {out / 'skipped.csv'}), ignored "
            f"{len(train.ignored) + len(test.ignored)} non-image files"
        )

    cli.run("resize", work)


if __name__ == "__main__":
    main()
