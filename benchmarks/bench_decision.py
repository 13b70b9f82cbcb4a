"""Figures: operating points (`threshold`) on real chest X-rays, `calibrate` on real photos.

    python3 -m benchmarks.bench_decision --weights /tmp/kw            # both parts, 299 px
    python3 -m benchmarks.bench_decision --part xray --seeds 2017 --width 75   # a smoke run

Both parts build their project as bench_fuse.py does (a fresh git + DVC project with this
checkout's files, `weights: keras_weights` from --weights, `fuse: [xception]`, since only
Xception's offline ImageNet weights are genuine; InceptionV3 is still extracted, concat's deps
name it), one full `dvc repro`, a baseline commit, then one queued grid run by
`dvc queue start -j J` (or --sequential); every experiment must run train_head and predict only
(the baseline's own point: nothing).

--part xray: bench_xray.py's draw (the same patient split and imbalanced training set of
--xrays), the baseline with `group_pattern` = the patient pattern and `class_weight: balanced`,
then `-S threshold=0.5,youden,sensitivity:0.95 -S seed=…`. Per threshold: the resolved
threshold (chosen on validation) and test sensitivity, specificity and balanced accuracy with
their 95 % intervals (`stages/intervals.py`: Wilson, DeLong, MOVER; widened for patients).

--part pets: --train Kaggle-named training photos of --photos (half cats) and a labelled test
set of --test other photos in class folders cat/ and dog/ (their Kaggle names kept), then
`-S calibrate=none,temperature -S seed=…`. Per setting: test log loss (of the clipped
probabilities, as `predict` scores them) and ECE, val ECE and the fitted temperature.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_fuse import (
    check_ran,
    experiments,
    full_run,
    grid_options,
    make_project,
    mean_sd,
    run_queue,
    run_sequential,
)
from benchmarks.bench_score_new import PHOTOS, fmt_s, pick_photos
from benchmarks.bench_xray import CLASSES, HEAD, PATTERN, XRAYS, copier, draw, quoted

THRESHOLDS = ["0.5", "youden", "sensitivity:0.95"]
CALIBRATE = ["none", "temperature"]


def sweep_value(value: str) -> str:
    # Hydra's override grammar escapes an unquoted ':' in a sweep; quoted, it is kept as is.
    return quoted(value) if ":" in value else value


def run_grid(root: Path, key: str, values: Sequence[str], seeds: Sequence[int],
             args: argparse.Namespace) -> tuple[str, float, dict[str, str]]:
    grid = [{key: sweep_value(v), "seed": str(s)} for v in values for s in seeds]
    if args.sequential:
        wall, logs = run_sequential(root, grid)
        return f"sequential `dvc exp run`s ({len(grid)})", wall, logs
    wall, logs = run_queue(root, [f"{key}=" + ",".join(map(sweep_value, values)),
                                  "seed=" + ",".join(map(str, seeds))], args.jobs)
    return f"one queued grid of {len(grid)}, `dvc queue start -j {args.jobs}`", wall, logs


def collect(root: Path, key: str, values: Sequence[str], logs: dict[str, str]
            ) -> dict[str, list[dict[str, Any]]]:
    """Each experiment's metrics by its `key` value, its stages checked."""
    exps = experiments(root)
    base = exps["baseline"]["params"]
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for name, log in logs.items():
        p = exps[name]["params"]
        value = str(p[key])
        if value not in values:
            sys.exit(f"{name}: {key} {p[key]!r} is not the grid's {list(values)} "
                     f"(how -S passed it on?)")
        same = str(p[key]) == str(base[key]) and p["seed"] == base["seed"]
        check_ran(name, log, [] if same else HEAD)
        results[value].append({**exps[name]["metrics"], "seed": p["seed"]})
    return results


def build(work: Path, args: argparse.Namespace, put_data: Callable[[Path], None],
          **params: object) -> tuple[Path, float, float]:
    root = work / "p"
    make_project(root, args.weights, put_data, width=args.width, fuse=["xception"], **params)
    full, other = full_run(root, work / "repro.log")
    print(f"full run {fmt_s(full)} (other cores {other:.2f})", file=sys.stderr, flush=True)
    return root, full, other


def ci(r: dict[str, Any], k: str) -> str:
    lo, hi = r.get(f"{k}_low"), r.get(f"{k}_high")
    if lo is None or hi is None:
        return f"{r[k]:.3f}"
    return f"{r[k]:.3f} ({lo:.3f}–{hi:.3f})"


def xray(args: argparse.Namespace, work: Path, seeds: list[int]) -> None:
    t0 = time.perf_counter()
    rx = re.compile(args.pattern)
    train, test, drawn = draw(args.xrays, rx, args.test_share, args.keep_normal, args.data_seed)
    print(drawn, file=sys.stderr, flush=True)

    put_data = copier(train, test)

    root, full, other = build(work, args, put_data, group_pattern=args.pattern,
                              class_weight="balanced")
    mode, wall, logs = run_grid(root, "threshold", THRESHOLDS, seeds, args)
    print(f"grid {fmt_s(wall)}", file=sys.stderr, flush=True)
    results = collect(root, "threshold", THRESHOLDS, logs)
    total = time.perf_counter() - t0

    n_train = {c: len(train[c]) for c in CLASSES}
    n_test = {c: len(test[c]) for c in CLASSES}
    some = results[THRESHOLDS[0]][0]
    print(f"\n{args.xrays.name}: training {n_train['NORMAL']} NORMAL + "
          f"{n_train['PNEUMONIA']} PNEUMONIA, labelled test {n_test['NORMAL']} NORMAL + "
          f"{n_test['PNEUMONIA']} PNEUMONIA of other patients (--data-seed {args.data_seed}); "
          f"n_val {some['n_val']}; width {args.width}, `fuse: [xception]`, `class_weight: "
          f"balanced`, `group_pattern: {args.pattern}`, other params default. Full `dvc repro` "
          f"{fmt_s(full)} (other processes' cores {other:.2f}); grid: {mode}, {fmt_s(wall)}; "
          f"part total {fmt_s(total)}.\n")
    keys = ("test_sensitivity", "test_specificity", "test_balanced_accuracy")
    print("| threshold | seed | resolved threshold | test sensitivity | test specificity "
          "| test balanced accuracy | val sensitivity | val specificity |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t in THRESHOLDS:
        for r in sorted(results[t], key=lambda r: seeds.index(r["seed"])):
            print(f"| `{t}` | {r['seed']} | {r['threshold']:.3f} | "
                  + " | ".join(ci(r, k) for k in keys)
                  + f" | {r['val_sensitivity']:.3f} | {r['val_specificity']:.3f} |")
    if len(seeds) > 1:
        print(f"\nMean ± sd over seeds {', '.join(map(str, seeds))}:\n")
        print("| threshold | resolved threshold | test sensitivity | test specificity "
              "| test balanced accuracy |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for t in THRESHOLDS:
            rs = results[t]
            print(f"| `{t}` | {mean_sd([r['threshold'] for r in rs])} | "
                  + " | ".join(mean_sd([r[k] for r in rs]) for k in keys) + " |")


def pets(args: argparse.Namespace, work: Path, seeds: list[int]) -> None:
    t0 = time.perf_counter()
    train, test, _ = pick_photos(args.photos, args.train, args.test, 0)

    def put_data(raw: Path) -> None:
        (raw / "train").mkdir(parents=True)
        for src in train:
            shutil.copyfile(src, raw / "train" / src.name)
        for src in test:  # a labelled test set: class folders named exactly as the classes
            (raw / "test" / src.name.split(".")[0]).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, raw / "test" / src.name.split(".")[0] / src.name)

    root, full, other = build(work, args, put_data)
    mode, wall, logs = run_grid(root, "calibrate", CALIBRATE, seeds, args)
    print(f"grid {fmt_s(wall)}", file=sys.stderr, flush=True)
    results = collect(root, "calibrate", CALIBRATE, logs)
    total = time.perf_counter() - t0

    some = results[CALIBRATE[0]][0]
    print(f"\n{args.photos.name}: {len(train)} training photos (half cats, Kaggle names; "
          f"n_val {some['n_val']}), labelled test set of {len(test)} other photos (half cats, "
          f"cat/ and dog/); width {args.width}, `fuse: [xception]`, other params default "
          f"(clip {0.005}). Full `dvc repro` {fmt_s(full)} (other processes' cores "
          f"{other:.2f}); grid: {mode}, {fmt_s(wall)}; part total {fmt_s(total)}.\n")
    cols = ("temperature", "val_loss", "val_ece", "test_loss", "test_ece", "test_accuracy")
    print("| calibrate | seed | " + " | ".join(cols) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in cols) + " |")
    for c in CALIBRATE:
        for r in sorted(results[c], key=lambda r: seeds.index(r["seed"])):
            print(f"| {c} | {r['seed']} | "
                  + " | ".join(f"{r[k]:.4f}" if k in r else "—" for k in cols) + " |")
    if len(seeds) > 1:
        print(f"\nMean ± sd over seeds {', '.join(map(str, seeds))}:\n")
        print("| calibrate | " + " | ".join(cols) + " |")
        print("| --- | " + " | ".join("---:" for _ in cols) + " |")
        for c in CALIBRATE:
            print(f"| {c} | " + " | ".join(mean_sd([r.get(k) for r in results[c]], 4)
                                            for k in cols) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("xray", "pets"), action="append",
                    help="run only this part (repeatable; default both)")
    ap.add_argument("--xrays", type=Path, default=XRAYS, help="NORMAL/ and PNEUMONIA/ folders")
    ap.add_argument("--pattern", default=PATTERN, help="the patient in a file name")
    ap.add_argument("--test-share", type=float, default=0.3, help="of each class's patients")
    ap.add_argument("--keep-normal", type=float, default=1 / 3,
                    help="of the training pool's NORMAL patients")
    ap.add_argument("--data-seed", type=int, default=0, help="for bench_xray's draw")
    ap.add_argument("--photos", type=Path, default=PHOTOS, help="cat.N.jpg and dog.N.jpg")
    ap.add_argument("--train", type=int, default=600, help="training photos (half cats)")
    ap.add_argument("--test", type=int, default=200, help="labelled test photos (half cats)")
    grid_options(ap)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    parts = args.part or ["xray", "pets"]
    for part in parts:
        tmp = None if args.keep else tempfile.TemporaryDirectory(prefix=f"bench-{part}-")
        work = args.keep / part if args.keep else Path(tmp.name)  # type: ignore[union-attr]
        work.mkdir(parents=True, exist_ok=True)
        (xray if part == "xray" else pets)(args, work, seeds)
        if tmp:
            tmp.cleanup()


if __name__ == "__main__":
    main()
