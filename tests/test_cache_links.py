"""One copy on disk: `cache.type reflink,hardlink,symlink` turns outputs into read-only links
(checks in `linkcheck`). Every stage rerunning over linked outputs is tested by `test_classes`,
whose new data reruns them all."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ENV, LINKS, dvc, linked_copy, run, stages_of
from linkcheck import assert_cache_intact, assert_linked_read_only, cache_objects, cached_outputs

from stages import h5io

pytestmark = pytest.mark.pipeline


def stage_cmd(root: Path, stage: str) -> list[str]:
    cmd = stages_of(root)[stage]["cmd"]
    return [sys.executable if w == "python3" else w for w in cmd.split()]


@pytest.fixture(scope="module")
def linked(baseline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's pipeline run, its outputs turned into links as README says."""
    return linked_copy(baseline, tmp_path_factory.mktemp("links") / "p")


def test_link_setting_is_local_and_not_committed(linked: Path) -> None:
    assert "cache" not in (linked / ".dvc/config").read_text()
    assert LINKS in (linked / ".dvc/config.local").read_text()
    assert run(linked, "git", "status", "--porcelain").stdout == ""  # config.local is ignored
    assert run(linked, "git", "check-ignore", ".dvc/config.local").returncode == 0


def test_outputs_are_read_only_links_into_the_cache(linked: Path) -> None:
    outs = cached_outputs(linked)
    assert {o.name for o in outs} >= {"train.h5", "fused.h5", "model_2.h5", "pred.csv"}
    for out in outs:
        assert_linked_read_only(linked, out)


def test_stage_commands_replace_linked_outputs_without_writing_into_them(linked: Path) -> None:
    """Run stages by hand (as a user debugging one would), outside DVC, over linked outputs:
    DVC removes outputs before it runs a stage, a hand-run does not."""
    before = cache_objects(linked)
    for stage in ("resize@train", "resize@test", "concat@train", "concat@test", "predict"):
        p = subprocess.run(stage_cmd(linked, stage), cwd=linked, env=ENV, capture_output=True,
                           text=True)
        assert p.returncode == 0, f"{stage}:\n{p.stdout}\n{p.stderr}"
    assert_cache_intact(linked, before)
    for out in cached_outputs(linked):
        if out.name in ("train.h5", "test.h5", "fused.h5", "pred.csv"):
            assert not out.is_symlink() and out.stat().st_nlink == 1, f"{out} still linked"
    # Same inputs, same bytes: DVC sees nothing to do.
    assert "up to date" in dvc(linked, "status").stdout
    dvc(linked, "checkout", "--relink")
    for out in cached_outputs(linked):
        assert_linked_read_only(linked, out)


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_atomic_path_replaces_a_read_only_link_and_leaves_its_target(tmp_path: Path,
                                                                     kind: str) -> None:
    target = tmp_path / "cache" / "object"
    target.parent.mkdir()
    target.write_text("cached")
    target.chmod(0o444)
    out = tmp_path / "work" / "out.json"
    out.parent.mkdir()
    if kind == "symlink":
        out.symlink_to(target)
    else:
        os.link(target, out)

    h5io.write_json(out, {"new": 1})

    assert target.read_text() == "cached" and stat.S_IMODE(target.stat().st_mode) == 0o444
    assert not out.is_symlink() and out.stat().st_nlink == 1
    assert out.read_text() == '{\n  "new": 1\n}\n'
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.json"]  # no temporary left
