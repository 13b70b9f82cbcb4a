"""Benchmark: the extract stage as whole processes, per network and precision, against the
original's float32 `predict`, and against the machine's bfloat16 matmul ceiling.

    python -m benchmarks.bench_bf16                       # 512 images at 299 px: ~15 min here
    python -m benchmarks.bench_bf16 --images 64 --nets inception_v3 --paths rewrite  # quick
    python -m benchmarks.bench_bf16 --images 128 --paths rewrite --repeat 3 \
        --isa native,AVX512_CORE_BF16          # best of 3, and this CPU without its AMX

Every row is one process timed from its start to its exit (imports, building the network,
reading and writing HDF5 included), on the same N synthetic photos (smooth colour fields plus
noise) resized to 299 px and stored as `resize` writes them; weights none (seeded), so nothing
is downloaded:
- `original`: the original's extraction: the whole uint8 array in memory, `preprocess_input`
  on a float32 copy, `model.predict(X, batch_size=12)` at float32;
- `stage float32`: the stage (`stages.extract`'s main, on the training split then the test
  split, in one process like the original) with `precision: float32`;
- `stage mixed_bfloat16`: the stage as it runs at `mixed_bfloat16` (on a CPU: oneDNN's
  whole-graph rewrite of a float32 network, `stages.devices`), and the other candidates the
  stage could have taken (`--paths`): `policy`, Keras' `mixed_bfloat16` dtype policy; `both`,
  the policy and the rewrite.
`× original` is the original's time over the row's; `ceiling share` is the row's multiply-adds
per second (InceptionV3 5.7 G, Xception 8.4 G per 299-px image) over the machine's bfloat16
matmul peak, measured first (TensorFlow, 4096² bf16 matrices, best of 5 s). Then the time of a
full Kaggle run's extraction (37,500 images per network) at each measured rate.

On a CPU without bfloat16 instructions (AVX512_BF16 or AMX) the stage refuses
`mixed_bfloat16`; the benchmark runs it anyway (EXTRACT_BF16_EMULATED=1) and says so.

`--repeat N` runs every row N times, interleaved (each repeat runs all rows, in reverse order
every other repeat, so that a drift of the host's speed falls on all of them), and reports the
best rate of each row, `× original` per repeat (the row over the original of the same repeat)
and, for the bfloat16 rows, `÷ float32` per repeat (over the stage's float32 of the same repeat
and ISA): paired ratios, which a shared host's drift disturbs far less than single times.
`--isa native,AVX512_CORE_BF16` also runs the stage rows with oneDNN capped at an instruction
set (`ONEDNN_MAX_CPU_ISA`): `AVX512_CORE_BF16` is this CPU as if it had AVX512_BF16 and no AMX
(as AMD Zen 4), `AVX512_CORE` as if it had no bfloat16 instructions; the same cores, so an
approximation of such CPUs (another vendor's cores and caches differ), not a measurement of them.
The header names the CPU (model name, and which of avx512_bf16, amx_bf16 and amx_tile it has).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.machine_load import cpu_line
from benchmarks.synthetic import colour_field, write_resized

ROOT = Path(__file__).resolve().parents[1]
MACS = {"inception_v3": 5.7e9, "xception": 8.4e9}  # per 299-px image, without the top
KAGGLE = 37_500  # images per network in a full run
ORIGINAL = """
import sys, h5py, numpy as np, keras
from stages.backbones import BACKBONES
b = BACKBONES[sys.argv[1]]
keras.utils.set_random_seed(1)
model = getattr(b.keras_module(), b.builder)(include_top=False, weights=None, pooling="avg",
                                             input_shape=(299, 299, 3))
for split in ("train", "test"):
    X = h5py.File(split + ".h5")["images"][:]
    feats = model.predict(b.preprocess(X.astype(np.float32)), batch_size=12, verbose=0)
np.save("original.npy", feats)
"""
# The candidates: the stage's own choice, and the paths it could have taken instead.
PATHS = {
    "rewrite": "",
    "policy": "devices.cpu_bf16_rewrite = lambda p: False\n",
    "both": "devices.keras_policy = lambda p: p\n",
}
STAGE = """
import sys
from stages import devices
{patch}from stages import extract
for split in ("train", "test"):  # DVC runs the two as two processes: one start more
    extract.main(["--backbone", sys.argv[1], "--images", split + ".h5",
                  "--out", split + "_features.h5"])
"""


def isa_env(isa: str) -> dict[str, str]:
    return {} if isa == "native" else {"ONEDNN_MAX_CPU_ISA": isa}


def ceiling(isa: str = "native") -> tuple[float, float]:
    """The bf16 and float32 matmul peaks of this machine, FLOP/s (in a child: TensorFlow),
    with oneDNN capped at `isa` unless native."""
    code = """
import time, tensorflow as tf
for dtype in (tf.bfloat16, tf.float32):
    a = tf.random.uniform((4096, 4096), dtype=tf.float32); a = tf.cast(a, dtype)
    mm = tf.function(lambda x: tf.matmul(x, x))
    mm(a).numpy(); best = 0.0; end = time.perf_counter() + 5
    while time.perf_counter() < end:
        t = time.perf_counter(); mm(a).numpy()
        best = max(best, 2 * 4096**3 / (time.perf_counter() - t))
    print(best)
"""
    out = run([sys.executable, "-c", code], ROOT, isa_env(isa))[1].split()
    return float(out[-2]), float(out[-1])


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
                            **(env or {})})
    wall = time.perf_counter() - t
    if p.returncode:
        sys.exit(f"{' '.join(cmd[:3])} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return wall, p.stdout


def make_data(folder: Path, n: int) -> None:
    n_test = max(1, n // 8)
    write_resized(folder, n - n_test, n_test, 299, colour_field(299, noise=15))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--nets", default="inception_v3,xception")
    ap.add_argument("--paths", default="rewrite,policy,both",
                    help="mixed_bfloat16 candidates: rewrite (the stage's), policy, both")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of every row, interleaved; best rate and paired ratios")
    ap.add_argument("--isa", default="native",
                    help="oneDNN instruction-set caps for the stage rows (ONEDNN_MAX_CPU_ISA), "
                         "e.g. native,AVX512_CORE_BF16 (no AMX),AVX512_CORE (no bfloat16)")
    a = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    from stages.devices import cpu_has_bf16

    isas = a.isa.split(",")
    peaks = {isa: ceiling(isa) for isa in isas}
    native = cpu_has_bf16()
    print(cpu_line())
    for isa, (bf16_peak, f32_peak) in peaks.items():
        print(f"matmul peak{'' if isa == 'native' else f' (oneDNN capped at {isa})'}: bfloat16 "
              f"{bf16_peak / 1e9:.0f} GFLOP/s, float32 {f32_peak / 1e9:.0f} GFLOP/s")
    print(f"bfloat16 instructions: {'yes' if native else 'NO (emulated)'}; {a.images} images "
          f"at 299 px; {a.repeat} repeat(s), interleaved; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)

    # One row: (network, precision, path, isa); the original's isa is "native".
    rows: list[tuple[str, str, str, str]] = []
    for net in a.nets.split(","):
        rows.append((net, "original", "", "native"))
        for isa in isas:
            rows.append((net, "float32", "", isa))
            rows += [(net, "mixed_bfloat16", p, isa) for p in a.paths.split(",")]
    walls: dict[tuple[str, str, str, str], list[float]] = {r: [] for r in rows}
    with tempfile.TemporaryDirectory(prefix="bench-bf16-") as tmp:
        work = Path(tmp)
        make_data(work, a.images)
        (work / "keras_weights").mkdir()
        for rep in range(a.repeat):
            for row in rows if rep % 2 == 0 else rows[::-1]:
                net, precision, path, isa = row
                if precision == "original":
                    wall, _ = run([sys.executable, "-c", ORIGINAL, net], work)
                else:
                    params = {"weights": "none", "precision": precision, "seed": 1,
                              "extract_batch_size": a.batch_size}
                    (work / "params.yaml").write_text(yaml.safe_dump(params))
                    wall, _ = run([sys.executable, "-c",
                                   STAGE.format(patch=PATHS[path or "rewrite"]), net],
                                  work, {"EXTRACT_BF16_EMULATED": "1", **isa_env(isa)})
                walls[row].append(wall)
                print(f"repeat {rep + 1}: {label(row)}: {wall:.1f} s", flush=True)

    def ratios(row: tuple[str, str, str, str], base: tuple[str, str, str, str]) -> str:
        return " ".join(f"{b / w:.2f}" for w, b in zip(walls[row], walls[base], strict=True))

    print("\n| network | run | best img/s | × original, best | × original, each repeat | "
          "÷ float32, each repeat | ceiling share | full Kaggle run |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        net, precision, path, isa = row
        original, f32 = (net, "original", "", "native"), (net, "float32", "", isa)
        ips = a.images / min(walls[row])
        share = ips * MACS[net] / (peaks[isa][0] / 2)  # peak in FLOP/s, 2 per multiply-add
        per_f32 = ratios(row, f32) if precision == "mixed_bfloat16" else ""
        print(f"| {net} | {label(row)} | {ips:.1f} | ×{min(walls[original]) / min(walls[row]):.2f}"
              f" | {ratios(row, original)} | {per_f32} | {share:.0%} | "
              f"{KAGGLE / ips / 3600:.1f} h |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


def label(row: tuple[str, str, str, str]) -> str:
    _, precision, path, isa = row
    if precision == "original":
        return "original predict, float32"
    text = f"stage {precision}" + (f" ({path})" if precision == "mixed_bfloat16" else "")
    return text + ("" if isa == "native" else f", oneDNN ≤ {isa}")


if __name__ == "__main__":
    main()
