"""stages/outputs.py: a folder output is replaced whole, or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.outputs import atomic_dir


def test_a_folder_is_replaced_whole(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "test"
    out.mkdir(parents=True)
    (out / "reliability.png").write_text("an earlier run's")
    with atomic_dir(out) as tmp:
        (tmp / "summary.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["test"]


def test_a_failed_block_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "val"
    out.mkdir()
    (out / "predictions.csv").write_text("last run")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "predictions.csv").write_text("half")
        raise RuntimeError("stopped")
    assert (out / "predictions.csv").read_text() == "last run"
    assert [p.name for p in tmp_path.iterdir()] == ["val"]
