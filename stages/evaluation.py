"""Predictions against labels: class probabilities, log loss and accuracy, the plots that
`dvc plots show` draws, and a picture of the most confident mistakes.

Shared by `train_head` (the validation split) and `predict` (a labelled test set). The plot data
is written as dvclive's `log_sklearn_plot` writes it, in the formats of DVC's own templates (a
row per image for the confusion matrix, scikit-learn's curves for ROC and precision-recall), but
computed here with NumPy: scikit-learn would add a second to every TensorFlow stage's start,
since Keras imports it when present. dvc.yaml declares which template draws which file, so every
file is always written, empty where there is nothing to draw (an unlabelled test set).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stages import h5io

N_MISTAKES = 16  # the picture's 4 × 4 grid


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


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == labels))


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
                probs: np.ndarray) -> None:
    """The confusion matrix (class names on both axes) and, from the probabilities, ROC and
    precision-recall curves: of class 1 against class 0 for two classes, micro-averaged over
    every class against the rest for more. In dvclive's files and formats
    (`plots/sklearn/*.json`), which DVC's templates draw. `labels` None (an unlabelled test
    set): empty files."""
    confusion: list[dict] = []
    roc: list[dict] = []
    pr: list[dict] = []
    if labels is not None:
        labels = labels.astype(np.int64)
        confusion = [{"actual": classes[a], "predicted": classes[p]}
                     for a, p in zip(labels, np.argmax(probs, axis=1), strict=True)]
        if len(classes) == 2:
            roc, pr = curves(labels == 1, probs[:, 1])
        else:  # every (image, class) pair is one binary decision: micro-averaged one-vs-rest
            roc, pr = curves((labels[:, None] == np.arange(len(classes))).ravel(), probs.ravel())
    out = Path(folder) / "plots" / "sklearn"
    out.mkdir(parents=True, exist_ok=True)
    for name, data in (("confusion_matrix", confusion), ("roc", {"roc": roc}),
                       ("precision_recall", {"precision_recall": pr})):
        (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


def worst_mistakes(labels: np.ndarray, probs: np.ndarray, n: int = N_MISTAKES) -> np.ndarray:
    """Rows of the `n` most confident mistakes, lowest p(true class) first (ties: the earlier
    row first); where there are fewer mistakes, the right answers the model was least sure of
    follow, again lowest p(true class) first."""
    p_true = probs[np.arange(len(labels)), labels.astype(np.int64)]
    wrong = np.argmax(probs, axis=1) != labels
    order = np.lexsort((np.arange(len(labels)), p_true, ~wrong))  # wrong first, then by p_true
    return order[:n]


def mistakes_figure(path: str | Path, pictures: np.ndarray, names: Sequence[str],
                    classes: Sequence[str], labels: np.ndarray, probs: np.ndarray) -> None:
    """A PNG grid of the rows of `worst_mistakes`: each picture captioned with wrong or right,
    its file name, true class and predicted probabilities. `pictures`: uint8 RGB, one per row
    of the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    n_rows = max(1, math.ceil(len(pictures) / cols))
    fig, axes = plt.subplots(n_rows, cols, figsize=(3 * cols, 3.5 * n_rows + 0.4),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    n_wrong = 0
    for ax, picture, name, true, p in zip(axes.ravel(), pictures, names, labels, probs,
                                          strict=False):
        pred = int(np.argmax(p))
        wrong = pred != int(true)
        n_wrong += wrong
        ax.imshow(picture)
        name = name if len(name) <= 34 else "…" + name[-33:]
        ax.set_title(f"{'WRONG' if wrong else 'right'}: {name}\n"
                     f"true {classes[int(true)]}: p {p[int(true)]:.3f}\n"
                     f"predicted {classes[pred]}: p {p[pred]:.3f}", fontsize=8,
                     color="firebrick" if wrong else "black")
    fig.suptitle(f"The {n_wrong} most confident mistakes on the validation split"
                 + (",\nthen the right answers the model was least sure of"
                    if n_wrong < len(pictures) else ""))
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))  # room for the suptitle
    with h5io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, metadata={"Software": None})  # no version stamp: same bytes
    plt.close(fig)
