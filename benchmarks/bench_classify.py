"""Benchmark: scoring new images with the classify tool against the DVC route, on one host.

    python3 -m benchmarks.bench_classify --weights DIR [--runs 3]

DIR is a `weights: keras_weights` folder, made once with
`bash /work/shared/tools/make_weights_folder.sh python3 DIR` (genuine ImageNet Xception, random
InceptionV3; the timing does not depend on which weights).

The project is bench_score_new's: this checkout's files, real photos (300 to train on, 50 test
ones, 299 px), one `dvc repro`, committed, then 20 new photos in data/raw/new. Each figure is a
whole process from its start to its output, cold (a new process every time), best of --runs:
- `python -m stages.classify data/raw/new/1.jpg`: one new image;
- `python -m stages.classify data/raw/new --out new.csv`: the 20;
- `dvc exp run -S test_data=data/raw/new`: the 20 through the test side of the pipeline, on a
  fresh copy without the run-cache each time (bench_score_new.score_new).
The classify tool's probabilities of the 20 are checked against the DVC route's pred.csv (within
its clip, to 1e-5), so both did the same work.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
from pathlib import Path
from statistics import median

from benchmarks import bench_score_new as score
from benchmarks.machine_load import wait_for_quiet


def classify(root: Path, log: Path, args: argparse.Namespace, *paths: str
             ) -> tuple[float, float]:
    wait_for_quiet(args.min_idle, args.max_wait)
    wall, other, _ = score.timed(root, log, sys.executable, "-m", "stages.classify", *paths)
    return wall, other


def check_same(root: Path, dvc_copy: Path, n: int, clip: float = 0.005) -> None:
    """The classify tool's p(dog) of the new photos is the DVC route's, before its clip."""
    with (root / "new.csv").open() as f:
        tool = {Path(r["path"]).name: float(r["dog"]) for r in csv.DictReader(f)}
    with (dvc_copy / "pred.csv").open() as f:
        route = {f"{r['id']}.jpg": float(r["label"]) for r in csv.DictReader(f)}
    if len(tool) != n or set(tool) != set(route):
        sys.exit(f"classify scored {sorted(tool)}, the DVC route {sorted(route)}")
    worst = max(abs(min(max(tool[k], clip), 1 - clip) - route[k]) for k in tool)
    if worst > 1e-5:  # pred.csv keeps 6 decimals
        sys.exit(f"classify and the DVC route differ by {worst:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, required=True,
                    help="folder of Keras notop weight files (make_weights_folder.sh)")
    ap.add_argument("--photos", type=Path, default=score.PHOTOS)
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--test", type=int, default=50)
    ap.add_argument("--new", type=int, default=20)
    ap.add_argument("--width", type=int, default=299)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--min-idle", type=float, default=0.9)
    ap.add_argument("--max-wait", type=float, default=120)
    args = ap.parse_args()
    checkout = score.sh(score.ROOT, "git", "describe", "--always", "--dirty").strip()

    with tempfile.TemporaryDirectory(prefix="bench-classify-") as tmp:
        base = Path(tmp) / "base"
        score.baseline(base, score.ROOT, args)
        times: dict[str, list[tuple[float, float]]] = {"one": [], "all": [], "dvc": []}
        for i in range(args.runs):  # interleaved: a drift of the host touches all three
            times["one"].append(classify(base, Path(tmp) / "one.log", args,
                                         "data/raw/new/1.jpg"))
            times["all"].append(classify(base, Path(tmp) / "all.log", args, "data/raw/new",
                                         "--out", "new.csv"))
            dest = Path(tmp) / f"run{i}"
            r = score.score_new(base, dest, args)
            times["dvc"].append((r.wall, r.other))
            if i == 0:
                check_same(base, dest, args.new)
            shutil.rmtree(dest)
            print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1][0]:.1f} s" for k, v in
                                               times.items()), file=sys.stderr, flush=True)

    def cell(key: str) -> str:
        walls = sorted(w for w, _ in times[key])
        return f"{walls[0]:.1f} s | {median(walls):.1f} s"

    others = ", ".join(f"{o:.2f}" for v in times.values() for _, o in v)
    print(f"\n{checkout}: {args.train} training + {args.test} test photos at {args.width} px, "
          f"then {args.new} new ones; each a whole cold process, best / median of {args.runs}; "
          f"{os.cpu_count()} CPUs; other processes' cores during the runs: {others}\n")
    print("| what | images | best | median |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| `python3 -m stages.classify data/raw/new/1.jpg` | 1 | {cell('one')} |")
    print(f"| `python3 -m stages.classify data/raw/new --out new.csv` | {args.new} | "
          f"{cell('all')} |")
    print(f"| `dvc exp run -S test_data=data/raw/new` (5 stages) | {args.new} | {cell('dvc')} |")


if __name__ == "__main__":
    main()
