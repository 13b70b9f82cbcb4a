"""Comparing runs: the per-epoch history and the validation plots through `dvc plots`,
`metrics.json` through `dvc exp show` and `dvc metrics diff`, and the PNGs.

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
CURVES = {"Loss": "loss", "Accuracy": "accuracy"}  # train as Keras names it, and val_<name>
EVALUATION = ("confusion_matrix", "ROC", "precision-recall")  # DVC's ids: "_" for " "

OUTPUT: dict[str, str] = {}  # what each experiment's run printed

pytestmark = pytest.mark.pipeline


@pytest.fixture(scope="module")
def repo(baseline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two experiments on the session's run; each reruns the head and nothing else."""
    root = copy_project(baseline, tmp_path_factory.mktemp("tracking") / "p")
    for name, change in EXPS.items():
        p = dvc(root, "exp", "run", "-n", name, "-S", change)
        OUTPUT[name] = p.stdout + p.stderr
        assert ran_stages(p) == ["train_head", "predict"]
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


def series(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """(revision, curve) pairs that have at least one point with a numeric value."""
    return {(v["rev"], v["field"]) for v in spec["data"]["values"]
            if np.isfinite(float(v["dvc_inferred_y_value"]))}


def render(repo: Path, out: Path, *args: str) -> tuple[str, dict[str, dict[str, Any]]]:
    dvc(repo, "plots", *args, "-o", str(out))
    html = (out / "index.html").read_text()
    return html, html_specs(html)


def test_plots_show_renders_train_and_validation_curves(repo: Path, tmp_path: Path) -> None:
    _, specs = render(repo, tmp_path / "show", "show")
    assert set(CURVES) <= set(specs), specs.keys()
    for plot, field in CURVES.items():
        curves = {name for _, name in series(specs[plot])}
        assert curves == {field, f"val_{field}"}, curves  # the legend: train, val_ (Keras)
        assert specs[plot]["encoding"]["x"]["title"] == "epoch"
        epochs = {v["epoch"] for v in specs[plot]["data"]["values"]}
        assert epochs == {"1", "2"}  # two epochs in the tiny params, counted as best_epoch is


def test_plots_show_renders_the_evaluation_and_the_pictures(repo: Path, tmp_path: Path) -> None:
    html, specs = render(repo, tmp_path / "show", "show")
    for name in EVALUATION:
        values = specs[f"Validation_{name}"]["data"]["values"]
        assert values and {v["rev"] for v in values} == {"workspace"}
        assert specs[f"Test_{name}"] == {}  # the baseline's test set is unlabelled: empty
    cm = specs["Validation_confusion_matrix"]["data"]["values"]
    n_val = json.loads((repo / "metrics.json").read_text())["n_val"]
    assert len(cm) == n_val and {v["actual"] for v in cm} <= {"cat", "dog"}
    for picture in ("history.png", "val_mistakes.png"):
        assert re.search(rf"<img[^>]+{re.escape(picture)}", html), picture


def test_plots_diff_overlays_two_experiments(repo: Path, tmp_path: Path) -> None:
    _, specs = render(repo, tmp_path / "diff", "diff", *EXPS)
    for plot, field in CURVES.items():
        assert series(specs[plot]) == {
            (exp, f) for exp in EXPS for f in (field, f"val_{field}")}
    cm = specs["Validation_confusion_matrix"]["data"]["values"]
    assert {v["rev"] for v in cm} == set(EXPS)


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
        predicted = data["metrics"]["reports/predict.json"]["data"]
        assert predicted["n_test"] == 6 and set(predicted["mean_prob"]) == {"cat", "dog"}
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


def test_a_run_prints_progress_and_summaries_not_noise(repo: Path) -> None:
    out = OUTPUT["low-dropout"]
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [e.split(":")[0] for e in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert all("val_loss" in e and "batches" in e for e in epochs)
    assert "train_head: 2 classes, best epoch" in out and "predict: 6 rows" in out
    for noise in ("oneDNN", "cuInit", "absl::InitializeLog", "cuda drivers", "HDF5 file",
                  "legacy", "Traceback", "1/1 -", "NodeDef", "E0000", "W0000", "I0000"):
        assert noise not in out, noise
