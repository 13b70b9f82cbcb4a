"""Figure: validation log loss of the head on Xception alone, InceptionV3 alone and both (`fuse`).

    python3 -m benchmarks.bench_fuse                       # 1,000 + 20 photos at 299 px: ~10 min
    python3 -m benchmarks.bench_fuse --train 40 --test 6 --width 75 --seeds 2017,1   # a smoke run

Real photos from --photos (never committed): --train Kaggle-named training photos (half cats),
--test others named 1.jpg …, in a fresh git + DVC project that holds this checkout's project
files (as tests/conftest.py's make_project copies them), its params.yaml with `weights:
keras_weights` and --width, and the weights folder --weights (made once with
`bash /work/shared/tools/make_weights_folder.sh python3 DIR`: genuine ImageNet Xception, but a
RANDOMLY INITIALISED InceptionV3, as no offline source of its ImageNet weights exists here; the
InceptionV3 rows describe random features, not ImageNet's). DVC's and git's user-wide settings
are replaced by empty ones, as in the tests.

As the README's Experiments section says: links to the cache once per clone, one timed
`dvc repro` ("full run"), a baseline commit, then one queued grid
`dvc exp run --queue -S 'fuse=…' -S seed=…` run by `dvc queue start -j J` (or, --sequential,
one `dvc exp run` after the other). Every experiment must succeed; the stages each ran (or
restored from the run-cache) are read from its log and checked: a `fuse` other than the
baseline's reruns concat@train, concat@test, train_head and predict, nothing upstream. Metrics
come from `dvc exp show --json`; the feature columns from each experiment's training fused.h5,
found through the dvc.lock of its commit in DVC's cache.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import yaml

from benchmarks.bench_score_new import (
    PHOTOS,
    ROOT,
    dvc,
    fmt_s,
    pick_photos,
    project_files,
    put_numbered,
    sh,
    timed,
)
from benchmarks.machine_load import wait_for_quiet

WEIGHTS = Path("/tmp/bench-score-weights")
LINKS = "reflink,hardlink,symlink"  # README, "One copy on disk"
ALL = [f"{s}@{split}" for s in ("resize", "extract_inception", "extract_xception", "concat")
       for split in ("train", "test")] + ["pick_weights", "train_head", "predict"]
HEAD = ["train_head", "predict"]
CONCAT = ["concat@train", "concat@test"]


def make_project(root: Path, weights: Path, put_data: Callable[[Path], None],
                 **params: object) -> None:
    """A fresh git + DVC project: this checkout's project files, its params.yaml with `params`,
    the data `put_data` writes under data/raw and the weights folder, tracked with `dvc add` as
    the README's data step says, committed. Outputs are linked to the cache (README,
    Experiments: "once per clone"), so queued workspaces copy no tensors."""
    for rel in project_files(ROOT):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, root / rel)
    sh(root, "git", "init", "-q", "-b", "main")
    dvc(root, "init", "-q")
    dvc(root, "config", "--local", "cache.type", LINKS)
    put_data(root / "data/raw")
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    base.update(weights="keras_weights", **params)
    (root / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    shutil.copytree(weights, root / "keras_weights")
    dvc(root, "add", "-q", "data/raw/train", "data/raw/test", "keras_weights")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "project and data")


def stages_in(log: str) -> tuple[list[str], list[str]]:
    """(stages run, stages restored from the run-cache) in DVC's output."""
    return (re.findall(r"Running stage '([^']+)'", log),
            re.findall(r"Stage '([^']+)' is cached - skipping run", log))


def full_run(root: Path, log: Path) -> tuple[float, float]:
    """The one timed `dvc repro`, which must run every stage; committed as the baseline.
    (wall s, other processes' cores during it)."""
    wait_for_quiet(0.9, 60)
    wall, other, output = timed(root, log, sys.executable, "-m", "dvc", "repro")
    ran, restored = stages_in(output)
    if sorted(ran) != sorted(ALL) or restored:
        sys.exit(f"full run: ran {ran}, restored {restored}, not every stage:\n{output}")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "baseline")
    return wall, other


def queue_names(root: Path) -> dict[str, str]:
    """`dvc queue status` as {experiment name: state}."""
    rows = [r.split() for r in dvc(root, "queue", "status").splitlines()]
    return {r[1]: r[-1] for r in rows if len(r) >= 4 and r[0] != "Task"}


def run_queue(root: Path, sets: Sequence[str], jobs: int, timeout: float = 7200
              ) -> tuple[float, dict[str, str]]:
    """Queue the grid `-S sets…`, run it `jobs` at a time; (wall s, {name: log}).
    Waits as tests/test_tracking.py's wait_for_queue does: until none is queued or running and
    the workers have exited by themselves (a `dvc queue stop` after that would leave its stop
    signal to the next `dvc queue start`, DVC 3.67)."""
    before = set(queue_names(root))
    dvc(root, "exp", "run", "--queue", *(a for s in sets for a in ("-S", s)))
    names = sorted(set(queue_names(root)) - before)
    t0 = time.perf_counter()
    dvc(root, "queue", "start", "-j", str(jobs))
    deadline, wall = time.monotonic() + timeout, None
    while True:
        time.sleep(5)  # each `dvc queue status` costs a second of CPU: not too often
        status = dvc(root, "queue", "status")
        states = {r.split()[1]: r.split()[-1] for r in status.splitlines()
                  if len(r.split()) >= 4 and r.split()[1] in names}
        busy = {"Queued", "Running"} & set(states.values())
        if wall is None and len(states) == len(names) and not busy:
            wall = time.perf_counter() - t0  # (not the workers' exit after it)
        if wall is not None and "0 active, 0 idle" in status:
            break
        if time.monotonic() > deadline:
            sys.exit(f"the queue did not finish in {timeout:.0f} s:\n{status}")
    failed = {n: s for n, s in states.items() if s != "Success"}
    logs = {name: dvc(root, "queue", "logs", name) for name in names}
    if failed:
        sys.exit("experiments failed: " + ", ".join(f"{n} ({s})" for n, s in failed.items())
                 + "\n" + "\n".join(f"--- {n}\n{logs[n]}" for n in failed))
    dvc(root, "queue", "remove", "--success")
    return wall, logs


def run_sequential(root: Path, grid: Sequence[dict[str, str]]) -> tuple[float, dict[str, str]]:
    """The same grid as one `dvc exp run -S …` after the other, in the workspace, each from
    the baseline; each named exp-<i> so its log can be matched to `dvc exp show`.
    (wall s, {name: log})."""
    def to_baseline() -> None:  # its params, dvc.lock, metrics (git) and outputs (DVC)
        sh(root, "git", "reset", "-q", "--hard")
        dvc(root, "checkout", "-q")

    t0, logs = time.perf_counter(), {}
    for i, point in enumerate(grid):
        # Each from the baseline, as a queued one starts: otherwise an experiment would find
        # the previous one's outputs in the workspace and rerun less.
        to_baseline()
        name = f"exp-{i:02d}"
        logs[name] = dvc(root, "exp", "run", "-n", name,
                         *(a for k, v in point.items() for a in ("-S", f"{k}={v}")))
    to_baseline()
    return time.perf_counter() - t0, logs


def experiments(root: Path) -> dict[str, dict[str, Any]]:
    """`dvc exp show --json` by experiment name ("baseline": the commit they are based on):
    {"rev", "params" (params.yaml), "metrics" (every metrics file's data merged)}."""
    def flat(data: dict[str, Any], rev: str) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        for m in (data.get("metrics") or {}).values():
            metrics.update(m.get("data") or {})
        return {"rev": rev, "params": data["params"]["params.yaml"]["data"], "metrics": metrics}

    exps = {}
    for row in json.loads(dvc(root, "exp", "show", "--json")):
        if row["rev"] == "workspace":
            continue
        exps["baseline"] = flat(row["data"], row["rev"])
        for exp in row.get("experiments") or []:
            rev = exp["revs"][0]
            exps[exp["name"]] = flat(rev["data"], rev["rev"])
    return exps


def cached_out(root: Path, rev: str, path: str) -> Path:
    """The file `path` (a stage output, or a file inside an output folder) as commit `rev`
    recorded it: its md5 from that commit's dvc.lock, the bytes in DVC's cache (files/md5/).
    Reads an experiment's outputs without `dvc exp apply` changing the workspace."""
    lock = yaml.safe_load(sh(root, "git", "show", f"{rev}:dvc.lock"))
    outs = {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}
    cache = root / ".dvc/cache/files/md5"
    if path in outs:
        return cache / outs[path][:2] / outs[path][2:]
    folder = next(f for f in outs if path.startswith(f + "/"))
    manifest = json.loads((cache / outs[folder][:2] / outs[folder][2:]).read_text())
    md5 = next(e["md5"] for e in manifest if e["relpath"] == path[len(folder) + 1:])
    return cache / md5[:2] / md5[2:]


def check_ran(name: str, log: str, expected: Sequence[str]) -> tuple[list[str], list[str]]:
    """An experiment's stages, run or restored from the run-cache, must be `expected`."""
    ran, restored = stages_in(log)
    if sorted(ran + restored) != sorted(expected):
        sys.exit(f"{name} ran {ran} and restored {restored}, not {list(expected)}:\n{log}")
    return ran, restored


def mean_sd(values: Sequence[float | None], digits: int = 3) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def fuse_text(fuse: Sequence[str]) -> str:
    # As -S takes it: a YAML/Hydra flow list, no spaces.
    return "[" + ",".join(fuse) + "]"


def grid_options(ap: argparse.ArgumentParser) -> None:
    """The options every real-data figure's grid takes (this one's and bench_xray's)."""
    ap.add_argument("--weights", type=Path, default=WEIGHTS,
                    help="folder of Keras notop weight files (make_weights_folder.sh)")
    ap.add_argument("--width", type=int, default=299)
    ap.add_argument("--seeds", default="2017,1,2")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--sequential", action="store_true",
                    help="one `dvc exp run` after the other instead of the queue")
    ap.add_argument("--keep", type=Path, help="build the project here and keep it")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=Path, default=PHOTOS, help="cat.N.jpg and dog.N.jpg")
    ap.add_argument("--train", type=int, default=1000, help="training photos (half cats)")
    ap.add_argument("--test", type=int, default=20, help="test photos, named 1.jpg …")
    grid_options(ap)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    fuses = [["xception"], ["inception_v3"], ["inception_v3", "xception"]]

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="bench-fuse-")
    work = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    root = work / "p"
    t_total = time.perf_counter()
    train, test, _ = pick_photos(args.photos, args.train, args.test, 0)

    def put_data(raw: Path) -> None:
        (raw / "train").mkdir(parents=True)
        for src in train:
            shutil.copyfile(src, raw / "train" / src.name)
        put_numbered(test, raw / "test")

    make_project(root, args.weights, put_data, width=args.width)
    baseline_fuse = yaml.safe_load((root / "params.yaml").read_text())["fuse"]
    print(f"project {root}: {len(train)} training + {len(test)} test photos, width "
          f"{args.width}, fuse {baseline_fuse}; full run …", file=sys.stderr, flush=True)
    full, other = full_run(root, work / "repro.log")
    print(f"full run {fmt_s(full)} (other cores {other:.2f})", file=sys.stderr, flush=True)

    grid = [{"fuse": fuse_text(f), "seed": str(s)} for f in fuses for s in seeds]
    if args.sequential:
        mode = f"sequential `dvc exp run`s ({len(grid)})"
        wall, logs = run_sequential(root, grid)
    else:
        mode = f"one queued grid of {len(grid)}, `dvc queue start -j {args.jobs}`"
        wall, logs = run_queue(root, ["fuse=" + ",".join(fuse_text(f) for f in fuses),
                                      "seed=" + ",".join(map(str, seeds))], args.jobs)
    print(f"grid {fmt_s(wall)}", file=sys.stderr, flush=True)
    exps = experiments(root)

    # Every experiment: what it ran, checked against what its params changed.
    results: dict[tuple[str, ...], list[dict[str, Any]]] = {tuple(f): [] for f in fuses}
    ran_rows = []
    for name, log in logs.items():
        exp = exps[name]
        fuse, seed = exp["params"]["fuse"], exp["params"]["seed"]
        expected = (CONCAT if fuse != baseline_fuse else []) + (
            HEAD if (fuse, seed) != (baseline_fuse, exps["baseline"]["params"]["seed"]) else [])
        ran, restored = check_ran(name, log, expected)
        with h5py.File(cached_out(root, exp["rev"], "data/features/train/fused.h5"), "r") as f:
            columns = f["features"].shape[1]
        results[tuple(fuse)].append({**exp["metrics"], "columns": columns})
        ran_rows.append((fuse_text(fuse), seed, ", ".join(ran) or "none",
                         ", ".join(restored) or "—"))
    total = time.perf_counter() - t_total

    print(f"\n{len(train)} training photos ({args.photos.name}, half cats, Kaggle names; "
          f"val_split 0.2 → {exps['baseline']['metrics']['n_val']} validation), {len(test)} "
          f"test photos, width {args.width}, `weights: keras_weights` (Xception: ImageNet; "
          f"InceptionV3: RANDOM init, no offline ImageNet weights); other params default. "
          f"Full `dvc repro` {fmt_s(full)} (other processes' cores {other:.2f}); grid: {mode}, "
          f"{fmt_s(wall)}; benchmark total {fmt_s(total)}. Mean ± sd over seeds "
          f"{', '.join(map(str, seeds))}.\n")
    print("| fuse | feature columns | val_loss | val_accuracy | val_auc |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for fuse in fuses:
        rs = results[tuple(fuse)]
        cols = sorted({r["columns"] for r in rs})
        print(f"| `{fuse_text(fuse)}` | {', '.join(map(str, cols))} "
              f"| {mean_sd([r['val_loss'] for r in rs], 4)} "
              f"| {mean_sd([r['val_accuracy'] for r in rs])} "
              f"| {mean_sd([r['val_auc'] for r in rs], 4)} |")
    print("\n| fuse | seed | stages run | restored from the run-cache |")
    print("| --- | ---: | --- | --- |")
    for row in sorted(ran_rows, key=lambda r: (r[0], r[1])):
        print("| " + " | ".join(map(str, row)) + " |")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
