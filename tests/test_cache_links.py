"""One copy on disk: `cache.type reflink,hardlink,symlink` turns outputs into read-only links.

With links, a stage that wrote into its previous output would write into DVC's cache and corrupt
every commit that shares the object; so each check hashes the cache objects before and after.
The tests run as whoever runs pytest (often root in CI, which ignores the read-only bits), so
"unchanged cache" is asserted from content, not from a permission error.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml
from conftest import ALL, ENV, copy_project, dvc, ran_stages, run, set_params

from stages import h5io

LINKS = "reflink,hardlink,symlink"

pytestmark = pytest.mark.pipeline


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def cache_objects(root: Path) -> dict[Path, str]:
    """Every object in the DVC cache and the md5 of its content (its name, while intact)."""
    files = root / ".dvc/cache/files/md5"
    return {p: md5(p) for p in sorted(files.rglob("*")) if p.is_file()}


def assert_cache_intact(root: Path, before: dict[Path, str]) -> None:
    after = cache_objects(root)
    for path, digest in before.items():
        assert after.get(path) == digest, f"{path} changed or vanished"
    for path, digest in after.items():
        name = path.parent.name + path.name.removesuffix(".dir")  # .dir: a directory out
        assert name == digest, f"{path} holds other content"


def cached_outputs(root: Path) -> list[Path]:
    """The files DVC caches (and so links): every `outs` entry without `cache: false`, with a
    directory output (reports/val/, reports/test/) standing for the files inside it."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    outs = [root / o for s in stages.values() for o in s.get("outs", []) if isinstance(o, str)]
    return [f for o in outs for f in (sorted(p for p in o.rglob("*") if p.is_file())
                                      if o.is_dir() else [o])]


def assert_linked_read_only(root: Path, out: Path) -> None:
    st = out.lstat()
    assert out.is_symlink() or st.st_nlink > 1, f"{out} is a copy, not a link"
    obj = root / ".dvc/cache/files/md5" / md5(out)[:2] / md5(out)[2:]
    assert out.samefile(obj), f"{out} does not point at its cache object"
    assert stat.S_IMODE(out.stat().st_mode) & 0o222 == 0, f"{out} is writable"


def stage_cmd(root: Path, stage: str) -> list[str]:
    cmd = yaml.safe_load((root / "dvc.yaml").read_text())["stages"][stage]["cmd"]
    return [sys.executable if w == "python3" else w for w in cmd.split()]


@pytest.fixture(scope="module")
def linked(baseline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's pipeline run, its outputs turned into links as README says."""
    root = copy_project(baseline, tmp_path_factory.mktemp("links") / "p")
    dvc(root, "config", "--local", "cache.type", LINKS)
    dvc(root, "checkout", "--relink")
    return root


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
    for stage in ("resize", "concat", "predict"):
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


def test_every_stage_reruns_over_read_only_linked_outputs(linked: Path) -> None:
    """A new `width` reruns every stage (what resize writes changes everything after it), and
    each writes its new outputs beside the read-only linked old ones, never into them."""
    before = cache_objects(linked)
    set_params(linked, width=80)
    assert sorted(ran_stages(dvc(linked, "repro"))) == sorted(ALL)
    with h5py.File(linked / "data/resized/test.h5") as f:
        assert f["images"].shape[1:] == (80, 80, 3)
    assert_cache_intact(linked, before)
    assert len(cache_objects(linked)) > len(before)  # the new outputs joined the old ones
    for out in cached_outputs(linked):
        # DVC 3.67 commits the files of a directory output (reports/val/, a few KB) as
        # copies; `dvc checkout --relink` links them. Every file output is linked straight away.
        if out.relative_to(linked).parts[:2] not in (("reports", "val"), ("reports", "test")):
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
