"""The trained classifier in a user's hands: `python -m stages.classify PATH...` scores image
files, folders or `.zip`s with `models/model_2.h5`, in one process, outside DVC.

    python -m stages.classify scan.dcm                     # a table on stdout
    python -m stages.classify data/new --out new.csv --cam reports/cam
    python -m stages.classify --mistakes 12                # reports/val_mistakes_cam.png
    python -m stages.classify --export exported/classifier # a TensorFlow SavedModel

(reports/cam/, reports/val_mistakes_cam.png and exported/ are ignored by git.)

Images are decoded and resized by `resize`'s own code at the width the model records, and go
through the networks and the head as the pipeline runs them (stages/classifier.py), so the
probabilities are those `predict` writes for the same images, before `clip`; `predicted_class`
follows the model's threshold. `--cam DIR` writes each image with its class activation map over
it, and `DIR/cam.h5` (stages/cam.py, docs/cam.md), replacing an earlier `--cam` output there;
`--export DIR` a SavedModel that decides as the model does (Classifier.export). Every output is
checked before TensorFlow starts (stages/destinations.py). Nothing here runs in `dvc repro`.

In Python, the same code (stages/classifier.py; `stages.classify` re-exports `Classifier`):

    from stages.classifier import Classifier
    clf = Classifier.load("models/model_2.h5")
    probs = clf.predict(["a.jpg", "b.png"])        # float32 (n, K), columns clf.classes
    probs, maps = clf.cam(["a.jpg"])               # maps float32 (n, width, width)

A file that cannot be decoded is named with its reason and skipped; the others are scored and
the exit status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import time
from pathlib import Path

import h5py
import numpy as np

from stages import (
    cam,
    cli,
    destinations,
    devices,
    evaluation,
    h5io,
    inputs,
    limits,
    model_record,
    outputs,
    quiet,
    val_predictions,
)
from stages.classifier import Classifier, ModelError, batch_size
from stages.inputs import Entry

__all__ = ["Classifier", "main"]  # Classifier: design.md's `from stages.classify import`

STAGE = "classify"
MISTAKES_OUT = "reports/val_mistakes_cam.png"  # --mistakes-out's default: ignored by git
COLOURS = "red: raised the predicted class's score, blue: lowered it"


def classify(clf: Classifier, found: list[Entry], cam_dir: Path | None = None,
             workers: int | None = None) -> tuple[list[tuple[str, np.ndarray, int]],
                                                  list[tuple[str, str]]]:
    """Score `found` in batches as they are decoded: ([(path, probabilities, predicted
    class)], [(path, why it was skipped)]); with `cam_dir`, a PNG per image and cam.h5 there,
    in place of an earlier `--cam` output (written beside it, swapped in at the end)."""
    if cam_dir is None:
        return _classify(clf, found, None, workers)
    destinations.check_cam_folder(cam_dir)
    with outputs.atomic_dir(cam_dir) as tmp:
        return _classify(clf, found, tmp, workers)


def _classify(clf: Classifier, found: list[Entry], cam_dir: Path | None, workers: int | None
              ) -> tuple[list[tuple[str, np.ndarray, int]], list[tuple[str, str]]]:
    rows: list[tuple[str, np.ndarray, int]] = []
    skipped: list[tuple[str, str]] = []
    size = batch_size(len(found))
    digits = len(str(len(found)))

    def flush(batch: list[tuple[Entry, np.ndarray]], writer: cam.CamWriter | None) -> None:
        e = clf.explain(np.stack([p for _, p in batch]), size, maps=cam_dir is not None)
        shown = [entry.shown for entry, _ in batch]
        if writer is not None:
            maps = cam.class_map(e.grids, clf.width)
            writer.append(shown, maps, e.probs, e.predicted)
            for (_, pixels), path, m, p, c in zip(batch, shown, maps, e.probs, e.predicted,
                                                  strict=True):
                # The name's first 100 characters: with the index and .png, within NAME_MAX.
                png = cam_dir / f"{len(rows):0{digits}d}_{Path(path).name[:100]}.png"  # type: ignore[operator]
                cam.write_png(png, pixels, m, caption(clf, path, p, int(c)))
                rows.append((path, p, int(c)))
        else:
            rows.extend((path, p, int(c)) for path, p, c in zip(shown, e.probs, e.predicted,
                                                               strict=True))
        batch.clear()

    batch: list[tuple[Entry, np.ndarray]] = []
    with (cam.cam_file(cam_dir / destinations.CAM_H5, clf.width, clf.classes) if cam_dir
          else contextlib.nullcontext()) as writer:
        for entry, result in inputs.decoded(found, clf.width, workers):
            if isinstance(result, Exception):
                skipped.append((entry.shown, str(result)))
                cli.say(STAGE, f"skipped {entry.shown}: {result}")
                continue
            batch.append((entry, result))
            if len(batch) == size:
                flush(batch, writer)
        if batch:
            flush(batch, writer)
        if not rows:  # inside: cam.h5 is not written either
            raise inputs.DataError(f"none of the {len(found)} images could be decoded (each "
                                   "named above with its reason); nothing written")
    return rows, skipped


def _count(n: int) -> str:
    return f"{n:,} image{'' if n == 1 else 's'}"


def caption(clf: Classifier, path: str, probs: np.ndarray, predicted: int) -> str:
    at = (f" (threshold {clf.threshold:.3g})" if len(clf.classes) == 2 and clf.threshold != 0.5
          else "")
    return (f"{_short(path)}\npredicted {clf.classes[predicted]}: p {probs[predicted]:.3f}{at}"
            f"\n{COLOURS}")


def _short(path: str, width: int = 60) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1):]


def write_csv(path: str, classes: list[str], rows: list[tuple[str, np.ndarray, int]]) -> None:
    """`path`, one probability column per class (headed by its name), `predicted_class`."""
    with h5io.atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", *classes, "predicted_class"])
        for shown, p, c in rows:
            w.writerow([shown, *(f"{v:.7f}" for v in p), classes[c]])


def table(classes: list[str], rows: list[tuple[str, np.ndarray, int]]) -> str:
    """The rows as aligned columns, for a terminal."""
    cells = [["path", *classes, "predicted_class"]] + [
        [shown, *(f"{v:.4f}" for v in p), classes[c]] for shown, p, c in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
                     for r in cells)


def explain_mistakes(clf: Classifier, n: int, predictions: str, resized: str, out: str) -> int:
    """The `n` most confident validation mistakes of the last `train_head` run, each with its
    class activation map, in one picture at `out`; returns how many images it shows. Refused
    (val_predictions.ModelMismatch) where `predictions` are not `clf`'s model's."""
    names, probs, labels = val_predictions.read(predictions, clf.classes)
    shown = evaluation.worst_mistakes(labels, probs, n, threshold=clf.threshold)
    rows = val_predictions.check_rows(probs, shown)
    images = _validation_images(clf, resized, predictions, [names[r] for r in rows])
    model_probs, maps = clf.cam(images)
    val_predictions.check_same_model(predictions, clf.record.path, probs[rows], model_probs,
                                     [names[r] for r in rows], clf.record.precision)
    k = len(shown)
    pictures = np.stack([cam.overlay(img, m) for img, m in zip(images[:k], maps[:k],
                                                               strict=True)])
    evaluation.mistakes_figure(out, pictures, [names[r] for r in shown], clf.classes,
                               labels[shown], model_probs[:k], threshold=clf.threshold,
                               note=f"class activation maps of the predicted class ({COLOURS})")
    return k


def _validation_images(clf: Classifier, resized: str, predictions: str, names: list[str]
                       ) -> np.ndarray:
    """The resized training file's images of `names`, in that order."""
    h5io.require(resized, ("images", "names"), "Run `dvc repro resize@train` (or `dvc pull "
                 f"{resized}`): the validation images are read from it.")
    with h5py.File(resized, "r") as f:
        if f["images"].shape[1] != clf.width:
            raise ModelError(f"{resized}: images at {f['images'].shape[1]} px, but "
                             f"{clf.record.path} was trained at {clf.width}. Run `dvc repro`")
        where = {name: i for i, name in enumerate(f["names"].asstr()[:])}
        missing = [name for name in names if name not in where]
        if missing:
            raise cli.MissingInput(f"{resized}: holds no {cli.some(missing, 5)}, named in "
                                   f"{predictions}. Run `dvc repro`")
        index = np.array([where[name] for name in names], np.int64)
        order = np.argsort(index)
        images = np.empty((len(index), clf.width, clf.width, 3), np.uint8)
        images[order] = f["images"][np.sort(index)]  # h5py reads rows in increasing order
    return images


def check_outputs(args: argparse.Namespace) -> None:
    """Every output writable as asked, before TensorFlow starts and anything is scored."""
    if args.out:
        destinations.check_file(args.out, "--out")
    if args.cam:
        destinations.check_cam_folder(args.cam)
    if args.mistakes:
        destinations.check_file(args.mistakes_out, "--mistakes-out")
    if args.export:
        destinations.check_export_folder(args.export)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", metavar="PATH",
                    help="image files (DICOM and extensionless DICOM too), folders or .zip files")
    ap.add_argument("--model", default="models/model_2.h5", help="the trained model")
    ap.add_argument("--out", metavar="FILE.csv", help="write the table here (default: stdout)")
    ap.add_argument("--cam", metavar="DIR", type=Path,
                    help="write each image with its class activation map over it, and cam.h5 "
                         "(in place of an earlier --cam output there)")
    ap.add_argument("--mistakes", metavar="N", type=int,
                    help="explain the N most confident validation mistakes (--mistakes-out)")
    ap.add_argument("--mistakes-out", metavar="FILE.png", default=MISTAKES_OUT,
                    help="--mistakes: the picture (default: %(default)s)")
    ap.add_argument("--export", metavar="DIR", type=Path,
                    help="write a TensorFlow SavedModel: uint8 RGB images in; probabilities, "
                         "the predicted class and its name out (docs/cam.md)")
    ap.add_argument("--predictions", default="reports/val/predictions.csv",
                    help="--mistakes: the validation predictions of the model's train_head run")
    ap.add_argument("--resized", default="data/resized/train.h5",
                    help="--mistakes: the resized training images")
    ap.add_argument("--workers", type=int, default=limits.default_workers(),
                    help="decoding threads (default: the cores this process may use)")
    args = ap.parse_args(argv)
    if args.mistakes is not None and args.mistakes < 1:  # before the next: 0 is falsy
        ap.error(f"--mistakes must be at least 1, got {args.mistakes}")
    if not (args.paths or args.mistakes or args.export):
        ap.error("give images to classify (files, folders or .zip files), --mistakes N or "
                 "--export DIR")
    if args.cam and not args.paths:
        ap.error("--cam draws the maps of the images given: name some")

    def work() -> None:
        start = time.perf_counter()
        check_outputs(args)
        record = model_record.read(args.model)  # a missing model: before TensorFlow starts
        found, ignored = inputs.entries(args.paths)
        if ignored:
            cli.say(STAGE, f"left out {len(ignored)} non-image file(s): {cli.some(ignored, 5)}")
        images = f"{_count(len(found))}; " if found else ""
        cli.say(STAGE, f"{images}starting {devices.backend()}, then the networks of {args.model} "
                f"({' + '.join(record.networks)} at {record.width} px)")
        if args.export and devices.backend() != "tensorflow":
            raise ModelError(f"--export writes a TensorFlow SavedModel: run it with Keras' "
                             f"TensorFlow backend, not KERAS_BACKEND={devices.backend()}")
        if devices.backend() == "tensorflow":
            quiet.tensorflow()
        with quiet.filtered():
            clf = Classifier.load(args.model)
        if args.cam or args.mistakes:
            clf.check_explainable()  # before decoding anything
        reduced = sorted({p for p in record.precision if p != "float32"})
        if reduced:
            cli.say(STAGE, f"the model's features were extracted at {', '.join(reduced)}; this "
                    "computes in float32, so its probabilities differ from predict's by that "
                    "rounding (about 1e-3)")
        if args.mistakes:  # first: a few images, and a model that did not write them stops it
            shown = explain_mistakes(clf, args.mistakes, args.predictions, args.resized,
                                     args.mistakes_out)
            print(f"{STAGE}: the {shown} most confident validation mistakes (or least sure "
                  f"right answers), with their maps → {args.mistakes_out}")
        if args.export:
            clf.export(args.export)
            at = f" at threshold {clf.threshold:.6g}" if len(clf.classes) == 2 else ""
            print(f"{STAGE}: SavedModel → {args.export} (uint8 RGB (n, {clf.width}, "
                  f"{clf.width}, 3) in; probabilities of {', '.join(clf.classes)}, the "
                  f"predicted class{at} and its name out)")
        skipped: list[tuple[str, str]] = []
        if found:
            rows, skipped = classify(clf, found, args.cam, args.workers)
            if args.out:
                write_csv(args.out, clf.classes, rows)
            else:
                print(table(clf.classes, rows), flush=True)
            where = f" → {args.out}" if args.out else ""
            maps = f"; maps in {args.cam}" if args.cam else ""
            cli.say(STAGE, f"{_count(len(rows))} in {time.perf_counter() - start:.1f} s"
                    f"{where}{maps}")
        if skipped:
            raise inputs.DataError(f"{len(skipped)} of {len(found)} images could not be decoded "
                                   "and were skipped (named above); the others are scored")

    cli.run(STAGE, work)


if __name__ == "__main__":
    main()
