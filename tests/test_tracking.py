"""Comparing runs: dvclive's per-epoch log through `dvc plots`, `metrics.json` through
`dvc exp show` and `dvc metrics diff`, and the PNG of the same two curves.

A copy of the session's pipeline run and two named experiments on it (dropout and learning rate
changed), so every command has two different runs to compare.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import copy_project, dvc, ran_stages, run
from PIL import Image

EXPS = {"low-dropout": "dropout=0.3", "fast-lr": "learning_rate=0.01"}
CURVES = {"Loss": "loss", "Accuracy": "accuracy"}
SERIES = ("train", "eval")  # dvclive's folders: training epochs, then validation_data

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def repo(baseline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two experiments on the session's run; each reruns the head and nothing else."""
    root = copy_project(baseline, tmp_path_factory.mktemp("tracking") / "p")
    for name, change in EXPS.items():
        assert ran_stages(dvc(root, "exp", "run", "-n", name, "-S", change)) == [
            "train_head", "predict"]
        # Back to the baseline, so the next experiment changes one param only.
        run(root, "git", "checkout", "--", ".")
        dvc(root, "checkout")
    return root


def html_specs(html: str) -> dict[str, dict[str, Any]]:
    """The vega-lite spec of every plot in DVC's HTML page, by plot id."""
    decoder = json.JSONDecoder()
    specs = {}
    for m in re.finditer(r"<div id\s*=\s*\"([^\"]+)\">\s*<script[^>]*>\s*var spec\s*=\s*", html):
        specs[m.group(1)], _ = decoder.raw_decode(html, m.end())
    return specs


def series(spec: dict[str, Any], field: str) -> set[tuple[str, str]]:
    """(revision, curve) pairs that have at least one point with a numeric `field`."""
    return {(v["rev"], v["filename"]) for v in spec["data"]["values"]
            if np.isfinite(float(v[field]))}


def render(repo: Path, out: Path, *args: str) -> dict[str, dict[str, Any]]:
    dvc(repo, "plots", *args, "-o", str(out))
    return html_specs((out / "index.html").read_text())


def test_plots_show_renders_train_and_eval_curves(repo: Path, tmp_path: Path) -> None:
    specs = render(repo, tmp_path / "show", "show")
    assert set(CURVES) <= set(specs), specs.keys()
    for plot, field in CURVES.items():
        curves = {name for _, name in series(specs[plot], field)}
        assert curves == {f"{s}/{field}.tsv" for s in SERIES}, curves
        assert specs[plot]["encoding"]["x"]["title"] == "epoch"
        epochs = {v["step"] for v in specs[plot]["data"]["values"]}
        assert epochs == {"0", "1"}  # two epochs in the tiny params


def test_plots_diff_overlays_two_experiments(repo: Path, tmp_path: Path) -> None:
    specs = render(repo, tmp_path / "diff", "diff", *EXPS)
    for plot, field in CURVES.items():
        assert series(specs[plot], field) == {
            (exp, f"{s}/{field}.tsv") for exp in EXPS for s in SERIES}


def experiments(repo: Path) -> dict[str, dict[str, Any]]:
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    exps = {}
    for rev in shown:
        if rev["rev"] != "workspace":
            exps["baseline"] = rev["data"]
        for exp in rev.get("experiments") or []:
            exps[exp["name"]] = exp["revs"][0]["data"]
    return exps


def test_exp_show_has_metrics_and_params_per_experiment(repo: Path) -> None:
    exps = experiments(repo)
    assert set(exps) == {"baseline", *EXPS}
    for data in exps.values():
        metrics = data["metrics"]["metrics.json"]["data"]
        assert metrics["val_loss"] > 0 and 0 <= metrics["val_accuracy"] <= 1
        assert {"n_test", "mean_prob_dog", "share_dog"} <= set(
            data["metrics"]["reports/predict.json"]["data"])
    params = {name: data["params"]["params.yaml"]["data"] for name, data in exps.items()}
    assert (params["baseline"]["dropout"], params["baseline"]["learning_rate"]) == (0.5, 0.001)
    assert (params["low-dropout"]["dropout"], params["low-dropout"]["learning_rate"]) == (
        0.3, 0.001)
    assert (params["fast-lr"]["dropout"], params["fast-lr"]["learning_rate"]) == (0.5, 0.01)
    table = dvc(repo, "exp", "show", "--no-pager", "--md").stdout
    assert "val_loss" in table and "low-dropout" in table


def test_metrics_diff_names_what_changed_between_experiments(repo: Path) -> None:
    diff = json.loads(dvc(repo, "metrics", "diff", *EXPS, "--json").stdout)
    changed = diff["metrics.json"]
    assert "val_loss" in changed, diff  # a 10× learning rate changes the loss
    exps = experiments(repo)
    old, new = (exps[e]["metrics"]["metrics.json"]["data"]["val_loss"] for e in EXPS)
    assert changed["val_loss"]["old"] == old and changed["val_loss"]["new"] == new
    assert "n_train" not in changed  # same split: unchanged metrics are left out
    table = dvc(repo, "metrics", "diff", *EXPS, "--md").stdout
    assert "val_loss" in table and "metrics.json" in table


def test_history_png_has_both_panels(repo: Path) -> None:
    path = repo / "reports/history.png"
    with Image.open(path) as im:
        assert im.format == "PNG"
        width, height = im.size
        rgb = np.asarray(im.convert("RGB")).astype(int)
    assert 400 <= width <= 4000 and 200 <= height < width  # two panels side by side
    # matplotlib's first two colours (train, validation) in the left and in the right panel.
    for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
        near = np.abs(rgb - colour).sum(axis=-1) < 30
        assert near[:, : width // 2].sum() > 50 and near[:, width // 2:].sum() > 50, colour
