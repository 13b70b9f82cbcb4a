"""Extraction on Keras' JAX backend (the CPU build `requirements.txt` installs) against
TensorFlow's: the stage's own command in a process of its own (Keras picks its backend once, at
import), against the stage's code run here on TensorFlow, on the same resized files and weight
file.

The JAX run must not import TensorFlow at all, as on a GPU machine that has JAX or PyTorch and
no TensorFlow: a stand-in `tensorflow` package that fails on import is put first on its path.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import ENV, REPO, rel_err, save_notop, write_resized

from stages.backbones import BACKBONES
from stages.params import DEFAULTS

# Xception: JAX compiles it in half InceptionV3's time on a CPU.
NET, W, N_TRAIN, N_TEST, BATCH = "xception", 75, 10, 3, 4  # 10: a partial last batch
# Measured (README, "Backends"): JAX against TensorFlow, max relative difference per image
# 1.2e-6 at 299 px on real photos (float32 arithmetic in another order); ~100× room.
TOLERANCE = 1e-4

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Resized files, one weight file in keras_weights/, params, and a `tensorflow` that fails
    on import."""
    root = write_resized(tmp_path_factory.mktemp("backends"), N_TRAIN, N_TEST, W)
    (root / "keras_weights").mkdir()
    save_notop(NET, root / "keras_weights" / BACKBONES[NET].weights_file, seed=3)
    params = {**DEFAULTS, "weights": "keras_weights", "extract_batch_size": BATCH}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    fake = root / "no-tensorflow" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('TensorFlow imported on the JAX path')\n")
    return root


def extract(work: Path, backend: str, out: str) -> Path:
    env = {**ENV, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO),
           # The second JAX run loads the first one's compiled network instead of compiling
           # it again (half the test's time); the same executable, so the bytes must match.
           "JAX_COMPILATION_CACHE_DIR": str(work / "jax-cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    if backend != "tensorflow":
        env["PYTHONPATH"] += ":" + str(work / "no-tensorflow")
    p = subprocess.run([sys.executable, "-m", "stages.extract", "--backbone", NET, "--images",
                        "train.h5", "--out", out], cwd=work, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    return work / out


def tensorflow_reference(work: Path) -> Path:
    """TensorFlow's features, in this process (TensorFlow is Keras' backend here already)."""
    from stages import extract as stage

    with contextlib.chdir(work):  # where keras_weights/ is
        stage.extract(BACKBONES[NET], "train.h5", "tf.h5", "keras_weights", "float32", BATCH,
                      DEFAULTS["seed"])
    return work / "tf.h5"


def test_jax_features_match_tensorflow_and_keep_the_contract(work: Path) -> None:
    tf_out, jax_out = tensorflow_reference(work), extract(work, "jax", "jax.h5")
    with h5py.File(tf_out) as t, h5py.File(jax_out) as j:
        assert (t.attrs["keras_backend"], j.attrs["keras_backend"]) == ("tensorflow", "jax")
        assert j["features"].dtype == np.float32 and j["features"].shape == (N_TRAIN, 2048)
        err = rel_err(j["features"][:], t["features"][:])
        assert err < TOLERANCE, err
        for key in ("labels", "names"):  # same rows, same order
            assert np.array_equal(t[key][:], j[key][:]), key
        assert list(j.attrs["classes"]) == ["cat", "dog"]


def test_a_second_jax_run_gives_the_same_bytes(work: Path) -> None:
    first = work / "jax.h5" if (work / "jax.h5").exists() else extract(work, "jax", "jax.h5")
    assert extract(work, "jax", "jax-again.h5").read_bytes() == first.read_bytes()
