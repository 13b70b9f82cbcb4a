"""The pipeline's stages (one module each) and the pieces they share (params, images, backbones,
HDF5 I/O). Run a stage as `python -m stages.<name>` from the repository root, as dvc.yaml does."""

import os

# TensorFlow's C++ INFO/WARNING lines drown the progress bars; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
