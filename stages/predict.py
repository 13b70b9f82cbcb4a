"""Stage `predict`: the checkpointed head on the test features → `pred.csv`.

It reads the model and the test side's fused features only, so new images to score rerun the
test side and this stage, never the training side. The model carries its classes and networks
(HDF5 attributes that `train_head` writes), and the test rows say what they are:
- Kaggle's numbered images: the submission, `id,label` with label = p(class 1) (p(dog) for
  cat/dog), ids ascending; K > 2: `id` and one probability column per class, named by the
  classes in label order (the Kaggle multi-class format).
- Images in folders named like training classes: a labelled test set. Rows are named by their
  path and carry their true class; the stage scores them: test log loss, accuracy, AUC,
  balanced accuracy (and for two classes sensitivity and specificity) in `reports/predict.json`,
  a confusion matrix, ROC and precision-recall curves in `reports/test` for `dvc plots show`.
- Any other images (other names, folders that are not classes, e.g. one per patient): rows named
  by their path.
The mean probability and predicted share of every class are in `reports/test/summary.json`;
for a labelled set also what its intervals count as independent (`interval_unit`): whole groups
where `group_pattern` matches every test path, else images, which the run says.

Probabilities are kept away from 0 and 1 by `clip` in pred.csv: log loss punishes a confident
mistake without bound, and clipping at 0.005 costs almost nothing on the right answers. Two
classes: p(class 1) is clipped to [clip, 1 − clip], as the original did. K > 2: every row is
shrunk towards the uniform distribution, p → clip + (1 − K·clip)·p, which keeps each
probability in [clip, 1 − (K−1)·clip], the row's sum at 1 and the classes' order (it needs
clip < 1/K). The test log loss is that of the submitted (clipped) probabilities; AUC and the
curves come from the unclipped ones, as the validation side's do.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from stages import (
    cli,
    decision,
    evaluation,
    h5io,
    intervals,
    model_record,
    outputs,
    overlap,
    quiet,
    split,
    testset,
)
from stages.feature_files import Rows
from stages.params import load_params
from stages.testset import TestSet

# What the stage reads of params.yaml. dvc.yaml makes it depend on the whole file (a typo'd key
# stops it), which covers these.
PARAMS = ("clip", "group_pattern")


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


def read_test_rows(rows: Rows, classes: list[str]) -> TestSet:
    """The test rows read against the model's classes (stages/testset.py): the Kaggle
    submission, a labelled set, or images named by path; TestSetError where none of them."""
    return testset.read([str(n) for n in rows.names], classes)


def write_submission(path: str, test: TestSet, probs: np.ndarray, classes: list[str],
                     predicted: np.ndarray | None = None) -> None:
    """Two classes: `id,label` (p(class 1)); K > 2: `id,<class>,…`; a labelled set adds
    `true_class`, and rows named by path `predicted_class` (the model's decision, at its
    threshold); Kaggle's submission stays `id,label`. Kaggle ids ascending; other rows in the
    resized order (by folder, then name)."""
    rows = test.row_ids()
    if len(rows) != len(probs):
        raise ValueError(f"{len(rows)} ids but {len(probs)} predictions")
    order = np.argsort(test.ids, kind="stable") if test.ids is not None else \
        np.arange(len(rows))
    true = None if test.labels is None else [classes[int(c)] for c in test.labels[order]]
    extra = ({"predicted_class": [classes[int(c)] for c in predicted[order]]}
             if predicted is not None and test.ids is None else None)
    evaluation.write_predictions(path, [rows[i] for i in order], probs[order], classes, true,
                                 extra)


# What reports/predict.json, a metrics file, keeps of the summary: few columns in
# `dvc exp show`, where a grid of experiments is compared (the rest is in the eval folder).
METRICS = ("n_test", "classes", "test_loss", "test_accuracy", "test_auc",
           "test_balanced_accuracy", "test_sensitivity", "test_specificity", "test_ece")


def is_metric(key: str) -> bool:
    """A key of reports/predict.json: METRICS and their confidence intervals."""
    return key in METRICS or key.removesuffix("_low").removesuffix("_high") in METRICS


def summary(probs: np.ndarray, classes: list[str], labels: np.ndarray | None,
            unclipped: np.ndarray | None = None, threshold: float = 0.5,
            groups: np.ndarray | None = None, missed: int | None = None) -> dict[str, Any]:
    """The test set's summary: per class the mean probability and the share of images
    predicted as it (at `threshold`); for a labelled set, the log loss of `probs` (as
    submitted), and the accuracy, clinical scores and calibration error of `unclipped`
    (default: `probs`) with their 95 % intervals (`intervals.intervals`: Wilson, DeLong and
    MOVER; widened for `groups` where given), `interval_unit` (`group` or `image`: what they
    count as independent) and, where `group_pattern` is set, `group_pattern_missed`: the
    `missed` test paths it does not match."""
    raw = probs if unclipped is None else unclipped
    predicted = decision.predicted(raw, threshold)
    out: dict[str, Any] = {
        "n_test": len(probs),
        "classes": list(classes),
        "mean_prob": {c: float(np.mean(probs[:, i])) for i, c in enumerate(classes)},
        "predicted_share": {c: float(np.mean(predicted == i)) for i, c in enumerate(classes)},
    }
    if labels is not None:
        out["test_loss"] = evaluation.log_loss(labels, probs)
        out["test_accuracy"] = evaluation.accuracy(labels, raw, threshold=threshold)
        out |= evaluation.scores(labels, raw, "test_", threshold=threshold)
        out["test_ece"] = decision.ece(labels, raw)
        out |= intervals.intervals(labels, raw, threshold, "test_", groups)
        out["interval_unit"] = "image" if groups is None else "group"
        if missed is not None:
            out["group_pattern_missed"] = missed
    return out


def groups_of_rows(names: np.ndarray, pattern: str) -> tuple[np.ndarray | None, list[str]]:
    """(the test rows' groups for the intervals, where `group_pattern` is set and matches every
    test path (a test set of other patients, named as the training set is), else None; the
    test paths it does not match)."""
    if not pattern:
        return None, []
    groups, missed = split.match_groups([str(n) for n in names], pattern)
    return (None if missed else groups), missed


def missed_note(pattern: str, missed: list[str], n: int, summary_path: str) -> str:
    """The run's line where `group_pattern` misses test paths: the intervals are by image."""
    return (f"group_pattern {split.shown(pattern)} does not match {len(missed)} of {n:,} test "
            f"path(s) ({cli.some(missed, 3)}), so the test scores' intervals count images as "
            "independent, not groups (patients): narrower than they should be where a patient "
            f"has several images ({summary_path}: interval_unit image)")


# What made the features beyond the networks and their weights, recorded by the model (a model
# from before records none) and by the test features: under DVC both splits follow them, but a
# features file or model from elsewhere can differ, and the head would score features it was
# not trained on. Each file attribute with the model record's field that holds it, what it is
# called in the message and what DVC follows.
COMPARED = {
    "preprocess": ("preprocess", "preprocess", "`weights`"),
    "precision": ("precision", "precision", "`precision`"),
    "weights_md5": ("weights_md5", "weight files of md5", "the weight files in keras_weights/"),
    "engine": ("engines", "engine", "`engine`"),
    "int8_sample": ("int8_samples", "int8 calibration samples of md5",
                    "the training images' int8 sample"),
}


def check_made_with(record: model_record.ModelRecord, features: str, f: h5py.File) -> None:
    """The test features' input scaling, precision and weight files per network must be the
    training features'."""
    for key, (field, what, follows) in COMPARED.items():
        trained = getattr(record, field)
        made = [str(v) for v in f.attrs.get(key, [])]
        if trained and made != trained:
            raise cli.MissingInput(
                f"{features}: extracted with {what} {made}, but {record.path} was trained on "
                f"features extracted with {trained}. Run `dvc repro` (both splits follow "
                f"{follows})")


def predict(model_path: str, features: str, batch_size: int = 1024
            ) -> tuple[TestSet, np.ndarray, list[str]]:
    """(the test rows, their (M, K) class probabilities, the classes), unclipped. Features or
    probabilities that are not finite stop it, naming the rows."""
    record = model_record.read(model_path)
    classes, networks, weights = record.classes, record.networks, record.weights
    with h5py.File(features, "r") as f:
        rows = Rows.read(f)
        fused = [str(n) for n in f.attrs.get("networks", [])]
        if networks and fused != networks:
            raise cli.MissingInput(
                f"{features}: fused from {' + '.join(fused)}, but {model_path} was trained on "
                f"{' + '.join(networks)}. Run `dvc repro` (both sides follow `fuse`)")
        extracted = [str(w) for w in f.attrs.get("weights", [])]
        if weights and extracted != weights:
            raise cli.MissingInput(
                f"{features}: extracted with weights {extracted}, but {model_path} was trained "
                f"on features extracted with {weights}: two different networks (with weights: "
                "none, `seed` decides the random network, and it reruns no extractor). Set "
                "`seed` back, or extract both splits again: `dvc repro -f extract_inception "
                "extract_xception`")
        check_made_with(record, features, f)
        import keras  # after the checks: a refusal does not wait for TensorFlow

        model = keras.models.load_model(model_path, compile=False, safe_mode=True)
        if f["features"].shape[1] != model.input_shape[-1]:
            raise cli.MissingInput(
                f"{features}: {f['features'].shape[1]} feature columns, but {model_path} takes "
                f"{model.input_shape[-1]}. Run `dvc repro`")
        test = read_test_rows(rows, classes)
        probs: list[np.ndarray] = []
        for batch in h5io.iter_batches(f["features"], batch_size):
            start = sum(map(len, probs))
            h5io.check_finite(batch, rows.names, f"{features}, test features", start)
            p = evaluation.probabilities(model.predict_on_batch(batch))
            h5io.check_finite(p, rows.names, f"{model_path}, predictions", start)
            probs.append(p)
    return test, np.concatenate(probs), classes


def shared_groups_note(train_features: str, test_names: np.ndarray, pattern: str) -> str:
    """The warning line where `group_pattern` finds groups (patients) in both the training
    features' rows and the test rows (`overlap.warning`); '' where none, without a pattern, or
    where the training features are not at hand (a clone that pulled only the model). Read,
    not a dvc.yaml dep: the model follows the training rows already, and a dep would stop such
    a clone's run (README, "Score new images")."""
    if not pattern or not Path(train_features).is_file():
        return ""
    with h5py.File(train_features, "r") as f:
        train_names = Rows.read(f).names
    return overlap.warning(overlap.shared_groups([str(n) for n in train_names],
                                                 [str(n) for n in test_names], pattern), pattern)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="models/model_2.h5")
    ap.add_argument("--features", default="data/features/test/fused.h5")
    ap.add_argument("--out", default="pred.csv")
    ap.add_argument("--report", default="reports/predict.json")
    ap.add_argument("--eval-dir", default="reports/test", help="test plots")
    ap.add_argument("--train-features", default="data/features/train/fused.h5",
                    help="read for its row names only: groups in both sets")
    args = ap.parse_args(argv)

    def work() -> None:
        params = load_params(keys=PARAMS)
        h5io.require(args.features, ("features", "names"), "Run `dvc repro concat` first.")
        record = model_record.read(args.model)
        n_classes = len(record.classes)
        clip_probs(np.full((1, n_classes), 0.5), params["clip"])  # a bad clip: before TensorFlow
        with h5py.File(args.features, "r") as f:
            n = len(f["features"])
        cli.say("predict", f"{n:,} test rows of {args.features}; starting tensorflow, then "
                f"{args.model}")
        quiet.tensorflow()
        test, raw, classes = predict(args.model, args.features)
        threshold = record.threshold
        probs = clip_probs(raw, params["clip"])
        pattern = params["group_pattern"]
        groups, missed = groups_of_rows(test.names, pattern) if test.labels is not None \
            else (None, [])
        stats = summary(probs, classes, test.labels, raw, threshold, groups,
                        len(missed) if pattern else None)
        shared = shared_groups_note(args.train_features, test.names, pattern)
        if shared:
            cli.say("predict", shared)
        if missed:
            cli.say("predict", missed_note(pattern, missed, len(test.names),
                                           f"{args.eval_dir}/summary.json"))
        # Everything is computed: now written. The eval folder is replaced whole (DVC keeps a
        # `persist` output), so no file of an earlier run stays in it (stages/outputs.py).
        with outputs.atomic_dir(args.eval_dir) as eval_dir:
            evaluation.write_plots(eval_dir, classes, test.labels, raw, threshold=threshold,
                                   split=Path(args.eval_dir).name)
            h5io.write_json(eval_dir / "summary.json", stats)
            write_submission(args.out, test, probs, classes, decision.predicted(raw, threshold))
            h5io.write_json(args.report, {k: v for k, v in stats.items() if is_metric(k)})
        scored = (f"; test log loss {stats['test_loss']:.4f}, accuracy "
                  f"{stats['test_accuracy']:.4f}, AUC {evaluation.fmt(stats['test_auc'])}"
                  if test.labels is not None else "")
        shares = ", ".join(f"{c} {s:.1%}" for c, s in stats["predicted_share"].items())
        kind = ("labelled" if test.labels is not None else
                "Kaggle ids" if test.ids is not None else "named by file")
        print(f"predict: {stats['n_test']} rows ({kind}) → {args.out} (predicted {shares})"
              f"{scored}")

    cli.run("predict", work)


if __name__ == "__main__":
    main()
