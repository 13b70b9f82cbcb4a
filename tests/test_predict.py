"""The submission: clipping, ordering, the header, the summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stages.predict import clip_probs, summary, write_submission


def test_clip_bounds_both_ends() -> None:
    p = clip_probs(np.array([0.0, 0.001, 0.5, 0.999, 1.0]), 0.005)
    np.testing.assert_allclose(p, [0.005, 0.005, 0.5, 0.995, 0.995])


def test_clip_zero_leaves_probabilities() -> None:
    p = np.array([0.0, 0.3, 1.0])
    np.testing.assert_array_equal(clip_probs(p, 0.0), p)


def test_submission_has_header_and_ascending_ids(tmp_path: Path) -> None:
    out = tmp_path / "pred.csv"
    write_submission(str(out), np.array([3, 1, 2]), np.array([0.3, 0.1, 0.2]))
    assert out.read_text().splitlines() == ["id,label", "1,0.100000", "2,0.200000", "3,0.300000"]
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_submission_refuses_mismatched_lengths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 ids but 2 predictions"):
        write_submission(str(tmp_path / "pred.csv"), np.array([1, 2, 3]), np.array([0.1, 0.2]))
    assert not (tmp_path / "pred.csv").exists()


def test_summary() -> None:
    s = summary(np.array([0.1, 0.9, 0.8, 0.2]))
    assert s == {"n_test": 4, "mean_prob_dog": pytest.approx(0.5), "share_dog": 0.5}
