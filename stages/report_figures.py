"""The report's pictures: ROC and precision-recall curves drawn, PNGs as `data:` URIs."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stages.run_record import Split


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
