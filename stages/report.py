"""Stage `report`: the run on one page, `reports/report.html`, and its Hugging Face model card,
`reports/model_card.md` (stages/model_card.py).

What a run shows is otherwise spread over metrics.json, two summaries, a dozen PNGs and
`dvc plots show` (whose charts need the internet). The page holds it all, for a reader with no
other file and no network: every picture inline (`data:` URIs), no script, no stylesheet or
font from elsewhere. Sections: what was run, the data, the decision (threshold, temperature),
performance with 95 % intervals, where the model went wrong, and the medical reporting
guidelines' items (CLAIM 2024, TRIPOD+AI, STARD-AI) it answers or leaves to the author.

Same inputs, same bytes, but for what the page says of where it was made: the git commit and
whether the workspace was clean, the date (the commit's, not the clock's), the CPU and GPU of
the machine that wrote it and the packages' versions. Those are read outside DVC's deps (git
and dvc.lock cannot be deps), so a commit alone reruns nothing: `dvc repro -f report` writes
the page anew. Reads no TensorFlow: the page is seconds' work.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stages import cli, decision, h5io, intervals, model_card, model_record, overlap
from stages.feature_files import Rows
from stages.params import DEFAULTS, load_params

# Every param: the page lists them all (dvc.yaml: the whole params.yaml).
PARAMS = tuple(DEFAULTS)
# The packages whose versions decide the bytes the stages write, as the page names them.
PACKAGES = {"TensorFlow": "tensorflow", "Keras": "keras", "DVC": "dvc",
            "OpenCV": "opencv-python-headless", "NumPy": "numpy", "h5py": "h5py",
            "matplotlib": "matplotlib"}
SCORES = ("accuracy", "auc", "balanced_accuracy", "sensitivity", "specificity")
SCORE_NAMES = {"loss": "log loss", "accuracy": "accuracy", "auc": "AUC",
               "balanced_accuracy": "balanced accuracy", "sensitivity": "sensitivity",
               "specificity": "specificity", "ece": "ECE (15 bins)"}
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


# --- reading the run -----------------------------------------------------------------------

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
    wrong = []
    for r in rows:
        true = r.get("true_class")
        if true not in classes:
            continue
        if len(classes) == 2:
            called = classes[int(p_of(r, classes[1], classes) >= threshold)]
        else:
            called = max(classes, key=lambda c: p_of(r, c, classes))
        if called != true:
            wrong.append((p_of(r, true, classes), r["id"], r))
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


# --- pictures ------------------------------------------------------------------------------

def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def file_uri(path: str | Path) -> str | None:
    path = Path(path)
    return png_uri(path.read_bytes()) if path.is_file() else None


def operating_point(split: Split, classes: list[str]) -> tuple[float, float, float] | None:
    """(false positive rate, sensitivity, precision) of the decisions at the threshold, from
    the confusion matrix; None for K > 2 (no threshold: the most probable class)."""
    if len(classes) != 2:
        return None
    neg, pos = classes
    tp = split.confusion.get((pos, pos), 0)
    fn = split.confusion.get((pos, neg), 0)
    fp = split.confusion.get((neg, pos), 0)
    tn = split.confusion.get((neg, neg), 0)
    if not (tp + fn and fp + tn):
        return None
    return fp / (fp + tn), tp / (tp + fn), tp / (tp + fp) if tp + fp else 1.0


def curves_png(split: Split, classes: list[str], threshold: float) -> str | None:
    """ROC and precision-recall curves side by side, the threshold's operating point marked;
    None where a class is absent (no curve)."""
    if not split.roc:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    point = operating_point(split, classes)
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(9, 4.2), layout="constrained")
    roc.plot([r["fpr"] for r in split.roc], [r["tpr"] for r in split.roc], color="#1f77b4")
    roc.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    pr.plot([r["recall"] for r in split.pr], [r["precision"] for r in split.pr],
            color="#1f77b4", drawstyle="steps-post")
    if point is not None:
        fpr, tpr, precision = point
        label = f"threshold {threshold:.2f}"
        roc.plot(fpr, tpr, "o", color="firebrick", ms=8, label=label)
        pr.plot(tpr, precision, "o", color="firebrick", ms=8, label=label)
        roc.legend(loc="lower right")
        pr.legend(loc="lower left")
    what = (f"p({classes[1]})" if len(classes) == 2
            else "every class against the rest, micro-averaged")
    roc.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="false positive rate (1 − specificity)",
            ylabel="true positive rate (sensitivity)", title=f"{split.title} ROC: {what}")
    pr.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="recall (sensitivity)",
           ylabel="precision (positive predictive value)",
           title=f"{split.title} precision-recall")
    for ax in (roc, pr):
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return png_uri(buf.getvalue())


# --- the page ------------------------------------------------------------------------------

def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "undefined"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return esc(value)


def table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; cells are HTML already (escaped by the caller)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def img(uri: str | None, alt: str, cls: str = "") -> str:
    return f'<img class="{cls}" alt="{esc(alt)}" src="{uri}">' if uri else ""


def section_run(run: Run) -> str:
    g = run.git
    if g:
        state = ("clean" if not g["changed"] else
                 f"<strong>modified</strong>: {len(g['changed'])} file(s) differ from the commit "
                 f"({esc(cli.some(g['changed'], 8))})")
        git_rows = [["commit", f"<code>{esc(g['commit'])}</code>"], ["workspace", state],
                    ["date (the commit's)", esc(g["date"])]]
    else:
        git_rows = [["commit", "not a git repository"]]
    inputs = [[f"<code>{esc(p)}</code>", f"<code>{esc(m)}</code>"] for p, m in run.inputs] or [
        ["(no dvc.lock: stages run by hand)", ""]]
    params = [[f"<code>{esc(k)}</code>",
               f"<code>{esc(v if isinstance(v, str) else json.dumps(v))}</code>"]
              for k, v in run.params.items()]
    r = run.record
    model = [["classes", esc(", ".join(r.classes))],
             ["networks (features, in column order)", esc(" + ".join(r.networks))],
             ["their weights", esc("; ".join(f"{n}: {w}" for n, w in
                                             zip(r.networks, r.weights, strict=False)))],
             ["image side", esc(r.width)], ["precision", esc(", ".join(r.precision))],
             ["head", "Dropout + Dense, " + ("sigmoid" if len(r.classes) == 2 else "softmax")]]
    env = [[esc(k), esc(v)] for k, v in {**run.versions, **run.machine}.items()]
    return (
        '<section id="run"><h2>1. What was run</h2>'
        + table(["", ""], git_rows, "kv")
        + '<h3 id="run-inputs">Inputs (md5 from dvc.lock)</h3>'
        + table(["input", "md5"], inputs, "kv")
        + '<h3 id="run-model">The model</h3>' + table(["", ""], model, "kv")
        + '<h3 id="run-params">Every param (params.yaml)</h3>'
        + table(["param", "value"], params, "kv")
        + '<h3 id="run-env">Software and machine</h3>' + table(["", ""], env, "kv")
        + "<p class=note>Versions and the machine are those of the process that wrote this "
          "page; the extractions may have run elsewhere (a GPU machine). The date is the "
          "commit's.</p>"
        + img(file_uri(run.paths.history), "training history", "wide")
        + "</section>")


def section_data(run: Run) -> str:
    d, classes = run.data, run.classes
    unit = "patients (groups)" if run.medical else "groups"
    header = ["split", "images", *map(esc, classes)]
    rows: list[list[str]] = []
    total = d["train_total"]
    rows.append(["training set (all)", str(sum(total.values())),
                 *(str(total[c]) for c in classes)])
    if d["folds"]:
        rows.append([f"{d['folds']} folds: each image validated once, out of fold",
                     str(sum(d["val"].values())), *(str(d["val"][c]) for c in classes)])
    else:
        rows.append(["training side", str(sum(d["train"].values())),
                     *(str(d["train"][c]) for c in classes)])
        rows.append(["validation side", str(sum(d["val"].values())),
                     *(str(d["val"][c]) for c in classes)])
    if run.test is not None:
        rows.append(["test set", str(run.n_test), *(str(run.test.counts[c]) for c in classes)])
    else:
        rows.append(["test set (unlabelled)", str(run.n_test), *("" for _ in classes)])
    out = ['<section id="data"><h2>2. Data</h2>', table(header, rows)]
    if d.get("fold_sizes"):
        out.append("<p>Fold sizes: " + esc(", ".join(f"fold {k}: {v}" for k, v in
                                                     d["fold_sizes"].items())) + "</p>")
    if "groups" in d:
        grp = d["groups"]
        g_rows = [["training set", num(grp["training set"])]]
        if not d["folds"]:
            g_rows += [["training side", num(grp["train"])], ["validation side", num(grp["val"])]]
        g_rows.append(["test set", num(grp["test"])
                       + (f" ({grp['test_missed']} test path(s) the pattern does not match)"
                          if grp["test_missed"] else "")])
        out += [f'<h3 id="data-groups">{unit.capitalize()}: <code>group_pattern</code> '
                f'<code>{esc(run.params["group_pattern"])}</code></h3>',
                "<p>Every group is on one side of the validation split (or in one fold).</p>",
                table(["", unit], g_rows, "kv")]
        out.append(section_shared(run))
    out.append(section_skipped(run))
    return "".join(out) + "</section>"


def section_shared(run: Run) -> str:
    who = "patients" if run.medical else "groups"
    if not run.shared:
        return (f'<h3 id="data-shared">{who.capitalize()} in both training and test</h3>'
                f"<p class=ok>None: no {who[:-1]} of the test set is in the training set.</p>")
    rows = [[f"<code>{esc(g)}</code>", str(a), str(b)] for g, a, b in run.shared]
    return (f'<h3 id="data-shared">{who.capitalize()} in both training and test</h3>'
            f'<div class="alarm"><strong>{plural(len(run.shared), who[:-1])} in both the '
            "training and the test set.</strong> "
            f"The test figures below are then not those of new {who}: "
            "move their test images out of <code>test_data</code> (or their training images "
            "out of <code>train_data</code>) and run again.</div>"
            + table(["group", "training images", "test images"], rows))


def plural(n: int, noun: str) -> str:
    return f"{n} {noun} is" if n == 1 else f"{n} {noun}s are"


def section_skipped(run: Run) -> str:
    d = run.data
    parts = ['<h3 id="data-skipped">Files skipped</h3>']
    for s, title in (("train", "training"), ("test", "test")):
        skipped = d["skipped"][s]
        reasons: dict[str, int] = {}
        for _, why in skipped:
            key = why.split(":")[0].split(" (")[0]  # the reason without its detail
            reasons[key] = reasons.get(key, 0) + 1
        said = "; ".join(f"{n} × {esc(r)}" for r, n in sorted(reasons.items()))
        parts.append(f"<p>{title.capitalize()} set: {len(skipped)} undecodable image(s)"
                     + (f": {said}" if said else "")
                     + f". {d['ignored'][s]} non-image file(s) ignored.</p>")
        if skipped:
            parts.append(f"<details><summary>The {len(skipped)} skipped {title} file(s)"
                         "</summary>" + table(["file", "reason"], [
                             [f"<code>{esc(f)}</code>", esc(w)] for f, w in skipped])
                         + "</details>")
    return "".join(parts)


def threshold_rule(spec: Any, folds: int) -> str:
    """How the threshold came about, as STARD asks: fixed beforehand, or a rule applied to
    the validation (out-of-fold) predictions."""
    where = ("the out-of-fold predictions of every training image" if folds
             else "the validation split's predictions")
    if decision._number(spec) is not None:
        return f"fixed beforehand: <code>threshold: {esc(spec)}</code> in params.yaml"
    return (f"the rule <code>{esc(spec)}</code> applied to {where} (midway, in logit units, "
            "between the chosen score and the next below)")


def section_decision(run: Run) -> str:
    m, classes = run.metrics, run.classes
    folds = int(run.params["folds"])
    where = "out of fold" if folds else "on the validation split"
    rows = []
    if len(classes) == 2:
        rows += [["threshold", f"{m['threshold']:.4g}: {esc(classes[1])} where "
                  f"p({esc(classes[1])}) reaches it, else {esc(classes[0])}"],
                 ["how it came about", threshold_rule(run.params["threshold"], folds)],
                 ["decides alike", f"every threshold in ({num(m.get('threshold_low'), 4)}, "
                  f"{num(m.get('threshold_high'), 4)}] makes the same decisions {where}"]]
    else:
        rows.append(["decision", f"the most probable of the {len(classes)} classes (no "
                     "threshold)"])
    t = float(m.get("temperature", 1.0))
    calibrated = run.params["calibrate"] != "none"
    if calibrated and t != 1.0:
        how = (f"fitted {where} (minimum log loss), divided into the saved model's Dense "
               "weights")
    elif calibrated:
        how = f"none fits {where}, so it is left at 1 (train_head's run said why)"
    else:
        how = "none fitted (<code>calibrate: none</code>)"
    rows.append(["temperature", f"{t:.4g}: {how}"])
    before = ece_before(run) if calibrated and t != 1.0 else None
    rows.append(["ECE " + where, (f"before calibration {before:.3f}, after {m['val_ece']:.3f}"
                                  if before is not None else f"{m['val_ece']:.3f}")])
    if run.test is not None and run.test.scores.get("test_ece") is not None:
        rows.append(["ECE on the test set", f"{run.test.scores['test_ece']:.3f}"])
    rows.append(["checkpoint", f"epoch {m.get('best_epoch')} (the lowest validation loss"
                 + ("; the folds' median" if folds else "") + ")"])
    return ('<section id="decision"><h2>3. The decision</h2>' + table(["", ""], rows, "kv")
            + "</section>")


def ece_before(run: Run) -> float | None:
    """The validation ECE of the probabilities before the temperature, from
    reports/val/predictions.csv (calibrated): the logits times the temperature."""
    rows = read_csv(Path(run.paths.val_dir) / "predictions.csv")
    classes = run.classes
    rows = [r for r in rows if r.get("true_class") in classes]
    if not rows:
        return None
    probs = np.array([[p_of(r, c, classes) for c in classes] for r in rows], np.float64)
    logits = np.log(np.clip(probs, 1e-15, 1.0)) * float(run.metrics["temperature"])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    labels = np.array([classes.index(r["true_class"]) for r in rows])
    return decision.ece(labels, e / e.sum(axis=1, keepdims=True))


def score_table(split: Split, classes: list[str]) -> str:
    prefix = split.key + "_"
    s = split.scores
    rows = []
    for name in ("loss", *SCORES, "ece"):
        value = s.get(prefix + name)
        if name in ("sensitivity", "specificity") and len(classes) != 2:
            continue
        low, high = s.get(f"{prefix}{name}_low"), s.get(f"{prefix}{name}_high")
        ci = f"{num(low)} – {num(high)}" if low is not None or high is not None else ""
        method = esc(intervals.METHODS.get(name, "")) if ci else ""
        sd = s.get(f"{prefix}{name}_fold_sd")
        extra = f" (SD over the folds {sd:.3f})" if sd is not None else ""
        rows.append([SCORE_NAMES[name], num(value) + extra, ci, method])
    unit = ("groups (patients) as the independent units" if split.unit == "group"
            else "images as the independent units")
    return (table(["score", "value", "95 % interval", "interval's method"], rows, "scores")
            + f"<p class=note>Intervals count {unit}.</p>")


def bins_table(split: Split) -> str:
    """The reliability diagram's bins as numbers: the images in each."""
    rows = [[esc(b.get("bin", "")), f"{b['confidence']:.3f}", f"{b['accuracy']:.3f}",
             str(b["count"])] for b in split.bins]
    return table(["confidence bin", "mean confidence", "accuracy", "images"], rows,
                 "confusion") if rows else ""


def confusion_table(split: Split, classes: list[str]) -> str:
    rows = [[f"<strong>{esc(a)}</strong>", *(str(split.confusion.get((a, p), 0))
                                             for p in classes)] for a in classes]
    return table(["true ↓ / predicted →", *map(esc, classes)], rows, "confusion")


def section_performance(run: Run) -> str:
    threshold = float(run.metrics.get("threshold", 0.5))
    out = ['<section id="performance"><h2>4. Performance</h2>']
    for split in (run.val, run.test):
        if split is None:
            continue
        where = (" (out of fold: every training image, by the head that did not train on it)"
                 if split.key == "val" and run.params["folds"] else "")
        out += [f'<h3 id="perf-{split.key}">{split.title}{where}</h3>',
                score_table(split, run.classes),
                f'<h4 id="perf-{split.key}-confusion">Confusion matrix at the threshold</h4>',
                confusion_table(split, run.classes),
                img(curves_png(split, run.classes, threshold), f"{split.title} ROC and PR",
                    "wide"),
                f'<h4 id="perf-{split.key}-reliability">Reliability: each bin\'s images '
                "(the point's size), mean confidence and accuracy</h4>",
                img(file_uri(split.reliability) if split.reliability else None,
                    f"{split.title} reliability diagram", "half"),
                bins_table(split)]
    if run.test is None:
        out.append(f'<h3 id="perf-test">Test</h3><p>The test set ({run.n_test} images) is '
                   "unlabelled: no test figures.</p>")
    return "".join(out) + "</section>"


def section_looked(run: Run) -> str:
    where = "out of fold" if run.params["folds"] else "on the validation split"
    out = ['<section id="looked"><h2>5. Where it looked, and where it went wrong</h2>',
           img(file_uri(run.paths.mistakes), "the most confident mistakes", "wide")]
    cam = file_uri(run.paths.cam)
    if cam:
        out.append("<p>Class activation maps of the same images (drawn by "
                   "<code>python -m stages.classify --mistakes</code>):</p>"
                   + img(cam, "class activation maps", "wide"))
    else:
        out.append("<p class=note>Class activation maps: "
                   "<code>python -m stages.classify --mistakes</code> draws them into "
                   "reports/val_mistakes_cam.png (docs/cam.md); rerun this stage "
                   "(<code>dvc repro -f report</code>) to include them.</p>")
    for split in (run.val, run.test):
        if split is None:
            continue
        title = f"{split.title} ({where})" if split.key == "val" else split.title
        said = "".join(f"<li>{esc(w)}</li>" for w in split.mistakes) or "<li>none</li>"
        clip = (f" (the submitted probabilities, clipped at {run.params['clip']})"
                if split.key == "test" else "")
        out.append(f"<h3 id='looked-{split.key}'>{esc(title)}: the most confident mistakes"
                   f"{clip}</h3><ol>{said}</ol>")
    return "".join(out) + "</section>"


# The reporting guidelines' items, by topic (not by number): (guideline, item, the section
# that answers it, or None: the author writes it).
CHECKLIST: tuple[tuple[str, str, str | None], ...] = (
    ("CLAIM 2024", "Intended use and clinical role of the model", None),
    ("CLAIM 2024", "Data sources, setting and dates of collection", None),
    ("CLAIM 2024", "Eligibility: inclusion and exclusion of patients", None),
    ("CLAIM 2024", "Data preprocessing (image size, excluded files)", "run-params"),
    ("CLAIM 2024", "Reference standard: definition, annotators, their qualifications", None),
    ("CLAIM 2024", "Data partitions and their patient-level separation", "data"),
    ("CLAIM 2024", "Model: architecture, initialisation (transfer learning)", "run-model"),
    ("CLAIM 2024", "Training: hyperparameters, model selection", "run-params"),
    ("CLAIM 2024", "Performance metrics with their statistical uncertainty", "performance"),
    ("CLAIM 2024", "Failure analysis and saliency", "looked"),
    ("CLAIM 2024", "Software, versions and code availability", "run-env"),
    ("CLAIM 2024", "Ethics approval, consent, funding", None),
    ("TRIPOD+AI", "Outcome (target condition) and how it was assessed", None),
    ("TRIPOD+AI", "Sample size: images and patients per class and split", "data"),
    ("TRIPOD+AI", "Missing data: excluded images with reasons", "data-skipped"),
    ("TRIPOD+AI", "Class imbalance handling", "run-params"),
    ("TRIPOD+AI", "Discrimination (AUC) and calibration", "performance"),
    ("TRIPOD+AI", "Recalibration (temperature) and threshold", "decision"),
    ("TRIPOD+AI", "Fairness: performance in subgroups", None),
    ("TRIPOD+AI", "Patient and public involvement", None),
    ("STARD-AI", "Index test threshold: prespecified or chosen on data", "decision"),
    ("STARD-AI", "Participant flow: images excluded and why", "data-skipped"),
    ("STARD-AI", "Test set independent of training (no shared patients)", "data-shared"),
    ("STARD-AI", "Cross tabulation of index test against reference standard",
     "perf-test-confusion"),
    ("STARD-AI", "Diagnostic accuracy estimates with 95 % intervals", "performance"),
    ("STARD-AI", "Recruitment, setting and clinical pathway", None),
)


# Each section a checklist row links to, as the row names it.
TITLES = {"run-params": "1. every param", "run-model": "1. the model",
          "run-env": "1. software and machine", "data": "2. Data",
          "data-skipped": "2. files skipped", "data-shared": "2. patients in both sets",
          "decision": "3. The decision", "performance": "4. Performance",
          "perf-test-confusion": "4. test confusion matrix", "perf-test": "4. test",
          "looked": "5. mistakes"}


def section_checklist(run: Run) -> str:
    ids = {"perf-test-confusion": "perf-test-confusion" if run.test else "perf-test"}
    rows = []
    for guideline, item, where in CHECKLIST:
        if where is None:
            cell = "<span class=author>the author writes it</span>"
        else:
            target = ids.get(where, where)
            cell = f'answered: <a href="#{target}">§ {esc(TITLES.get(target, target))}</a>'
        rows.append([esc(guideline), esc(item), cell])
    return ('<section id="checklist"><h2>6. Reporting checklist</h2>'
            "<p>Items of CLAIM 2024, TRIPOD+AI (2024) and STARD-AI (2025), named by topic: "
            "where this page answers them, and where the author must.</p>"
            + table(["guideline", "item", "where"], rows) + "</section>")


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1000px; margin: 2em auto;
       padding: 0 1em; color: #1b1b1b; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } table.kv thead { display: none; }
table.confusion td { text-align: right; }
table.scores td:nth-child(2), table.scores td:nth-child(3) { white-space: nowrap; }
code { font-size: .92em; background: #f6f6f6; padding: 0 .2em; }
img.wide { max-width: 100%; display: block; margin: .8em 0; }
img.half { max-width: 100%; display: block; margin: .8em 0; }
.alarm { background: #fde2e1; border: 2px solid #c0392b; padding: .6em; margin: .6em 0; }
.ok { color: #1e6b30; } .note { color: #555; font-size: .9em; }
.author { color: #a35b00; font-weight: bold; } nav a { margin-right: 1em; }
"""


def page(run: Run) -> str:
    title = (f"Report: {' vs '.join(run.classes)} on {run.params['train_data']}")
    nav = "".join(f'<a href="#{i}">{t}</a>' for i, t in (
        ("run", "What was run"), ("data", "Data"), ("decision", "The decision"),
        ("performance", "Performance"), ("looked", "Mistakes"),
        *((("checklist", "Checklist"),) if run.medical else ())))
    who = "patient" if run.medical else "group"
    alarm = (f'<div class="alarm">{plural(len(run.shared), who)} in both training and test: '
             '<a href="#data-shared">see Data</a>.</div>' if run.shared else "")
    body = (section_run(run) + section_data(run) + section_decision(run)
            + section_performance(run) + section_looked(run)
            + (section_checklist(run) if run.medical else ""))
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1><nav>{nav}</nav>{alarm}{body}</body></html>\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    d = Paths()
    for name in Paths.__dataclass_fields__:
        ap.add_argument(f"--{name.replace('_', '-')}", default=getattr(d, name))
    args = ap.parse_args(argv)

    def work() -> None:
        paths = Paths(**{name: getattr(args, name) for name in Paths.__dataclass_fields__})
        params = load_params(keys=PARAMS)
        run = read_run(paths, params)
        if run.shared:
            cli.say("report", overlap.warning(run.shared, params["group_pattern"]))
        with h5io.atomic_path(paths.out) as tmp:
            tmp.write_text(page(run))
        with h5io.atomic_path(paths.card) as tmp:
            tmp.write_text(model_card.card(run))
        print(f"report: {paths.out}, {paths.card}", file=sys.stdout)

    cli.run("report", work)


if __name__ == "__main__":
    main()
