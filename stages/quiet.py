"""TensorFlow and Keras without the start-up lines a user cannot act on.

Importing TensorFlow 2.21 writes, from C++ and before its logging is set up (so
TF_CPP_MIN_LOG_LEVEL cannot stop them), that oneDNN is on, that no CUDA driver was found, which
CPU instructions it was built for and, at the first device query on a machine without a GPU, a
`cuInit` error: about ten lines per stage, twice over. Keras then warns on every checkpoint that
HDF5 is a "legacy" format (model_2.h5 is the contract), and tf.data logs an error about an op
attribute on every training run. `tensorflow()` imports TensorFlow with the process's stderr
caught, drops exactly those lines and passes on anything else it printed; `filtered()` does the
same around a block (the head's training).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions:.*rebuild TensorFlow"
    r"|failed call to cuInit"
    # tf.data's MapDataset in TF 2.21 logs this as an error on every run; nothing is wrong
    r"|NodeDef mentions attribute use_unbounded_threadpool"
)


@contextlib.contextmanager
def _stderr_caught() -> Iterator[list[str]]:
    """Catch what the process (C++ included) writes to stderr; the lines arrive at exit."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines += tmp.read().decode(errors="replace").splitlines()


class _NoLegacyH5Warning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "saving your model as an HDF5 file" not in record.getMessage()


@contextlib.contextmanager
def filtered() -> Iterator[None]:
    """Run a block with TensorFlow's C++ noise dropped from stderr; what else it printed is
    passed on when the block ends (or fails)."""
    try:
        with _stderr_caught() as lines:
            yield
    finally:
        kept = [line for line in lines if not NOISE.search(line)]
        if kept:
            print("\n".join(kept), file=sys.stderr)


def without_sklearn() -> None:
    """Keras imports scikit-learn where it is installed (the lock has it, for the tests) for
    wrappers that no stage uses: 0.8 s of every stage's start. For stage processes only: later
    imports of scikit-learn in this process fail, as Keras expects where it is absent."""
    if "keras" not in sys.modules:
        sys.modules.setdefault("sklearn", None)  # type: ignore[arg-type]


def tensorflow() -> ModuleType:
    """Import TensorFlow (and initialise its devices) quietly; return the module. Keras, imported
    after, runs on it, whatever backend the environment or ~/.keras/keras.json names: only the
    extractors follow that choice (docs/backends.md)."""
    os.environ["KERAS_BACKEND"] = "tensorflow"
    without_sklearn()
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with filtered():
        import tensorflow as tf

        tf.config.list_physical_devices()  # where the cuInit error is printed
    logging.getLogger("absl").addFilter(_NoLegacyH5Warning())
    return tf
