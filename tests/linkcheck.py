"""Checks for outputs linked to DVC's cache (README, "One copy on disk"): with links, a stage that
wrote into its previous output would write into DVC's cache and corrupt every commit that shares
the object; so the tests hash the cache objects before and after. They run as whoever runs
pytest (often root in CI, which ignores the read-only bits), so "unchanged cache" is asserted
from content, not from a permission error."""

from __future__ import annotations

import stat
from pathlib import Path

from conftest import md5, stages_of


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
    outs = [root / path for s in stages_of(root).values() for o in s.get("outs", [])
            for path, opts in ({o: {}} if isinstance(o, str) else o).items()
            if (opts or {}).get("cache", True)]
    return [f for o in outs for f in (sorted(p for p in o.rglob("*") if p.is_file())
                                      if o.is_dir() else [o])]


def assert_linked_read_only(root: Path, out: Path) -> None:
    st = out.lstat()
    assert out.is_symlink() or st.st_nlink > 1, f"{out} is a copy, not a link"
    obj = root / ".dvc/cache/files/md5" / md5(out)[:2] / md5(out)[2:]
    assert out.samefile(obj), f"{out} does not point at its cache object"
    assert stat.S_IMODE(out.stat().st_mode) & 0o222 == 0, f"{out} is writable"


def assert_every_output_linked(root: Path) -> None:
    for out in cached_outputs(root):
        # DVC 3.67 commits the files of a directory output (reports/val/, a few KB) as
        # copies; `dvc checkout --relink` links them. Every file output is linked straight away.
        if out.relative_to(root).parts[:2] not in (("reports", "val"), ("reports", "test")):
            assert_linked_read_only(root, out)
