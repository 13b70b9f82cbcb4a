"""dvc.yaml declares, for every stage, each module of ours that its code runs: a change to any of
them must rerun the stage, or DVC would keep an output that the new code would not make."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# Modules that decide only what a stage prints and how it exits, never a byte it writes: a
# change to them must not rerun hours of extraction.
NOT_DEPS = {"stages/cli.py", "stages/quiet.py"}


def stage_imports(module: str) -> set[str]:
    """`stages/<module>.py` and every `stages.*` module it imports, transitively. The package's
    `__init__.py` only checks the interpreter, so it is not a dependency."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse((ROOT / "stages" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "stages":
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stages."):
                todo.append(node.module.split(".", 1)[1])
            elif isinstance(node, ast.Import):
                todo += [a.name.split(".", 1)[1] for a in node.names
                         if a.name.startswith("stages.")]
    return {f"stages/{name}.py" for name in seen}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_module_a_stage_runs_is_a_dep(stage: str) -> None:
    spec = STAGES[stage]
    module = spec["cmd"].split("python3 -m stages.", 1)[1].split()[0]
    missing = stage_imports(module) - set(spec["deps"]) - NOT_DEPS
    assert not missing, f"dvc.yaml stage {stage!r}: add {sorted(missing)} to its deps"
    assert not NOT_DEPS & set(spec["deps"]), f"{stage}: {NOT_DEPS} change no output"


def test_the_import_walk_sees_the_resize_kernels() -> None:
    # The walk itself must find indirect imports: resize → decode → area.
    assert "stages/area.py" in stage_imports("resize")


def test_every_cached_output_is_ignored_by_git_and_every_report_is_not() -> None:
    """The ignore rules DVC would write, committed: DVC 3.67 drops those of the stages that ran
    when a later stage of the same `dvc repro` fails (treeverse/dvc#11091), and the next repro
    skips them, leaving a 7 GB train.h5 for `git add -A` to take. Uncached metrics and plots
    are the ones git must keep."""
    cached, uncached = [], []
    for spec in STAGES.values():
        for kind in ("outs", "metrics", "plots"):
            for out in spec.get(kind, []):
                path, opts = (out, {}) if isinstance(out, str) else next(iter(out.items()))
                (cached if opts.get("cache", True) else uncached).append(path)
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *cached, *uncached],
                             cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert sorted(ignored) == sorted(cached)
