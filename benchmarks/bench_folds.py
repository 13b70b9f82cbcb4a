"""Figure: the decision threshold's spread over seeds, one validation split against `folds`.

    python3 -m benchmarks.bench_folds --weights /tmp/kw       # xray-dev, 299 px, seeds 1 … 10
    python3 -m benchmarks.bench_folds --weights /tmp/kw --width 75 --seeds 1,2   # a smoke run

Real chest X-rays from --xrays, split by patient as bench_xray.py draws them (--test-share of
each class's patients, all their images, a labelled test set; the rest the training pool, kept
whole: --keep-normal defaults to 1 here, the balanced pool). The project is built and run as
bench_fuse.py does it (a fresh git + DVC project with this checkout's files, `weights:
keras_weights` from --weights, `fuse: [xception]`, `group_pattern` = --pattern), ONE full
`dvc repro`. Then, in this process (no `dvc exp run` per point: each costs ~15 s of DVC and
TensorFlow start), its data/features/{train,test}/fused.h5 are read, and for every seed the
head is trained twice with `stages.train_head.train` and the project's params: `folds: 0` (one
split by `val_split`) and `folds: --folds` (K heads, out-of-fold predictions, the saved mean
head). For each rule of --rules the threshold is resolved (`decision.resolve_threshold`) on
the validation (or out-of-fold) labels and probabilities `train` returns, as `train_head`
resolves it; the saved model is loaded as `predict` loads it and scores the test features:
balanced accuracy at that threshold, and the ECE of its test probabilities (unclipped, as
`predict`'s `test_ece`; it does not depend on the rule).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from benchmarks.bench_fuse import WEIGHTS, full_run, make_project, mean_sd
from benchmarks.bench_score_new import fmt_s
from benchmarks.bench_xray import CLASSES, PATTERN, XRAYS, copier, draw
from stages import decision, evaluation, h5io, quiet, split
from stages.params import load_params

RULES = "youden,sensitivity:0.95"


class _NoRetracingWarning(logging.Filter):
    # Each loaded model's predict traces its own function: expected, sixty times here.
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def read_features(path: Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """(features, labels, names, classes) of a fused.h5."""
    with h5py.File(path, "r") as f:
        return (f["features"][:], f["labels"][:], list(f["names"].asstr()[:]),
                h5io.classes_of(f))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def one_head(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray,
             params: dict[str, Any], groups: np.ndarray, classes: list[str], rules: list[str],
             path: Path) -> dict[str, Any]:
    """Train one head (`params`' seed and folds), resolve each rule on its validation (or
    out-of-fold) predictions, score the saved model on the test features.
    {"thresholds": {rule: t}, "test_ba": {rule: ba}, "test_ece", "note", "seconds"}."""
    import keras

    from stages.train_head import few_images_note, train

    t0 = time.perf_counter()
    # The epoch lines (stdout) would be 30 per head; stderr is passed on without TensorFlow's
    # C++ noise.
    with contextlib.redirect_stdout(io.StringIO()), quiet.filtered():
        got = train(x, y, params, str(path), len(classes), groups, classes=classes)
        model = keras.models.load_model(path, compile=False, safe_mode=True)  # as predict
        probs = evaluation.probabilities(model.predict(xt, batch_size=1024, verbose=0))
    val_y, p1 = y[got.val_idx], got.val_probs[:, 1]
    thresholds = {r: decision.resolve_threshold(r, val_y, p1) for r in rules}
    return {"thresholds": thresholds,
            "test_ba": {r: evaluation.scores(yt, probs, "", threshold=t)["balanced_accuracy"]
                        for r, t in thresholds.items()},
            "test_ece": decision.ece(yt, probs),
            "note": few_images_note(val_y, got.val_probs, classes, params["folds"]),
            "n_val": len(got.val_idx),
            "seconds": time.perf_counter() - t0}


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{min(values):.2f}–{max(values):.2f} | {sd:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--xrays", type=Path, default=XRAYS, help="NORMAL/ and PNEUMONIA/ folders")
    ap.add_argument("--pattern", default=PATTERN, help="the patient in a file name")
    ap.add_argument("--test-share", type=float, default=0.3, help="of each class's patients")
    ap.add_argument("--keep-normal", type=float, default=1.0,
                    help="of the training pool's NORMAL patients (1: the balanced pool)")
    ap.add_argument("--data-seed", type=int, default=0, help="for the patient draw")
    ap.add_argument("--weights", type=Path, default=WEIGHTS,
                    help="folder of Keras notop weight files (make_weights_folder.sh)")
    ap.add_argument("--width", type=int, default=299)
    ap.add_argument("--seeds", default=",".join(map(str, range(1, 11))))
    ap.add_argument("--folds", type=int, default=5, help="K of the folds mode")
    ap.add_argument("--rules", default=RULES, help="threshold rules, comma-separated")
    ap.add_argument("--keep", type=Path, help="build the project here and keep it")
    args = ap.parse_args()
    rx = re.compile(args.pattern)
    seeds = [int(s) for s in args.seeds.split(",")]
    rules = args.rules.split(",")
    modes = [0, args.folds]

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="bench-folds-")
    work = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    root = work / "p"
    t_total = time.perf_counter()
    train_imgs, test_imgs, drawn = draw(args.xrays, rx, args.test_share, args.keep_normal,
                                        args.data_seed)
    print(drawn, file=sys.stderr, flush=True)

    put_data = copier(train_imgs, test_imgs)

    make_project(root, args.weights, put_data, width=args.width, fuse=["xception"],
                 group_pattern=args.pattern)
    full, other = full_run(root, work / "repro.log")
    print(f"full run {fmt_s(full)} (other cores {other:.2f})", file=sys.stderr, flush=True)

    params = load_params(root / "params.yaml")
    x, y, names, classes = read_features(root / "data/features/train/fused.h5")
    xt, yt, test_names, test_classes = read_features(root / "data/features/test/fused.h5")
    if test_classes != classes or list(classes) != list(CLASSES):
        sys.exit(f"classes: training {classes}, test {test_classes}, expected {CLASSES}")
    groups = split.groups_of(names, params["group_pattern"])
    test_groups = split.groups_of(test_names, params["group_pattern"])
    quiet.tensorflow().get_logger().addFilter(_NoRetracingWarning())

    t_heads = time.perf_counter()
    results: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for seed in seeds:
        for k in modes:
            r = one_head(x, y, xt, yt, {**params, "seed": seed, "folds": k}, groups, classes,
                         rules, work / f"model_{k}_{seed}.h5")
            results[k].append(r)
            print(f"seed {seed} folds {k}: "
                  + ", ".join(f"{rule} {r['thresholds'][rule]:.3f} (test balanced accuracy "
                              f"{r['test_ba'][rule]:.3f})" for rule in rules)
                  + f", test ECE {r['test_ece']:.3f}, {r['seconds']:.1f} s"
                  + (f"; note: {r['note']}" if r["note"] else ""), file=sys.stderr, flush=True)
    heads = time.perf_counter() - t_heads
    total = time.perf_counter() - t_total

    def count(ys: np.ndarray, gs: np.ndarray) -> str:
        per = [f"{int((ys == c).sum())} {name} ({len(np.unique(gs[ys == c]))} patients)"
               for c, name in enumerate(classes)]
        return f"{len(ys)} images of {len(np.unique(gs))} patients: {', '.join(per)}"

    n_val = sorted({r["n_val"] for r in results[0]})
    print(f"\n{args.xrays.name}, drawn by patient (--test-share {args.test_share}, --keep-normal "
          f"{args.keep_normal}, --data-seed {args.data_seed}): training {count(y, groups)}; "
          f"labelled test {count(yt, test_groups)}. Width {args.width}, `fuse: [xception]` "
          f"(ImageNet weights), `group_pattern` the patient, other params as params.yaml "
          f"(epochs {params['epochs']}, batch_size {params['batch_size']}, dropout "
          f"{params['dropout']}, class_weight {params['class_weight']}, calibrate "
          f"{params['calibrate']}; single split: val_split {params['val_split']}, "
          f"{', '.join(map(str, n_val))} validation images). Seeds "
          f"{', '.join(map(str, seeds))}, each training one head on a single split and "
          f"{args.folds} on {args.folds} grouped folds. {cpu_name()}, {platform.machine()} CPU "
          f"× {len(os.sched_getaffinity(0))}, no GPU used: full `dvc repro` "
          f"{fmt_s(full)} (other processes' cores {other:.2f}), the {len(seeds) * len(modes)} "
          f"trainings {fmt_s(heads)}, benchmark total {fmt_s(total)}.\n")
    print("| validation | rule | threshold min–max | threshold sd | test balanced accuracy "
          "| test ECE |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for k in modes:
        label = f"{k} grouped folds, out of fold" if k else "one split (val_split)"
        for rule in rules:
            rs = results[k]
            print(f"| {label} | `{rule}` | {spread([r['thresholds'][rule] for r in rs])} "
                  f"| {mean_sd([r['test_ba'][rule] for r in rs])} "
                  f"| {mean_sd([r['test_ece'] for r in rs])} |")
    notes = {k: sum(bool(r["note"]) for r in results[k]) for k in modes}
    print(f"\ntrain_head's 'rest on little' note: single split {notes[0]} of {len(seeds)} "
          f"seeds, {args.folds} folds {notes[args.folds]} of {len(seeds)}.")
    print("\nPer seed (threshold; test balanced accuracy):\n")
    print("| seed | " + " | ".join(f"{f'{k} folds' if k else 'one split'} `{rule}`"
                                   for k in modes for rule in rules)
          + f" | test ECE one split | test ECE {args.folds} folds |")
    print("| ---: | " + " | ".join("---:" for _ in range(len(modes) * len(rules) + 2)) + " |")
    for i, seed in enumerate(seeds):
        cells = [f"{results[k][i]['thresholds'][rule]:.3f}; "
                 f"{results[k][i]['test_ba'][rule]:.3f}" for k in modes for rule in rules]
        print(f"| {seed} | " + " | ".join(cells)
              + f" | {results[0][i]['test_ece']:.3f} | {results[args.folds][i]['test_ece']:.3f} |")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
