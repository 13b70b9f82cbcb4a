"""Choosing the networks (docs/networks.md): `fuse` picks the extracted networks the head trains
on, in column order, rerunning the fusion, the head and the prediction, never an extraction; a
network without an extraction stage is named; the docs' block adds one. One copy of the
session's run, changed step by step in file order."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, copy_project, dvc, ran_stages, set_params

pytestmark = pytest.mark.pipeline

HEAD = ["concat@test", "concat@train", "predict", "report", "train_head"]


@pytest.fixture(scope="module")
def repo(baseline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(baseline, tmp_path_factory.mktemp("networks") / "p")


def features(repo: Path, split: str, name: str) -> np.ndarray:
    with h5py.File(repo / f"data/features/{split}/{name}.h5") as f:
        return f["features"][:]


def test_fuse_reruns_the_fusion_and_the_head_only(repo: Path) -> None:
    p = dvc(repo, "exp", "run", "-S", "fuse=[xception]")
    assert sorted(ran_stages(p)) == HEAD, p.stdout + p.stderr
    for split in ("train", "test"):
        fused = features(repo, split, "fused")
        assert fused.shape[1] == 2048
        np.testing.assert_array_equal(fused, features(repo, split, "xception"))
    with h5py.File(repo / "models/model_2.h5") as f:
        assert list(f.attrs["networks"]) == ["xception"]


def test_a_network_without_its_stage_is_named(repo: Path) -> None:
    set_params(repo, fuse=["resnet50", "xception"])
    p = dvc(repo, "repro", check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "extract" not in " ".join(ran_stages(p))
    assert "'fuse' names 'resnet50'" in out and "add an `extract_resnet50` group" in out
    assert "Traceback" not in out


def doc_block(marker: str) -> str:
    """The yaml block after `<!-- marker` in docs/networks.md."""
    text = (REPO / "docs/networks.md").read_text()
    return re.search(rf"<!-- {marker}.*?-->\n```yaml\n(.*?)```", text, re.S).group(1)


def test_the_documented_block_adds_a_network_and_fuse_trains_on_it(repo: Path) -> None:
    before, concat = (repo / "dvc.yaml").read_text().split("\n  concat:\n")
    dep = "        - data/features/${item}/xception.h5\n"  # beside the other two, in concat
    concat = concat.replace(dep, dep + doc_block("concat-dep"), 1)
    (repo / "dvc.yaml").write_text(  # after extract_xception, as the docs say
        before + "\n" + doc_block("extract-block") + "\n  concat:\n" + concat)
    p = dvc(repo, "repro")  # fuse is [resnet50, xception] since the test above
    ran = ran_stages(p)
    assert sorted(ran) == sorted(["extract_resnet50@train", "extract_resnet50@test", *HEAD]), \
        p.stdout
    resnet = features(repo, "train", "resnet50")
    assert resnet.shape == (24, 2048)
    fused = features(repo, "train", "fused")  # the columns follow fuse: ResNet50's first
    np.testing.assert_array_equal(fused[:, :2048], resnet)
    np.testing.assert_array_equal(fused[:, 2048:], features(repo, "train", "xception"))
    assert "train_head: 2 classes" in p.stdout
