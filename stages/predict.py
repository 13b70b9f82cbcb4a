"""Stage `predict`: the checkpointed head on the test features → `pred.csv`.

Two classes: the Kaggle submission, `id,label` with label = p(class 1) (p(dog) for cat/dog).
K > 2: `id` and one probability column per class, named by the classes in label order (the
Kaggle multi-class format). A labelled test set (class folders) names each row by its path and
adds its true class; the stage then scores it: test log loss and accuracy in
`reports/predict.json`, a confusion matrix (and curves) in `reports/test` for `dvc plots show`.
The mean probability and predicted share of every class are in `reports/test/summary.json`.

Probabilities are kept away from 0 and 1 by `clip`: log loss punishes a confident mistake without
bound, and clipping at 0.005 costs almost nothing on the right answers. Two classes: p(class 1)
is clipped to [clip, 1 − clip], as the original did. K > 2: every row is shrunk towards the
uniform distribution, p → clip + (1 − K·clip)·p, which keeps each probability in
[clip, 1 − (K−1)·clip], the row's sum at 1 and the classes' order (it needs clip < 1/K).
"""

from __future__ import annotations

import argparse
import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stages import cli, evaluation, h5io, quiet
from stages.params import load_params


def clip_probs(probs: np.ndarray, clip: float) -> np.ndarray:
    """(N, K) class probabilities, each kept within `clip` of 0 and 1 (see the module doc)."""
    k = probs.shape[1]
    if k == 2:
        p1 = np.clip(probs[:, 1], clip, 1.0 - clip)
        return np.stack([1.0 - p1, p1], axis=1)
    if clip * k >= 1:
        raise cli.ParamsError(f"params.yaml: 'clip' is {clip}, but with {k} classes it must be "
                              f"below 1/{k} = {1 / k:.4f} (every probability is kept at least "
                              "`clip`)")
    return clip + (1.0 - k * clip) * probs


@dataclass
class TestSet:
    """The test features' rows: Kaggle ids, or a labelled set's names and labels."""

    __test__ = False  # not a pytest test class
    ids: np.ndarray
    names: np.ndarray | None = None   # labelled: paths relative to test_data
    labels: np.ndarray | None = None  # labelled: training-class indices

    @classmethod
    def read(cls, f: h5py.File) -> TestSet:
        info = h5io.read_row_info(f)
        return cls(info["ids"], info.get("test_names"), info.get("test_labels"))


def write_submission(path: str, test: TestSet, probs: np.ndarray,
                     classes: list[str]) -> None:
    """Two classes: `id,label` (p(class 1)); K > 2: `id,<class>,…`; a labelled set adds
    `true_class`. Kaggle ids ascending (the resized order already is); a labelled set in the
    resized order (by class, then name)."""
    if len(test.ids) != len(probs):
        raise ValueError(f"{len(test.ids)} ids but {len(probs)} predictions")
    header = ["id", *(["label"] if len(classes) == 2 else classes)]
    if test.labels is None:
        order = np.argsort(test.ids, kind="stable")
        ids = [str(i) for i in test.ids[order]]
    else:
        order = np.arange(len(test.ids))
        ids = list(test.names)  # type: ignore[arg-type]
        header.append("true_class")
    columns = probs[order][:, 1:] if len(classes) == 2 else probs[order]
    with h5io.atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for i, (row_id, row) in enumerate(zip(ids, columns, strict=True)):
            cells = [row_id, *(f"{p:.6f}" for p in row)]
            if test.labels is not None:
                cells.append(classes[int(test.labels[order[i]])])
            w.writerow(cells)


# What reports/predict.json, a metrics file, keeps of the summary: few columns in
# `dvc exp show`, where a grid of experiments is compared (the rest is in the eval folder).
METRICS = ("n_test", "classes", "test_loss", "test_accuracy")


def summary(probs: np.ndarray, classes: list[str], labels: np.ndarray | None) -> dict[str, Any]:
    """The test set's summary: per class the mean probability and the share of images
    predicted as it; for a labelled set, its log loss and accuracy."""
    predicted = np.argmax(probs, axis=1)
    out: dict[str, Any] = {
        "n_test": len(probs),
        "classes": list(classes),
        "mean_prob": {c: float(np.mean(probs[:, i])) for i, c in enumerate(classes)},
        "predicted_share": {c: float(np.mean(predicted == i)) for i, c in enumerate(classes)},
    }
    if labels is not None:
        out["test_loss"] = evaluation.log_loss(labels, probs)
        out["test_accuracy"] = evaluation.accuracy(labels, probs)
    return out


def predict(model_path: str, features: str, batch_size: int = 1024
            ) -> tuple[TestSet, np.ndarray, list[str]]:
    """(the test rows, their (M, K) class probabilities, the classes), unclipped. Features or
    probabilities that are not finite stop it, naming the rows."""
    import keras

    model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    with h5py.File(features, "r") as f:
        test, classes = TestSet.read(f), h5io.classes_of(f)
        names = test.ids if test.names is None else test.names
        probs: list[np.ndarray] = []
        for batch in h5io.iter_batches(f["test"], batch_size):
            start = sum(map(len, probs))
            h5io.check_finite(batch, names, f"{features}, test features", start)
            p = evaluation.probabilities(model.predict_on_batch(batch))
            h5io.check_finite(p, names, f"{model_path}, predictions", start)
            probs.append(p)
    return test, np.concatenate(probs), classes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="models/model_2.h5")
    ap.add_argument("--features", default="data/features/fused.h5")
    ap.add_argument("--out", default="pred.csv")
    ap.add_argument("--report", default="reports/predict.json")
    ap.add_argument("--eval-dir", default="reports/test", help="test plots")
    args = ap.parse_args(argv)

    def work() -> None:
        params = load_params()
        h5io.require(args.features, ("test", "ids"), "Run `dvc repro concat` first.")
        if not os.path.isfile(args.model):
            raise cli.MissingInput(f"{args.model}: not found. Run `dvc repro train_head` first.")
        with h5py.File(args.features, "r") as f:
            clip_probs(np.full((1, len(h5io.classes_of(f))), 0.5), params["clip"])  # fail early
        quiet.tensorflow()
        test, probs, classes = predict(args.model, args.features)
        probs = clip_probs(probs, params["clip"])
        write_submission(args.out, test, probs, classes)
        stats = summary(probs, classes, test.labels)
        h5io.write_json(args.report, {k: v for k, v in stats.items() if k in METRICS})
        evaluation.write_plots(args.eval_dir, classes, test.labels, probs)
        h5io.write_json(Path(args.eval_dir) / "summary.json", stats)
        scored = (f"; test log loss {stats['test_loss']:.4f}, accuracy "
                  f"{stats['test_accuracy']:.4f}" if test.labels is not None else "")
        shares = ", ".join(f"{c} {s:.1%}" for c, s in stats["predicted_share"].items())
        print(f"predict: {stats['n_test']} rows → {args.out} (predicted {shares}){scored}")

    cli.run("predict", work)


if __name__ == "__main__":
    main()
