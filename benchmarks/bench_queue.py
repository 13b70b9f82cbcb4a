"""Benchmark: a queued grid of head experiments, with DVC's default cache (copies) and with links.

    python -m benchmarks.bench_queue                      # 400 + 100 images at 299 px: ~6 min
    python -m benchmarks.bench_queue --train 2000 --test 500

What the README's experiment workflow costs on disk and in time. A fresh clone of this repo
(committed files only, as a user has them) gets N synthetic JPEGs, tracked with `dvc add` as the
README's data step does, one `dvc repro` (`weights: none`: nothing to download; the tensors have
the real sizes), a baseline commit; then, for each `cache.type`, a grid of head experiments
(`dvc exp run --queue -S seed=…`, new seeds each time so nothing comes from the run-cache) run
by `dvc queue start -j J`. While they run, the benchmark samples `.dvc/tmp`, where each queued
experiment gets its workspace, every 0.2 s: "peak extra disk" is the largest total size of the
regular files there that are not links (a hard link or symlink to DVC's cache costs no space).
Every experiment must succeed and run exactly `train_head` and `predict`. (On a filesystem
with reflinks, XFS, Btrfs, APFS, DVC reflinks instead, and a reflink counts here as a copy: stat
cannot tell them apart.) The grid's wall time is polled every second: ±1 s.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
LINKS = "reflink,hardlink,symlink"


def sh(cwd: Path, *args: str) -> str:
    # The stages run `python3` from PATH: this interpreter's, its venv active or not.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    p = subprocess.run(args, cwd=cwd, capture_output=True, text=True,
                       env={**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": path})
    if p.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout + p.stderr


def dvc(cwd: Path, *args: str) -> str:
    return sh(cwd, sys.executable, "-m", "dvc", *args)


def write_images(folder: Path, names: list[str], seed: int) -> None:
    """Photo-sized JPEGs (500×375, smooth colour fields plus noise), so the resize is real."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    xx = np.mgrid[0:375, 0:500][1]
    for name in names:
        base = rng.integers(0, 256, 3)
        img = (base + 60 * np.sin(xx[..., None] / rng.uniform(20, 80))
               + rng.normal(0, 12, (375, 500, 3)))
        cv2.imwrite(str(folder / name), np.clip(img, 0, 255).astype(np.uint8))


def unlinked_bytes(tmp: Path) -> int:
    total = 0
    for folder, _, files in os.walk(tmp):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:  # a workspace going away
                continue
            if st.st_nlink == 1 and not os.path.islink(os.path.join(folder, name)):
                total += st.st_size
    return total


def run_grid(root: Path, seeds: list[int], jobs: int) -> tuple[float, int]:
    """Queue one experiment per seed, run them `jobs` at a time; (wall s, peak bytes)."""
    dvc(root, "exp", "run", "--queue", "-S", "seed=" + ",".join(map(str, seeds)))
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            peak[0] = max(peak[0], unlinked_bytes(root / ".dvc/tmp"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.perf_counter()
    dvc(root, "queue", "start", "-j", str(jobs))
    wall = None
    try:
        while True:
            status = dvc(root, "queue", "status")
            rows = [r.split() for r in status.splitlines()]
            states = [r[-1] for r in rows if len(r) >= 4 and r[0] != "Task"]
            if wall is None and states and not {"Queued", "Running"} & set(states):
                wall = time.perf_counter() - start  # (not the workers' exit after it)
            if "0 active, 0 idle" in status and not {"Queued", "Running"} & set(states):
                break  # the workers exit by themselves (`dvc queue stop` would outlive them)
            time.sleep(1)
    finally:
        stop.set()
        watcher.join()
    failed = [r for r in dvc(root, "queue", "status").splitlines() if "Failed" in r]
    if failed:
        sys.exit("experiments failed:\n" + "\n".join(failed))
    for name in re.findall(r"^\S+\s+(\S+)\s.*Success$", dvc(root, "queue", "status"), re.M):
        ran = re.findall(r"Running stage '([^']+)'", dvc(root, "queue", "logs", name))
        if ran != ["train_head", "predict"]:
            sys.exit(f"{name} ran {ran}, not just the head")
    dvc(root, "queue", "remove", "--success")
    return wall, peak[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=400, help="training images (half cats)")
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--width", type=int, default=299)
    ap.add_argument("--exps", type=int, default=4, help="experiments per grid")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        root = Path(tmp) / "p"
        sh(ROOT, "git", "clone", "-q", str(ROOT), str(root))
        sh(root, "git", "config", "user.email", "b@b")
        sh(root, "git", "config", "user.name", "bench")
        half = args.train // 2
        write_images(root / "data/raw/train", [f"{c}.{i}.jpg" for c in ("cat", "dog")
                                              for i in range(half)], seed=0)
        write_images(root / "data/raw/test", [f"{i}.jpg" for i in range(1, args.test + 1)],
                     seed=1)
        params = yaml.safe_load((root / "params.yaml").read_text())
        params.update(weights="none", width=args.width, epochs=2)
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        (root / "keras_weights").mkdir(exist_ok=True)
        dvc(root, "add", "data/raw/train", "data/raw/test", "keras_weights")
        t = time.perf_counter()
        dvc(root, "repro")
        repro = time.perf_counter() - t
        sh(root, "git", "add", "-A")
        sh(root, "git", "commit", "-qm", "baseline")
        outs = sum(p.stat().st_size for d in ("data/resized", "data/features")
                   for p in (root / d).glob("*.h5"))

        rows = []
        for i, (label, cache_type) in enumerate((("copy (DVC's default)", None),
                                                 ("links (README)", LINKS))):
            if cache_type:
                dvc(root, "config", "--local", "cache.type", cache_type)
                dvc(root, "checkout", "--relink")
            seeds = list(range(1 + i * args.exps, 1 + (i + 1) * args.exps))
            wall, peak = run_grid(root, seeds, args.jobs)
            rows.append((label, wall, peak))

    print(f"\n{args.train} + {args.test} images at {args.width} px; first `dvc repro` "
          f"{repro:.0f} s; resized tensors + features {outs / 1e6:.0f} MB; "
          f"{args.exps} experiments, -j {args.jobs}\n")
    print("| cache.type | grid wall s | per experiment s | peak extra disk in .dvc/tmp |")
    print("| --- | ---: | ---: | ---: |")
    for label, wall, peak in rows:
        print(f"| {label} | {wall:.0f} | {wall / args.exps:.0f} | {peak / 1e6:.0f} MB |")


if __name__ == "__main__":
    main()
