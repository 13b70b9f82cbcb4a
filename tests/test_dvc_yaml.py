"""dvc.yaml declares, for every stage, each module of ours that its code runs and each param it
reads: a change to any of them must rerun the stage, or DVC would keep an output that the new
code or value would not make."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import stages_of

ROOT = Path(__file__).resolve().parents[1]
# Each stage as dvc.yaml writes it; a `foreach` group by its template (`do`).
STAGES = {name: spec.get("do", spec)
          for name, spec in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items()}
# Modules that decide only what a stage prints and how it exits, never a byte it writes: a
# change to them must not rerun hours of extraction.
NOT_DEPS = {"stages/cli.py", "stages/quiet.py"}
# Params an extractor reads that are deliberately not its dvc.yaml params (README, "Params"):
# the batch size changes the speed, not the features; `seed` changes them only under
# `weights: none`, which is for tests.
NOT_TRACKED = {"extract": {"extract_batch_size", "seed"}}


def module_of(spec: dict) -> str:
    return spec["cmd"].split("python3 -m stages.", 1)[1].split()[0]


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
    missing = stage_imports(module_of(spec)) - set(spec["deps"]) - NOT_DEPS
    assert not missing, f"dvc.yaml stage {stage!r}: add {sorted(missing)} to its deps"
    assert not NOT_DEPS & set(spec["deps"]), f"{stage}: {NOT_DEPS} change no output"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_param_a_stage_reads_is_one_of_its_params(stage: str) -> None:
    """A stage reads params.yaml through `load_params(keys=PARAMS)`, which hands it those keys
    alone; dvc.yaml must list the same, or a change of one would not rerun the stage."""
    spec, module = STAGES[stage], module_of(STAGES[stage])
    reads = set(importlib.import_module(f"stages.{module}").PARAMS)
    listed = {p if isinstance(p, str) else next(iter(p)) for p in spec.get("params", [])}
    # An extractor depends on its own network's entry of `weights` alone, which pick_weights
    # writes to data/weights/<network>.json (dvc.yaml says why): that file stands for the param.
    own = re.search(r"--backbone (\w+)", spec["cmd"])
    listed = {"weights" if own and p == f"data/weights/{own.group(1)}.json" else p
              for p in listed}
    # It also reads stage int8_sample's file, whose keys are no param of params.yaml
    # (stages/int8_sample.py says why): listed whole, as the weights' files are.
    if own:
        assert "data/int8/sample.json" in listed, f"{stage}: data/int8/sample.json: params"
        listed.discard("data/int8/sample.json")
    if "params.yaml" in listed:  # the whole file: every key
        return
    assert reads - NOT_TRACKED.get(module, set()) == listed, (
        f"dvc.yaml stage {stage!r} lists params {sorted(listed)}; stages/{module}.py reads "
        f"{sorted(reads)}")
    source = (ROOT / "stages" / f"{module}.py").read_text()
    assert "load_params(keys=" in source and "load_params()" not in source


def test_the_import_walk_sees_the_resize_kernels() -> None:
    # The walk itself must find indirect imports: resize → decode → area.
    assert "stages/area.py" in stage_imports("resize")


def test_every_cached_output_is_ignored_by_git_and_every_report_is_not() -> None:
    """The ignore rules DVC would write, committed: DVC 3.67 drops those of the stages that ran
    when a later stage of the same `dvc repro` fails (treeverse/dvc#11091), and the next repro
    skips them, leaving a 7 GB train.h5 for `git add -A` to take. Uncached metrics and plots
    are the ones git must keep."""
    cached, uncached = [], []
    for spec in stages_of().values():
        for kind in ("outs", "metrics", "plots"):
            for out in spec.get(kind, []):
                path, opts = (out, {}) if isinstance(out, str) else next(iter(out.items()))
                (cached if opts.get("cache", True) else uncached).append(path)
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *cached, *uncached],
                             cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert sorted(ignored) == sorted(cached)
