"""CHANGELOG.md's `dvc commit` lines do what the entries promise: after a change to the code of
the stages a line names (as `git pull` brings one), the line, run as written, records the new
code, and `dvc repro` then reruns none of those stages nor anything after them."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import REPO, copy_project, dvc, ran_stages, run, stages_of

pytestmark = pytest.mark.pipeline

CHANGELOG = REPO / "CHANGELOG.md"


def commit_lines(text: str) -> list[str]:
    """Every line of the changelog's shell blocks that runs `dvc commit` (a trailing comment
    dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()
            if "dvc commit" in line]


def test_every_entry_says_what_to_recompute() -> None:
    entries = re.split(r"^## ", CHANGELOG.read_text(), flags=re.M)[1:]
    assert entries
    for entry in entries:
        assert "**Recompute:**" in entry, entry.splitlines()[0]


def named_stages(line: str) -> list[str]:
    """The stages the line's `dvc commit` names, a group (`resize`) as its members."""
    words = shlex.split(line.split("dvc commit", 1)[1].split("&&")[0])
    targets = [a for a in words if not a.startswith("-")]
    every = stages_of()
    return [s for t in targets for s in every if s == t or s.split("@")[0] == t]


@pytest.mark.parametrize("line", commit_lines(CHANGELOG.read_text()))
def test_a_dvc_commit_line_spares_the_rerun(line: str, baseline: Path,
                                            tmp_path: Path) -> None:
    repo = copy_project(baseline, tmp_path / "p")
    stages = named_stages(line)
    assert stages, f"{line}: names no stage of dvc.yaml"
    every = stages_of()
    others = {d for s, spec in every.items() if s not in stages for d in spec["deps"]}
    # The named stages' own code (a module other stages share, such as h5io.py, reruns those
    # too: an entry whose release changes one names them all).
    code = sorted({d for s in stages for d in every[s]["deps"]
                   if d.startswith("stages/") and d not in others})
    assert code
    for path in code:  # the new version's code: a change that cannot alter an output
        with (repo / path).open("a") as f:
            f.write("\n# a newer version\n")
    assert set(stages) <= set(ran_stages(dvc(repo, "repro", "--dry")))
    run(repo, "bash", "-c", line)
    assert ran_stages(dvc(repo, "repro", "--dry")) == []
