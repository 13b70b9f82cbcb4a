"""Experiments and comparing them: a grid queued with `dvc exp run --queue` and run two at a
time by `dvc queue start -j 2`, as the README's experiment workflow does it (links to DVC's
cache, no copies of the tensors); then the per-epoch history and the validation plots through
`dvc plots`, `metrics.json` through `dvc exp show` and `dvc metrics diff`, and the PNGs.

A copy of the session's pipeline run and two named experiments on it (dropout and learning rate
changed), so every command has two different runs to compare.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import REPO, dvc, exp_lock_md5, experiments, linked_copy, md5
from PIL import Image

EXPS = {"low-dropout": "dropout=0.3", "fast-lr": "learning_rate=0.01"}
CURVES = {"Loss": "loss", "Accuracy": "accuracy"}  # train as Keras names it, and val_<name>
EVALUATION = ("confusion_matrix", "ROC", "precision-recall")  # DVC's ids: "_" for " "
INPUTS = ("data/resized", "data/features")  # the big tensors a head-only experiment reads

OUTPUT: dict[str, str] = {}  # what each experiment's run printed
STATUS: dict[str, str] = {}  # how each ended
COPIES: list[str] = []  # input tensors found as copies in an experiment's workspace
SEEN: set[str] = set()  # every input tensor found there

pytestmark = pytest.mark.pipeline


def watch_for_copies(tmp: Path, stop: threading.Event) -> None:
    """While experiments run, look in their workspaces (under .dvc/tmp) for the resized tensors
    and features: each must be a link to DVC's cache, never a copy of it."""
    while not stop.wait(0.2):
        for folder, _, files in os.walk(tmp):  # errors (a workspace going away) are skipped
            if not folder.endswith(INPUTS):
                continue
            for name in (f for f in files if f.endswith(".h5")):
                path = Path(folder) / name
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue
                SEEN.add(str(path))
                if not path.is_symlink() and st.st_nlink == 1:
                    COPIES.append(str(path))


@pytest.fixture(scope="module")
def repo(baseline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two queued experiments on the session's run, run two at a time; each reruns the head and
    nothing else."""
    root = linked_copy(baseline, tmp_path_factory.mktemp("tracking") / "p")
    for name, change in EXPS.items():
        dvc(root, "exp", "run", "--queue", "-n", name, "-S", change)
    stop = threading.Event()
    watcher = threading.Thread(target=watch_for_copies, args=(root / ".dvc/tmp", stop))
    watcher.start()
    try:
        dvc(root, "queue", "start", "-j", "2")
        STATUS.update(wait_for_queue(root))
    finally:
        stop.set()
        watcher.join()
    for name in EXPS:
        p = dvc(root, "queue", "logs", name)
        OUTPUT[name] = p.stdout + p.stderr
    return root


def wait_for_queue(root: Path, timeout: float = 600) -> dict[str, str]:
    """Each queued experiment's final state, once none is queued or running and the workers
    have exited, as they do by themselves within seconds of the queue's end. (`dvc queue stop`
    after that would leave its stop signal to the next `dvc queue start`, whose workers would
    then quit after one experiment each: seen with DVC 3.67.)"""
    deadline = time.monotonic() + timeout
    while True:
        status = dvc(root, "queue", "status").stdout
        rows = [line.split() for line in status.splitlines()]
        states = {r[1]: r[-1] for r in rows if len(r) >= 4 and r[1] in EXPS}
        if (set(states) == set(EXPS) and not {"Queued", "Running"} & set(states.values())
                and "0 active, 0 idle" in status):
            return states
        assert time.monotonic() < deadline, states
        time.sleep(5)  # each `dvc queue status` costs a second of CPU: not too often


def test_each_queued_experiment_runs_only_the_head(repo: Path) -> None:
    assert dict.fromkeys(EXPS, "Success") == STATUS, OUTPUT
    for name in EXPS:
        assert re.findall(r"Running stage '([^']+)'", OUTPUT[name]) == ["train_head", "predict",
                                                                            "report"]
    assert SEEN and not COPIES, COPIES  # every tensor in their workspaces links to the cache


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
    # What README and docs/experiments.md tell offline users: the page's charts need the
    # internet for their library; the stages' PNGs do not.
    assert re.search(r'<script src="https://[^"]*vega', html)
    reliability = specs["Validation_reliability"]["data"]["values"]  # issue 25
    assert reliability and all(0 <= float(v["accuracy"]) <= 1 for v in reliability)
    assert specs["Test_reliability"] == {}
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


def test_exp_show_has_metrics_and_params_per_experiment(repo: Path) -> None:
    exps = experiments(repo)
    assert set(exps) == {"baseline", *EXPS}
    for data in exps.values():
        metrics = data["metrics"]["metrics.json"]["data"]
        assert metrics["val_loss"] > 0 and 0 <= metrics["val_accuracy"] <= 1
        predicted = data["metrics"]["reports/predict.json"]["data"]
        assert predicted == {"n_test": 6}  # (and the class names, a list, which DVC skips)
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


def documented_grid() -> list[str]:
    """The grid command of docs/experiments.md, as a user would paste it."""
    text = (REPO / "docs/experiments.md").read_text()
    line = next(ln for ln in text.splitlines()
                if ln.startswith("dvc exp show --only-changed --keep 'val_(loss|accuracy)$'"))
    return shlex.split(line)[1:]


def test_the_documented_grid_fits_a_terminal_and_ranks_by_val_loss(repo: Path) -> None:
    grid = (*documented_grid(), "--no-pager")
    table = dvc(repo, *grid, env={"COLUMNS": "1000"}).stdout  # no cropping: its own width
    lines = [line for line in table.splitlines() if line.strip()]
    assert max(map(len, lines)) <= 120, table
    assert set(lines[1].split()) == {"Experiment", "Created", "State", "Executor", "val_loss",
                                     "val_accuracy", "dropout", "learning_rate"}, table
    rows = list(csv.DictReader(io.StringIO(dvc(repo, *grid, "--csv").stdout)))
    ranked = [r["Experiment"] for r in rows if r["Experiment"] in EXPS]
    losses = {r["Experiment"]: float(r["val_loss"]) for r in rows if r["Experiment"] in EXPS}
    assert ranked == sorted(EXPS, key=losses.__getitem__), rows


def test_the_clinical_exp_show_of_medical_md_fits_160_columns(repo: Path) -> None:
    """Issue 33: docs/medical.md's clinical `dvc exp show` printed 250–290 columns; on a run's
    experiments it fits a 160-column terminal, every column whole (rich crops a column it has
    no room for to "…"), and at its own width too. (This run's test set is unlabelled: the
    test columns, and a full grid's, are tests/test_docs.py's.)"""
    from test_docs import clinical_exp_show

    command = clinical_exp_show()[1:]
    for columns in ("160", "1000"):
        table = dvc(repo, *command, env={"COLUMNS": columns}).stdout
        lines = [line for line in table.splitlines() if line.strip()]
        assert max(map(len, lines)) <= 160 and "…" not in table, table
        assert set(lines[1].split()) == {"Experiment", "val_auc", "val_sensitivity",
                                         "val_specificity", "class_weight", "seed"}, table
        assert all(any(f"[{e}]" in line for line in lines) for e in EXPS), table


def test_apply_brings_the_best_experiment_into_the_workspace(repo: Path) -> None:
    exps = experiments(repo)
    best = min(EXPS, key=lambda e: exps[e]["metrics"]["metrics.json"]["data"]["val_loss"])
    dvc(repo, "exp", "apply", best)
    assert yaml.safe_load((repo / "params.yaml").read_text())[
        EXPS[best].split("=")[0]] == float(EXPS[best].split("=")[1])
    recorded = exp_lock_md5(repo, best)
    assert md5(repo / "pred.csv") == recorded["pred.csv"]
    assert md5(repo / "models/model_2.h5") == recorded["models/model_2.h5"]
