"""The pipeline's stages (one module each) and the pieces they share (params, images, backbones,
HDF5 I/O). Run a stage as `python3 -m stages.<name>` from the repository root, as dvc.yaml does."""

import os
import sys

from stages import environment

# TensorFlow's C++ INFO/WARNING lines drown the progress bars; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Before any stage imports numpy or TensorFlow: the wrong interpreter gets one line and the fix.
# (The GPU benchmark, benchmarks/gpu_extract.py, runs the extraction code on a machine's own
# JAX or PyTorch stack, without the lock's packages: it alone skips the check.)
if os.environ.get(environment.SKIP) != "1":
    try:
        environment.check()
    except environment.EnvironmentProblem as e:
        sys.exit(f"stages: {e}")
