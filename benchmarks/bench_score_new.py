"""Benchmark: scoring new images after a finished run, as a user does it.

    python3 -m benchmarks.bench_score_new --weights DIR                     # this checkout
    python3 -m benchmarks.bench_score_new --repo /work/old-main --weights DIR --runs 3

DIR is a `weights: keras_weights` folder, made once with
`bash /work/shared/tools/make_weights_folder.sh python3 DIR` (genuine ImageNet Xception, random
InceptionV3; the timing does not depend on which weights).

One checkout of the project (`--repo`, default the one this script is in) is measured, so the
same script times today's layout and a later one. A fresh git + DVC project holds the checkout's
project files (as tests/conftest.py's make_project copies them) and its params.yaml with
`weights: keras_weights`; real photos from --photos (never committed): --train Kaggle-named
training photos (half cats), --test photos named 1.jpg … in data/raw/test; tracked with
`dvc add` as the README's data step says, one timed `dvc repro` ("full run"), a baseline commit.
Then --new other photos, named 1.jpg …, go to data/raw/new (`dvc add`, commit) and, on a fresh
copy of that project each time (its run-cache removed, so nothing is restored instead of run),
`dvc exp run -S test_data=data/raw/new` is timed as a whole process, --runs times.

What each run did is read, not assumed: the stages from DVC's "Running stage '…'" lines (a stage
restored from the run-cache stops the benchmark), the work from the row counts of the HDF5 files
those stages wrote (their outs in dvc.lock; see WORK), and pred.csv must hold the --new rows.
Before each timed run the benchmark waits (up to --max-wait s) for idle CPUs; the table's note
gives the cores other processes used during each run. The host is shared and drifts: quote
best-of-N and comparisons made in one session.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import h5py
import yaml

from benchmarks.machine_load import cpu_ticks, wait_for_quiet

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = Path("/work/shared/data/pets-web")
# tests/conftest.py's list, used when a checkout has none to read.
PROJECT_FILES = ("stages", "dvc.yaml", "data", ".gitignore", ".dvcignore", "requirements.txt",
                 "models/.gitignore", "reports/.gitignore")

# What a stage's output counts as, by its path in dvc.lock: (column, path pattern, the datasets
# whose rows are images). One table for both layouts:
#   today: `resize` writes data/resized/train.h5 + test.h5 (`images`); `extract_<net>` writes
#          data/features/<net>.h5 with `train` and `test`;
#   split: `resize@<split>` writes data/resized/<split>.h5 (`images`); `extract_<net>@<split>`
#          writes data/features/<split>/<net>.h5 with `features`.
# fused.h5 (concat) repeats rows already extracted, so it counts as nothing.
WORK = (
    ("resized", re.compile(r"data/resized/[^/]+\.h5"), ("images",)),
    ("extracted", re.compile(r"data/features/(?:[^/]+/)?(?!fused\.h5$)[^/]+\.h5"),
     ("train", "test", "features")),
)
MODEL = re.compile(r"models/.+")  # a stage that writes one trained the head


def env() -> dict[str, str]:
    # The stages run `python3` from PATH: this interpreter's, its venv active or not. DVC's
    # user-wide config (a remote, cache.type) would change what is timed: none, as in the tests.
    home = Path(tempfile.mkdtemp(prefix="bench-score-cfg-"))
    atexit.register(shutil.rmtree, home, True)
    for d in ("dvc-global", "dvc-system"):
        (home / d).mkdir()
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GIT_"))},
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            "DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": "",
            "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc-global"),
            "DVC_SYSTEM_CONFIG_DIR": str(home / "dvc-system"),
            "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@b",
            "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@b"}


ENV = env()


def sh(cwd: Path, *args: str) -> str:
    p = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=ENV)
    if p.returncode:
        sys.exit(f"{' '.join(args)} (in {cwd}) failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout + p.stderr


def dvc(cwd: Path, *args: str) -> str:
    return sh(cwd, sys.executable, "-m", "dvc", *args)


@dataclass
class Run:
    wall: float
    other: float  # cores other processes used during the run
    stages: list[str]
    work: dict[str, int]
    head: bool
    pred_rows: int


def timed(cwd: Path, log: Path, *args: str) -> tuple[float, float, str]:
    """Run a command as one process: (wall s, other processes' cores, its output)."""
    busy0, t0 = cpu_ticks()[0], time.perf_counter()
    with log.open("w") as out:
        p = subprocess.Popen(args, cwd=cwd, env=ENV, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)  # includes the stages DVC waited for
    wall, busy = time.perf_counter() - t0, cpu_ticks()[0] - busy0
    text = log.read_text()
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"{' '.join(args)} (in {cwd}) failed:\n{text}")
    return wall, max(0.0, busy - usage.ru_utime - usage.ru_stime) / wall, text


def project_files(repo: Path) -> list[str]:
    """The files make_project copies from `repo`: git's files under the checkout's own
    PROJECT_FILES (read from its tests/conftest.py, so a new layout's list is used) and its
    uncommitted stage modules."""
    names = PROJECT_FILES
    conftest = repo / "tests/conftest.py"
    if conftest.exists():
        for node in ast.parse(conftest.read_text()).body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and getattr(node.targets[0], "id", None) == "PROJECT_FILES"):
                names = ast.literal_eval(node.value)
    files = (sh(repo, "git", "ls-files", "--", *names).splitlines()
             + sh(repo, "git", "ls-files", "-o", "--exclude-standard", "--",
                  "stages/*.py").splitlines())
    return sorted(f for f in set(files) if (repo / f).is_file())


def pick_photos(photos: Path, n_train: int, n_test: int, n_new: int
                ) -> tuple[list[Path], list[Path], list[Path]]:
    """Disjoint training, test and new photos, half cats and half dogs each, by id order."""
    by_class = {c: sorted(photos.glob(f"{c}.*.jpg"), key=lambda p: int(p.name.split(".")[1]))
                for c in ("cat", "dog")}
    taken, out = 0, []
    for n in (n_train, n_test, n_new):
        half = n // 2
        out.append(by_class["cat"][taken:taken + n - half] + by_class["dog"][taken:taken + half])
        taken += n - half
    if any(len(o) != n for o, n in zip(out, (n_train, n_test, n_new), strict=True)):
        sys.exit(f"{photos} holds too few cat.N.jpg / dog.N.jpg photos")
    return out[0], out[1], out[2]


def put_numbered(photos: list[Path], folder: Path) -> None:
    # Numeric ids, the Kaggle test naming, which every layout of the pipeline accepts.
    folder.mkdir(parents=True)
    for i, src in enumerate(photos, 1):
        shutil.copyfile(src, folder / f"{i}.jpg")


def rows(path: Path, datasets: tuple[str, ...]) -> int:
    with h5py.File(path, "r") as f:
        return sum(f[d].shape[0] for d in datasets if d in f)


def work_done(root: Path, stages: list[str]) -> tuple[dict[str, int], bool]:
    """Images each WORK column counts in the outputs of the stages that ran, and whether one
    of them trained the head."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    work, head = {name: 0 for name, _, _ in WORK}, False
    for stage in stages:
        for out in lock[stage.rsplit(":", 1)[-1]].get("outs", []):
            head |= bool(MODEL.fullmatch(out["path"]))
            for name, pattern, datasets in WORK:
                if pattern.fullmatch(out["path"]):
                    work[name] += rows(root / out["path"], datasets)
    return work, head


def what_ran(root: Path, output: str) -> tuple[list[str], dict[str, int], bool, int]:
    if restored := re.findall(r"Stage '([^']+)' is cached - skipping run", output):
        sys.exit(f"{root}: restored from the run-cache instead of run: {restored}")
    stages = re.findall(r"Running stage '([^']+)'", output)
    work, head = work_done(root, stages)
    with (root / "pred.csv").open() as f:
        pred_rows = sum(1 for _ in csv.reader(f)) - 1
    return stages, work, head, pred_rows


def baseline(root: Path, repo: Path, args: argparse.Namespace) -> Run:
    """The project after the user's first finished run, committed, with the new photos added."""
    for rel in project_files(repo):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, root / rel)
    sh(root, "git", "init", "-q", "-b", "main")
    dvc(root, "init", "-q")
    train, test, new = pick_photos(args.photos, args.train, args.test, args.new)
    (root / "data/raw/train").mkdir(parents=True)
    for src in train:
        shutil.copyfile(src, root / "data/raw/train" / src.name)
    put_numbered(test, root / "data/raw/test")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params.update(weights="keras_weights", width=args.width)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(args.weights, root / "keras_weights")
    dvc(root, "add", "-q", "data/raw/train", "data/raw/test", "keras_weights")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "project and data")

    wait_for_quiet(args.min_idle, args.max_wait)
    wall, other, output = timed(root, root.parent / "repro.log", sys.executable, "-m", "dvc",
                                "repro")
    stages, work, head, pred_rows = what_ran(root, output)
    if pred_rows != args.test:
        sys.exit(f"full run: pred.csv has {pred_rows} rows, not {args.test}")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "baseline")

    put_numbered(new, root / "data/raw/new")
    dvc(root, "add", "-q", "data/raw/new")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "new photos")
    return Run(wall, other, stages, work, head, pred_rows)


def score_new(base: Path, dest: Path, args: argparse.Namespace) -> Run:
    """One timed `dvc exp run -S test_data=data/raw/new` on a fresh copy of the baseline."""
    # .dvc/tmp holds the source's state database (keyed by inode, useless here) and locks.
    shutil.copytree(base, dest, symlinks=True,
                    ignore=lambda d, _: ["tmp"] if Path(d).name == ".dvc" else [])
    # Without its run-cache the copy runs its stages, as the first try of a user's would.
    shutil.rmtree(dest / ".dvc/cache/runs", ignore_errors=True)
    # A user's workspace has its files hashed already; the copy's new inodes would make the
    # timed run rehash them all, so that happens here, untimed.
    dvc(dest, "status")
    wait_for_quiet(args.min_idle, args.max_wait)
    wall, other, output = timed(dest, dest.parent / f"{dest.name}.log", sys.executable, "-m",
                                "dvc", "exp", "run", "-S", "test_data=data/raw/new")
    stages, work, head, pred_rows = what_ran(dest, output)
    if not stages:
        sys.exit(f"{dest}: `dvc exp run` ran no stage:\n{output}")
    if pred_rows != args.new:
        sys.exit(f"{dest}: pred.csv has {pred_rows} rows, not the {args.new} new images")
    return Run(wall, other, stages, work, head, pred_rows)


def fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{int(s // 60)} min {s % 60:.0f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=ROOT, help="the checkout to measure")
    ap.add_argument("--weights", type=Path, required=True,
                    help="folder of Keras notop weight files (make_weights_folder.sh)")
    ap.add_argument("--photos", type=Path, default=PHOTOS, help="cat.N.jpg and dog.N.jpg")
    ap.add_argument("--train", type=int, default=300, help="training photos (half cats)")
    ap.add_argument("--test", type=int, default=50)
    ap.add_argument("--new", type=int, default=20, help="new photos to score")
    ap.add_argument("--width", type=int, default=299)
    ap.add_argument("--runs", type=int, default=3, help="timed runs of the new images")
    ap.add_argument("--min-idle", type=float, default=0.9,
                    help="before each timed run, wait until this share of the CPUs is idle")
    ap.add_argument("--max-wait", type=float, default=120, help="… but at most this many s")
    args = ap.parse_args()
    repo = args.repo.resolve()
    checkout = sh(repo, "git", "describe", "--always", "--dirty").strip()

    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        t0 = time.perf_counter()
        full = baseline(Path(tmp) / "base", repo, args)
        print(f"full run: {fmt_s(full.wall)}, other cores {full.other:.2f}, ran "
              f"{', '.join(full.stages)}; {full.work}", file=sys.stderr, flush=True)
        runs = []
        for i in range(args.runs):
            dest = Path(tmp) / f"run{i}"
            runs.append(score_new(Path(tmp) / "base", dest, args))
            shutil.rmtree(dest)  # the next copy's disk
            r = runs[-1]
            print(f"run {i + 1}: {fmt_s(r.wall)}, other cores {r.other:.2f}, ran "
                  f"{', '.join(r.stages)}; {r.work}", file=sys.stderr, flush=True)
        total = time.perf_counter() - t0

    # Every run must have done the same work, or best and median compare different things.
    if len({(tuple(r.stages), tuple(r.work.items()), r.head) for r in runs}) != 1:
        sys.exit("the runs did different work:\n" + "\n".join(map(str, runs)))
    r, walls = runs[0], sorted(r.wall for r in runs)
    print(f"\n{args.train} training + {args.test} test photos at {args.width} px, then "
          f"{args.new} new ones (`dvc exp run -S test_data=data/raw/new`, best / median of "
          f"{args.runs}); {os.cpu_count()} CPUs; other processes' cores during the full run "
          f"{full.other:.2f}, during the new-image runs "
          f"{', '.join(f'{x.other:.2f}' for x in runs)}; benchmark total {fmt_s(total)}\n")
    print("| checkout | full run | score new: best | median | stages run | images resized "
          "| image × network extracted | head retrained |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | --- |")
    print(f"| {checkout} | {fmt_s(full.wall)} | {fmt_s(walls[0])} | {fmt_s(median(walls))} "
          f"| {len(r.stages)}: {', '.join(r.stages)} | {r.work['resized']} "
          f"| {r.work['extracted']} | {'yes' if r.head else 'no'} |")


if __name__ == "__main__":
    main()
