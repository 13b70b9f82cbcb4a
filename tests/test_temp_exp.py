"""`dvc exp run --temp`: one experiment outside the workspace, in a workspace DVC builds from
git and its cache (as queued ones are), on the session's run with links to the cache. It reruns
the head only; `dvc exp apply` then brings its params and outputs into the workspace."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import dvc, exp_lock_md5, experiments, linked_copy, md5, ran_stages

pytestmark = pytest.mark.pipeline


def test_a_temp_experiment_runs_the_head_and_apply_restores_it(
        baseline: Path, tmp_path: Path) -> None:
    repo = linked_copy(baseline, tmp_path / "p")
    before = md5(repo / "pred.csv")
    p = dvc(repo, "exp", "run", "--temp", "-n", "temp-dropout", "-S", "dropout=0.1")
    assert ran_stages(p) == ["train_head", "predict", "report"], p.stdout + p.stderr
    assert md5(repo / "pred.csv") == before  # the workspace is left alone
    assert yaml.safe_load((repo / "params.yaml").read_text())["dropout"] == 0.5
    shown = experiments(repo)["temp-dropout"]
    assert shown["params"]["params.yaml"]["data"]["dropout"] == 0.1
    assert shown["metrics"]["metrics.json"]["data"]["val_loss"] > 0

    dvc(repo, "exp", "apply", "temp-dropout")
    assert yaml.safe_load((repo / "params.yaml").read_text())["dropout"] == 0.1
    assert md5(repo / "pred.csv") == exp_lock_md5(repo, "temp-dropout")["pred.csv"]
