"""`concat` at the row counts where batches end: the features side by side, the rows' info, and
a preview per image. 257 rows left one image in the previews' last batch (256 a batch), and
identical images encode to JPEGs of one length: h5py turned such a batch into a 2-D array and
`concat` crashed after all the extraction work."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from stages import concat, h5io, previews
from stages.feature_files import FEATURE_CHUNK

W = 32


def resized(path: Path, images: np.ndarray) -> Path:
    with h5io.create_h5(path) as f:
        h5io.write_array(f, "images", images)
        h5io.write_row_info(f, {"names": np.array([f"{i}.jpg" for i in range(len(images))],
                                                  object),
                                "labels": (np.arange(len(images)) % 2).astype(np.uint8)},
                            ["cat", "dog"])
    return path


def feature_file(path: Path, source: Path, dim: int, seed: int, name: str) -> Path:
    with h5py.File(source) as src, h5io.create_h5(path) as f:
        n = len(src["images"])
        h5io.write_array(f, "features",
                         np.random.default_rng(seed).random((n, dim), np.float32))
        h5io.write_row_info(f, h5io.read_row_info(src), h5io.classes_if_any(src))
        f.attrs["backbone"] = name
    return path


@pytest.mark.parametrize(("n", "identical"), [
    (1, False), (previews.BATCH, False), (previews.BATCH + 1, False),
    (2 * previews.BATCH + 1, False), (FEATURE_CHUNK + 3, True), (5, True)])
def test_concat_at_any_row_count_and_on_identical_images(tmp_path: Path, n: int,
                                                        identical: bool) -> None:
    rng = np.random.default_rng(n)
    images = (np.full((n, W, W, 3), 90, np.uint8) if identical
              else rng.integers(0, 256, (n, W, W, 3), dtype=np.uint8))
    src = resized(tmp_path / "train.h5", images)
    a = feature_file(tmp_path / "a.h5", src, 8, 1, "inception_v3")
    b = feature_file(tmp_path / "b.h5", src, 4, 2, "xception")
    out = tmp_path / "fused.h5"
    concat.concat([str(a), str(b)], str(out), str(src))
    with h5py.File(out) as f, h5py.File(a) as fa, h5py.File(b) as fb:
        np.testing.assert_array_equal(f["features"][:], np.hstack([fa["features"][:],
                                                                   fb["features"][:]]))
        assert list(f.attrs["networks"]) == ["inception_v3", "xception"]
        assert list(f["labels"][:]) == list(np.arange(n) % 2)
        assert len(f["previews"]) == n
        last = previews.read(f, np.array([n - 1]))[0]
    assert last.shape == (previews.SIDE, previews.SIDE, 3)
    assert np.abs(last.astype(int).mean() - images[-1].astype(int).mean()) < 8


def test_feature_files_of_other_rows_are_refused(tmp_path: Path) -> None:
    src = resized(tmp_path / "train.h5", np.zeros((4, W, W, 3), np.uint8))
    a = feature_file(tmp_path / "a.h5", src, 8, 1, "inception_v3")
    other = resized(tmp_path / "other.h5", np.zeros((5, W, W, 3), np.uint8))
    b = feature_file(tmp_path / "b.h5", other, 4, 2, "xception")
    with pytest.raises(h5io.MissingInput, match="differ from"):
        concat.concat([str(a), str(b)], str(tmp_path / "fused.h5"), str(src))
    assert not (tmp_path / "fused.h5").exists()
