#!/usr/bin/env bash
# Extraction on a GPU machine, in one command (about 4 minutes once TensorFlow is installed):
#
#     bash benchmarks/gpu_bench.sh                 # from the repository root or anywhere
#     bash benchmarks/gpu_bench.sh --jit both      # extra flags go to bench_extract_head.py
#
# Both networks at float32 and mixed_float16, batch sizes 32, 64 and 128, against the original's
# model.predict(X, batch_size=12), on 1,024 synthetic 299×299 images (weights none: nothing is
# downloaded but TensorFlow itself). Prints a markdown table: images/s with and without the
# compilation, peak host and GPU memory, × predict, relative error vs predict.
#
# Needs an NVIDIA driver (nvidia-smi). Without TensorFlow for the python found, it makes a venv
# (~/.cache/gpu-bench-venv, or GPU_BENCH_VENV) and pip-installs tensorflow[and-cuda] there (a few GB; needs PyPI or a wheelhouse:
# PIP_FIND_LINKS=/path PIP_NO_INDEX=1). Env: PYTHON (default python3), GPU_BENCH_SECONDS (time
# limit for the benchmark itself, default 270; rows printed until then are kept).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "gpu_bench: $*" >&2; exit 2; }
PY=${PYTHON:-python3}
LIMIT=${GPU_BENCH_SECONDS:-270}
NEEDS="import tensorflow, keras, h5py, yaml, tqdm, numpy"

command -v nvidia-smi >/dev/null || die "nvidia-smi not found: no NVIDIA driver on this machine."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    || die "nvidia-smi failed: the driver does not see a GPU."
command -v "$PY" >/dev/null || die "$PY not found (set PYTHON=/path/to/python3)."

if ! "$PY" -c "$NEEDS" 2>/dev/null; then
    VENV=${GPU_BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/gpu-bench-venv}  # not in the repo
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV" || die "could not create $VENV (on Debian/Ubuntu: apt-get install \
python3-venv), or install tensorflow[and-cuda] h5py pyyaml tqdm for $PY yourself."
    fi
    PY=$VENV/bin/python
    if ! "$PY" -c "$NEEDS" 2>/dev/null; then
        echo "gpu_bench: installing tensorflow[and-cuda] h5py pyyaml tqdm into $VENV …" >&2
        # Short timeouts: a machine without PyPI should fail in seconds, not minutes.
        "$PY" -m pip install --quiet --disable-pip-version-check --timeout 20 --retries 1 \
            "tensorflow[and-cuda]>=2.16,<3" h5py pyyaml tqdm \
            || die "pip could not install tensorflow[and-cuda] (no route to PyPI?). Copy a \
wheelhouse to this machine and rerun with PIP_FIND_LINKS=/path/to/wheels PIP_NO_INDEX=1, or \
point PYTHON at a python that has TensorFlow with CUDA."
    fi
fi

"$PY" - <<'EOF' || die "TensorFlow sees no GPU: its CUDA libraries are missing or do not match \
the driver (tensorflow[and-cuda] brings them; see the log above)."
import os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print(f"TensorFlow {tf.__version__}, GPUs: {[g.name for g in gpus]}")
raise SystemExit(0 if gpus else 1)
EOF

# SIGINT at the limit: the benchmark stops its running child and exits; printed rows stay.
status=0
timeout --signal=INT --kill-after=20 "$LIMIT" "$PY" -m benchmarks.bench_extract_head \
    --device gpu --skip-head --images 1024 --batch-sizes 32,64,128 \
    --precisions float32,mixed_float16 --feature-head-epochs 0 --max-wait 5 --retries 0 \
    "$@" || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 130 ]; then
    echo "gpu_bench: stopped at the ${LIMIT}s limit; the rows above are complete measurements." >&2
elif [ "$status" -ne 0 ]; then
    die "benchmark failed (exit $status)."
fi
