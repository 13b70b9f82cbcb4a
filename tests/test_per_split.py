"""Training and test images flow through stages of their own: after a full run, new test images
rerun the test side and `predict` only, new training images never re-resize or re-extract the
test set, and `-S test_data=` scores another folder of any file names. One copy of the session's
run, changed step by step in file order."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import imagegen
import numpy as np
import pytest
from conftest import copy_project, dvc, md5, ran_stages, run

pytestmark = pytest.mark.pipeline

GROUPS = ("resize", "extract_inception", "extract_xception", "concat")
TEST_SIDE = [f"{g}@test" for g in GROUPS]
TRAIN_SIDE = [f"{g}@train" for g in GROUPS]
N_TEST = 6  # the baseline's Kaggle-style test images, 1.jpg … 6.jpg


@pytest.fixture(scope="module")
def repo(baseline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(baseline, tmp_path_factory.mktemp("splits") / "p")


def pred_rows(repo: Path) -> list[list[str]]:
    return list(csv.reader((repo / "pred.csv").open()))


def test_new_test_images_rerun_only_the_test_side_and_predict(repo: Path) -> None:
    model, train_features = md5(repo / "models/model_2.h5"), md5(
        repo / "data/features/train/fused.h5")
    imagegen.test_set(repo / "new", 2, seed=7)  # 1.jpg, 2.jpg → ids 7 and 8 beside the others
    for i in (1, 2):
        (repo / f"new/{i}.jpg").rename(repo / f"data/raw/test/{N_TEST + i}.jpg")
    dvc(repo, "add", "-q", "data/raw/test")  # the README's step after adding images
    p = dvc(repo, "repro")
    assert sorted(ran_stages(p)) == sorted([*TEST_SIDE, "predict"]), p.stdout
    rows = pred_rows(repo)
    assert rows[0] == ["id", "label"] and [int(r[0]) for r in rows[1:]] == list(range(1, 9))
    assert md5(repo / "models/model_2.h5") == model  # no retraining
    assert md5(repo / "data/features/train/fused.h5") == train_features
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "two more test images")


def test_new_training_images_rerun_no_test_side_stage(repo: Path) -> None:
    test_features = md5(repo / "data/features/test/fused.h5")
    imagegen.kaggle_train(repo / "more", 1, seed=9)  # cat.0.jpg, dog.0.jpg
    for name in ("cat", "dog"):
        (repo / f"more/{name}.0.jpg").rename(repo / f"data/raw/train/{name}.100.jpg")
    dvc(repo, "add", "-q", "data/raw/train")
    p = dvc(repo, "repro")
    assert sorted(ran_stages(p)) == sorted([*TRAIN_SIDE, "train_head", "predict"]), p.stdout
    assert md5(repo / "data/features/test/fused.h5") == test_features
    with h5py.File(repo / "data/features/train/fused.h5") as f:
        assert "cat.100.jpg" in list(f["names"].asstr()[:])
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "two more training images")


def test_another_test_folder_of_any_names_is_scored_by_a_param(repo: Path) -> None:
    """`dvc exp run -S test_data=…`: the new folder's photos, named as a camera names them,
    scored without renaming; each row of pred.csv names its file."""
    names = ["IMG_0001.jpg", "IMG_0002.JPG", "scan 3.png"]
    rng = np.random.default_rng(3)
    for name in names:
        imagegen.write(repo / "data/raw/batch2" / name, imagegen.image(rng, 1))
    p = dvc(repo, "exp", "run", "-S", "test_data=data/raw/batch2")
    assert sorted(ran_stages(p)) == sorted([*TEST_SIDE, "predict"]), p.stdout + p.stderr
    rows = pred_rows(repo)
    assert rows[0] == ["id", "label"] and [r[0] for r in rows[1:]] == names
    assert all(0.005 <= float(r[1]) <= 0.995 for r in rows[1:])
    assert "predict: 3 rows (named by file)" in p.stdout


def test_a_group_name_runs_both_splits(repo: Path) -> None:
    """The names users type stay: `extract_inception` is the group of both splits."""
    p = dvc(repo, "repro", "--dry", "-f", "-s", "extract_inception")
    assert sorted(ran_stages(p)) == ["extract_inception@test", "extract_inception@train"]
