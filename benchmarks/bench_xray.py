"""Figure: chest X-rays, with and without `class_weight: balanced` and `group_pattern`.

    python3 -m benchmarks.bench_xray                     # xray-dev, 299 px, 3 seeds: ~7 min
    python3 -m benchmarks.bench_xray --seeds 2017 --width 75   # a smoke run

Real images from --xrays (`/work/shared/data/xray-dev`: 200 NORMAL + 200 PNEUMONIA pediatric
chest X-rays, 224×224 JPEG, development only, never committed), whose file names carry the
patient. The set is balanced; real pneumonia sets are not (about 1 NORMAL : 3 PNEUMONIA), so:
1. split by PATIENT (--pattern names it) into a training pool and a labelled test set of other
   patients: --test-share of each class's patients, drawn with --data-seed, all their images
   (the test set keeps the source's class mix);
2. keep only --keep-normal of the training pool's NORMAL patients (again by patient, seeded).
Both draws are printed. Class folders NORMAL/ and PNEUMONIA/ hold train and test.

The project is built and run as bench_fuse.py does it (a fresh git + DVC project with this
checkout's files, DVC's and git's user-wide settings replaced, links to the cache, one timed
`dvc repro`, a baseline commit), with `weights: keras_weights` from --weights and `fuse:
[xception]`: the weights folder holds genuine ImageNet Xception weights but a randomly
initialised InceptionV3 (no offline source of its ImageNet weights), so the head trains on
Xception's features only. (concat's deps name both networks' features, so InceptionV3 is still
extracted in the full run.) Then one queued grid `dvc exp run --queue -S class_weight=none,balanced
-S group_pattern='',<pattern> -S seed=…`, `dvc queue start -j J` (or --sequential); each
experiment must run train_head and predict only.

Read per experiment: metrics.json and reports/predict.json (`dvc exp show --json`) and
reports/val/predictions.csv (from DVC's cache, through the dvc.lock of the experiment's commit):
its rows are the validation images, every other training image was on the training side, so
"val images with the same patient in training" is counted from it with --pattern, whatever the
experiment's group_pattern was.
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.bench_fuse import (
    cached_out,
    check_ran,
    experiments,
    full_run,
    grid_options,
    make_project,
    mean_sd,
    run_queue,
    run_sequential,
)
from benchmarks.bench_score_new import fmt_s

XRAYS = Path("/work/shared/data/xray-dev")
# The set's names: person<N>_bacteria_<M>.jpeg / person<N>_virus_<M>.jpeg, IM-<P>-<S>[-<T>].jpeg,
# NORMAL2-IM-<P>-<S>[-<T>].jpeg. Anchored: unanchored, `IM-\d+` would find IM-<P> inside a
# NORMAL2 name and merge two different patients.
PATTERN = r"^(person\d+|IM-\d+|NORMAL2-IM-\d+)"
CLASSES = ("NORMAL", "PNEUMONIA")  # sorted: NORMAL = 0, PNEUMONIA = 1 (sensitivity's class)
HEAD = ["train_head", "predict"]


def quoted(value: str) -> str:
    """`value` for -S: Hydra's override grammar (DVC's) reads '' as the empty string and keeps
    a single-quoted regex's backslashes, brackets and bars as they are (not repr: it doubles
    the backslashes)."""
    if "'" in value:
        sys.exit(f"a quote in {value!r}: not supported here")
    return f"'{value}'"


def patient(name: str, rx: re.Pattern[str]) -> str:
    m = rx.search(name)
    if m is None:
        sys.exit(f"--pattern {rx.pattern!r} does not match {name}")
    return m.group(1)


def draw(xrays: Path, rx: re.Pattern[str], test_share: float, keep_normal: float, seed: int
         ) -> tuple[dict[str, list[Path]], dict[str, list[Path]], str]:
    """(train, test) images by class, split by patient, and a description of the draw."""
    by_patient: dict[str, dict[str, list[Path]]] = {c: defaultdict(list) for c in CLASSES}
    owner: dict[str, set[str]] = defaultdict(set)
    for c in CLASSES:
        for p in sorted((xrays / c).iterdir()):
            by_patient[c][patient(p.name, rx)].append(p)
            owner[patient(p.name, rx)].add(c)
    if mixed := [p for p, cs in owner.items() if len(cs) > 1]:
        sys.exit(f"patients in both classes, a per-class draw would split them: {mixed}")
    rng = random.Random(seed)
    train, test, lines = {}, {}, []
    for c in CLASSES:
        patients = sorted(by_patient[c])
        rng.shuffle(patients)
        n_test = round(len(patients) * test_share)
        pool = patients[n_test:]
        # Fewer NORMAL patients in training: the imbalance of real pneumonia sets.
        kept = pool[:round(len(pool) * keep_normal)] if c == "NORMAL" else pool
        test[c] = sorted(p for pt in patients[:n_test] for p in by_patient[c][pt])
        train[c] = sorted(p for pt in kept for p in by_patient[c][pt])
        lines.append(f"{c}: {len(patients)} patients / {sum(map(len, by_patient[c].values()))} "
                     f"images → test {n_test} patients / {len(test[c])} images; training pool "
                     f"{len(pool)} patients / {sum(len(by_patient[c][pt]) for pt in pool)} "
                     f"images, kept {len(kept)} patients / {len(train[c])} images")
    return train, test, "\n".join(lines)


def validation_side(root: Path, rev: str, train_names: list[str], rx: re.Pattern[str]
                    ) -> dict[str, Any]:
    """What an experiment validated on, from its reports/val/predictions.csv (the validation
    rows; the training side = every other training image): `leak`, the share of validation
    images whose patient has another image on the training side; `n_val`; `patients`, the
    validation patients per class."""
    with cached_out(root, rev, "reports/val/predictions.csv").open() as f:
        val = [(row["id"], row["true_class"]) for row in csv.DictReader(f)]
    names = {n for n, _ in val}
    if not names <= set(train_names):
        sys.exit(f"{rev}: validation rows that are not training images: "
                 f"{sorted(names - set(train_names))[:5]}")
    in_train = Counter(patient(n.split("/", 1)[1], rx) for n in set(train_names) - names)
    leaked = sum(1 for n, _ in val if in_train[patient(n.split("/", 1)[1], rx)] > 0)
    patients = {c: len({patient(n.split("/", 1)[1], rx) for n, t in val if t == c})
                for c in CLASSES}
    return {"leak": leaked / len(val), "n_val": len(val), "patients": patients}


def copier(train: dict[str, list[Path]], test: dict[str, list[Path]]
           ) -> Callable[[Path], None]:
    """What make_project's `put_data` does with a `draw`: the drawn images copied into
    raw/{train,test}/<class>/."""
    def put_data(raw: Path) -> None:
        for split, images in (("train", train), ("test", test)):
            for c, paths in images.items():
                (raw / split / c).mkdir(parents=True)
                for p in paths:
                    shutil.copyfile(p, raw / split / c / p.name)

    return put_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--xrays", type=Path, default=XRAYS, help="NORMAL/ and PNEUMONIA/ folders")
    ap.add_argument("--pattern", default=PATTERN, help="the patient in a file name")
    ap.add_argument("--test-share", type=float, default=0.3, help="of each class's patients")
    ap.add_argument("--keep-normal", type=float, default=1 / 3,
                    help="of the training pool's NORMAL patients")
    ap.add_argument("--data-seed", type=int, default=0, help="for the two draws")
    grid_options(ap)
    args = ap.parse_args()
    rx = re.compile(args.pattern)
    seeds = [int(s) for s in args.seeds.split(",")]
    weightings, patterns = ["none", "balanced"], ["", args.pattern]

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="bench-xray-")
    work = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    root = work / "p"
    t_total = time.perf_counter()
    train, test, drawn = draw(args.xrays, rx, args.test_share, args.keep_normal,
                              args.data_seed)
    print(drawn, file=sys.stderr, flush=True)
    train_names = [f"{c}/{p.name}" for c in CLASSES for p in train[c]]

    put_data = copier(train, test)

    make_project(root, args.weights, put_data, width=args.width, fuse=["xception"])
    full, other = full_run(root, work / "repro.log")
    print(f"full run {fmt_s(full)} (other cores {other:.2f})", file=sys.stderr, flush=True)

    grid = [{"class_weight": w, "group_pattern": quoted(g), "seed": str(s)}
            for w in weightings for g in patterns for s in seeds]
    if args.sequential:
        mode = f"sequential `dvc exp run`s ({len(grid)})"
        wall, logs = run_sequential(root, grid)
    else:
        mode = f"one queued grid of {len(grid)}, `dvc queue start -j {args.jobs}`"
        # Quoted for Hydra's override grammar, which DVC's -S uses: '' is the empty string.
        wall, logs = run_queue(root, ["class_weight=" + ",".join(weightings),
                                      "group_pattern=" + ",".join(map(quoted, patterns)),
                                      "seed=" + ",".join(map(str, seeds))], args.jobs)
    print(f"grid {fmt_s(wall)}", file=sys.stderr, flush=True)
    exps = experiments(root)
    base = exps["baseline"]["params"]

    results: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for name, log in logs.items():
        exp = exps[name]
        p = exp["params"]
        key = (p["class_weight"], p["group_pattern"])
        if key not in {(w, g) for w in weightings for g in patterns}:
            sys.exit(f"{name}: params {key} are not the grid's (how -S passed them on?)")
        same = all(p[k] == base[k] for k in ("class_weight", "group_pattern", "seed"))
        check_ran(name, log, [] if same else HEAD)
        side = validation_side(root, exp["rev"], train_names, rx)
        if side["n_val"] != exp["metrics"]["n_val"]:
            sys.exit(f"{name}: {side['n_val']} rows in reports/val/predictions.csv, "
                     f"n_val {exp['metrics']['n_val']}")
        results[key].append({**exp["metrics"], **side, "seed": p["seed"]})
    total = time.perf_counter() - t_total

    n_train = {c: len(train[c]) for c in CLASSES}
    n_test = {c: len(test[c]) for c in CLASSES}
    print(f"\n{args.xrays.name}: training {n_train['NORMAL']} NORMAL + {n_train['PNEUMONIA']} "
          f"PNEUMONIA, labelled test {n_test['NORMAL']} NORMAL + {n_test['PNEUMONIA']} "
          f"PNEUMONIA of other patients (drawn by patient, --data-seed {args.data_seed}); "
          f"width {args.width}, `fuse: [xception]` (ImageNet weights), other params default "
          f"(val_split 0.2). Full `dvc repro` {fmt_s(full)} (other processes' cores "
          f"{other:.2f}); grid: {mode}, {fmt_s(wall)}; benchmark total {fmt_s(total)}. "
          f"Mean ± sd over seeds {', '.join(map(str, seeds))} (the seed draws the validation "
          f"split too).\n\nPatients: `{args.pattern}`\n{drawn}\n")

    def label(g: str) -> str:
        return "patient" if g else '`""`'

    print("| class_weight | group_pattern | val_balanced_accuracy | val_auc "
          "| test_balanced_accuracy | test_auc | test_specificity | test_sensitivity |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for w in weightings:
        for g in patterns:
            rs = results[(w, g)]
            print(f"| {w} | {label(g)} | "
                  + " | ".join(mean_sd([r[k] for r in rs]) for k in (
                      "val_balanced_accuracy", "val_auc", "test_balanced_accuracy", "test_auc",
                      "test_specificity", "test_sensitivity")) + " |")

    print("\n| group_pattern | val images with another image of their patient in training "
          "| n_train / n_val | n_groups_train / n_groups_val | val patients NORMAL / PNEUMONIA "
          "| val − test balanced accuracy "
          "| val − test AUC | val_sensitivity | val_specificity |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for g in patterns:
        rs = [r for w in weightings for r in results[(w, g)]]
        sizes = sorted({(r["n_train"], r["n_val"]) for r in rs})
        groups = sorted({(r["n_groups_train"], r["n_groups_val"]) for r in rs})
        val_patients = sorted({(r["patients"]["NORMAL"], r["patients"]["PNEUMONIA"])
                               for r in rs})
        gap_ba = [r["val_balanced_accuracy"] - r["test_balanced_accuracy"] for r in rs]
        print(f"| {label(g)} | {mean_sd([100 * r['leak'] for r in rs], 1)} % "
              f"| {', '.join(f'{a} / {b}' for a, b in sizes)} "
              f"| {', '.join(f'{a} / {b}' for a, b in groups)} "
              f"| {', '.join(f'{a} / {b}' for a, b in val_patients)} "
              f"| {mean_sd(gap_ba)} "
              f"| {mean_sd([r['val_auc'] - r['test_auc'] for r in rs])} "
              f"| {mean_sd([r['val_sensitivity'] for r in rs])} "
              f"| {mean_sd([r['val_specificity'] for r in rs])} |")

    print("\nPer experiment:\n")
    print("| class_weight | group_pattern | seed | n_val | val patients NORMAL / PNEUMONIA "
          "| same-patient val share | val_loss | val_bal_acc | val_auc | test_loss | test_bal_acc "
          "| test_auc | test_spec | test_sens |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
          "| ---: | ---: |")
    for w in weightings:
        for g in patterns:
            for r in sorted(results[(w, g)], key=lambda r: seeds.index(r["seed"])):
                print(f"| {w} | {label(g)} | {r['seed']} | {r['n_val']} "
                      f"| {r['patients']['NORMAL']} / {r['patients']['PNEUMONIA']} "
                      f"| {100 * r['leak']:.0f} % | "
                      + " | ".join(f"{r[k]:.3f}" for k in (
                          "val_loss", "val_balanced_accuracy", "val_auc", "test_loss",
                          "test_balanced_accuracy", "test_auc", "test_specificity",
                          "test_sensitivity")) + " |")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
