"""`weights`: a local folder of Keras notop files is tracked by DVC, and never silently replaced;
per network, another weight file loads whole or stops in one line, and changing one network's
entry reruns that network's extraction alone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import copy_project, dvc, ran_stages, rel_err, save_notop, set_params, write_resized

from stages import extract
from stages.backbones import BACKBONES, WeightsError, resolve_weights
from stages.params import NetworkWeights, ParamsError, validate
from stages.weight_files import WeightFileError

W = 75  # the smallest width every network accepts: fast


def test_imagenet_and_none_pass_through() -> None:
    b = BACKBONES["xception"]
    assert resolve_weights(b, "imagenet") == "imagenet"
    assert resolve_weights(b, "none") is None


def test_missing_weight_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keras_weights").mkdir()
    name = BACKBONES["xception"].weights_file
    with pytest.raises(WeightsError, match=re.escape(name)):
        resolve_weights(BACKBONES["xception"], "keras_weights")


def test_untracked_or_missing_folder_is_refused(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keras_weights").mkdir()
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(WeightsError, match="DVC tracks local weights only in keras_weights/"):
        resolve_weights(BACKBONES["xception"], "elsewhere")
    with pytest.raises(ParamsError, match="did you mean 'imagenet'"):  # stopped before any stage
        validate({"weights": "imagnet"})


@pytest.mark.pipeline
def test_replacing_a_weight_file_reruns_extraction(baseline: Path, tmp_path: Path) -> None:
    root = copy_project(baseline, tmp_path / "p")  # the pipeline run on local weights files
    # The names users type stay: `extract_inception` is the group of both splits (forced, dry).
    p = dvc(root, "repro", "--dry", "-f", "-s", "extract_inception")
    assert sorted(ran_stages(p)) == ["extract_inception@test", "extract_inception@train"]
    with h5py.File(root / "data/features/train/xception.h5") as f:
        before = f["features"][:]
    save_notop("xception", root / "keras_weights" / BACKBONES["xception"].weights_file, seed=2)
    dvc(root, "add", "keras_weights")  # as README's "Weights" says: the new files, versioned
    assert ran_stages(dvc(root, "repro", "extract_xception@train")) == [
        "pick_weights", "extract_xception@train"]
    # The file's md5 is in Xception's entry alone: InceptionV3's extraction stays.
    assert sorted(ran_stages(dvc(root, "repro", "--dry"))) == [
        "concat@train", "extract_xception@test"]
    with h5py.File(root / "data/features/train/xception.h5") as f:
        assert not np.allclose(before, f["features"][:]), "new weights, new features"

    # A missing file stops the extractor with a message naming it, never random weights.
    (root / "keras_weights" / BACKBONES["inception_v3"].weights_file).unlink()
    dvc(root, "add", "keras_weights")
    p = dvc(root, "repro", "extract_inception@test", check=False)
    assert p.returncode != 0
    missing = f"{BACKBONES['inception_v3'].weights_file}: missing"
    assert missing in p.stdout + p.stderr



# --- a weight file that is not Keras' own, per network ------------------------------------------


def seeded(name: str, seed: int = 3, top: bool = False) -> Any:
    """A random-init network as Keras builds it (`top`: with its classifier, 3 classes)."""
    import keras

    keras.utils.set_random_seed(seed)
    b = BACKBONES[name]
    shape = {"include_top": True, "classes": 3} if top else {"include_top": False,
                                                             "pooling": "avg"}
    return getattr(b.keras_module(), b.builder)(weights=None, input_shape=(W, W, 3), **shape)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A project folder with one seeded InceptionV3 saved every way Keras saves it, and the
    features that network gives (its own preprocess_input) of a small resized split."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("weight_files")
    write_resized(root, 3, 1, W)
    kw = root / "keras_weights"
    kw.mkdir()
    net = seeded("inception_v3")
    net.save_weights(kw / "inc.weights.h5")  # Keras 3's format
    net.save(kw / "inc_whole.h5")            # a whole model, legacy HDF5 (RadImageNet's)
    net.save(kw / "inc.keras")
    save_notop("inception_v3", kw / "inc_legacy.h5", seed=3)  # weights alone, legacy HDF5
    extract.write_features(net, BACKBONES["inception_v3"], tf.distribute.get_strategy(),
                           str(root / "train.h5"), str(root / "ref.h5"), batch_size=2)
    with h5py.File(root / "ref.h5") as f:
        return root, f["features"][:]


def extracted(root: Path, entry: NetworkWeights, name: str = "inception_v3") -> h5py.File:
    extract.extract(BACKBONES[name], str(root / "train.h5"), str(root / "out.h5"), entry,
                    "float32", 2, seed=9)  # another seed: the file's weights, not a random init
    return h5py.File(root / "out.h5")


@pytest.mark.parametrize("file", ["inc.weights.h5", "inc_whole.h5", "inc.keras", "inc_legacy.h5"])
def test_a_file_of_the_network_gives_its_features(file: str, files: tuple[Path, np.ndarray],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root, ref = files
    monkeypatch.chdir(root)
    with extracted(root, NetworkWeights(f"keras_weights/{file}")) as f:
        assert rel_err(f["features"][:], ref) < 1e-6
        # the record rebuilds the network: the path itself, and the scaling
        assert (f.attrs["weights"], f.attrs["preprocess"]) == (f"keras_weights/{file}",
                                                               "network")


def test_preprocess_scales_the_input_and_is_recorded(files: tuple[Path, np.ndarray],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = files
    monkeypatch.chdir(root)
    net = seeded("inception_v3")
    with h5py.File(root / "train.h5") as f:
        want = net.predict(f["images"][:].astype(np.float32) / 127.5 - 1, verbose=0)
    with extracted(root, NetworkWeights("keras_weights/inc_whole.h5", "scale_-1_1")) as f:
        assert rel_err(f["features"][:], want) < 1e-5
        assert f.attrs["preprocess"] == "scale_-1_1"


def one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize(("name", "where"), [
    ("top.weights.h5", r"its layer 'dense' is not in the network \(a file with its top\?\)"),
    ("top_whole.h5", r"its layer #188 'predictions' comes after the network's last"),
    ("xception.weights.h5", r"its layer 'batch_normalization' holds weights of shapes 32, 32, "
                            r"32, 32 where the network's has 32, 32, 32"),
    ("xception_legacy.h5", r"its layer #1 'block1_conv1_bn' holds weights of shapes"),
])
def test_a_file_that_does_not_fit_stops_in_one_line(name: str, where: str,
                                                    files: tuple[Path, np.ndarray],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Another architecture, or the network with its top: never a half-loaded network."""
    root, _ = files
    monkeypatch.chdir(root)
    path = root / "keras_weights" / name
    if not path.exists():
        if name.startswith("top"):
            top = seeded("inception_v3", top=True)
            top.save_weights(root / "keras_weights/top.weights.h5")
            top.save(root / "keras_weights/top_whole.h5")
        else:
            seeded("xception").save_weights(root / "keras_weights/xception.weights.h5")
            save_notop("xception", root / "keras_weights/xception_legacy.h5", seed=1)
    with pytest.raises(WeightFileError) as e:
        extracted(root, NetworkWeights(f"keras_weights/{name}"))
    assert re.match(rf"keras_weights/{re.escape(name)} does not fit inception_v3 without its "
                    rf"top: {where}", one_line(e)), str(e.value)


def test_a_missing_file_of_the_mapping_is_named(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keras_weights").mkdir()
    with pytest.raises(WeightsError, match=r"keras_weights/r\.h5: missing\. Put it in "
                                           r"keras_weights/ .* weights\.xception"):
        resolve_weights(BACKBONES["xception"], "keras_weights/r.h5")


@pytest.mark.parametrize(("weights", "message"), [
    ({"inception": "imagenet"}, r"'weights' names the network 'inception'; networks: .*did you "
                                r"mean 'inception_v3'"),
    ({"xception": "/data/RadImageNet.h5"}, r"'weights\.xception' is '/data/RadImageNet\.h5'; it "
                                           r"must be .* a file 'keras_weights/<name>'"),
    ({"xception": "keras_weights/../x.h5"}, r"'weights\.xception' is 'keras_weights/\.\./x\.h5'"),
    ({"xception": "keras_weights/x.txt"}, r"ending in \.h5, \.hdf5, \.keras"),
    ({"xception": {"file": "keras_weights/x.h5", "preprocess": "scale_0-1"}},
     r"'weights\.xception\.preprocess' is 'scale_0-1'.*did you mean 'scale_0_1'"),
    ({"xception": {"fil": "keras_weights/x.h5"}}, r"'weights\.xception' has the key 'fil'.*did "
                                                  r"you mean 'file'"),
    ({"convnext_tiny": {"file": "keras_weights/x.h5", "preprocess": "scale_0_1"}},
     r"convnext_tiny scales its input inside the network"),
])
def test_a_bad_mapping_stops_in_one_line_naming_the_key(weights: dict, message: str) -> None:
    with pytest.raises(ParamsError) as e:
        validate({"weights": weights})
    assert re.search(message, one_line(e)), str(e.value)


@pytest.mark.parametrize("weights", [
    "keras_weights",
    {"inception_v3": "keras_weights/RadImageNet-IRV2_notop.h5", "xception": "none"},
    {"inception_v3": {"file": "keras_weights/r.weights.h5", "preprocess": "imagenet_mean_std"}},
    {},
])
def test_both_forms_are_valid(weights: object) -> None:
    assert validate({"weights": weights})["weights"] == weights


@pytest.mark.pipeline
def test_one_networks_entry_reruns_that_network_alone(baseline: Path, tmp_path: Path) -> None:
    """The baseline ran on `weights: keras_weights`. The same as a mapping changes nothing (but
    `predict`, which depends on all of params.yaml); another entry for InceptionV3 reruns its
    group, never Xception's. (A dry run lists the stages whose own deps changed: `concat`,
    `train_head` and `predict` follow the new InceptionV3 features, as their deps.)"""
    root = copy_project(baseline, tmp_path / "p")
    same = {"inception_v3": "keras_weights", "xception": "keras_weights"}
    # A file of its own for InceptionV3, added to the folder (versioned, as docs/networks.md
    # says), reruns nothing yet: no entry names it.
    save_notop("inception_v3", root / "keras_weights/mine.h5", seed=4)
    dvc(root, "add", "keras_weights")
    mine = {**same, "inception_v3": "keras_weights/mine.h5"}
    # predict and report depend on the whole params.yaml
    inception = ["extract_inception@train", "extract_inception@test", "predict", "report"]
    for weights, rerun in ((same, ["predict", "report"]),
                           ({**same, "inception_v3": "none"}, inception),
                           (mine, inception)):
        set_params(root, weights=weights)
        # pick_weights writes each network's entry (milliseconds); then DVC knows which changed
        assert ran_stages(dvc(root, "repro", "pick_weights")) == ["pick_weights"]
        p = dvc(root, "repro", "--dry")
        assert sorted(ran_stages(p)) == sorted(rerun), p.stdout
