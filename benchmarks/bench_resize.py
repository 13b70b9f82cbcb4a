"""Benchmark: our resize stage against the original's loop, on the same synthetic JPEGs.

    python -m benchmarks.bench_resize --n 2000
    python -m benchmarks.bench_resize --n 20000 --repeats 1

Generates N 500×375 JPEGs named like Kaggle's (`cat.N.jpg`, `dog.N.jpg`; kept under --data for
the next run), then runs each method in its own child process, alternating, and prints a markdown
table: images/s over the work itself (imports excluded; the one-time load of the resize kernels
from numba's cache, ~0.3 s, included), CPU seconds, and the child's peak RSS over the work
(getrusage, taken before the sample rows for the equality check are read). Methods:

- `ours`: the real code path (Source → list_train → parallel decode → HDF5 via resize_split);
- `original`: the original's loop, `X[i] = cv2.resize(cv2.imread(path), (w, w))` into one
  preallocated uint8 array, one process; cv2.resize's default interpolation (INTER_LINEAR), BGR;
- `original-area`: the same loop computing what we compute (INTER_AREA, then BGR → RGB), so its
  bytes must equal ours; the benchmark checks that on a sample of rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

import cv2
import numpy as np

from benchmarks.machine_load import cpu_ticks, wait_for_quiet

ROOT = Path(__file__).resolve().parents[1]
W, H = 500, 375  # the typical Kaggle photo
METHODS = ("ours", "original", "original-area")
SAMPLE_EVERY = 97  # rows compared between `ours` and `original-area`


def synth(i: int) -> bytes:
    """A photo-like JPEG (smooth colour fields plus sensor noise), ~35 KB like Kaggle's."""
    rng = np.random.default_rng(i)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    img = cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.integers(-12, 13, (H, W, 3), dtype=np.int16)
    ok, buf = cv2.imencode(".jpg", np.clip(img, 0, 255).astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()


def kaggle_name(i: int) -> str:
    return f"{('cat', 'dog')[i % 2]}.{i // 2}.jpg"


def generate(folder: Path, n: int) -> Path:
    """N JPEGs in `folder`, reused when a previous run finished writing them."""
    done = folder.with_name(folder.name + ".done")
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        (folder / kaggle_name(i)).write_bytes(synth(i))

    print(f"generating {n} JPEGs of {W}×{H} in {folder} …", file=sys.stderr)
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(one, range(n)))
    done.touch()
    return folder


# --- the methods, each run in a child process ---------------------------------------------------


def run_ours(data: Path, n: int, width: int, workers: int, out: Path) -> None:
    from stages.images import Source, list_train
    from stages.resize import resize_split

    source = Source(data)
    listing = list_train(source)
    assert len(listing.files) == n, (len(listing.files), n)
    resize_split(source, listing, str(out / "train.h5"), width, workers)


def run_original(data: Path, n: int, width: int, area: bool) -> np.ndarray:
    # The original's order: every cat, then every dog, by number.
    paths = [data / kaggle_name(i) for i in sorted(range(n), key=lambda i: (i % 2, i))]
    x = np.zeros((n, width, width, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        if area:
            x[i] = cv2.cvtColor(cv2.resize(cv2.imread(str(p)), (width, width),
                                           interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        else:
            x[i] = cv2.resize(cv2.imread(str(p)), (width, width))
    return x


def child(args: argparse.Namespace) -> None:
    """Run one method, timed over the work only; write the timing and a sample of rows."""
    out = Path(args.out)
    if args.child == "ours":
        import stages.resize  # noqa: F401  imports are not the work (cv2's is not timed either)
    cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    if args.child == "ours":
        run_ours(Path(args.data), args.n, args.width, args.workers, out)
    else:
        x = run_original(Path(args.data), args.n, args.width, args.child == "original-area")
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    rss_mb = cpu1.ru_maxrss / 1024  # peak RSS of the work, before the check below reads rows
    if args.child == "ours":
        import h5py

        with h5py.File(out / "train.h5") as f:
            sample = f["images"][::SAMPLE_EVERY]
    else:
        sample = x[::SAMPLE_EVERY]
    np.save(out / f"{args.child}.npy", sample)
    (out / f"{args.child}.json").write_text(json.dumps({"wall": wall, "cpu": cpu,
                                                        "rss_mb": rss_mb}))


def run_child(method: str, args: argparse.Namespace, data: Path, out: Path) -> dict[str, float]:
    """One run in a child process: its timing, its peak RSS, and how busy everything else was."""
    cmd = [sys.executable, "-m", "benchmarks.bench_resize", "--child", method, "--data", str(data),
           "--n", str(args.n), "--width", str(args.width), "--workers", str(args.workers),
           "--out", str(out)]
    busy0, t0 = cpu_ticks()[0], time.perf_counter()
    # stderr (the progress bar) is dropped; a failure shows the command and its exit status.
    p = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)  # this child's own peak RSS, not the max over all
    lifetime, busy = time.perf_counter() - t0, cpu_ticks()[0] - busy0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{method} failed with exit status {p.returncode}: {' '.join(cmd)}")
    res = json.loads((out / f"{method}.json").read_text())
    # CPU that the machine spent on anything but this child, in cores, over the child's life.
    other = max(0.0, busy - usage.ru_utime - usage.ru_stime) / lifetime
    return {**res, "ips": args.n / res["wall"], "other": other}


def measure(method: str, args: argparse.Namespace, data: Path, out: Path) -> dict[str, float]:
    """A run on a quiet machine: waits for idle CPUs, reruns (a few times) if others woke up."""
    for _ in range(1 + args.retries):
        wait_for_quiet(args.min_idle, args.max_wait)
        run = run_child(method, args, data, out)
        if run["other"] <= args.max_other:
            break
    return run


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    ap.add_argument("--width", type=int, default=299)
    ap.add_argument("--workers", type=int, default=0, help="ours: threads (default: all cores)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per method, alternating")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    ap.add_argument("--min-idle", type=float, default=0.9,
                    help="before each run, wait until this share of the CPUs is idle (default 0.9)")
    ap.add_argument("--max-wait", type=float, default=300, help="… but at most this many seconds")
    ap.add_argument("--max-other", type=float, default=0.1,
                    help="rerun a run during which other processes used more cores than this")
    ap.add_argument("--retries", type=int, default=3, help="… at most this many times per run")
    ap.add_argument("--data", default=None,
                    help="image folder (default: <tmp>/bench_resize/n<N>, kept for reruns)")
    ap.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    from stages.images import default_workers

    args.workers = args.workers or default_workers()
    methods = args.methods.split(",")
    data = Path(args.data or Path(tempfile.gettempdir()) / "bench_resize" / f"n{args.n}")
    generate(data, args.n)
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for _ in range(args.repeats):
            for m in methods:
                runs[m].append(measure(m, args, data, out))
        same = None
        if {"ours", "original-area"} <= set(methods):
            same = np.array_equal(np.load(out / "ours.npy"), np.load(out / "original-area.npy"))

    cores = len(os.sched_getaffinity(0))
    print(f"\nresize benchmark: N = {args.n:,} JPEGs of {W}×{H} → {args.width}×{args.width}, "
          f"{cores}-core {cpu_name()}, ours with {args.workers} threads; {args.repeats} run(s) "
          "per method, alternating; best and median\n")
    print("| method | images/s best | images/s median | wall s best | CPU s | cores busy "
          "| peak RSS MB | other load per run (cores) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    best: dict[str, float] = {}
    med: dict[str, float] = {}
    for m, rs in runs.items():
        top = max(rs, key=lambda r: r["ips"])
        best[m], med[m] = top["ips"], median(r["ips"] for r in rs)
        other = ", ".join(f"{r['other']:.2f}" for r in rs)
        print(f"| {m} | {top['ips']:.0f} | {med[m]:.0f} | "
              f"{top['wall']:.1f} | {top['cpu']:.1f} | {top['cpu'] / top['wall']:.2f} | "
              f"{max(r['rss_mb'] for r in rs):.0f} | {other} |")
    print()
    if "ours" in best:
        for m in ("original", "original-area"):
            if m in best:
                print(f"- ours / {m}: {best['ours'] / best[m]:.2f}× images/s (best runs), "
                      f"{med['ours'] / med[m]:.2f}× (medians)")
        print(f"- ours peak RSS: {max(r['rss_mb'] for r in runs['ours']):.0f} MB "
              f"(target < 1024 MB at N = 20,000)")
    if same is not None:
        print(f"- ours == original-area on every {SAMPLE_EVERY}th row: {same}")


if __name__ == "__main__":
    main()
