#!/usr/bin/env bash
# Extraction on a GPU machine with JAX (PyTorch may be there too) and no TensorFlow, where
# nothing can be fetched; then that machine's CPU at bfloat16 against float32. About 6 minutes:
#
#     bash benchmarks/device_bench.sh                  # from the repository root or anywhere
#     DEVICE_BENCH_TINY=1 bash benchmarks/device_bench.sh   # smoke sizes, a CPU will do
#
# 1. `KERAS_BACKEND=jax python3 benchmarks/gpu_extract.py`: both networks at float32 and
#    mixed_bfloat16, batch 128 and 256, 1,024 synthetic images at 299 px (docs/benchmarks.md,
#    "GPU"), stopped at DEVICE_BENCH_GPU_SECONDS (default 210; rows printed until then are kept).
# 2. `benchmarks/jax_cpu_bf16.py` with JAX_PLATFORMS=cpu: the CPU's model name and bf16/AMX
#    flags, and both networks at mixed_bfloat16 against float32, paired, through Keras on JAX
#    (XLA:CPU), NOT the extract stage's TensorFlow oneDNN path; stopped at
#    DEVICE_BENCH_CPU_SECONDS (default 130).
#
# Keras, and namex and optree which it needs and such machines lack, are installed from wheels
# when `import keras` fails: `pip install --no-index --no-deps` into /tmp/site from KERAS_WHEELS
# (default: wheels/ at the repository root, ignored by git), made where pip can fetch:
#     pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#         -d wheels keras==3.15.1 namex==0.1.0 optree==0.20.0
# (--python-version: the GPU machine's Python; optree is compiled, the other two are not.)
# Everything printed goes to stdout and, if OUT is set, to $OUT/device_bench.log, with each
# part's output also in $OUT/gpu_extract.txt and $OUT/jax_cpu_bf16.txt.
# Env: PYTHON (default python3), DEVICE_BENCH_GPU_ARGS / DEVICE_BENCH_CPU_ARGS replace the
# sizes given to the two scripts.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax
OUT=${OUT:-}
if [ -n "$OUT" ]; then
    mkdir -p "$OUT"
    exec > >(tee -a "$OUT/device_bench.log") 2>&1
fi
log() { [ -n "$OUT" ] && echo "$OUT/$1" || echo /dev/null; }

if [ "${DEVICE_BENCH_TINY:-0}" = 1 ]; then
    GPU_ARGS=${DEVICE_BENCH_GPU_ARGS:---n 32 --width 75 --batch-sizes 16 --compute-batches 2}
    CPU_ARGS=${DEVICE_BENCH_CPU_ARGS:---width 75 --batch 4 --batches 1 --rounds 2}
else
    GPU_ARGS=${DEVICE_BENCH_GPU_ARGS:---n 1024 --batch-sizes 128,256 --compute-batches 10}
    CPU_ARGS=${DEVICE_BENCH_CPU_ARGS:---batch 16 --batches 2 --rounds 3}
fi

echo "== device_bench $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi: no NVIDIA GPU here"
lscpu 2>/dev/null | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket)' || true
echo "bf16/AMX flags: $(grep -o -w 'avx512_bf16\|amx_bf16\|amx_tile' /proc/cpuinfo 2>/dev/null \
    | sort -u | tr '\n' ' ')"

WHEELS=${KERAS_WHEELS:-wheels}
missing=()
for m in keras namex optree; do "$PY" -c "import $m" 2>/dev/null || missing+=("$m"); done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} from $WHEELS into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --disable-pip-version-check --root-user-action=ignore --find-links "$WHEELS" \
        --target /tmp/site "${missing[@]}" \
        || { echo "device_bench: could not install ${missing[*]} from $WHEELS (see above)"; exit 2; }
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -c "import keras, jax; print('keras', keras.__version__, 'jax', jax.__version__, \
jax.devices())" || { echo "device_bench: keras or jax does not import"; exit 2; }

status=0
# timed NAME SECONDS WHAT COMMAND...: run a part under its time limit, its output to $OUT/NAME.txt
timed() {
    local name=$1 seconds=$2 what=$3; shift 3
    timeout --signal=INT --kill-after=20 "$seconds" "$@" 2>&1 | tee "$(log "$name.txt")"
    local rc=${PIPESTATUS[0]}
    case $rc in
        0) ;;
        124|130) echo "$name: stopped at its time limit; the $what above are complete." ;;
        *) echo "$name: failed (exit $rc)"; status=1 ;;
    esac
}

echo; echo "== 1. GPU: KERAS_BACKEND=jax $PY benchmarks/gpu_extract.py $GPU_ARGS"
# shellcheck disable=SC2086  # the args are words
timed gpu_extract "${DEVICE_BENCH_GPU_SECONDS:-210}" rows "$PY" benchmarks/gpu_extract.py $GPU_ARGS

echo; echo "== 2. CPU, through Keras on JAX (XLA:CPU), NOT the stage's TensorFlow oneDNN path:"
echo "   JAX_PLATFORMS=cpu $PY benchmarks/jax_cpu_bf16.py $CPU_ARGS"
# shellcheck disable=SC2086
timed jax_cpu_bf16 "${DEVICE_BENCH_CPU_SECONDS:-130}" rounds \
    env JAX_PLATFORMS=cpu "$PY" benchmarks/jax_cpu_bf16.py $CPU_ARGS
echo "== device_bench done $(date -u +%FT%TZ), status $status"
exit $status
