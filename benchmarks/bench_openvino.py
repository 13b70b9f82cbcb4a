"""Benchmark: `engine: openvino` against TensorFlow for the extractors' networks on this CPU, in
three tables: the networks' throughput in one process, the extract stage as whole processes,
and the classify tool's cold start.

    python -m benchmarks.bench_openvino                  # 128 synthetic images, 3 repeats: ~15 min
    python -m benchmarks.bench_openvino --images 32 --repeat 1   # a quick check: ~6 min
    python -m benchmarks.bench_openvino --photos /work/shared/data/pets-web --images 192 \
        --weights keras_weights --weights-dir /tmp/kw --quality  # real photos and weights: ~20 min
    python -m benchmarks.bench_openvino --tables 1 --nets xception   # one table, one network

(the times: a 2-core AMD EPYC with AVX2, where TensorFlow float32 extracts 4 Xception
images a second).

The images: `--photos DIR` (cat.N.jpg / dog.N.jpg, alternately cats and dogs, decoded and
squashed to 299 px by `resize`'s own code: cv2, RGB, INTER_AREA), else synthetic photos (smooth
colour fields plus noise, benchmarks/synthetic.py), stored as `resize` writes `train.h5`.
`--weights none` (seeded random networks) or `keras_weights` with `--weights-dir`, a folder of
Keras' notop files (linked as the project's keras_weights/): the speed does not depend on the
weights' values, the quality figures do. Batches of 32, as `extract_batch_size: 32`.

1. img/s per network × engine × precision, in one process: TensorFlow as the stage runs it
   (`build_extractor`, the stage's compiled step, its oneDNN rewrite at `mixed_bfloat16`, the
   features streamed from and to HDF5 by `feature_files.stream_to_h5`), OpenVINO as
   `extract_openvino` runs it (`openvino_engine.Compiled` at the precision, the same HDF5
   streaming). Built and warmed on one batch first, so the rows time the steady state; `×
   TF f32` is TensorFlow float32's time of the same repeat over the row's (paired ratios).
2. `python -m stages.extract --backbone NET --images train.h5 --out …` as a process, timed
   from its start to its exit, in a scratch project (params.yaml: weights, engine, precision,
   extract_batch_size 32), OpenVINO's IR cache warm; and one run per network with an empty
   cache (the conversion and compilation OpenVINO does once). The sums of both networks per
   engine are the acceptance figure of `engine: openvino` (both extractor stages together).
3. `python -m stages.classify ONE.jpg --model M` as a process, start to exit, for a model of
   the networks trained on TensorFlow's features and one trained on OpenVINO's (tiny heads
   made here as train_head saves them, with the attributes it records), cache warm, plus one
   OpenVINO run with an empty cache; and whether TensorFlow (or Keras) was imported by each.
`--quality` (with --photos): per network, OpenVINO float32 against TensorFlow float32 features
of the photos (max |difference| over max |TensorFlow feature|), and a logistic regression
(scikit-learn) trained on TensorFlow's features of the first 3/4 of the photos, scored on the
others' TensorFlow and OpenVINO features (log loss, accuracy): meaningful for genuine weights.

Every table runs each row `--repeat` times, interleaved (each repeat runs all rows, in reverse
order every other repeat, so that a drift of a shared host's speed falls on all of them), and
gives the best time and the paired ratios. bfloat16 rows run only where the engine computes in
bfloat16 on this CPU (TensorFlow: AMX; OpenVINO: its CPU plugin lists BF16), otherwise a line
says why they are not measured. OpenVINO's IR cache (`OPENVINO_IR_CACHE`) is a scratch folder
of the benchmark's, so the user's cache is neither read nor filled; "warm" means converted and
compiled (at the batch the run uses) before the timed runs. Before each timed run the benchmark
waits (`--max-wait`, 60 s at most) until the CPUs are `--min-idle` (90%) idle, and says after
each table how many cores other processes took during its runs (measured: load slowed both
engines alike, by 1.5–1.8×; the paired ratios held within ~6 %).
The header names the CPU, OpenVINO's OPTIMIZATION_CAPABILITIES and the load average.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.machine_load import cpu_line, cpu_ticks, wait_for_quiet
from benchmarks.synthetic import colour_field

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 299
SEED = 2017
PRECISIONS = ("float32", "mixed_bfloat16", "int8")
ENGINES = ("tensorflow", "openvino")
Row = tuple[str, str, str]  # (network, engine, precision)
CHECK_IMPORTS = """
import atexit, sys
atexit.register(lambda: print("IMPORTED " + " ".join(
    m for m in ("tensorflow", "keras") if m in sys.modules), file=sys.stderr))
sys.argv = ["stages.classify", *sys.argv[1:]]
import runpy
runpy.run_module("stages.classify", run_name="__main__")
"""


# --- the data ------------------------------------------------------------------------------

def photo_paths(folder: Path, n: int) -> list[Path]:
    """`n` photos of `folder`, cats and dogs alternately (cat.0, dog.0, cat.1, …) where they are
    named so, else the first `n` by name."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    by_class: dict[str, dict[int, Path]] = {"cat": {}, "dog": {}}
    for p in files:
        m = re.fullmatch(r"(cat|dog)\.(\d+)\.\w+", p.name)
        if m:
            by_class[m.group(1)][int(m.group(2))] = p
    cats, dogs = (sorted(by_class[c].items()) for c in ("cat", "dog"))
    if not cats or not dogs:
        return files[:n]
    mixed = [p for pair in zip(cats, dogs, strict=False) for _, p in pair]
    return (mixed + [p for p in files if p not in set(mixed)])[:n]


def label_of(name: str) -> int:
    """0 for cat.N.jpg, 1 for dog.N.jpg (Kaggle's names), -1 otherwise."""
    return {"cat": 0, "dog": 1}.get(name.split(".", 1)[0], -1)


def write_images(path: Path, images: np.ndarray, names: Sequence[str]) -> None:
    """`images` (uint8 N×W×W×3) as `resize` writes a training split: labels, names, classes."""
    from stages import h5io

    with h5io.create_h5(path) as f:
        h5io.Appender(f, "images", images.shape[1:], np.uint8).append(images)
        labels = np.array([max(0, label_of(n)) for n in names], np.uint8)
        h5io.write_row_info(f, {"labels": labels, "names": np.array(list(names), object)},
                            ["cat", "dog"])


def make_images(work: Path, photos: Path | None, n: int) -> tuple[np.ndarray, list[str]]:
    """The benchmark's images: (uint8 N×299×299×3, names); also work/one.jpg, classify's."""
    import cv2

    if photos is not None:
        from stages import inputs

        paths = photo_paths(photos, n)
        images = inputs.load_all(paths, WIDTH)
        names = [p.name for p in paths]
        (work / "one.jpg").write_bytes(paths[0].read_bytes())
    else:
        draw = colour_field(WIDTH, noise=15)
        rng = np.random.default_rng(0)
        images = np.stack([draw(rng, i % 2) for i in range(n)])
        names = [f"{('cat', 'dog')[i % 2]}.{i // 2}.jpg" for i in range(n)]
        cv2.imwrite(str(work / "one.jpg"), cv2.cvtColor(images[0], cv2.COLOR_RGB2BGR))
    return images, names


def write_params(work: Path, weights: str, engine: str, precision: str) -> None:
    (work / "params.yaml").write_text(yaml.safe_dump({
        "width": WIDTH, "weights": weights, "engine": engine, "precision": precision,
        "extract_batch_size": 32, "seed": SEED}))


# --- formatting -----------------------------------

def interleaved(rows: Sequence[Any], repeat: int) -> list[tuple[int, Any]]:
    """(repeat, row) in run order: every repeat runs all rows, reversed every other repeat."""
    return [(rep, row) for rep in range(repeat)
            for row in (rows if rep % 2 == 0 else list(rows)[::-1])]


def paired(times: Sequence[float], base: Sequence[float]) -> str:
    """Each repeat's base time over the row's time of the same repeat ("1.52 1.49 …")."""
    return " ".join(f"{b / t:.2f}" for t, b in zip(times, base, strict=True))


def table(header: Sequence[str], rows: Sequence[Sequence[str]],
          right: Sequence[bool] | None = None) -> str:
    """A markdown table; `right`: which columns align right (numbers)."""
    right = right or [False] * len(header)
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if r else "---" for r in right) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def label(engine: str, precision: str) -> str:
    return f"{'TensorFlow' if engine == 'tensorflow' else 'OpenVINO'} {precision}"


class Load:
    """Other processes' cores during each timed run (a shared host: the figures are paired
    ratios, but say how busy it was): all CPUs' busy time from /proc/stat less this process's
    and its children's own. Each run first waits (at most `max_wait` s) for the CPUs to be
    `min_idle` idle: the two engines do not slow down alike when other work takes cores."""

    min_idle = 0.9
    max_wait = 60.0

    def __init__(self) -> None:
        self.others: list[float] = []

    def timed(self, work: Any) -> tuple[float, Any]:
        """(wall s, `work()`'s result), its run's other cores noted."""
        if self.min_idle > 0:
            wait_for_quiet(self.min_idle, self.max_wait)
        busy, own, start = cpu_ticks()[0], _own_cpu(), time.perf_counter()
        result = work()
        wall = time.perf_counter() - start
        other = (cpu_ticks()[0] - busy) - (_own_cpu() - own)
        self.others.append(max(0.0, other) / wall)
        return wall, result

    def line(self) -> str:
        o = self.others
        return (f"other processes' cores during these runs: mean {np.mean(o):.2f}, max "
                f"{max(o):.2f} (of {os.cpu_count()})" if o else "")


def _own_cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


# --- what can run here ---------------------------------------------------------------------

def unmeasured(engine: str, precision: str) -> str | None:
    """Why `engine` at `precision` is not measured on this CPU, or None."""
    if precision == "float32" or (engine, precision) == ("openvino", "int8"):
        return None
    if precision == "int8":
        return ""  # OpenVINO's alone: no row, nothing to say
    if engine == "openvino":
        from stages import openvino_engine

        return (None if openvino_engine.bf16_supported() else
                "not measured: this CPU has no bfloat16 instructions (OpenVINO's "
                "OPTIMIZATION_CAPABILITIES list no BF16; it would compute in float32)")
    from stages import devices
    from stages.params import ParamsError

    try:
        devices.check_precision(precision)
    except ParamsError as e:
        return ("not measured: this CPU has no bfloat16 instructions TensorFlow uses "
                f"(the stage refuses it: {str(e).split(': ', 1)[-1].split('. ')[0]})")
    return None


def measurable(nets: Sequence[str]) -> tuple[list[Row], list[str]]:
    rows, skipped = [], []
    for engine in ENGINES:
        for precision in PRECISIONS:
            why = unmeasured(engine, precision)
            if why:
                skipped.append(f"{label(engine, precision)}: {why}")
            elif why is None:
                rows += [(net, engine, precision) for net in nets]
    return sorted(rows, key=lambda r: (nets.index(r[0]), ENGINES.index(r[1]))), skipped


# --- 1: throughput in one process ----------------------------------------------------------

class Runner:
    """One row of table 1, built once: `run(images_h5, out)` streams the file's images through
    the network into `out` as the stage does."""

    def __init__(self, net: str, engine: str, precision: str, weights: str) -> None:
        from stages import extract, feature_files, openvino_engine
        from stages.backbones import BACKBONES, preprocessing, weight_path
        from stages.h5io import md5

        backbone = BACKBONES[net]
        file = weight_path(backbone, weights)
        self.md5 = md5(file) if file is not None and file.is_file() else ""
        self.init = feature_files.weights_of(weights, SEED)
        self.net, self.engine, self.precision = net, engine, precision
        self.build_s = 0.0
        start = time.perf_counter()
        if engine == "openvino":
            ov_net = openvino_engine.Network(backbone, WIDTH, self.init, self.md5)
            xml = openvino_engine.network_file(ov_net)
            self.sample = ""
            if precision == "int8":  # quantized on the stage's own sample of the images
                from stages import int8_sample

                self.sample = int8_sample.recorded()
                xml = openvino_engine.quantized_file(
                    ov_net, self.sample, lambda: int8_sample.load(self.sample))
            self.convert_s = time.perf_counter() - start
            start = time.perf_counter()
            compiled = openvino_engine.Compiled(xml, precision, 32)
            self.dim = int(openvino_engine.meta(xml)["dim"])
            self.batches = lambda images: openvino_engine.feature_batches(compiled, images)
            self.rewrite = False
        else:
            from stages import devices

            model, strategy = extract.build_extractor(backbone, WIDTH, weights, precision, SEED)
            scale = preprocessing(backbone, "network")
            step = extract.compiled_step(model, scale, WIDTH, 32, strategy, False)
            self.dim = int(model.output_shape[-1])
            self.batches = lambda images: extract.features(model, scale, images, 32, strategy,
                                                           False, step)
            self.rewrite = devices.cpu_bf16_rewrite(precision)
            self.convert_s, self.sample = 0.0, ""
        self.build_s = time.perf_counter() - start

    def run(self, images_h5: Path, out: Path) -> None:
        from stages import devices, feature_files

        with devices.graph_rewrite(self.rewrite):  # a first run traces inside it, as the stage
            feature_files.stream_to_h5(
                self.batches, self.net, self.dim, str(images_h5), str(out), progress=False,
                made_with={"weights": self.init, "precision": self.precision,
                           "weights_md5": self.md5, "engine": self.engine,
                           "int8_sample": self.sample})


def throughput(work: Path, rows: list[Row], weights: str, n: int, repeat: int
               ) -> dict[Row, Path]:
    """Table 1; returns each row's features of the last repeat."""
    from stages import quiet

    quiet.tensorflow()
    runners: dict[Row, Runner] = {}
    for row in rows:
        start = time.perf_counter()
        runners[row] = Runner(*row, weights)
        warm, _ = Load().timed(partial(runners[row].run, work / "warm.h5",
                                       work / "warm_features.h5"))
        r = runners[row]
        extra = (f"converted to IR{' and quantized' if row[2] == 'int8' else ''} in "
                 f"{r.convert_s:.1f} s, compiled in {r.build_s:.1f} s"
                 if row[1] == "openvino" else f"built in {r.build_s:.1f} s")
        print(f"  {row[0]} {label(*row[1:])}: {extra}, first batch (warm-up) {warm:.1f} s; "
              f"{time.perf_counter() - start:.1f} s in all", flush=True)
    times: dict[Row, list[float]] = {r: [] for r in rows}
    outs = {r: work / f"t1-{r[0]}-{r[1]}-{r[2]}.h5" for r in rows}
    load = Load()
    for rep, row in interleaved(rows, repeat):
        wall, _ = load.timed(partial(runners[row].run, work / "train.h5", outs[row]))
        times[row].append(wall)
        print(f"  repeat {rep + 1}: {row[0]} {label(*row[1:])}: {times[row][-1]:.1f} s",
              flush=True)
    body = []
    for row in rows:
        base = times[(row[0], "tensorflow", "float32")]
        body.append([row[0], label(*row[1:]), f"{n / min(times[row]):.2f}",
                     f"×{min(base) / min(times[row]):.2f}", paired(times[row], base)])
    print("\n" + table(["network", "engine, precision", "best img/s", "× TF f32, best",
                        "× TF f32, each repeat"], body, [False, False, True, True, True]))
    print(load.line())
    return outs


# --- 2: the stage as processes -------------------------------------------------------------

def run_process(cmd: list[str], cwd: Path, env: dict[str, str], load: Load | None = None
                ) -> tuple[float, str]:
    """One process, start to exit: (wall s, its output); stops the benchmark if it fails."""
    wall, p = (load or Load()).timed(lambda: subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **env}))
    if p.returncode:
        sys.exit(f"{' '.join(cmd[1:4])} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return wall, p.stdout + p.stderr


def stage_processes(work: Path, rows: list[Row], weights: str, n: int, repeat: int,
                    cache: Path) -> None:
    """Table 2: each row one `python -m stages.extract` process, start to exit."""
    load = Load()

    def stage(row: Row, ir_cache: Path, timing: Load | None = None) -> float:
        net, engine, precision = row
        write_params(work, weights, engine, precision)
        wall, _ = run_process([sys.executable, "-m", "stages.extract", "--backbone", net,
                               "--images", "train.h5", "--out", "stage_features.h5"], work,
                              {"OPENVINO_IR_CACHE": str(ir_cache)}, timing)
        return wall

    for row in rows:  # the warm cache: converted and compiled as the stage does (table 1 may
        if row[1] == "openvino":  # have done it already: then this reads the cache)
            Runner(*row, weights)
    cold: dict[Row, float] = {}
    for row in rows:
        if row[1] == "openvino":
            empty = Path(tempfile.mkdtemp(prefix="cold-ir-", dir=work))
            cold[row] = stage(row, empty)
            print(f"  cold cache: {row[0]} {label(*row[1:])}: {cold[row]:.1f} s", flush=True)
    times: dict[Row, list[float]] = {r: [] for r in rows}
    for rep, row in interleaved(rows, repeat):
        times[row].append(stage(row, cache, load))
        print(f"  repeat {rep + 1}: {row[0]} {label(*row[1:])}: {times[row][-1]:.1f} s",
              flush=True)
    body = []
    for row in rows:
        base = times[(row[0], "tensorflow", "float32")]
        body.append([row[0], label(*row[1:]), f"{min(times[row]):.1f} s",
                     f"{n / min(times[row]):.2f}", f"×{min(base) / min(times[row]):.2f}",
                     paired(times[row], base),
                     f"{cold[row]:.1f} s" if row in cold else ""])
    print("\n" + table(["network", "engine, precision", "best, warm cache", "img/s",
                        "× TF f32, best", "× TF f32, each repeat", "empty cache, once"],
                       body, [False, False, True, True, True, True, True]))
    print(load.line())
    nets = list(dict.fromkeys(r[0] for r in rows))
    if len(nets) < 2:
        return
    base_sum = [sum(times[(net, "tensorflow", "float32")][i] for net in nets)
                for i in range(repeat)]
    for engine, precision in dict.fromkeys((r[1], r[2]) for r in rows):
        sums = [sum(times[(net, engine, precision)][i] for net in nets) for i in range(repeat)]
        print(f"both networks' stages together, {label(engine, precision)}: best repeat's "
              f"sum {min(sums):.1f} s, ×{min(base_sum) / min(sums):.2f} TF float32's "
              f"(each repeat: {paired(sums, base_sum)})")
    if ("xception", "openvino", "mixed_bfloat16") not in times:
        print("(the acceptance of `engine: openvino` is OpenVINO mixed_bfloat16 ≥ ×1.8 here: "
              "not measurable on this CPU, see above)")


# --- 3: classify's cold start --------------------------------------------------------------

def make_model(path: Path, nets: Sequence[str], weights: str, engine: str) -> None:
    """A head as train_head saves it (Keras' .h5, the Dense layer 'dense') with the attributes
    it records, for features of `nets` made by `engine` at float32 and 299 px."""
    import h5py

    from stages.backbones import BACKBONES, weight_path
    from stages.h5io import md5
    from stages.train_head import build_head

    dims = {"inception_v3": 2048, "xception": 2048}
    head = build_head(sum(dims.get(n, 2048) for n in nets), 0.5, 1e-3)
    head.save(path)
    files = [weight_path(BACKBONES[n], weights) for n in nets]
    with h5py.File(path, "a") as f:
        f.attrs.update({
            "classes": ["cat", "dog"], "networks": list(nets),
            "weights": [f"none, seed {SEED}" if weights == "none" else weights] * len(nets),
            "preprocess": ["network"] * len(nets), "precision": ["float32"] * len(nets),
            "weights_md5": [md5(p) if p is not None and p.is_file() else "" for p in files],
            "engine": [engine] * len(nets), "width": WIDTH, "threshold": 0.5,
            "temperature": 1.0})


def classify_cold_start(work: Path, nets: Sequence[str], weights: str, repeat: int,
                        cache: Path) -> None:
    """Table 3."""
    from stages.classifier import Classifier

    models = {}
    for engine in ENGINES:
        models[engine] = work / f"model_{engine}.h5"
        make_model(models[engine], nets, weights, engine)
    # The caches warm: the IR (table 1 may have converted it), and the network compiled at
    # classify's batch for one image (OpenVINO's compile cache).
    Classifier.load(str(models["openvino"])).predict(np.zeros((1, WIDTH, WIDTH, 3), np.uint8))

    def classify(engine: str, ir_cache: Path, check: bool = False,
                 timing: Load | None = None) -> tuple[float, str]:
        head = ["-c", CHECK_IMPORTS] if check else ["-m", "stages.classify"]
        return run_process([sys.executable, *head, "one.jpg", "--model", models[engine].name],
                           work, {"OPENVINO_IR_CACHE": str(ir_cache)}, timing)

    empty = Path(tempfile.mkdtemp(prefix="cold-ir-", dir=work))
    cold, cold_out = classify("openvino", empty, check=True)
    print(f"  cold cache: OpenVINO's model: {cold:.1f} s", flush=True)
    times: dict[str, list[float]] = {e: [] for e in ENGINES}
    load = Load()
    for rep, engine in interleaved(ENGINES, repeat):
        times[engine].append(classify(engine, cache, timing=load)[0])
        print(f"  repeat {rep + 1}: {engine}'s model: {times[engine][-1]:.1f} s", flush=True)
    imported = {e: imports(classify(e, cache, check=True)[1]) for e in ENGINES}
    body = []
    for engine in ENGINES:
        body.append([f"features by {label(engine, 'float32')}", f"{min(times[engine]):.1f} s",
                     f"×{min(times['tensorflow']) / min(times[engine]):.2f}",
                     paired(times[engine], times["tensorflow"]),
                     f"{cold:.1f} s" if engine == "openvino" else "", imported[engine]])
    print("\n" + table(["model", "best, warm cache", "× TF model, best",
                        "× TF model, each repeat", "empty cache, once", "imported"],
                       body, [False, True, True, True, True, False]))
    print(load.line())
    print(f"with an empty cache, OpenVINO's model process imported: {imports(cold_out)} "
          "(the one conversion builds the networks in Keras)")


def imports(output: str) -> str:
    """What CHECK_IMPORTS said of TensorFlow and Keras."""
    said = next((line.split()[1:] for line in output.splitlines()
                 if line.startswith("IMPORTED")), None)
    if said is None:
        return "?"
    return ", ".join(said) if said else "neither TensorFlow nor Keras"


# --- quality -------------------------------------------------------------------------------

def quality(outs: dict[Row, Path], nets: Sequence[str], names: Sequence[str]) -> None:
    import h5py
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    y = np.array([label_of(n) for n in names])
    if (y < 0).any() or len(set(y)) < 2:
        print("quality: the photos are not named cat.N / dog.N: no labels, nothing scored")
        return
    cut = len(y) * 3 // 4
    if len(set(y[cut:])) < 2:
        print("quality: too few photos for a held-out set of both classes")
        return
    body = []
    for net in nets:
        feats = {}
        for engine in ENGINES:
            with h5py.File(outs[(net, engine, "float32")], "r") as f:
                feats[engine] = f["features"][:].astype(np.float64)
        tf_x, ov_x = feats["tensorflow"], feats["openvino"]
        rel = np.abs(ov_x - tf_x).max() / np.abs(tf_x).max()
        lr = LogisticRegression(max_iter=5000).fit(tf_x[:cut], y[:cut])
        p_tf, p_ov = (lr.predict_proba(x[cut:])[:, 1] for x in (tf_x, ov_x))
        body.append([net, f"{rel:.2e}", f"{log_loss(y[cut:], p_tf, labels=[0, 1]):.4f}",
                     f"{log_loss(y[cut:], p_ov, labels=[0, 1]):.4f}",
                     f"{np.abs(p_tf - p_ov).max():.1e}",
                     f"{((p_tf >= 0.5) == y[cut:]).mean():.3f}",
                     f"{((p_ov >= 0.5) == y[cut:]).mean():.3f}"])
    print(f"\nquality: OpenVINO float32 against TensorFlow float32 features of the photos; "
          f"logistic regression trained on TensorFlow's features of {cut} photos, scored on "
          f"the other {len(y) - cut}")
    print(table(["network", "max abs Δ / max abs TF", "log loss, TF features",
                 "log loss, OV features", "max abs Δp", "accuracy TF", "accuracy OV"], body,
                [False, True, True, True, True, True, True]))


# --- main ----------------------------------------------------------------------------------

def header(args: argparse.Namespace, cache: Path) -> None:
    from importlib.metadata import version

    import openvino as ov

    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    print(cpu_line())
    print(f"OpenVINO {version('openvino')} OPTIMIZATION_CAPABILITIES: {', '.join(caps)}; "
          f"TensorFlow {version('tensorflow')}, Keras {version('keras')}")
    src = f"photos of {args.photos}" if args.photos else "synthetic photos"
    weights = (f"keras_weights ({args.weights_dir})" if args.weights == "keras_weights"
               else f"none (seed {SEED})")
    print(f"{args.images} {src} at {WIDTH} px, batch 32, weights {weights}; {args.repeat} "
          f"repeat(s), interleaved, best of them; IR cache {cache}; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--nets", default="inception_v3,xception")
    ap.add_argument("--photos", type=Path, help="a folder of photos (cat.N.jpg, dog.N.jpg)")
    ap.add_argument("--weights", choices=("none", "keras_weights"), default="none")
    ap.add_argument("--weights-dir", type=Path, help="keras_weights: Keras' notop files")
    ap.add_argument("--quality", action="store_true",
                    help="with --photos: OpenVINO's features and a head's log loss against "
                         "TensorFlow's")
    ap.add_argument("--min-idle", type=float, default=Load.min_idle,
                    help="before each timed run, wait for the CPUs to be this idle (0: never)")
    ap.add_argument("--max-wait", type=float, default=Load.max_wait,
                    help="... at most this many seconds")
    ap.add_argument("--tables", default="1,2,3", help="which tables to run (1: throughput, "
                    "2: stage processes, 3: classify)")
    args = ap.parse_args(argv)
    if args.weights == "keras_weights" and not (args.weights_dir and args.weights_dir.is_dir()):
        ap.error("--weights keras_weights needs --weights-dir, a folder of Keras' notop files")
    if args.quality and not args.photos:
        ap.error("--quality scores photos: give --photos DIR")
    tables = set(args.tables.split(","))
    Load.min_idle, Load.max_wait = args.min_idle, args.max_wait
    if args.quality:
        tables.add("1")  # its features
        import sklearn.linear_model  # noqa: F401  (before quiet.tensorflow() hides sklearn)
    nets = args.nets.split(",")

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory(prefix="bench-openvino-") as tmp:
        work = Path(tmp)
        cache = work / "ir-cache"
        os.environ["OPENVINO_IR_CACHE"] = str(cache)
        header(args, cache)
        if args.weights == "keras_weights":
            (work / "keras_weights").symlink_to(args.weights_dir.resolve())
        images, names = make_images(work, args.photos, args.images)
        write_images(work / "train.h5", images, names)
        write_images(work / "warm.h5", images[:32], names[:32])
        os.chdir(work)  # keras_weights/ is found from the project's root
        # int8's sample, as stage int8_sample draws it from the training split
        from stages import h5io, int8_sample

        (work / "data/resized").mkdir(parents=True)
        (work / "data/resized/train.h5").symlink_to(work / "train.h5")
        h5io.write_json(int8_sample.SAMPLE_JSON,
                        int8_sample.record("int8", int8_sample.TRAIN_IMAGES))
        rows, skipped = measurable(nets)
        for line in skipped:
            print(line)
        start = time.perf_counter()
        outs: dict[Row, Path] = {}
        if "1" in tables:
            print("\n1. img/s in one process (HDF5 in and out as the stage; built and warmed "
                  "first)", flush=True)
            outs = throughput(work, rows, args.weights, args.images, args.repeat)
        if "2" in tables:
            print(f"\n2. `python -m stages.extract` processes, start to exit, {args.images} "
                  "images each; OpenVINO's IR cache warm (and once empty)", flush=True)
            stage_processes(work, rows, args.weights, args.images, args.repeat, cache)
        if "3" in tables:
            print("\n3. `python -m stages.classify one.jpg --model M` processes, start to exit "
                  f"({' + '.join(nets)}); OpenVINO's IR cache warm (and once empty)", flush=True)
            classify_cold_start(work, nets, args.weights, args.repeat, cache)
        if args.quality:
            quality(outs, nets, names)
        os.chdir(ROOT)
    print(f"\n{time.perf_counter() - start:.0f} s; load average at the end: "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
