"""`reports/model_card.md`: the run's Hugging Face model card, written by the `report` stage.

YAML front matter with a `model-index` (task, dataset, each metric and its value) in the form
the Hub's own client reads (`huggingface_hub.ModelCard.load(path).data.eval_results`), then the
card's sections: intended use (left to the author), training data, evaluation with 95 %
intervals, limitations and how to classify. Unlike the HTML page it holds no date, commit or
machine: the same run gives the same bytes.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from stages import intervals

if TYPE_CHECKING:
    from stages.run_record import Run, Split

# metrics.json's score → the model-index metric type (Hugging Face's metric ids where one
# exists: accuracy, roc_auc, recall; others by their own names).
TYPES = {"accuracy": "accuracy", "auc": "roc_auc", "balanced_accuracy": "balanced_accuracy",
         "sensitivity": "sensitivity", "specificity": "specificity", "loss": "log_loss",
         "ece": "ece"}
SHOWN = {"accuracy": "accuracy", "auc": "AUC", "balanced_accuracy": "balanced accuracy",
         "sensitivity": "sensitivity", "specificity": "specificity", "loss": "log loss",
         "ece": "expected calibration error"}


def y(value: Any) -> str:
    """A YAML scalar: JSON's form, which YAML reads alike."""
    return json.dumps(value, ensure_ascii=False)


def metric_values(scores: dict[str, Any], prefix: str) -> list[tuple[str, float]]:
    """(score, value) of the split's defined scores, in TYPES' order."""
    return [(name, float(scores[prefix + name])) for name in TYPES
            if scores.get(prefix + name) is not None]


def dataset_slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", path).strip("-").lower() or "images"


def dataset_name(run: Run, split: str) -> str:
    """The model-index dataset: the training data for validation, the test data for test."""
    return run.params["test_data" if split == "test" else "train_data"]


def front_matter(run: Run) -> str:
    """The YAML header: library, tags and the model-index, one result per evaluated split."""
    networks = run.record.networks
    tags = ["image-classification", "transfer-learning", *networks,
            *(("medical-imaging",) if run.medical else ())]
    lines = ["---", "library_name: keras", "tags:", *(f"- {y(t)}" for t in tags),
             "model-index:", f"- name: {y(' + '.join(networks) + ' head')}", "  results:"]
    splits: list[tuple[Split, str]] = [(run.val, "validation")]
    if run.test is not None:
        splits.append((run.test, "test"))
    for split, shown in splits:
        values = metric_values(split.scores, split.key + "_")
        if not values:
            continue
        lines += ["  - task:", "      type: image-classification",
                  "      name: Image classification",
                  "    dataset:", f"      name: {y(dataset_name(run, shown))}",
                  f"      type: {y(dataset_slug(dataset_name(run, shown)))}",
                  f"      split: {y(shown)}", "    metrics:"]
        for score, value in values:
            lines += [f"    - type: {y(TYPES[score])}", f"      value: {value!r}",
                      f"      name: {y(f'{shown} {SHOWN[score]}')}"]
    return "\n".join(lines) + "\n---\n"


def evaluation(split: Split, where: str, unit: str) -> list[str]:
    p = split.key + "_"
    s = split.scores
    rows = ["| score | value | 95 % interval | method |", "| --- | --- | --- | --- |"]
    for name in TYPES:
        if s.get(p + name) is None:
            continue
        low, high = s.get(f"{p}{name}_low"), s.get(f"{p}{name}_high")
        ci = f"{low:.3f} – {high:.3f}" if low is not None and high is not None else ""
        rows.append(f"| {SHOWN[name]} | {s[p + name]:.3f} | {ci} | "
                    f"{intervals.METHODS.get(name, '') if ci else ''} |")
    return [f"### {split.title} ({where})", "", *rows, "",
            f"Intervals count {unit} as the independent units.", ""]


def card(run: Run) -> str:
    """The model card's text."""
    m, classes = run.metrics, run.classes
    folds = int(run.params["folds"])
    where = ("out of fold: every training image, scored by the head of the fold that did not "
             f"train on it ({folds} folds)" if folds else "the validation split")
    unit_val = "patients (groups)" if run.grouped else "images"
    data = run.data
    total = data["train_total"]
    nets = run.record.networks
    body = [
        f"# {' vs '.join(classes)}: a Dense head on {' + '.join(run.record.networks)} features",
        "",
        "## Intended use", "",
        "**The author writes this**: who uses the model, on which images, for what decision"
        + (", and what it must not be used for (it is not a medical device)" if run.medical
           else "") + ".", "",
        "## Training data", "",
        f"`{run.params['train_data']}`: {sum(total.values())} images "
        f"({', '.join(f'{c} {n}' for c, n in total.items())})"
        + (f", {data['groups']['training set']} patients (groups of `group_pattern` "
           f"`{run.params['group_pattern']}`)" if "groups" in data else "") + "; "
        + (f"validated {where}." if folds else
           f"{sum(data['train'].values())} trained on, {sum(data['val'].values())} held out "
           "for validation" + (", each patient on one side" if run.grouped else "") + "."),
        f"Images resized to {run.record.width} px; features of "
        f"{', '.join(f'{n} ({w})' for n, w in zip(nets, run.record.weights, strict=False))}.",
        "",
        "## Evaluation", "",
        *evaluation(run.val, where, unit_val),
    ]
    if run.test is not None:
        body += evaluation(run.test, f"`{run.params['test_data']}`, {run.n_test} images",
                           "patients (groups)" if run.test.unit == "group" else "images")
    else:
        body += [f"The test set (`{run.params['test_data']}`, {run.n_test} images) is "
                 "unlabelled: no test figures.", ""]
    on = "the out-of-fold predictions" if folds else "the validation split"
    decided = (f"class `{classes[1]}` where p({classes[1]}) ≥ {m['threshold']:.4g}"
               if len(classes) == 2 else "the most probable class")
    weights = sorted(set(run.record.weights))
    features = ("networks trained on ImageNet photographs"
                + (", not on medical images" if run.medical else "")
                if any(w.startswith("imagenet") for w in weights)
                else f"networks with the weights {', '.join(weights)}")
    body += [
        "## Limitations", "",
        f"- The features come from {features}; only the Dense head learnt from this data.",
        f"- Decision: {decided}. The temperature ({float(m.get('temperature', 1.0)):.4g})"
        + (" and the threshold were" if len(classes) == 2 else " was")
        + f" fitted on {on}, so the validation figures are optimistic; the test figures "
        "are not.",
        *(["- The test set shares patients with the training set (the report lists them): "
           "its figures are optimistic too."] if run.shared else []),
        "- Figures of this run only; the full report is `reports/report.html`.", "",
        "## How to classify", "",
        "```bash",
        "python3 -m stages.classify data/raw/new --out new.csv   # files, folders or .zip",
        "```", "",
        "```python",
        "from stages.classifier import Classifier",
        "",
        'clf = Classifier.load("models/model_2.h5")   # builds the networks once',
        'probs = clf.predict(["a.jpg", "scan.dcm"])    # float32 (n, K), classes: clf.classes',
        "```", "",
    ]
    return front_matter(run) + "\n" + "\n".join(body)
