"""The trained classifier in a user's hands: `python -m stages.classify PATH...` scores image
files, folders or `.zip`s with `models/model_2.h5`, in one process, outside DVC.

    python -m stages.classify scan.dcm                     # a table on stdout
    python -m stages.classify data/new --out new.csv --cam reports/cam
    python -m stages.classify --mistakes 12                # reports/val_mistakes_cam.png
    python -m stages.classify --export exported/classifier # a TensorFlow SavedModel
    python -m stages.classify data/outside --metrics reports/outside.json  # an outside set

(reports/cam/, reports/val_mistakes_cam.png, reports/outside.json and exported/ are ignored by
git.)

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

`--metrics FILE` scores an outside labelled set, one folder or .zip (DIR) of class folders named
as the model's classes, read as `resize@test` and `predict` read a labelled test set
(stages/testset.py; folders that are not the classes stop in one line before TensorFlow
starts): FILE (JSON) gets predict's test metrics (stages/predict.py, `summary`: log loss of
the probabilities clipped by `clip`, accuracy, AUC, balanced accuracy, two classes sensitivity
and specificity, ECE, the intervals with `interval_unit`), and `n_test`, `n_skipped`,
`classes`, the model's `threshold`, `clip`, `group_pattern`, `confusion` ({true class:
{predicted class: count}} at that threshold), `data` and `model` (the paths given). `clip`
and `group_pattern` are params.yaml's where the current folder has one (else the
defaults: clip 0.005, no groups); `--group-pattern REGEX` replaces group_pattern (`''`: none).
The scores are printed as a table; the per-image rows only go to `--out` (with a `true_class`
column), not to the terminal, where they would bury the scores. Images that cannot be decoded
are named and skipped: FILE holds the metrics of the others, with `n_skipped`, and the exit
status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stages import (
    cam,
    cli,
    decision,
    destinations,
    devices,
    evaluation,
    h5io,
    inputs,
    limits,
    model_record,
    outputs,
    predict,
    quiet,
    testset,
    val_predictions,
)
from stages.classifier import Classifier, ModelError, batch_size
from stages.images import DataError, Source, list_test
from stages.inputs import Entry
from stages.params import DEFAULTS, PARAMS_FILE, load_params

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


def write_csv(path: str, classes: list[str], rows: list[tuple[str, np.ndarray, int]],
              truth: dict[str, str] | None = None) -> None:
    """`path`, one probability column per class (headed by its name), `predicted_class`; with
    `truth` (each row's true class by its path: `--metrics`), `true_class` before it, as
    pred.csv has it."""
    with h5io.atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", *classes, *(["true_class"] if truth else []), "predicted_class"])
        for shown, p, c in rows:
            w.writerow([shown, *(f"{v:.7f}" for v in p), *([truth[shown]] if truth else []),
                        classes[c]])


def table(classes: list[str], rows: list[tuple[str, np.ndarray, int]]) -> str:
    """The rows as aligned columns, for a terminal."""
    cells = [["path", *classes, "predicted_class"]] + [
        [shown, *(f"{v:.4f}" for v in p), classes[c]] for shown, p, c in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
                     for r in cells)


# --- an outside labelled set: --metrics ----------------------------------------------------------

LAYOUTS = "(docs/data.md, 'Your own images: the layouts')"
METRICS_HELP = ("Give --metrics one folder or .zip of class folders named as the model's "
                "classes")


@dataclass(frozen=True)
class OutsideSet:
    """A labelled folder's images, in `found`'s order, each with its name as the test side names
    a row (relative to the folder, a lone wrapper folder dropped: `NORMAL/p1_a.png`) and its
    class index."""

    path: str
    found: list[Entry]
    names: list[str]
    labels: np.ndarray
    ignored: list[str]

    def truth(self, classes: list[str]) -> dict[str, str]:
        """Each image's true class by its path as the tool shows it."""
        return {e.shown: classes[int(c)] for e, c in zip(self.found, self.labels, strict=True)}


def outside_set(path: str | Path, classes: list[str]) -> OutsideSet:
    """The images of `path` read against the model's `classes` as `resize@test` and `predict`
    read a test set (stages/testset.py): a labelled set, else a TestSetError naming what is
    wrong. Lists names only: nothing is decoded, no TensorFlow."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: does not exist. {METRICS_HELP}")
    if not (path.is_dir() or zipfile.is_zipfile(path)):
        raise DataError(f"--metrics {path}: is a file, not a folder or .zip. {METRICS_HELP}")
    source = Source(path, help=METRICS_HELP)
    listing = list_test(source)
    try:
        test = testset.read(listing.names, classes)
    except testset.TestSetError as e:  # resize@test's words, without its `dvc repro`
        raise testset.TestSetError(f"{path}: {str(e).replace(testset.FIX, LAYOUTS)}") from None
    if test.labels is None:
        rel = test.row_ids()
        folders = sorted({n.split("/", 1)[0] for n in rel if "/" in n})
        held = (f"folders {cli.some(folders, 5)}" if folders else "images outside any folder")
        raise testset.TestSetError(
            f"{path}: holds {held}, not one folder per class: --metrics scores a labelled set, "
            f"its images in folders named as the model's classes ({', '.join(classes)}) "
            f"{LAYOUTS}")
    return OutsideSet(str(path), [Entry(source, f, f"{path}/{f}") for f in listing.files],
                      [str(n) for n in test.names],  # type: ignore[union-attr]
                      np.asarray(test.labels, np.int64), [f"{path}/{f}" for f in listing.ignored])


def metrics_params(group_pattern: str | None) -> dict[str, Any]:
    """`clip` and `group_pattern` as predict reads them: params.yaml's where the current
    folder has one, else the defaults; `group_pattern` (--group-pattern) replaces the file's."""
    keys = ("clip", "group_pattern")
    params = (load_params(PARAMS_FILE, keys=keys) if Path(PARAMS_FILE).is_file()
              else {k: DEFAULTS[k] for k in keys})
    if group_pattern is not None:
        params["group_pattern"] = group_pattern
    return params


def confusion(labels: np.ndarray, predicted: np.ndarray, classes: list[str]
              ) -> dict[str, dict[str, int]]:
    """{true class: {predicted class: count}}, every pair of classes (zeros too)."""
    return {t: {p: int(np.sum((labels == i) & (predicted == j))) for j, p in enumerate(classes)}
            for i, t in enumerate(classes)}


def outside_metrics(raw: np.ndarray, labels: np.ndarray, names: list[str], classes: list[str],
                    threshold: float, params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(what --metrics writes, the paths `group_pattern` misses): predict's test metrics of the
    unclipped probabilities `raw` (predict.summary, the log loss of them clipped by `clip`),
    decided at the model's `threshold`, the intervals by group where `group_pattern` matches
    every name (predict.groups_of_rows), and the confusion counts."""
    pattern = params["group_pattern"]
    groups, missed = predict.groups_of_rows(np.asarray(names, object), pattern)
    stats = predict.summary(predict.clip_probs(raw, params["clip"]), classes, labels,
                            unclipped=raw, threshold=threshold,
                            groups=groups, missed=len(missed) if pattern else None)
    out = {k: v for k, v in stats.items() if predict.is_metric(k) or k.startswith("interval_")
           or k == "group_pattern_missed"}
    out |= {"threshold": threshold, "clip": params["clip"], "group_pattern": pattern,
            "confusion": confusion(labels, decision.predicted(raw, threshold), classes)}
    return out, missed


SCORES = (("test_loss", "log loss"), ("test_accuracy", "accuracy"), ("test_auc", "AUC"),
          ("test_balanced_accuracy", "balanced accuracy"), ("test_sensitivity", "sensitivity"),
          ("test_specificity", "specificity"), ("test_ece", "ECE"))


def metrics_table(stats: dict[str, Any], path: str) -> str:
    """What the terminal shows of --metrics: the images per class, each score with its 95 %
    interval where it has one, and the confusion counts."""
    classes = stats["classes"]
    counts = {t: sum(row.values()) for t, row in stats["confusion"].items()}
    at = f", threshold {stats['threshold']:.3g}" if len(classes) == 2 else ""
    lines = [f"{STAGE}: outside set {path}: {_count(stats['n_test'])} ("
             + ", ".join(f"{c} {counts[c]}" for c in classes) + f"){at}"]
    named = {"test_sensitivity": f"sensitivity ({classes[-1]})",
             "test_specificity": f"specificity ({classes[0]})"}
    shown = [(key, named.get(key, label)) for key, label in SCORES if key in stats]
    pad = max(len(label) for _, label in shown) + 2
    for key, label in shown:
        value = stats[key]
        cell = "undefined" if value is None else f"{value:.3f}"
        low, high = stats.get(f"{key}_low"), stats.get(f"{key}_high")
        if low is not None and high is not None:
            cell += f"  ({low:.3f}–{high:.3f})"
        lines.append(f"  {label:<{pad}}{cell}")
    unit = stats.get("interval_unit", "image")
    lines.append(f"  (95 % intervals, by {'group (group_pattern)' if unit == 'group' else unit})")
    width = max(len(c) for c in classes)
    cols = [max(width, 5)] * len(classes)
    lines.append("  confusion (rows true, columns predicted):")
    lines.append("    " + " " * width + "".join(f"  {c:>{w}}" for c, w in zip(classes, cols,
                                                                           strict=True)))
    for t in classes:
        lines.append(f"    {t:<{width}}" + "".join(
            f"  {stats['confusion'][t][p]:>{w}}" for p, w in zip(classes, cols, strict=True)))
    return "\n".join(lines)


def explain_mistakes(clf: Classifier, n: int, predictions: str, resized: str, out: str) -> int:
    """The `n` most confident validation mistakes of the last `train_head` run, each with its
    class activation map, in one picture at `out`; returns how many images it shows. Refused
    (val_predictions.ModelMismatch) where `predictions` are not `clf`'s model's. After a run
    with `folds`, the mistakes are the out-of-fold ones, captioned with those probabilities,
    and the model is checked against the CSV's column of its own (`saved_probs`); the maps are
    the saved head's, which trained on these images."""
    names, probs, labels = val_predictions.read(predictions, clf.classes)
    saved = val_predictions.saved_probs(predictions, clf.classes)
    shown = evaluation.worst_mistakes(labels, probs, n, threshold=clf.threshold)
    rows = val_predictions.check_rows(probs, shown)
    images = _validation_images(clf, resized, predictions, [names[r] for r in rows])
    model_probs, maps = clf.cam(images)
    val_predictions.check_same_model(predictions, clf.record.path,
                                     (probs if saved is None else saved)[rows], model_probs,
                                     [names[r] for r in rows], clf.record.precision)
    k = len(shown)
    pictures = np.stack([cam.overlay(img, m) for img, m in zip(images[:k], maps[:k],
                                                               strict=True)])
    folds = saved is not None
    evaluation.mistakes_figure(
        out, pictures, [names[r] for r in shown], clf.classes, labels[shown],
        probs[shown] if folds else model_probs[:k], threshold=clf.threshold,
        where="out of fold" if folds else "on the validation split",
        note=f"class activation maps of the {'saved head' + chr(39) + 's ' if folds else ''}"
             f"predicted class ({COLOURS})")
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


def write_metrics(path: str, outside: OutsideSet, rows: list[tuple[str, np.ndarray, int]],
                  clf: Classifier, params: dict[str, Any], n_skipped: int) -> dict[str, Any]:
    """Score the decoded `rows` of `outside` (outside_metrics), write them to `path` and print
    the table; the paths group_pattern misses are said as predict says them."""
    index = {e.shown: i for i, e in enumerate(outside.found)}
    kept = [index[shown] for shown, _, _ in rows]
    raw = np.stack([p for _, p, _ in rows]).astype(np.float64)
    names = [outside.names[i] for i in kept]
    stats, missed = outside_metrics(raw, outside.labels[kept], names, clf.classes,
                                    clf.threshold, params)
    if missed:
        cli.say(STAGE, predict.missed_note(params["group_pattern"], missed, len(names), path))
    stats |= {"n_skipped": n_skipped, "data": outside.path, "model": clf.record.path}
    h5io.write_json(path, stats)
    print(metrics_table(stats, outside.path), flush=True)
    return stats


def check_outputs(args: argparse.Namespace) -> None:
    """Every output writable as asked, before TensorFlow starts and anything is scored."""
    if args.out:
        destinations.check_file(args.out, "--out")
    if args.metrics:
        destinations.check_file(args.metrics, "--metrics")
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
    ap.add_argument("--out", metavar="FILE.csv",
                    help="write the per-image table here (default: stdout; with --metrics, "
                         "only here, with a true_class column)")
    ap.add_argument("--cam", metavar="DIR", type=Path,
                    help="write each image with its class activation map over it, and cam.h5 "
                         "(in place of an earlier --cam output there)")
    ap.add_argument("--metrics", metavar="FILE.json",
                    help="score one folder or .zip of class folders named as the model's "
                         "classes (an outside labelled set): predict's test metrics with their "
                         "intervals and the confusion counts here, a table on stdout")
    ap.add_argument("--group-pattern", metavar="REGEX",
                    help="--metrics: the intervals' groups (patients) by this pattern "
                         "(default: params.yaml's group_pattern, where there is one; '' none)")
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
    if args.metrics and len(args.paths) != 1:
        ap.error(f"--metrics scores one folder or .zip of class folders, got {len(args.paths)} "
                 "paths")
    if args.group_pattern is not None:
        if not args.metrics:
            ap.error("--group-pattern groups --metrics' intervals: give --metrics FILE")
        try:
            re.compile(args.group_pattern)
        except re.error as e:
            ap.error(f"--group-pattern {args.group_pattern!r}: not a regular expression ({e})")

    def work() -> None:
        start = time.perf_counter()
        check_outputs(args)
        record = model_record.read(args.model)  # a missing model: before TensorFlow starts
        outside: OutsideSet | None = None
        params: dict[str, Any] = {}
        if args.metrics:  # misnamed folders, a bad clip or params.yaml: before TensorFlow
            params = metrics_params(args.group_pattern)
            predict.clip_probs(np.full((1, len(record.classes)), 0.5), params["clip"])
            outside = outside_set(args.paths[0], record.classes)
            found, ignored = outside.found, outside.ignored
        else:
            found, ignored = inputs.entries(args.paths)
        if ignored:
            cli.say(STAGE, f"left out {len(ignored)} non-image file(s): {cli.some(ignored, 5)}")
        images = f"{_count(len(found))}; " if found else ""
        # The engine that made the model's features computes them here too (OpenVINO: from
        # the converted networks, without TensorFlow).
        starting = "openvino" if record.engine == "openvino" else devices.backend()
        cli.say(STAGE, f"{images}starting {starting}, then the networks of {args.model} "
                f"({' + '.join(record.networks)} at {record.width} px)")
        if args.export and devices.backend() != "tensorflow":
            raise ModelError(f"--export writes a TensorFlow SavedModel: run it with Keras' "
                             f"TensorFlow backend, not KERAS_BACKEND={devices.backend()}")
        if starting == "tensorflow" or args.export:
            quiet.tensorflow()
        with quiet.filtered():
            clf = Classifier.load(args.model, say=lambda line: cli.say(STAGE, line))
        if args.cam or args.mistakes:
            clf.check_explainable()  # before decoding anything
        reduced = sorted({p for p in record.precision if p != "float32"})
        if reduced and starting != "openvino":  # OpenVINO computes at the model's precision
            cli.say(STAGE, f"the model's features were extracted at {', '.join(reduced)}; this "
                    "computes in float32, so its probabilities differ from predict's by that "
                    "rounding (about 1e-3)")
        if args.mistakes:  # first: a few images, and a model that did not write them stops it
            shown = explain_mistakes(clf, args.mistakes, args.predictions, args.resized,
                                     args.mistakes_out)
            print(f"{STAGE}: the {shown} most confident validation mistakes (or least sure "
                  f"right answers), with their maps → {args.mistakes_out}")
        if args.export:  # a TensorFlow SavedModel, whatever engine made the features
            exporter = clf if clf.probs_model is not None else Classifier.load(
                args.model, engine="tensorflow")
            exporter.export(args.export)
            at = f" at threshold {clf.threshold:.6g}" if len(clf.classes) == 2 else ""
            print(f"{STAGE}: SavedModel → {args.export} (uint8 RGB (n, {clf.width}, "
                  f"{clf.width}, 3) in; probabilities of {', '.join(clf.classes)}, the "
                  f"predicted class{at} and its name out)")
        skipped: list[tuple[str, str]] = []
        if found:
            rows, skipped = classify(clf, found, args.cam, args.workers)
            truth = outside.truth(clf.classes) if outside else None
            if args.out:
                write_csv(args.out, clf.classes, rows, truth)
            elif not outside:  # --metrics: the scores' table below, not one row per image
                print(table(clf.classes, rows), flush=True)
            if outside:
                write_metrics(args.metrics, outside, rows, clf, params, len(skipped))
            where = ", ".join(p for p in (args.out, args.metrics) if p)
            maps = f"; maps in {args.cam}" if args.cam else ""
            cli.say(STAGE, f"{_count(len(rows))} in {time.perf_counter() - start:.1f} s"
                    f"{f' → {where}' if where else ''}{maps}")
        if skipped:
            scored = (f"; the metrics of the {len(found) - len(skipped)} others are in "
                      f"{args.metrics} (n_skipped {len(skipped)})" if outside else "")
            raise inputs.DataError(f"{len(skipped)} of {len(found)} images could not be decoded "
                                   f"and were skipped (named above); the others are scored"
                                   f"{scored}")

    cli.run(STAGE, work)


if __name__ == "__main__":
    main()
