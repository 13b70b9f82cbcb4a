"""The network registry against Keras itself: every network builds with `weights: none` at a
small width, the stage's extraction gives it as many feature columns as Keras' pooled output has,
its weight file name is the one Keras downloads, and docs/networks.md's table says the same."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from conftest import REPO, write_resized

from stages import extract
from stages.backbones import BACKBONES, build
from stages.params import NETWORKS

W, N = 75, 3  # 75 px: the smallest that every network in the registry accepts


@pytest.fixture(scope="module")
def resized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_resized(tmp_path_factory.mktemp("backbones"), N, 1, W)


def asked_for(name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[str]]:
    """The network as `weights: imagenet` builds it, and the file names Keras asked to
    download; nothing is downloaded (the weights stay the seeded random ones)."""
    import keras
    from keras.src.utils import file_utils

    asked: list[str] = []
    monkeypatch.setattr(file_utils, "get_file", lambda fname, *a, **k: asked.append(fname) or
                        fname)
    monkeypatch.setattr(keras.Model, "load_weights", lambda self, *a, **k: None)
    return build(BACKBONES[name], W, "imagenet", seed=1), asked


def test_the_params_know_the_registrys_networks() -> None:
    assert tuple(BACKBONES) == NETWORKS


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_network_extracts_features_of_kerass_size(
        name: str, resized: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    model, asked = asked_for(name, monkeypatch)
    assert asked == [BACKBONES[name].weights_file]  # Keras' own name, for keras_weights/
    out = tmp_path / f"{name}.h5"
    extract.write_features(model, BACKBONES[name], tf.distribute.get_strategy(),
                           str(resized / "train.h5"), str(out), batch_size=2)
    with h5py.File(out) as f:
        x = f["features"][:]
        assert x.shape == (N, model.output_shape[-1]) == (N, DOCUMENTED[name][1])
        assert np.isfinite(x).all() and f.attrs["backbone"] == name


def documented() -> dict[str, tuple[str, int, str]]:
    """docs/networks.md's table: name → (Keras application, feature size, weight file)."""
    rows = re.findall(r"^\| `(\w+)` \| `keras\.applications\.(\w+)` \| ([\d,]+) \| `([^`]+)` \|",
                      (REPO / "docs/networks.md").read_text(), re.MULTILINE)
    return {name: (builder, int(size.replace(",", "")), file)
            for name, builder, size, file in rows}


DOCUMENTED = documented()


def test_the_documented_table_is_the_registry() -> None:
    assert {n: (d[0], d[2]) for n, d in DOCUMENTED.items()} == {
        n: (b.builder, b.weights_file) for n, b in BACKBONES.items()}
