"""Predictions against labels: class probabilities, the scores (log loss, accuracy, AUC,
balanced accuracy, sensitivity, specificity), the per-image predictions file, the plots that
`dvc plots show` draws, and a picture of the most confident mistakes.

Shared by `train_head` (the validation split) and `predict` (a labelled test set). The plot data
is written as dvclive's `log_sklearn_plot` writes it, in the formats of DVC's own templates (a
row per image for the confusion matrix, scikit-learn's curves for ROC and precision-recall), but
computed here with NumPy: scikit-learn would add a second to every TensorFlow stage's start,
since Keras imports it when present. dvc.yaml declares which template draws which file, so every
file is always written, empty where there is nothing to draw (an unlabelled test set).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stages import decision, h5io

N_MISTAKES = 16  # the picture's 4 × 4 grid
SPLITS = {"val": "Validation", "test": "Test"}  # the evaluation folders' titles


def probabilities(raw: np.ndarray) -> np.ndarray:
    """The head's output → (N, K) class probabilities, float64: one sigmoid unit p(class 1)
    becomes (1 − p, p); a softmax is already (N, K)."""
    raw = np.asarray(raw, np.float64)
    if raw.ndim == 2 and raw.shape[1] == 1:
        return np.concatenate([1.0 - raw, raw], axis=1)
    return raw


def log_loss(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean −log p(true class); probabilities below 1e-15 count as 1e-15 (scikit-learn's eps),
    so one certain mistake costs 34.5 rather than infinity."""
    p = probs[np.arange(len(labels)), labels.astype(np.int64)]
    return float(-np.mean(np.log(np.maximum(p, 1e-15))))


def _scores(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float | None]:
    """`decision.weighted_scores` of the sample itself (unit weights), None where undefined."""
    labels = np.asarray(labels).astype(np.int64)
    got = decision.weighted_scores(np.ones((1, len(labels))), labels, probs,
                                   decision.predicted(probs, threshold))
    return {name: None if math.isnan(v[0]) else float(v[0]) for name, v in got.items()}


def accuracy(labels: np.ndarray, probs: np.ndarray, *, threshold: float = 0.5) -> float:
    """The share decided right: for two classes at `threshold` on p(class 1)
    (`decision.predicted`), for more the most probable class. NaN for no rows."""
    value = _scores(labels, probs, threshold)["accuracy"]
    return math.nan if value is None else value


def scores(labels: np.ndarray, probs: np.ndarray, prefix: str, *,
           threshold: float = 0.5) -> dict[str, float | None]:
    """The clinical scores of a split, keys prefixed (`val_`, `test_`), None where undefined:
    AUC (two classes: ROC AUC of class 1; K: the macro mean of one-vs-rest AUCs over the
    classes present, as scikit-learn's `multi_class="ovr"` where every class is present; None
    with one class) and balanced accuracy (the mean recall over the classes present, as
    scikit-learn's balanced_accuracy_score); for two classes also sensitivity (recall of class
    1) and specificity (recall of class 0). Decisions made at `threshold`. Log loss and
    accuracy are the caller's."""
    got = _scores(labels, probs, threshold)
    names = ["auc", "balanced_accuracy"]
    if probs.shape[1] == 2:
        names += ["sensitivity", "specificity"]
    return {f"{prefix}{name}": got[name] for name in names}


def fmt(score: float | None) -> str:
    """A score for a summary line; None (one class present) is undefined."""
    return "undefined" if score is None else f"{score:.4f}"


def write_predictions(path: str | Path, rows: Sequence[str], probs: np.ndarray,
                      classes: Sequence[str], true: Sequence[str] | None = None,
                      extra: dict[str, Sequence[str]] | None = None, *,
                      exact: bool = False) -> None:
    """One row per image: `id` (its number or path), the probabilities — two classes: one
    column `label` = p(class 1), as Kaggle's submission; K: one per class, headed by the class
    names — then `true_class` where known and the `extra` columns. Probabilities with 6
    decimals (`pred.csv`), or `exact`: each as the shortest text that reads back as the same
    float64 (Python's repr; so the same float32 too), for reports/val/predictions.csv, which
    the classify tool decides from again at a threshold that is one of these very values: 6
    decimals could move a row at the threshold to the other class."""
    if len(rows) != len(probs):
        raise ValueError(f"{len(rows)} rows but {len(probs)} predictions")
    columns = probs[:, 1:] if len(classes) == 2 else probs
    header = ["id", *(["label"] if len(classes) == 2 else classes)]
    tail = {**({"true_class": true} if true is not None else {}), **(extra or {})}
    with h5io.atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([*header, *tail])
        for i, (row_id, row) in enumerate(zip(rows, columns, strict=True)):
            w.writerow([row_id, *(repr(float(p)) if exact else f"{p:.6f}" for p in row),
                        *(v[i] for v in tail.values())])


def curves(truth: np.ndarray, score: np.ndarray) -> tuple[list[dict], list[dict]]:
    """ROC and precision-recall points of a binary decision, one per distinct score, as
    scikit-learn's `roc_curve` and `precision_recall_curve` compute them (ROC from (0, 0) up,
    precision-recall by rising threshold). Empty when only one class is present: undefined."""
    truth = np.asarray(truth, bool)
    if truth.all() or not truth.any():
        return [], []
    order = np.argsort(-score, kind="stable")
    score, truth = score[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # the end of each score's run
    tps = np.cumsum(truth)[last].astype(np.float64)
    fps = (last + 1) - tps
    thresholds = score[last].astype(np.float64)
    roc = [{"fpr": 0.0, "tpr": 0.0, "threshold": None}] + [
        {"fpr": f, "tpr": t, "threshold": th}
        for f, t, th in zip((fps / fps[-1]).tolist(), (tps / tps[-1]).tolist(),
                        thresholds.tolist(), strict=True)]
    pr = [{"precision": p, "recall": r, "threshold": th} for p, r, th in zip(
        (tps / (tps + fps))[::-1].tolist(), (tps / tps[-1])[::-1].tolist(),
        thresholds[::-1].tolist(), strict=True)]
    return roc, pr


def write_plots(folder: str | Path, classes: Sequence[str], labels: np.ndarray | None,
                probs: np.ndarray, threshold: float = 0.5, split: str | None = None, *,
                before: np.ndarray | None = None, temperature: float = 1.0) -> None:
    """The confusion matrix (class names on both axes) of the decisions at `threshold` and,
    from the probabilities, ROC and precision-recall curves: of class 1 against class 0 for two
    classes, micro-averaged over every class against the rest for more. In dvclive's files and
    formats (`plots/sklearn/*.json`), which DVC's templates draw. Beside them
    `plots/calibration.json`, the reliability diagram's rows (`decision.reliability`), which no
    scikit-learn plot of dvclive's draws. `labels` None (an unlabelled test set): empty files.
    `split` (`val`, `test`) titles the reliability diagram; by default the folder's name (a
    stage that builds the folder under a temporary name gives it). `before`: the same images'
    probabilities at temperature 1, where `probs` are after `temperature` (`calibrate`): the
    diagram draws both (the plot files stay those of `probs`, the model's)."""
    confusion: list[dict] = []
    roc: list[dict] = []
    pr: list[dict] = []
    calibration: list[dict] = []
    if labels is not None:
        labels = labels.astype(np.int64)
        confusion = [{"actual": classes[a], "predicted": classes[p]} for a, p in
                     zip(labels, decision.predicted(probs, threshold), strict=True)]
        calibration = decision.reliability(labels, probs)
        if len(classes) == 2:
            roc, pr = curves(labels == 1, probs[:, 1])
        else:  # every (image, class) pair is one binary decision: micro-averaged one-vs-rest
            roc, pr = curves((labels[:, None] == np.arange(len(classes))).ravel(), probs.ravel())
    split = split or Path(folder).name
    out = Path(folder) / "plots" / "sklearn"
    for name, data in (("confusion_matrix", confusion), ("roc", {"roc": roc}),
                       ("precision_recall", {"precision_recall": pr})):
        with h5io.atomic_path(out / f"{name}.json") as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n")
    with h5io.atomic_path(out.parent / "calibration.json") as tmp:
        tmp.write_text(json.dumps({"calibration": calibration}, indent=2) + "\n")
    if not calibration:
        return
    # the same diagram as a PNG: `dvc plots show`'s page needs the internet
    title = f"{SPLITS.get(split, split)}: reliability ({len(labels)} images, ECE "
    if before is None:
        drawn = [("", calibration)]
        title += f"{decision.ece(labels, probs):.3f})"
    else:
        drawn = [("before (T = 1)", decision.reliability(labels, before)),
                 (f"after (T = {temperature:.3g})", calibration)]
        title += (f"{decision.ece(labels, before):.3f} before the temperature, "
                  f"{decision.ece(labels, probs):.3f} after)")
    reliability_figure(Path(folder) / "reliability.png", drawn, title)


RELIABILITY_DPI = 100  # 7 × 6 in: 700 × 600 px
CURVE_COLOURS = ("#ff7f0e", "#1f77b4")  # before (orange), after or the only curve (blue)


def _bin_edges(row: dict) -> tuple[float, float]:
    """A reliability row's bin, "0.93–1.00" (`decision.reliability`), as two numbers."""
    low, high = row["bin"].split("–")
    return float(low), float(high)


def reliability_figure(path: Path, drawn: Sequence[tuple[str, list[dict]]],
                       title: str) -> None:
    """`reliability_plot` as a PNG; no version stamp, so the same rows give the same bytes."""
    import matplotlib.pyplot as plt

    fig = reliability_plot(drawn, title)
    with h5io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=RELIABILITY_DPI, metadata={"Software": None})
    plt.close(fig)


def reliability_plot(drawn: Sequence[tuple[str, list[dict]]], title: str) -> Any:
    """Accuracy against mean confidence per bin, one curve per (legend label, rows) of
    `drawn` (a single curve: no legend), with the diagonal of perfect calibration; under it
    the number of images in each bin, as bars with their counts written on them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bars) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, layout="constrained",
                                   gridspec_kw={"height_ratios": [3, 1.3]})
    # top-label confidence is at least 1/K: two classes fill [0.5, 1] only
    low = min(_bin_edges(r)[0] for _, rows in drawn for r in rows)
    low = math.floor(low * 10) / 10
    ax.plot([low, 1], [low, 1], color="grey", linewidth=0.8, linestyle="--",
            label="perfect calibration" if len(drawn) > 1 else None)
    colours = CURVE_COLOURS[-len(drawn):]
    width = min(h - lo for r in drawn[0][1] for lo, h in [_bin_edges(r)]) / len(drawn)
    top = max(r["count"] for _, rows in drawn for r in rows)
    for i, ((label, rows), colour) in enumerate(zip(drawn, colours, strict=True)):
        conf = [r["confidence"] for r in rows]
        ax.plot(conf, [r["accuracy"] for r in rows], color=colour, marker="o", markersize=5,
                label=label or None)
        for r in rows:
            lo, hi = _bin_edges(r)
            x = lo + (hi - lo - width * len(drawn)) / 2 + width * (i + 0.5)
            bars.bar(x, r["count"], width=width * 0.92, color=colour)
            bars.text(x, r["count"] + top * 0.03, str(r["count"]), ha="center", va="bottom",
                      fontsize=8, color=colour)
    ax.set(xlim=(low, 1.0), ylim=(0, 1.02), ylabel="accuracy", title=title)
    ax.grid(color="0.9", linewidth=0.6)
    ax.title.set_fontsize(10)
    if len(drawn) > 1:
        ax.legend(loc="upper left", fontsize=9)
    bars.set(ylim=(0, top * 1.3), ylabel="images",
             xlabel="confidence (the largest class probability), in bins")
    bars.spines[["top", "right"]].set_visible(False)
    return fig


def worst_mistakes(labels: np.ndarray, probs: np.ndarray, n: int = N_MISTAKES, *,
                   threshold: float = 0.5) -> np.ndarray:
    """Rows of the `n` most confident mistakes (decided at `threshold`, `decision.predicted`),
    lowest p(true class) first (ties: the earlier row first); where there are fewer mistakes,
    the right answers the model was least sure of follow, again lowest p(true class) first."""
    p_true = probs[np.arange(len(labels)), labels.astype(np.int64)]
    wrong = decision.predicted(probs, threshold) != labels
    order = np.lexsort((np.arange(len(labels)), p_true, ~wrong))  # wrong first, then by p_true
    return order[:n]


def _wrapped(name: str, width: int = 30) -> str:
    """A file name on at most two caption lines of `width` characters, broken after a "/",
    "_", "-" or "." where one is near the end of the first line: its start (a patient's id,
    say) and its end (the extension) stay, the middle of a longer one gives way to "…".
    `_fit_captions` shrinks what is still wider than its tile."""
    if len(name) <= width:
        return name
    cut = max(name.rfind(c, 0, width) for c in "/_-. ") + 1
    if cut < width // 2:
        cut = width
    rest = name[cut:]
    if len(rest) > width:
        rest = "…" + rest[-(width - 1):]
    return name[:cut] + "\n" + rest


def _against(p: float, threshold: float) -> str:
    """p(class 1) and the threshold in words, with as many decimals (3 to 7) as it takes for
    the two to read differently: "0.318, below 0.32" ("at": the threshold itself, which
    decides for class 1)."""
    digits = 3
    while p != threshold and digits < 7 and f"{p:.{digits}f}" == f"{threshold:.{digits}f}":
        digits += 1
    side = "above" if p > threshold else "at" if p == threshold else "below"
    return f"{p:.{digits}f}, {side} {threshold:.{max(digits, 2)}g}"


def _caption(name: str, classes: Sequence[str], true: int, p: np.ndarray, pred: int,
             threshold: float) -> str:
    """A tile's caption: the file name, wrong or right, and how the model decided: for two
    classes p(class 1) set against the threshold ("p(PNEUMONIA) 0.180, below 0.32: called
    NORMAL"), for more the probabilities of the true and the predicted class."""
    head = f"{_wrapped(name)}\n{'WRONG' if pred != true else 'right'}: "
    if len(classes) == 2:
        return (f"{head}{classes[true]} called {classes[pred]}\n"
                f"p({classes[1]}) {_against(float(p[1]), threshold)}")
    return (head + f"true {classes[true]}: p {p[true]:.3f}\n"
            f"predicted {classes[pred]}: p {p[pred]:.3f}")


def mistakes_figure(path: str | Path, pictures: np.ndarray, names: Sequence[str],
                    classes: Sequence[str], labels: np.ndarray, probs: np.ndarray, *,
                    threshold: float = 0.5, note: str = "",
                    where: str = "on the validation split") -> None:
    """A PNG grid of the rows of `worst_mistakes` (`mistakes_grid`), written under a temporary
    name; no version stamp, so the same inputs give the same bytes. `note`: a last title line
    (what the pictures show); `where` the predictions were made ("out of fold")."""
    import matplotlib.pyplot as plt

    fig = mistakes_grid(pictures, names, classes, labels, probs, threshold=threshold, note=note,
                        where=where)
    with h5io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, metadata={"Software": None})
    plt.close(fig)


DPI = 72  # with the figure size below, 180 px a column: a caption line of ~30 characters


def mistakes_grid(pictures: np.ndarray, names: Sequence[str], classes: Sequence[str],
                  labels: np.ndarray, probs: np.ndarray, *, threshold: float = 0.5,
                  note: str = "", where: str = "on the validation split") -> Any:
    """The figure: each picture captioned with its file name, wrong or right (decided at
    `threshold`, which the title states for two classes) and the probability that decided it
    (`_caption`); no caption wider than its column (`_fit_captions`). `pictures`: uint8 RGB,
    one per row of the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    n_rows = max(1, math.ceil(len(pictures) / cols))
    # An upscaled photo only grows the PNG; constrained layout gives every caption a band of
    # its own, off the row above.
    fig, axes = plt.subplots(n_rows, cols, figsize=(2.5 * cols, 3.0 * n_rows + 0.6),
                             squeeze=False, layout="constrained")
    for ax in axes.ravel():
        ax.axis("off")
    n_wrong = 0
    decided = decision.predicted(probs, threshold)
    for ax, picture, name, true, p, pred in zip(axes.ravel(), pictures, names, labels, probs,
                                                decided.tolist(), strict=False):
        wrong = pred != int(true)
        n_wrong += wrong
        ax.imshow(picture)
        ax.set_title(_caption(name, classes, int(true), p, pred, threshold), fontsize=8,
                     color="firebrick" if wrong else "black")
    rule = (f"decided at p({classes[1]}) ≥ {threshold:.4g}" if len(classes) == 2
            else "each image called its most probable class")
    fig.suptitle(_mistakes_title(n_wrong, len(pictures) - n_wrong, where) + f"\n{rule}"
                 + (f"\n{note}" if note else ""),
                 fontsize=9)
    _fit_captions(fig, cols)
    return fig


def _fit_captions(fig: Any, cols: int, margin: float = 3.0) -> None:
    """Shrink each caption wider than its column (a long class or file name) until it fits,
    `margin` pixels clear of each side: measured as drawn, so no caption runs into its
    neighbour's. Constrained layout then gives the rows the height they need."""
    for _ in range(3):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        column = fig.bbox.width / cols
        done = True
        for ax in fig.axes:
            title = ax.title
            if not title.get_text():
                continue
            box = title.get_window_extent(renderer)
            i = ax.get_subplotspec().colspan.start
            centre = (box.x0 + box.x1) / 2
            room = 2 * (min(centre - i * column, (i + 1) * column - centre) - margin)
            if box.width > room:
                done = False
                title.set_fontsize(max(3.0, math.floor(
                    title.get_fontsize() * room / box.width * 4) / 4))
        if done:
            return


def _mistakes_title(n_wrong: int, n_right: int, where: str = "on the validation split") -> str:
    """What the picture shows: `worst_mistakes` fills the tiles left after every mistake with
    right answers, so with fewer mistakes than tiles they are all of them (none, maybe)."""
    right = (("the right answer" if n_right == 1 else f"the {n_right} right answers")
             + " the model was least sure of")
    if n_wrong == 0:
        return f"No mistakes {where}:\n{right}"
    if n_right == 0:
        return ("The most confident mistake" if n_wrong == 1
                else f"The {n_wrong} most confident mistakes") + f" {where}"
    if n_wrong == 1:
        return f"The only mistake {where},\nthen {right}"
    return f"All {n_wrong} mistakes {where}, most confident first,\nthen {right}"
