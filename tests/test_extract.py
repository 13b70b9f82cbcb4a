"""Feature extraction, one split a run as each `extract_<net>@<split>` stage does: the streamed
features equal the network run on the whole array in memory, bf16 stays close to float32, and an
XLA run's padded last batch leaves no trace.

Width 75 (the smallest both networks accept) and weights none keep this to seconds on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import rel_err, write_resized

from stages import devices, extract
from stages.backbones import BACKBONES, build

W, N_TRAIN, N_TEST, BATCH, SEED = 75, 10, 3, 4, 2017  # 10 = 4 + 4 + a partial batch of 2
# Measured: bf16's max relative error per image, 1.3e-2 (inception_v3) and 0.7e-2 (xception)
# with Keras' policy at 75 and 299 px (bench_extract_head, weights none); the rewrite gave
# 0.65e-2 (xception, 75 px) and 2.4e-2 on real photos at 299 px (bf16_quality). 0.04: room.
BF16_BOUND = 0.04


@pytest.fixture(scope="module")
def resized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.h5 and test.h5 laid out as the resize stage writes them."""
    return write_resized(tmp_path_factory.mktemp("resized"), N_TRAIN, N_TEST, W)


CARD = ("inception_v3", "xception")  # the card's networks (test_backbones.py: the others)


def run_stage(resized: Path, name: str, precision: str, split: str = "train") -> Path:
    out = resized / f"{name}-{precision}-{split}.h5"
    if not out.exists():
        extract.extract(BACKBONES[name], str(resized / f"{split}.h5"), str(out), "none",
                        precision, BATCH, SEED)
    return out


@pytest.mark.parametrize(("name", "splits"), [("inception_v3", ("train",)),
                                              ("xception", ("train", "test"))])
def test_streaming_equals_the_in_memory_reference(resized: Path, name: str,
                                                  splits: tuple[str, ...]) -> None:
    backbone = BACKBONES[name]
    model = build(backbone, W, "none", SEED)  # the same seeded random init
    for split in splits:  # the test split's rows (ids, no labels) once: they are no network's
        out = run_stage(resized, name, "float32", split)
        with h5py.File(resized / f"{split}.h5") as src, h5py.File(out) as f:
            x = src["images"][:]
            ref = model(backbone.preprocess(x.astype(np.float32)), training=False).numpy()
            got = f["features"][:]
            assert got.dtype == np.float32 and got.shape == (len(x), 2048)
            assert rel_err(got, ref) < 1e-4
            assert list(f["names"].asstr()[:]) == list(src["names"].asstr()[:])
            if split == "train":
                assert list(f["labels"][:]) == list(src["labels"][:])
                assert list(f.attrs["classes"]) == ["cat", "dog"]
            else:  # an unlabelled Kaggle test set: ids, no labels, no classes
                assert list(f["ids"][:]) == list(range(1, N_TEST + 1))
                assert "labels" not in f and "classes" not in f.attrs
            assert f.attrs["backbone"] == name


@pytest.fixture
def bf16_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run mixed_bfloat16 here even if this CPU lacks the instructions (emulated: the same
    arithmetic, slower). A CPU without AVX-512 cannot even emulate it (the stage refuses)."""
    if devices.cpu_has_avx512() is False and not devices.gpu_count():
        pytest.skip("this CPU has no AVX-512: TensorFlow skips its bfloat16 rewrite here")
    monkeypatch.setenv(devices.EMULATED, "1")


@pytest.mark.parametrize("name", CARD)
def test_bf16_features_are_close_to_float32(resized: Path, name: str,
                                            bf16_anywhere: None) -> None:
    import keras

    if not devices.gpu_count():  # a CPU: the rewrite of a float32 network, not the policy
        assert devices.keras_policy("mixed_bfloat16") == "float32"
    f32, bf16 = run_stage(resized, name, "float32"), run_stage(resized, name, "mixed_bfloat16")
    with h5py.File(f32) as a, h5py.File(bf16) as b:
        err = rel_err(b["features"][:], a["features"][:])
        assert 0 < err < BF16_BOUND, err  # > 0: bf16 really was used
    # The policy is set only while the network is built, not left for whatever runs next.
    assert keras.mixed_precision.global_policy().name == "float32"
    # Nor the rewrite: float32 runs after it are float32.
    import tensorflow as tf

    assert not tf.config.optimizer.get_experimental_options().get(
        "auto_mixed_precision_onednn_bfloat16")


def test_bf16_twice_gives_the_same_bytes(resized: Path, tmp_path: Path,
                                         bf16_anywhere: None) -> None:
    """What DVC hashes: a second run at mixed_bfloat16 writes the same file, byte for byte."""
    first = run_stage(resized, "inception_v3", "mixed_bfloat16")
    again = tmp_path / "again.h5"
    extract.extract(BACKBONES["inception_v3"], str(resized / "train.h5"), str(again), "none",
                    "mixed_bfloat16", BATCH, SEED)
    assert first.read_bytes() == again.read_bytes()
    with h5py.File(again) as f:  # the contract: float32 features, rows in resized order
        assert f["features"].dtype == np.float32 and f["features"].shape == (N_TRAIN, 2048)
        assert list(f["labels"][:]) == [0, 1] * (N_TRAIN // 2)


def test_bf16_on_a_cpu_without_it_stops_with_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    if devices.gpu_count():
        pytest.skip("a GPU is present")
    info = tmp_path / "cpuinfo"
    for flags, bf16, amx in (("fpu avx512f avx512_vnni", False, False),
                             ("avx512f avx512_bf16", True, False),  # AMD Zen 4
                             ("avx512f avx512_bf16 amx_bf16 amx_tile", True, True)):
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert devices.cpu_has_bf16(str(info)) is bf16 and devices.cpu_has_amx(str(info)) is amx
    assert devices.cpu_has_bf16(str(tmp_path / "none")) is None  # not Linux: cannot tell
    assert devices.cpu_has_amx(str(tmp_path / "none")) is None
    assert devices.cpu_has_avx512(str(info)) is True
    assert devices.cpu_has_avx512(str(tmp_path / "none")) is None
    monkeypatch.delenv(devices.EMULATED, raising=False)
    monkeypatch.setattr(devices, "cpu_has_avx512", lambda: True)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(devices, "cpu_has_amx", lambda: False)
    with pytest.raises(devices.ParamsError, match=r"no bfloat16 instructions .* Use 'float32'"):
        devices.check_precision("mixed_bfloat16")
    # AVX512_BF16 without AMX: measured slower than float32 (docs/benchmarks.md), refused too.
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    with pytest.raises(devices.ParamsError, match=r"AVX512_BF16 and no AMX.* Use 'float32'"):
        devices.check_precision("mixed_bfloat16")
    monkeypatch.setenv(devices.EMULATED, "1")
    devices.check_precision("mixed_bfloat16")  # asked for anyway
    monkeypatch.delenv(devices.EMULATED)
    monkeypatch.setattr(devices, "cpu_has_amx", lambda: True)
    devices.check_precision("mixed_bfloat16")  # the fast path: no message
    # No AVX-512 (this project's CI machine once): TensorFlow skips the rewrite altogether, so
    # even the override would record float32 features as bfloat16's: refused regardless.
    monkeypatch.setattr(devices, "cpu_has_avx512", lambda: False)
    monkeypatch.setenv(devices.EMULATED, "1")
    with pytest.raises(devices.ParamsError, match=r"no AVX-512.* Use 'float32'"):
        devices.check_precision("mixed_bfloat16")


def test_xla_pads_the_last_batch_and_drops_the_padding(resized: Path) -> None:
    """The GPU path (XLA, fixed batch shape) on a small network, run on the CPU."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([keras.Input((W, W, 3)), keras.layers.Conv2D(8, 3),
                              keras.layers.GlobalAveragePooling2D()])
    strategy = tf.distribute.get_strategy()
    with h5py.File(resized / "train.h5") as f:
        ds = f["images"]
        ref = model(ds[:].astype(np.float32) / 255.0).numpy()
        for jit in (True, False):
            got = np.concatenate(list(extract.features(model, lambda x: x / 255.0, ds, BATCH,
                                                       strategy, jit=jit)))
            assert got.shape == ref.shape
            np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_one_trace_serves_every_batch(resized: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, jit: bool) -> None:
    """The network is traced (with XLA: compiled) once per run, the partial last batch too."""
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((W, W, 3)), keras.layers.Conv2D(8, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2048)])
    steps = []
    real = extract.compiled_step
    monkeypatch.setattr(extract, "compiled_step", lambda *a: steps.append(real(*a)) or steps[-1])
    extract.write_features(model, BACKBONES["xception"], tf.distribute.get_strategy(),
                           str(resized / "train.h5"), str(tmp_path / "f.h5"), BATCH, jit)
    assert len(steps) == 1 and steps[0].experimental_get_tracing_count() == 1
    with h5py.File(tmp_path / "f.h5") as f:
        assert f["features"].shape == (N_TRAIN, 2048)


def test_mixed_float16_needs_a_gpu() -> None:
    if devices.gpu_count():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="mixed_float16"):
        devices.check_precision("mixed_float16")


def test_mixed_float16_on_a_gpu_machine_without_cuda_libraries_names_the_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain `tensorflow` on a GPU machine runs on the CPU: the fix is the CUDA build."""
    monkeypatch.setattr(devices, "gpu_count", lambda: 0)
    monkeypatch.setattr(devices, "nvidia_driver", lambda: True)
    with pytest.raises(devices.ParamsError, match=r"requirements-gpu\.txt"):
        devices.check_precision("mixed_float16")
    monkeypatch.setattr(devices, "backend", lambda: "jax")
    with pytest.raises(devices.ParamsError, match="JAX's CUDA build"):
        devices.check_precision("mixed_float16")
