"""Benchmark: feature extraction and head training against the original's calls, side by side.

    python -m benchmarks.bench_extract_head                    # full run: ~15 min on 2 cores
    python -m benchmarks.bench_extract_head --images 32 --head-n 2000 --head-epochs 3  # quick
    python -m benchmarks.bench_extract_head --device gpu --images 2048 --batch-sizes 32,64,128 \\
        --precisions float32,mixed_float16 --skip-head                      # what gpu_bench.sh runs

Every method runs in its own child process (imports and model building excluded from the timing,
tracing and compilation included) and the table gives images/s or steps/s, wall and CPU seconds,
and the child's own peak RSS (wait4). Networks are built with `weights=None` (seeded), so nothing
is downloaded.

Extraction, per network, on N synthetic labelled images at `--width` px (reddish "cats", bluish
"dogs" over random colour fields), read from an HDF5 file laid out as `resize` writes it:
- `predict`: the original: the whole uint8 array in memory, `preprocess_input` on a float32 copy
  of it, `model.predict(X, batch_size=12)` (one warm-up call on the first batch, then the rest,
  so that the steady rate excludes tracing);
- `stream`: the stage's own code path (`stages.extract.write_features`) at each precision and
  batch size; relative error = max over images of ‖f − f_predict‖ / ‖f_predict‖.
When both networks ran, the head is trained (stage code, same split and seed) on the fused
features of each precision, so the table shows what the precision does to validation log loss
(the features are multiplied by one common factor first: see `bench_extract`).

Head, on synthetic N × 4,096 features (non-negative, a weak linear class signal):
- `original`: `model.fit(x, y, batch_size=8, epochs, shuffle=True, callbacks=[ModelCheckpoint(
  save_best_only)])` on the same stratified split as the stage, so the val losses compare;
- `stage`: `stages.train_head.train` as the stage runs it;
- `stage-dropout-layer`: the same with dropout left in the trained graph (Keras' Dropout layer)
  instead of the input pipeline, to show what moving it is worth;
`--head-seeds K` trains every method with K seeds (init, shuffling, dropout; the split stays),
so that the seed-to-seed spread of best val_loss is the yardstick for "within noise"; every run
is also a timing sample. `--head-repeats 2` reruns each seed, which also checks that the same
seed gives the same model bytes.

The CPU is shared with whatever else runs: before each run the benchmark waits (up to
--max-wait s) for idle CPUs, reruns a run during which other processes used more than
--max-other cores (up to --retries times, keeping the least disturbed), and prints those cores
per run ("other cores") next to every timing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median, pstdev
from typing import Any

import numpy as np

from benchmarks.machine_load import cpu_ticks, wait_for_quiet
from benchmarks.synthetic import colour_field, write_resized

ROOT = Path(__file__).resolve().parents[1]
# Measure mixed_bfloat16 even on a CPU without bfloat16 instructions (the stage refuses it).
os.environ.setdefault("EXTRACT_BF16_EMULATED", "1")
NETWORKS = ("inception_v3", "xception")
SEED = 2017
HEAD_DIM = 4096
PRECISION_SHORT = {"float32": "f32", "mixed_bfloat16": "bf16", "mixed_float16": "f16"}


# --- synthetic data -------------------------------------------------------------------------------


def make_images(folder: Path, n: int, width: int) -> Path:
    """`train.h5` (N labelled images, alternating cat/dog) and an empty `test.h5`, as `resize`
    writes them; reused by later runs of the same size. numpy only (no OpenCV on a bare GPU
    machine)."""
    done = folder / "done"
    if done.exists():
        return folder
    print(f"generating {n} images of {width}×{width} in {folder} …", file=sys.stderr)
    field = colour_field(width)

    def draw(rng: np.random.Generator, label: int) -> np.ndarray:
        img = field(rng, label).astype(np.float32)
        # A weak class cue over the colour field: +red for cats, +blue for dogs (RGB).
        img[..., 0 if label == 0 else 2] += 40
        return np.clip(img, 0, 255).astype(np.uint8)

    write_resized(folder, n, 0, width, draw)
    done.touch()
    return folder


def make_head_data(folder: Path, n: int, dim: int = HEAD_DIM) -> Path:
    """x (N × dim float32, non-negative like pooled ReLU features) and balanced labels y."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "y.npy").exists():
        rng = np.random.default_rng(SEED)
        y = (np.arange(n) % 2).astype(np.uint8)
        w = rng.normal(0, 1, dim).astype(np.float32)
        x = rng.normal(0, 1, (n, dim)).astype(np.float32)
        x += np.outer(2.0 * y - 1.0, w * 0.035).astype(np.float32)  # a weak class signal
        np.maximum(x, 0, out=x)
        np.save(folder / "x.npy", x)
        np.save(folder / "y.npy", y)
    return folder


# --- the methods, each run in a child process ---------------------------------------------------


def gpu_peak_mb() -> float:
    """Peak GPU memory TensorFlow allocated so far (NaN on a CPU)."""
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return float("nan")
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20


def child_predict(a: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    import h5py
    import keras

    from stages.backbones import BACKBONES, build

    backbone = BACKBONES[a.net]
    with h5py.File(Path(a.data) / "train.h5") as f:
        images = f["images"][:]  # the original held the whole image set in memory
    model = build(backbone, images.shape[1], "none", SEED)
    keras.utils.set_random_seed(SEED)
    bs = int(a.bs)
    t0 = time.perf_counter()
    x = backbone.preprocess(images.astype(np.float32))  # ...and a whole float32 copy
    first = model.predict(x[:bs], batch_size=bs, verbose=0)
    t1 = time.perf_counter()
    rest = model.predict(x[bs:], batch_size=bs, verbose=0) if len(x) > bs else first[:0]
    t2 = time.perf_counter()
    np.save(out / f"{a.tag}.npy", np.concatenate([first, rest]).astype(np.float32))
    steady = len(rest) / (t2 - t1) if len(rest) else float("nan")
    return [{"tag": a.tag, "wall": t2 - t0, "steady_ips": steady,
             "n": len(x), "gpu_mb": gpu_peak_mb()}]


def child_stream(a: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    """The stage's path for every batch size × XLA setting in `a.bs` × `a.jit` (one network and
    precision): the network is built once, each setting traces or compiles anew."""
    import h5py
    import tensorflow as tf

    from stages import extract
    from stages.backbones import BACKBONES

    backbone = BACKBONES[a.net]
    data = Path(a.data)
    with h5py.File(data / "train.h5") as f:
        n, width = f["images"].shape[:2]
    model, strategy = extract.build_extractor(backbone, width, "none", a.precision, SEED)
    first: list[float] = []
    real = extract.features

    def timed(*args: Any, **kw: Any) -> Any:  # notes when the first batch is out
        for i, batch in enumerate(real(*args, **kw)):
            if i == 0 and not first:
                first.extend([time.perf_counter(), len(batch)])
            yield batch

    extract.features = timed  # type: ignore[assignment]
    results = []
    for bs in (int(b) for b in a.bs.split(",")):
        for jit in a.jit.split(","):
            tag = f"{a.tag}-bs{bs}-xla{jit}"
            first.clear()
            if tf.config.list_physical_devices("GPU"):
                tf.config.experimental.reset_memory_stats("GPU:0")
            t0 = time.perf_counter()
            extract.write_features(model, backbone, strategy, str(data / "train.h5"),
                                   str(out / f"{tag}.h5"), bs,
                                   {"auto": None, "on": True, "off": False}[jit],
                                   precision=a.precision)
            t2 = time.perf_counter()
            with h5py.File(out / f"{tag}.h5") as f:
                np.save(out / f"{tag}.npy", f["features"][:])
            (out / f"{tag}.h5").unlink()
            steady = (n - first[1]) / (t2 - first[0]) if n > first[1] else float("nan")
            results.append({"tag": tag, "bs": bs, "jit": jit, "wall": t2 - t0,
                            "steady_ips": steady, "n": int(n), "gpu_mb": gpu_peak_mb()})
    return results


def child_head(a: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    from stages import train_head as th
    from stages.params import DEFAULTS
    from stages.split import stratified_split

    x, y = np.load(Path(a.data) / "x.npy"), np.load(Path(a.data) / "y.npy")
    params = {**DEFAULTS, "epochs": a.epochs, "seed": a.seed}
    model_path = out / f"{a.tag}.h5"
    split = stratified_split(y, params["val_split"], SEED)  # one split for every method
    if a.method.startswith("stage"):
        th.split.split = lambda *_: split  # type: ignore[assignment]
        t0 = time.perf_counter()
        hist = th.train(x, y, params, str(model_path),
                        dropout_in_pipeline=a.method == "stage").history
        wall = time.perf_counter() - t0
    else:
        import keras

        # Seeded, but without op determinism: the original had none, and it costs it ~13%.
        keras.utils.set_random_seed(a.seed)
        tr, va = split
        model = th.build_head(x.shape[1], params["dropout"], params["learning_rate"])
        ckpt = keras.callbacks.ModelCheckpoint(str(model_path), monitor="val_loss",
                                               save_best_only=True, verbose=0)
        yf = y.astype(np.float32)
        t0 = time.perf_counter()
        hist = model.fit(x[tr], yf[tr], validation_data=(x[va], yf[va]), batch_size=8,
                         epochs=a.epochs, shuffle=True, callbacks=[ckpt], verbose=0).history
        wall = time.perf_counter() - t0
    best = th.best_epoch(hist)
    steps = a.epochs * -(-len(split[0]) // 8)
    sha = hashlib.sha256(model_path.read_bytes()).hexdigest()[:12]
    return [{"tag": a.tag, "wall": wall, "steps_per_s": steps / wall,
             "val_loss": hist["val_loss"][best], "best_epoch": best + 1, "sha": sha, "n": len(y)}]


def child(a: argparse.Namespace) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    out = Path(a.out)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    fn = {"predict": child_predict, "stream": child_stream, "head": child_head}[a.child]
    results = fn(a, out)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds of the whole child (building included): less disturbed than wall by other load.
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    (out / f"{a.tag}.json").write_text(json.dumps([{**r, "cpu": cpu} for r in results]))


def run_once(out: Path, tag: str, kw: dict[str, Any]) -> list[dict[str, Any]]:
    """One child; its results, each with the child's peak RSS and `other`: the cores that
    everything else on the machine used meanwhile."""
    cmd = [sys.executable, "-m", "benchmarks.bench_extract_head", "--out", str(out),
           "--tag", tag]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    print(f"  {tag} …", file=sys.stderr, flush=True)
    busy0, t0 = cpu_ticks()[0], time.perf_counter()
    # stdout/stderr (Keras logs, progress bars) are kept in a log shown on failure.
    with open(out / f"{tag}.log", "w") as log:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(p.pid, 0)  # this child's own peak RSS
        except KeyboardInterrupt:  # a time limit: stop the child too, keep what was printed
            p.kill()
            raise
    life, busy = time.perf_counter() - t0, cpu_ticks()[0] - busy0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{tag} failed ({code}): {' '.join(cmd)}\n"
                 + (out / f"{tag}.log").read_text()[-4000:])
    other = max(0.0, busy - usage.ru_utime - usage.ru_stime) / life
    results = json.loads((out / f"{tag}.json").read_text())
    return [{**r, "rss_mb": usage.ru_maxrss / 1024, "other": other} for r in results]


def run_child(a: argparse.Namespace, out: Path, tag: str, **kw: Any) -> list[dict[str, Any]]:
    """`run_once` on a quiet machine: waits for idle CPUs, reruns (a few times) when other
    processes woke up during the run, and keeps the least disturbed run."""
    best: list[dict[str, Any]] = []
    for _ in range(1 + a.retries):
        wait_for_quiet(a.min_idle, a.max_wait)
        got = run_once(out, tag, kw)
        if not best or got[0]["other"] < best[0]["other"]:
            best = got
        if got[0]["other"] <= a.max_other:
            break
    return best


# --- the parent: runs, compares, prints ---------------------------------------------------------


def rel_err(f: np.ndarray, ref: np.ndarray) -> float:
    """Max over rows of ‖f − ref‖ / ‖ref‖."""
    num = np.linalg.norm(f.astype(np.float64) - ref, axis=1)
    return float(np.max(num / np.maximum(np.linalg.norm(ref.astype(np.float64), axis=1), 1e-30)))


def bench_extract(a: argparse.Namespace, out: Path) -> None:
    data = make_images(Path(a.cache) / f"images_v3_n{a.images}_w{a.width}", a.images, a.width)
    nets = a.networks.split(",")
    precisions = a.precisions.split(",")
    sizes = a.batch_sizes.split(",")
    jits = ["on", "off"] if a.jit == "both" else [a.jit]
    # On a CPU one child per setting (its own peak RSS); on a GPU one per network and precision,
    # because starting TensorFlow on a GPU costs more than most settings take to run.
    per_child = [(",".join(sizes), ",".join(jits))] if a.device == "gpu" else \
        [(b, j) for b in sizes for j in jits]
    gpu = a.device == "gpu"
    cores = len(os.sched_getaffinity(0))
    # Rows are printed as they come, so that a run cut short by a time limit still says something.
    print(f"\n### Extraction: {a.images} images of {a.width}×{a.width}, weights none, "
          f"{device_name(a.device, cores)}; median of {a.repeats} run(s)\n")
    print("| network | method | precision | images/s | steady images/s | wall s | CPU s | "
          f"peak RSS MB | {'peak GPU MB | ' if gpu else ''}× predict | rel. error vs predict | "
          "other cores |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | "
          f"{'---: | ' if gpu else ''}---: | ---: | ---: |", flush=True)
    feats: dict[tuple[str, str], str] = {}  # (net, precision) → npy tag at the first setting

    def row(net: str, method: str, prec: str, runs: list[dict[str, Any]], base: float,
            err: float) -> float:
        ips = median(r["n"] / r["wall"] for r in runs)
        loads = ", ".join(f"{r['other']:.2f}" for r in runs)
        gpu_col = f"{max(r['gpu_mb'] for r in runs):.0f} | " if gpu else ""
        print(f"| {net} | {method} | {prec} | {ips:.1f} | "
              f"{median(r['steady_ips'] for r in runs):.1f} | "
              f"{median(r['wall'] for r in runs):.1f} | {median(r['cpu'] for r in runs):.1f} | "
              f"{max(r['rss_mb'] for r in runs):.0f} | {gpu_col}{ips / (base or ips):.2f} | "
              f"{err:.1e} | {loads} |", flush=True)
        return ips

    for net in nets:
        # Every setting once per repeat, alternating, so that other load hits all alike.
        jobs = [("predict", "float32", "", "")] + [
            ("stream", prec, bs, jit) for prec in precisions for bs, jit in per_child]
        got: dict[str, list[dict[str, Any]]] = {}  # result tag → its runs
        for _ in range(a.repeats):
            for kind, prec, bs, jit in jobs:
                if kind == "predict":
                    got.setdefault(f"{net}-predict", []).extend(run_child(
                        a, out, f"{net}-predict", child="predict", net=net, data=data,
                        bs=a.predict_batch))
                    continue
                for r in run_child(a, out, f"{net}-{PRECISION_SHORT[prec]}", child="stream",
                                   net=net, data=data, bs=bs, precision=prec, jit=jit):
                    got.setdefault(r["tag"], []).append({**r, "prec": prec})
        ref_tag = f"{net}-predict"
        ref = np.load(out / f"{ref_tag}.npy")
        base = row(net, f"predict bs {a.predict_batch}", "float32", got.pop(ref_tag), 0.0, 0.0)
        for tag, runs in got.items():
            prec = runs[0]["prec"]
            feats.setdefault((net, prec), tag)
            label = f"stream bs {runs[0]['bs']}" + (
                "" if a.jit == "auto" else f", XLA {runs[0]['jit']}")
            row(net, label, prec, runs, base, rel_err(np.load(out / f"{tag}.npy"), ref))

    if set(NETWORKS) <= set(nets) and a.feature_head_epochs > 0:
        print(f"\n### Head on the fused features of each precision ({a.images} images, stage "
              f"code, seed {SEED}, {a.feature_head_epochs} epochs; first batch size; features "
              "× one common factor to unit scale)\n")
        print("| precision | best val_loss | best epoch | rel. error of fused features vs "
              "float32 |")
        print("| --- | ---: | ---: | ---: |", flush=True)
        y = (np.arange(a.images) % 2).astype(np.uint8)
        fused32, scale = None, 1.0
        for prec in precisions:
            x = np.concatenate([np.load(out / f"{feats[(n, prec)]}.npy") for n in NETWORKS], 1)
            if fused32 is None:
                # Random-init networks give features ~1e-4, far below ImageNet ones (~0.1-1),
                # too small for adam at lr 1e-3 to move the head in 30 epochs: one common
                # factor for every precision brings them to unit scale and keeps their
                # relative differences.
                fused32, scale = x, 1.0 / float(np.std(x))
            d = out / f"fused-{prec}"
            d.mkdir(exist_ok=True)
            np.save(d / "x.npy", x * scale)
            np.save(d / "y.npy", y)
            r = run_child(a, out, f"fused-head-{prec}", child="head", method="stage", data=d,
                          epochs=a.feature_head_epochs, seed=SEED)[0]
            print(f"| {prec} | {r['val_loss']:.4f} | {r['best_epoch']} | "
                  f"{rel_err(x, fused32):.1e} |", flush=True)


def bench_head(a: argparse.Namespace, out: Path) -> None:
    data = make_head_data(Path(a.cache) / f"head_n{a.head_n}", a.head_n)
    methods = a.head_methods.split(",")
    seeds = [SEED + i for i in range(a.head_seeds)]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for rep in range(a.head_repeats):
        for seed in seeds:
            for m in methods:  # alternating, so that other load hits every method alike
                r = run_child(a, out, f"head-{m}-{seed}-{rep}", child="head", method=m, data=data,
                              epochs=a.head_epochs, seed=seed)[0]
                runs[m].append({**r, "seed": seed})

    cores = len(os.sched_getaffinity(0))
    print(f"\n### Head: {a.head_n:,} × {HEAD_DIM:,} synthetic features, {a.head_epochs} epochs, "
          f"batch 8, {device_name(a.device, cores)}; {len(seeds)} training seed(s) × "
          f"{a.head_repeats} run(s) per method, alternating; times are medians over all runs\n")
    print(f"| method | steps/s | wall s | CPU s | peak RSS MB | × original | best val_loss, seed "
          f"{SEED} | mean ± sd over seeds | best epoch(s) | model sha256, seed {SEED} | "
          "other cores |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: |")
    base = median(r["wall"] for r in runs[methods[0]])
    losses: dict[str, list[float]] = {}
    for m, rs in runs.items():
        wall = median(r["wall"] for r in rs)
        first = {r["seed"]: r for r in reversed(rs)}  # one run per seed for the losses
        losses[m] = [first[s]["val_loss"] for s in seeds]
        shas = ", ".join(sorted({r["sha"] for r in rs if r["seed"] == SEED}))
        loads = ", ".join(f"{r['other']:.2f}" for r in rs)
        print(f"| {m} | {median(r['steps_per_s'] for r in rs):.0f} | {wall:.1f} | "
              f"{median(r['cpu'] for r in rs):.1f} | {max(r['rss_mb'] for r in rs):.0f} | "
              f"{base / wall:.2f} | {first[SEED]['val_loss']:.4f} | "
              f"{np.mean(losses[m]):.4f} ± {pstdev(losses[m]):.4f} | "
              f"{', '.join(str(first[s]['best_epoch']) for s in seeds)} | {shas} | {loads} |")
    if len(seeds) > 1 and len(methods) > 1:
        ref = np.array(losses[methods[0]])
        for m in methods[1:]:
            d = np.array(losses[m]) - ref
            print(f"\n- {m} − {methods[0]}, best val_loss per seed: "
                  + ", ".join(f"{v:+.4f}" for v in d)
                  + f" (mean {d.mean():+.4f}; seed-to-seed sd of {methods[0]}: "
                  f"{pstdev(ref):.4f}, of {m}: {pstdev(losses[m]):.4f})")
    if a.head_repeats > 1:
        same = all(len({r["sha"] for r in rs if r["seed"] == s}) == 1
                   for rs in runs.values() for s in seeds)
        print(f"- same seed → same model bytes across runs, every method: {same}")


def device_name(device: str, cores: int) -> str:
    if device == "gpu":
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                               capture_output=True, text=True, check=True)
            return f"GPU {q.stdout.strip()}, {cores} CPU cores"
        except (OSError, subprocess.CalledProcessError):
            return f"GPU (nvidia-smi unavailable), {cores} CPU cores"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return f"{cores}-core {line.split(':', 1)[1].strip()}"
    return f"{cores}-core CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--images", type=int, default=256, help="extraction: images (default 256)")
    ap.add_argument("--width", type=int, default=299)
    ap.add_argument("--networks", default=",".join(NETWORKS))
    ap.add_argument("--precisions", default=None,
                    help="default: float32,mixed_bfloat16 (cpu), float32,mixed_float16 (gpu)")
    ap.add_argument("--batch-sizes", default="32", help="stream batch sizes, comma-separated")
    ap.add_argument("--predict-batch", type=int, default=12, help="the original's batch size")
    ap.add_argument("--jit", choices=("auto", "on", "off", "both"), default="auto",
                    help="stream: XLA (auto: on one GPU only, as the stage does)")
    ap.add_argument("--feature-head-epochs", type=int, default=30,
                    help="head epochs on the extracted features (0: skip)")
    ap.add_argument("--head-n", type=int, default=20000, help="head: rows (default 20000)")
    ap.add_argument("--head-epochs", type=int, default=30)
    ap.add_argument("--head-methods", default="original,stage,stage-dropout-layer")
    ap.add_argument("--head-seeds", type=int, default=1,
                    help="head: training seeds per method (same split), to size the noise")
    ap.add_argument("--repeats", type=int, default=1,
                    help="extraction: runs per setting, alternating")
    ap.add_argument("--head-repeats", type=int, default=1,
                    help="head: runs per method and seed (2: also checks same seed → same bytes)")
    ap.add_argument("--min-idle", type=float, default=0.9,
                    help="before each run, wait until this share of the CPUs is idle")
    ap.add_argument("--max-wait", type=float, default=120, help="… but at most this many seconds")
    ap.add_argument("--max-other", type=float, default=0.15,
                    help="rerun a run during which other processes used more cores than this")
    ap.add_argument("--retries", type=int, default=2,
                    help="… at most this many times (the least disturbed run is kept)")
    ap.add_argument("--skip-extract", action="store_true")
    ap.add_argument("--skip-head", action="store_true")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "bench_extract_head"),
                    help="where synthetic inputs are kept for reruns")
    # child-only arguments
    for name in ("child", "out", "tag", "net", "data", "precision", "method", "bs"):
        ap.add_argument(f"--{name}", help=argparse.SUPPRESS)
    ap.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a)
        return
    if a.precisions is None:
        a.precisions = "float32," + ("mixed_float16" if a.device == "gpu" else "mixed_bfloat16")
    if a.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # children inherit it: a CPU run stays on CPU
    with tempfile.TemporaryDirectory() as tmp:
        if not a.skip_extract:
            bench_extract(a, Path(tmp))
        if not a.skip_head:
            bench_head(a, Path(tmp))


if __name__ == "__main__":
    main()
