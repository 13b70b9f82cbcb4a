"""`weights`: a local folder of Keras notop files is tracked by DVC, and never silently replaced."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import copy_project, dvc, ran_stages, save_notop

from stages.backbones import BACKBONES, WeightsError, resolve_weights
from stages.params import ParamsError, validate


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
        "extract_xception@train"]
    with h5py.File(root / "data/features/train/xception.h5") as f:
        assert not np.allclose(before, f["features"][:]), "new weights, new features"

    # A missing file stops the extractor with a message naming it, never random weights.
    (root / "keras_weights" / BACKBONES["inception_v3"].weights_file).unlink()
    dvc(root, "add", "keras_weights")
    p = dvc(root, "repro", "extract_inception@test", check=False)
    assert p.returncode != 0
    missing = f"{BACKBONES['inception_v3'].weights_file}: missing"
    assert missing in p.stdout + p.stderr

