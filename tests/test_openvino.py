"""`engine: openvino`: the extractors' networks converted once to OpenVINO IR and run by
OpenVINO on the CPU. Its float32 features are TensorFlow's to rounding; the conversion is cached
and the cached IR is read without TensorFlow; float32 is asked for explicitly (OpenVINO's
default on a CPU with bfloat16 is bfloat16). The pipeline run on OpenVINO, and `classify` on
its model: tests/test_classes.py.

Width 75 and weights none, as tests/test_extract.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import ENV, REPO, rel_err, write_resized

from stages import devices, extract, openvino_engine
from stages.backbones import BACKBONES
from stages.cli import ParamsError
from stages.params import validate

W, N, BATCH, SEED = 75, 10, 4, 2017  # 10 = 4 + 4 + a partial batch of 2


@pytest.fixture(scope="module")
def resized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_resized(tmp_path_factory.mktemp("resized"), N, 2, W)


def features(resized: Path, name: str, engine: str) -> Path:
    out = resized / f"{name}-{engine}.h5"
    if not out.exists():
        extract.extract(BACKBONES[name], str(resized / "train.h5"), str(out), "none", "float32",
                        BATCH, SEED, engine)
    return out


@pytest.mark.parametrize("name", ["inception_v3", "xception"])
def test_openvino_float32_features_are_tensorflow_s(resized: Path, name: str) -> None:
    """The issue's bound, 1e-4 of the features' scale (measured: ~2e-6): a float16 copy of the
    weights (ov.save_model's default) or a bfloat16 hint would miss it by far."""
    ov, tf = features(resized, name, "openvino"), features(resized, name, "tensorflow")
    with h5py.File(ov) as f, h5py.File(tf) as g:
        got, ref = f["features"][:], g["features"][:]
        assert got.shape == ref.shape == (N, 2048) and got.dtype == np.float32
        assert 0 < np.abs(got - ref).max() < 1e-4 * np.abs(ref).max()
        assert rel_err(got, ref) < 1e-4
        assert (f.attrs["engine"], g.attrs["engine"]) == ("openvino", "tensorflow")
        assert f.attrs["precision"] == "float32" and f.attrs["weights"] == f"none, seed {SEED}"
        assert "keras_backend" not in f.attrs and g.attrs["keras_backend"] == "tensorflow"
        assert list(f["names"].asstr()[:]) == list(g["names"].asstr()[:])


def test_the_converted_network_is_read_back_without_tensorflow(resized: Path,
                                                               tmp_path: Path) -> None:
    """The second extraction of a network finds its IR in the cache: no conversion, no
    TensorFlow, no Keras in the process, and the same bytes of features."""
    first = features(resized, "xception", "openvino")
    again = tmp_path / "again.h5"
    code = (f"import sys; from stages import extract; from stages.backbones import BACKBONES; "
            f"extract.extract(BACKBONES['xception'], {str(resized / 'train.h5')!r}, "
            f"{str(again)!r}, 'none', 'float32', {BATCH}, {SEED}, 'openvino'); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**ENV, "PYTHONPATH": str(REPO)}, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]" and "converting" not in p.stderr
    with h5py.File(first) as f, h5py.File(again) as g:
        np.testing.assert_array_equal(f["features"][:], g["features"][:])


def test_float32_is_asked_for_and_the_weights_are_saved_as_float32(resized: Path) -> None:
    import openvino as ov

    features(resized, "inception_v3", "openvino")  # converted
    xml = openvino_engine.network_file(openvino_engine.Network(
        BACKBONES["inception_v3"], W, f"none, seed {SEED}", ""))
    net = openvino_engine.Compiled(xml, "float32", 2)
    assert net.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    types = {op.get_output_element_type(0) for op in ov.Core().read_model(xml).get_ops()
             if op.get_type_name() == "Constant"}
    assert ov.Type.f32 in types and ov.Type.f16 not in types
    assert openvino_engine.meta(xml) | {"dim": 2048, "explainable": True} == \
        openvino_engine.meta(xml)
    pooled, maps = net.run(np.zeros((1, W, W, 3), np.uint8), maps=True)  # a short batch
    assert pooled.shape == (1, 2048) and maps.shape[0] == 1 and maps.shape[-1] == 2048
    np.testing.assert_allclose(maps.mean(axis=(1, 2)), pooled, rtol=1e-4, atol=1e-6)


def test_the_cache_key_follows_everything_that_makes_the_network() -> None:
    base = openvino_engine.Network(BACKBONES["xception"], 299, "keras_weights", "a" * 32)
    others = [openvino_engine.Network(BACKBONES["inception_v3"], 299, "keras_weights", "a" * 32),
              openvino_engine.Network(BACKBONES["xception"], 150, "keras_weights", "a" * 32),
              openvino_engine.Network(BACKBONES["xception"], 299, "imagenet", ""),
              openvino_engine.Network(BACKBONES["xception"], 299, "keras_weights", "b" * 32),
              openvino_engine.Network(BACKBONES["xception"], 299, "keras_weights", "a" * 32,
                                      "scale_0_1")]
    keys = [base.key(), *(o.key() for o in others)]
    assert len(set(keys)) == len(keys)
    assert base.key() == openvino_engine.Network(BACKBONES["xception"], 299, "keras_weights",
                                                 "a" * 32).key()
    assert base.key().startswith("xception-299px-")


def test_bfloat16_through_openvino_needs_the_cpu_s_instructions(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where OpenVINO lists no BF16 it would compute in float32, recorded as bfloat16: stop.
    Where it does, bfloat16 runs, AVX512_BF16 without AMX included (TensorFlow refuses that)."""
    monkeypatch.setattr(openvino_engine, "bf16_supported", lambda: False)
    with pytest.raises(ParamsError, match=r"OpenVINO finds no bfloat16 instructions on this CPU "
                                          r"\(AVX512_BF16 or AMX\): it would compute in float32"):
        devices.check_precision("mixed_bfloat16", "openvino")
    devices.check_precision("float32", "openvino")
    monkeypatch.setattr(openvino_engine, "bf16_supported", lambda: True)
    monkeypatch.setattr(devices, "cpu_has_amx", lambda: False)
    devices.check_precision("mixed_bfloat16", "openvino")


def test_engine_is_checked_with_the_params() -> None:
    assert validate({"engine": "openvino"})["engine"] == "openvino"
    assert validate({})["engine"] == "tensorflow"
    with pytest.raises(ParamsError, match=r"'engine' is 'openvno'; it must be one of "
                                          r"\('tensorflow', 'openvino'\).*did you mean 'openvino'"):
        validate({"engine": "openvno"})
    with pytest.raises(ParamsError, match=r"'precision' is 'mixed_float16', a GPU's, but "
                                          r"'engine' is 'openvino', which runs on CPUs"):
        validate({"engine": "openvino", "precision": "mixed_float16"})
    assert validate({"engine": "openvino", "precision": "int8"})["precision"] == "int8"
    with pytest.raises(ParamsError, match=r"'precision' is 'int8', which OpenVINO runs: set "
                                          r"'engine' to 'openvino' too"):
        validate({"precision": "int8"})


# --- int8 ----------------------------------------------------------------------------------


def test_the_int8_sample_is_none_but_for_int8_and_follows_the_sampled_images_only(
        resized: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other precisions: `none`, whatever the images (nothing reruns). int8: a fixed-seed
    sample's md5, which a sampled image changes and an image left out does not; `load` refuses
    a sample that is no longer the one the network was quantized on."""
    import shutil

    from stages import cli, int8_sample

    monkeypatch.setattr(int8_sample, "SAMPLE_SIZE", 4)
    train = tmp_path / "train.h5"
    shutil.copy(resized / "train.h5", train)
    assert int8_sample.record("float32", str(train)) == {"int8_sample": "none"}
    rec = int8_sample.record("int8", str(train))["int8_sample"]
    rows = int8_sample.sample_rows(N)
    assert (rec["images"], rec["seed"], len(rows)) == (4, 0, 4)
    assert list(rows) == sorted(rows) and list(rows) == list(int8_sample.sample_rows(N))
    assert int8_sample.load(rec["md5"], str(train)).shape == (4, W, W, 3)
    left_out = next(r for r in range(N) if r not in rows)
    with h5py.File(train, "a") as f:
        f["images"][left_out] = 255 - f["images"][left_out]
    assert int8_sample.record("int8", str(train))["int8_sample"]["md5"] == rec["md5"]
    with h5py.File(train, "a") as f:
        f["images"][rows[0]] = 255 - f["images"][rows[0]]
    assert int8_sample.record("int8", str(train))["int8_sample"]["md5"] != rec["md5"]
    with pytest.raises(cli.MissingInput, match=r"train\.h5: its int8 sample .* is not the one "
                                               r"the network was quantized with"):
        int8_sample.load(rec["md5"], str(train))


def test_int8_features_come_from_a_quantized_network_and_record_their_sample(
        resized: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NNCF's quantization, cached: the IR holds FakeQuantize ops, the features stay close to
    float32's (random weights, 75 px: loose), and the file records the sample's md5."""
    import openvino as ov

    from stages import int8_sample

    monkeypatch.chdir(tmp_path)
    Path("data/resized").mkdir(parents=True)
    (Path("data/resized/train.h5")).symlink_to(resized / "train.h5")
    Path("data/int8").mkdir()
    md5 = int8_sample.record("int8", "data/resized/train.h5")["int8_sample"]["md5"]
    Path("data/int8/sample.json").write_text(f'{{"int8_sample": {{"md5": "{md5}"}}}}')
    out = tmp_path / "q.h5"
    extract.extract(BACKBONES["xception"], str(resized / "train.h5"), str(out), "none", "int8",
                    BATCH, SEED, "openvino")
    net = openvino_engine.Network(BACKBONES["xception"], W, f"none, seed {SEED}", "")
    xml = openvino_engine.quantized_file(net, md5, lambda: pytest.fail("not cached"))
    ops = {op.get_type_name() for op in ov.Core().read_model(xml).get_ops()}
    assert "FakeQuantize" in ops
    assert openvino_engine.meta(xml)["int8_sample"] == md5
    with h5py.File(out) as f, h5py.File(features(resized, "xception", "openvino")) as g:
        assert (f.attrs["precision"], f.attrs["int8_sample"]) == ("int8", md5)
        assert g.attrs["int8_sample"] == ""
        q, ref = f["features"][:], g["features"][:]
        cos = (q * ref).sum(1) / np.linalg.norm(q, axis=1) / np.linalg.norm(ref, axis=1)
        assert cos.min() > 0.95 and not np.array_equal(q, ref)


def test_an_int8_model_classifies_as_its_features_were_made_even_from_an_empty_cache(
        resized: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`Classifier` on a model of int8 OpenVINO features: its probabilities are the head's on
    the extracted features; with the cache gone, the network is quantized again from the
    training images' sample (checked by its md5) into the same network."""
    import keras

    from stages import int8_sample
    from stages.classifier import Classifier

    monkeypatch.chdir(tmp_path)
    Path("data/resized").mkdir(parents=True)
    Path("data/resized/train.h5").symlink_to(resized / "train.h5")
    md5 = int8_sample.record("int8", "data/resized/train.h5")["int8_sample"]["md5"]
    Path("data/int8").mkdir()
    Path("data/int8/sample.json").write_text(f'{{"int8_sample": {{"md5": "{md5}"}}}}')
    extract.extract(BACKBONES["xception"], "data/resized/train.h5", "q.h5", "none", "int8",
                    BATCH, SEED, "openvino")
    with h5py.File("q.h5") as f:
        feats = f["features"][:]
    keras.utils.set_random_seed(0)
    head = keras.Sequential([keras.Input((2048,)), keras.layers.Dropout(0.5),
                             keras.layers.Dense(1, activation="sigmoid", name="dense")])
    head.layers[-1].set_weights([np.random.default_rng(0).normal(
        0, 1 / feats.std() / 45, (2048, 1)).astype(np.float32), np.zeros(1, np.float32)])
    head.save("m.h5")
    with h5py.File("m.h5", "a") as f:
        f.attrs.update({"classes": ["cat", "dog"], "networks": ["xception"],
                        "weights": [f"none, seed {SEED}"], "width": W,
                        "preprocess": ["network"], "precision": ["int8"], "weights_md5": [""],
                        "engine": ["openvino"], "int8_sample": [md5]})
    expected = head.predict(feats, verbose=0)[:, 0]
    assert expected.std() > 0.05  # probabilities that differ: the comparison can fail
    with h5py.File(resized / "train.h5") as f:
        pixels = f["images"][:]
    probs = Classifier.load("m.h5").predict(pixels)
    np.testing.assert_allclose(probs[:, 1], expected, atol=1e-5)
    monkeypatch.setenv(openvino_engine.CACHE_ENV, str(tmp_path / "empty"))
    said: list[str] = []
    again = Classifier.load("m.h5", say=said.append).predict(pixels)
    assert any(line.startswith("quantizing xception to int8 once") for line in said), said
    np.testing.assert_allclose(again, probs, atol=1e-5)
