"""What a run left, read once: its files, figures, data, inputs, and where the page is made."""

from __future__ import annotations

import csv
import json
import platform
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stages import cli, decision, h5io, model_record, overlap
from stages.feature_files import Rows

# The packages whose versions decide the bytes the stages write, as the page names them.
PACKAGES = {"TensorFlow": "tensorflow", "Keras": "keras", "DVC": "dvc",
            "OpenCV": "opencv-python-headless", "NumPy": "numpy", "h5py": "h5py",
            "matplotlib": "matplotlib"}
N_WORDS = 8  # the most confident mistakes told in words, per split


@dataclass
class Paths:
    """The run's files the page reads (dvc.yaml: the stage's deps), and where it writes."""

    metrics: str = "metrics.json"
    predict: str = "reports/predict.json"
    val_dir: str = "reports/val"
    test_dir: str = "reports/test"
    history: str = "reports/history.png"
    mistakes: str = "reports/val_mistakes.png"
    cam: str = "reports/val_mistakes_cam.png"  # the classify tool's, where it was drawn
    model: str = "models/model_2.h5"
    pred: str = "pred.csv"
    train_features: str = "data/features/train/fused.h5"
    test_features: str = "data/features/test/fused.h5"
    resized: str = "data/resized"
    resize_reports: str = "reports/resize"
    lock: str = "dvc.lock"
    out: str = "reports/report.html"
    card: str = "reports/model_card.md"


@dataclass
class Split:
    """One evaluated split as the page shows it."""

    key: str                   # val | test
    title: str
    scores: dict[str, Any]     # `<key>_<score>`, `_low`, `_high`, as metrics.json keeps them
    counts: dict[str, int]     # images per true class
    confusion: dict[tuple[str, str], int]
    roc: list[dict]
    pr: list[dict]
    reliability: str | None    # the PNG's path, where written
    mistakes: list[str]        # the most confident mistakes, in words
    unit: str = "image"        # what the intervals count as independent
    bins: list[dict] = field(default_factory=list)  # plots/calibration.json's rows


@dataclass
class Run:
    """Everything the page and the model card say, read once."""

    params: dict[str, Any]
    metrics: dict[str, Any]
    record: model_record.ModelRecord
    classes: list[str]
    val: Split
    test: Split | None                    # None: an unlabelled test set
    n_test: int
    data: dict[str, Any]                  # `data_of`
    shared: list[tuple[str, int, int]]    # groups in both sets
    git: dict[str, Any] = field(default_factory=dict)
    inputs: list[tuple[str, str]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=dict)
    paths: Paths = field(default_factory=Paths)

    @property
    def grouped(self) -> bool:
        return bool(self.params["group_pattern"])

    @property
    def medical(self) -> bool:
        """Patients named by `group_pattern`: the page speaks of patients and maps itself to
        the medical reporting guidelines; a photo run (Kaggle's) does not."""
        return self.grouped


def read_json(path: str | Path, hint: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise cli.MissingInput(f"{path}: not found. {hint}")
    return json.loads(path.read_text())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def confusion_of(folder: Path) -> dict[tuple[str, str], int]:
    """(true, predicted) → images, from the plots' confusion rows (one per image)."""
    rows = read_json(folder / "plots/sklearn/confusion_matrix.json", "Run `dvc repro`.")
    out: dict[tuple[str, str], int] = {}
    for r in rows:
        key = (str(r["actual"]), str(r["predicted"]))
        out[key] = out.get(key, 0) + 1
    return out


def counts_of(confusion: dict[tuple[str, str], int], classes: list[str]) -> dict[str, int]:
    return {c: sum(n for (a, _), n in confusion.items() if a == c) for c in classes}


def p_of(row: dict[str, str], cls: str, classes: list[str]) -> float:
    """A predictions file's probability of `cls` (two classes: `label` is p(class 1))."""
    if len(classes) == 2:
        p1 = float(row["label"])
        return p1 if cls == classes[1] else 1.0 - p1
    return float(row[cls])


def labelled(rows: list[dict[str, str]], classes: list[str]
             ) -> tuple[list[dict[str, str]], np.ndarray, np.ndarray]:
    """A predictions file's rows of a known true class, with their (n, K) probabilities and
    labels."""
    rows = [r for r in rows if r.get("true_class") in classes]
    probs = np.array([[p_of(r, c, classes) for c in classes] for r in rows], np.float64)
    labels = np.array([classes.index(r["true_class"]) for r in rows], np.int64)
    return rows, probs.reshape(len(rows), len(classes)), labels


def digits(p: float, threshold: float) -> int:
    """Decimals enough to tell a probability from the threshold (2, as a reader says them,
    up to 6 where they are that close)."""
    return next((d for d in range(2, 7) if f"{p:.{d}f}" != f"{threshold:.{d}f}"), 6)


def in_words(row: dict[str, str], classes: list[str], threshold: float) -> str:
    """A decision set against the threshold, as a reader says it: "p(PNEUMONIA) 0.18, below
    the threshold 0.32: called NORMAL"."""
    if len(classes) == 2:
        p1 = p_of(row, classes[1], classes)
        side = "at or above" if p1 >= threshold else "below"
        called = classes[1] if p1 >= threshold else classes[0]
        d = digits(p1, threshold)
        return (f"p({classes[1]}) {p1:.{d}f}, {side} the threshold {threshold:.{d}f}: called "
                f"{called}")
    probs = {c: p_of(row, c, classes) for c in classes}
    called = max(probs, key=lambda c: probs[c])
    return (f"p({called}) {probs[called]:.2f}, the most probable class: called {called} "
            f"(p({row['true_class']}) {probs[row['true_class']]:.2f})")


def worst_in_words(rows: list[dict[str, str]], classes: list[str], threshold: float,
                   n: int = N_WORDS) -> list[str]:
    """The `n` most confident mistakes (lowest p(true class) first), each "<file>, true
    <class>: <in words>"."""
    rows, probs, labels = labelled(rows, classes)
    if not rows:
        return []
    # decided as every stage decides (decision.predicted: the threshold, or the likeliest class)
    wrong = [(float(probs[i, labels[i]]), rows[i]["id"], rows[i])
             for i in np.flatnonzero(decision.predicted(probs, threshold) != labels)]
    wrong.sort(key=lambda w: (w[0], w[1]))
    return [f"{name}, true {r['true_class']}: {in_words(r, classes, threshold)}"
            for _, name, r in wrong[:n]]


def split_of(key: str, folder: Path, scores: dict[str, Any], classes: list[str],
             predictions: list[dict[str, str]], threshold: float, unit: str) -> Split:
    confusion = confusion_of(folder)
    roc = read_json(folder / "plots/sklearn/roc.json", "Run `dvc repro`.")["roc"]
    pr = read_json(folder / "plots/sklearn/precision_recall.json",
                   "Run `dvc repro`.")["precision_recall"]
    png = folder / "reliability.png"
    return Split(key, "Validation" if key == "val" else "Test", scores,
                 counts_of(confusion, classes), confusion, roc, pr,
                 str(png) if png.is_file() else None,
                 worst_in_words(predictions, classes, threshold), unit=unit,
                 bins=read_json(folder / "plots/calibration.json",
                                "Run `dvc repro`.")["calibration"])


def names_of(features: str) -> tuple[list[str], np.ndarray | None, list[str] | None]:
    """A features file's row names, labels and classes (none for an unlabelled set)."""
    h5io.require(features, ("names",), "Run `dvc repro concat`.")
    with h5py.File(features, "r") as f:
        rows = Rows.read(f)
    return [str(n) for n in rows.names], rows.labels, rows.classes


def data_of(paths: Paths, params: dict[str, Any], metrics: dict[str, Any],
            classes: list[str], val_rows: list[dict[str, str]],
            train_names: list[str], train_labels: np.ndarray | None,
            test_names: list[str]) -> dict[str, Any]:
    """The data section's figures: per split its images, groups and classes, and the files
    skipped."""
    out: dict[str, Any] = {"skipped": {}, "ignored": {}}
    for s in ("train", "test"):
        out["skipped"][s] = [(r["file"], r["reason"]) for r in
                             read_csv(Path(paths.resized) / f"{s}_skipped.csv")]
        report = Path(paths.resize_reports) / f"{s}.json"
        out["ignored"][s] = (json.loads(report.read_text()).get("ignored_files", 0)
                             if report.is_file() else 0)
    labels = np.asarray(train_labels if train_labels is not None else [], np.int64)
    out["train_total"] = {c: int(np.sum(labels == i)) for i, c in enumerate(classes)}
    val_counts = {c: sum(r.get("true_class") == c for r in val_rows) for c in classes}
    out["val"] = val_counts
    out["folds"] = int(params["folds"])
    if params["folds"]:
        by_fold: dict[str, int] = {}
        for r in val_rows:
            by_fold[r.get("fold", "?")] = by_fold.get(r.get("fold", "?"), 0) + 1
        out["fold_sizes"] = dict(sorted(by_fold.items(), key=lambda kv: int(kv[0])
                                        if kv[0].isdigit() else 0))
    else:
        out["train"] = {c: out["train_total"][c] - val_counts[c] for c in classes}
    pattern = params["group_pattern"]
    if pattern:
        train_groups = set(overlap.split.match_groups(train_names, pattern)[0].tolist())
        test_groups, missed = overlap.split.match_groups(test_names, pattern)
        out["groups"] = {"training set": len(train_groups),
                         "train": metrics.get("n_groups_train"),
                         "val": metrics.get("n_groups_val"),
                         "test": len(set(test_groups.tolist())), "test_missed": len(missed)}
    return out


def lock_inputs(lock: str | Path) -> list[tuple[str, str]]:
    """(path, md5) of every input the pipeline reads that no stage writes, from dvc.lock: the
    training and test data, the weights folder; and each network's weight file as
    pick_weights recorded it. [] where there is no dvc.lock (a stage run by hand)."""
    from ruamel.yaml import YAML

    path = Path(lock)
    if not path.is_file():
        return []
    stages = (YAML(typ="safe").load(path.read_text()) or {}).get("stages", {})
    written = {o["path"] for s in stages.values() for o in s.get("outs", [])}
    found: dict[str, str] = {}
    for s in stages.values():
        for d in s.get("deps", []):
            p = d["path"]
            if not p.startswith("stages/") and p not in written and "md5" in d:
                found[p] = d["md5"]
        for file, values in (s.get("params") or {}).items():
            if file.startswith("data/weights/") and isinstance(values, dict):
                md5 = values.get("md5") or values.get("weights_md5") or ""
                name = values.get("file") or values.get("weights") or ""
                found[f"{file} ({name})" if name else file] = str(md5) if md5 else "-"
    return sorted(found.items())


def git_state(root: str | Path = ".") -> dict[str, Any]:
    """HEAD's commit and committer date, and the files that differ from it (untracked files
    aside); {} outside a git repository."""
    def git(*args: str) -> str | None:
        try:
            p = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                               timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout if p.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    changed = (git("status", "--porcelain", "--untracked-files=no") or "").splitlines()
    return {"commit": commit.strip(), "date": (git("log", "-1", "--format=%cI") or "").strip(),
            "changed": [line[3:] for line in changed]}


def versions() -> dict[str, str]:
    """Python's and the packages' versions, from their metadata: nothing is imported."""
    out = {"Python": platform.python_version()}
    for shown, dist in PACKAGES.items():
        try:
            out[shown] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[shown] = "not installed"
    return out


def machine() -> dict[str, str]:
    """The CPU and GPU of the machine writing the page (the stages before may have run
    elsewhere: on a GPU machine, the extractions)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "none found (nvidia-smi)"
    try:
        p = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
        if p.returncode == 0 and p.stdout.strip():
            gpu = "; ".join(line.split(" (UUID")[0] for line in p.stdout.strip().splitlines())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"CPU": f"{cpu} ({platform.system()} {platform.machine()})", "GPU": gpu}


def read_run(paths: Paths, params: dict[str, Any]) -> Run:
    metrics = read_json(paths.metrics, "Run `dvc repro train_head`.")
    record = model_record.read(paths.model)
    classes = record.classes
    threshold = float(metrics.get("threshold", record.threshold))
    val_rows = read_csv(Path(paths.val_dir) / "predictions.csv")
    val = split_of("val", Path(paths.val_dir), metrics, classes, val_rows, threshold,
                   "group" if params["group_pattern"] else "image")
    summary = read_json(Path(paths.test_dir) / "summary.json", "Run `dvc repro predict`.")
    test = None
    if "test_accuracy" in summary:
        test = split_of("test", Path(paths.test_dir), summary, classes, read_csv(paths.pred),
                        threshold, summary.get("interval_unit", "image"))
    train_names, train_labels, _ = names_of(paths.train_features)
    test_names, _, _ = names_of(paths.test_features)
    return Run(params, metrics, record, classes, val, test, int(summary.get("n_test", 0)),
               data_of(paths, params, metrics, classes, val_rows, train_names, train_labels,
                       test_names),
               overlap.shared_groups(train_names, test_names, params["group_pattern"]),
               git_state(), lock_inputs(paths.lock), versions(), machine(), paths)
