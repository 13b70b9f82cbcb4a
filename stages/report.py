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
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from stages import cli, decision, h5io, intervals, model_card, overlap
from stages.checklist import section_checklist
from stages.html_parts import esc, img, num, table
from stages.params import DEFAULTS, load_params
from stages.report_figures import curves_png, file_uri
from stages.run_record import Paths, Run, Split, labelled, read_csv, read_run

# Every param: the page lists them all (dvc.yaml: the whole params.yaml).
PARAMS = tuple(DEFAULTS)
SCORES = ("accuracy", "auc", "balanced_accuracy", "sensitivity", "specificity")
SCORE_NAMES = {"loss": "log loss", "accuracy": "accuracy", "auc": "AUC",
               "balanced_accuracy": "balanced accuracy", "sensitivity": "sensitivity",
               "specificity": "specificity", "ece": "ECE (15 bins)"}


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
    rows, probs, labels = labelled(
        read_csv(Path(run.paths.val_dir) / "predictions.csv"), run.classes)
    if not rows:
        return None
    logits = np.log(np.clip(probs, 1e-15, 1.0)) * float(run.metrics["temperature"])
    return decision.ece(labels, decision.probabilities_of_logits(logits))


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
