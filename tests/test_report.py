"""The `report` stage: the page's figures are the run's, it loads nothing from the network, its
checklist links land on its sections, patients in both training and test are listed (and
`predict` says so), the model card reads back through the Hub's own client, and a photo run's
page has no group rows. Unit tests on a small run fabricated with the stages' own writers; one
test reads the session's pipeline run (`baseline`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from stages import (
    decision,
    evaluation,
    h5io,
    html_parts,
    intervals,
    overlap,
    predict,
    report,
    run_record,
)
from stages.params import DEFAULTS

CLASSES = ["NORMAL", "PNEUMONIA"]
THRESHOLD = 0.4
# A tiny PNG: the page embeds the stages' pictures as they are.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def names_for(prefix: str, n_patients: int, per: int, label: int, start: int = 0) -> list[str]:
    return [f"{CLASSES[label]}/{prefix}{start + p}_{k}.jpeg" for p in range(n_patients)
            for k in range(per)]


def write_features(path: Path, names: list[str], labels: list[int] | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        info = {"names": np.asarray(names, dtype=object)}
        if labels is not None:
            info["labels"] = np.asarray(labels, np.uint8)
        h5io.write_row_info(f, info, CLASSES if labels is not None else None)


def fabricate(root: Path, pattern: str = r"^(person\d+)_", planted: bool = False,
              labelled_test: bool = True) -> Path:
    """A run's outputs as train_head, predict and resize write them: 2 classes, patients of
    2 images each; `planted`: a training patient's image in the test set too."""
    rng = np.random.default_rng(0)
    train = names_for("person", 10, 2, 0) + names_for("person", 10, 2, 1, start=100)
    train_labels = [0] * 20 + [1] * 20
    val_idx = np.r_[0:6, 20:26]
    val_labels = np.asarray(train_labels)[val_idx]
    p1 = np.clip(np.where(val_labels == 1, 0.7, 0.3) + rng.normal(0, 0.25, len(val_idx)),
                 0.01, 0.99)
    val_probs = np.stack([1 - p1, p1], axis=1)
    groups = np.asarray([n.split("/")[1].split("_")[0] for n in train])
    metrics = {
        "val_loss": evaluation.log_loss(val_labels, val_probs),
        "val_accuracy": evaluation.accuracy(val_labels, val_probs, threshold=THRESHOLD),
        **evaluation.scores(val_labels, val_probs, "val_", threshold=THRESHOLD),
        "threshold": THRESHOLD, "threshold_low": 0.35, "threshold_high": 0.45,
        "temperature": 1.0, "val_ece": decision.ece(val_labels, val_probs),
        **intervals.intervals(val_labels, val_probs, THRESHOLD, "val_",
                              groups[val_idx] if pattern else None),
        "best_epoch": 3, "n_train": 28, "n_val": 12, "n_groups_train": 14, "n_groups_val": 6}
    (root / "reports").mkdir(parents=True)
    h5io.write_json(root / "metrics.json", metrics)
    evaluation.write_plots(root / "reports/val", CLASSES, val_labels, val_probs,
                           threshold=THRESHOLD, split="val")
    evaluation.write_predictions(root / "reports/val/predictions.csv",
                                 [train[i] for i in val_idx], val_probs, CLASSES,
                                 [CLASSES[c] for c in val_labels],
                                 {"group": list(groups[val_idx])} if pattern else None,
                                 exact=True)
    test = names_for("person", 3, 1, 0, start=50) + names_for("person", 3, 1, 1, start=150)
    if planted:
        test.append("NORMAL/person7_9.jpeg")  # person7 trained on
    test_labels = np.asarray([0, 0, 0, 1, 1, 1, 0][:len(test)])
    t1 = np.clip(np.where(test_labels == 1, 0.8, 0.2) + rng.normal(0, 0.3, len(test)), 0.01,
                 0.99)
    test_probs = np.stack([1 - t1, t1], axis=1)
    test_groups = np.asarray([n.split("/")[1].split("_")[0] for n in test]) if pattern else None
    summary = predict.summary(test_probs, CLASSES, test_labels if labelled_test else None,
                              threshold=THRESHOLD, groups=test_groups,
                              missed=0 if pattern else None)
    evaluation.write_plots(root / "reports/test", CLASSES,
                           test_labels if labelled_test else None, test_probs,
                           threshold=THRESHOLD, split="test")
    h5io.write_json(root / "reports/test/summary.json", summary)
    h5io.write_json(root / "reports/predict.json",
                    {k: v for k, v in summary.items() if predict.is_metric(k)})
    evaluation.write_predictions(root / "pred.csv", test, test_probs, CLASSES,
                                 [CLASSES[c] for c in test_labels] if labelled_test else None)
    for png in ("reports/history.png", "reports/val_mistakes.png"):
        (root / png).write_bytes(PNG)
    (root / "models").mkdir()
    with h5py.File(root / "models/model_2.h5", "w") as f:
        f.attrs.update({"classes": CLASSES, "networks": ["inception_v3", "xception"],
                        "weights": ["imagenet", "imagenet"], "width": 299,
                        "threshold": THRESHOLD, "temperature": 1.0})
    write_features(root / "data/features/train/fused.h5", train, train_labels)
    write_features(root / "data/features/test/fused.h5", test,
                   list(test_labels) if labelled_test else None)
    (root / "data/resized").mkdir(parents=True)
    (root / "data/resized/train_skipped.csv").write_text(
        "file,reason\nNORMAL/bad_1.jpeg,cannot decode: not an image\n"
        "NORMAL/bad_2.jpeg,cannot decode: truncated\n")
    (root / "data/resized/test_skipped.csv").write_text("file,reason\n")
    for s, n in (("train", 40), ("test", len(test))):
        h5io.write_json(root / f"reports/resize/{s}.json",
                        {"images": n, "skipped": 2 if s == "train" else 0, "ignored_files": 1})
    (root / "params.yaml").write_text(yaml.safe_dump(
        {**DEFAULTS, "group_pattern": pattern, "threshold": "youden"}, sort_keys=False))
    return root


def written(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    monkeypatch.chdir(root)
    report.main([])
    return ((root / "reports/report.html").read_text(),
            (root / "reports/model_card.md").read_text())


# What a page may not load: a src/href to another host, a CSS import or url().
NETWORK = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:(?!image/png;base64)|//)"""
                     r"""|@import|url\(|<script|<link""", re.IGNORECASE)


def assert_offline(page: str) -> None:
    found = NETWORK.findall(page.replace("data:image/png;base64,", "DATAPNG"))
    assert not found, found
    for src in re.findall(r'src="([^"]*)"', page):
        assert src.startswith("data:image/png;base64,"), src[:60]


def assert_links_resolve(page: str) -> list[str]:
    ids = set(re.findall(r'\sid="([^"]+)"', page)) | set(re.findall(r"\sid='([^']+)'", page))
    links = re.findall(r'href="#([^"]+)"', page)
    assert links and not set(links) - ids, sorted(set(links) - ids)
    return links


def assert_figures(page: str, scores: dict, prefix: str) -> None:
    """Every score and both ends of its interval, as the page prints them (3 decimals)."""
    for name in ("accuracy", "auc", "balanced_accuracy", "sensitivity", "specificity"):
        value = scores[prefix + name]
        row = re.search(rf"<td>{report.SCORE_NAMES[name]}</td><td>([^<]*)</td><td>([^<]*)</td>",
                        page.split(f'id="perf-{prefix[:-1]}"')[1])
        assert row, name
        assert row.group(1).startswith(f"{value:.3f}"), (name, row.group(1), value)
        low, high = scores[f"{prefix}{name}_low"], scores[f"{prefix}{name}_high"]
        assert row.group(2) == f"{low:.3f} – {high:.3f}", (name, row.group(2))


def test_the_page_shows_the_run_s_figures_offline(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = fabricate(tmp_path / "run")
    page, _ = written(root, monkeypatch)
    metrics = json.loads((root / "metrics.json").read_text())
    summary = json.loads((root / "reports/test/summary.json").read_text())
    assert_figures(page, metrics, "val_")
    assert_figures(page, summary, "test_")
    assert_offline(page)
    assert page.count("data:image/png;base64,") >= 5  # history, 2 curves, reliability, mistakes
    for method in set(intervals.METHODS.values()):  # each interval's method named
        assert html_parts.esc(method) in page
    assert "the rule <code>youden</code> applied to the validation split" in page
    assert "2 undecodable image(s): 2 × cannot decode. 1 non-image file(s) ignored" in page
    assert "<details><summary>The 2 skipped training file(s)" in page
    assert "NORMAL/bad_2.jpeg" in page


def test_every_checklist_link_lands_on_a_section(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    page, _ = written(fabricate(tmp_path / "run"), monkeypatch)
    links = assert_links_resolve(page)
    assert {"decision", "data-skipped", "data-shared", "perf-test-confusion"} <= set(links)
    checklist = page.split('id="checklist"')[1]
    assert checklist.count("the author writes it") >= 5
    assert "Reference standard" in checklist and "Ethics approval" in checklist


def test_a_planted_patient_in_training_and_test_is_listed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    root = fabricate(tmp_path / "run", planted=True)
    page, card = written(root, monkeypatch)
    shared = page.split('id="data-shared"')[1].split("</table>")[0]
    assert "1 patient is in both the training and the test set" in shared
    assert "<td><code>person7</code></td><td>2</td><td>1</td>" in shared
    assert 'href="#data-shared"' in page.split('id="run"')[0]  # said at the top too
    assert "shares patients with the training set" in card
    assert "person7" in capsys.readouterr().err
    # predict's run says the same, from the same function
    note = predict.shared_groups_note("data/features/train/fused.h5",
                                      np.asarray(["NORMAL/person7_9.jpeg", "NORMAL/x_1.jpeg"]),
                                      r"^(person\d+)_")
    assert note == overlap.warning([("person7", 2, 1)], r"^(person\d+)_")
    assert note.startswith("WARNING: 1 group(s) of group_pattern `^(person\\d+)_` are in both")
    assert "(person7; 1 test image(s))" in note


def test_no_shared_patient_is_said_and_predict_is_silent(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    page, _ = written(fabricate(tmp_path / "run"), monkeypatch)
    assert "None: no patient of the test set is in the training set." in page
    assert predict.shared_groups_note("data/features/train/fused.h5",
                                      np.asarray(["NORMAL/person55_0.jpeg"]),
                                      r"^(person\d+)_") == ""
    # without the training features at hand (a clone with the model only): nothing to say
    assert predict.shared_groups_note("missing.h5", np.asarray(["NORMAL/person7_0.jpeg"]),
                                      r"^(person\d+)_") == ""


def test_the_model_card_reads_back_through_huggingface_hub(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = pytest.importorskip("huggingface_hub")
    root = fabricate(tmp_path / "run")
    written(root, monkeypatch)
    assert_card(root)
    data = hub.ModelCard.load(root / "reports/model_card.md").data
    assert data.library_name == "keras" and "image-classification" in data.tags


def assert_card(root: Path) -> None:
    """huggingface_hub's eval_results are metrics.json's and the test summary's values."""
    from huggingface_hub import ModelCard

    results = ModelCard.load(root / "reports/model_card.md").data.eval_results
    metrics = json.loads((root / "metrics.json").read_text())
    summary = json.loads((root / "reports/test/summary.json").read_text())
    got = {(r.dataset_split, r.metric_type): r.metric_value for r in results}
    want = {}
    for split, scores, prefix in (("validation", metrics, "val_"), ("test", summary, "test_")):
        for name, kind in report.model_card.TYPES.items():
            if scores.get(prefix + name) is not None:
                want[(split, kind)] = scores[prefix + name]
    assert got == want
    assert all(r.task_type == "image-classification" for r in results)


def test_a_photo_run_has_no_group_rows_nor_medical_wording(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    page, card = written(fabricate(tmp_path / "run", pattern="", labelled_test=False),
                         monkeypatch)
    for said in ('id="data-groups"', 'id="data-shared"', 'id="checklist"', "patient"):
        assert said not in page, said
    assert "is unlabelled: no test figures" in page and 'id="perf-test-confusion"' not in page
    assert "patient" not in card and "medical" not in card
    assert_offline(page)
    assert_links_resolve(page)


def test_a_mistake_in_words_sets_its_probability_against_the_threshold() -> None:
    row = {"id": "NORMAL/a.jpeg", "label": "0.18", "true_class": "PNEUMONIA"}
    assert run_record.in_words(row, CLASSES, 0.32) == (
        "p(PNEUMONIA) 0.18, below the threshold 0.32: called NORMAL")
    rows = [row, {"id": "b", "label": "0.9", "true_class": "NORMAL"},
            {"id": "c", "label": "0.5", "true_class": "PNEUMONIA"}]
    assert run_record.worst_in_words(rows, CLASSES, 0.32) == [
        "b, true NORMAL: p(PNEUMONIA) 0.90, at or above the threshold 0.32: called PNEUMONIA",
        "NORMAL/a.jpeg, true PNEUMONIA: p(PNEUMONIA) 0.18, below the threshold 0.32: called "
        "NORMAL"]


def test_a_probability_near_the_threshold_is_told_apart_from_it() -> None:
    row = {"id": "x", "label": "0.50021", "true_class": "NORMAL"}
    assert run_record.in_words(row, CLASSES, 0.5) == (
        "p(PNEUMONIA) 0.5002, at or above the threshold 0.5000: called PNEUMONIA")


def test_the_threshold_s_origin_is_said() -> None:
    assert report.threshold_rule(0.5, 0).startswith("fixed beforehand")
    assert "out-of-fold predictions" in report.threshold_rule("sensitivity:0.95", 5)
    assert "validation split" in report.threshold_rule("youden", 0)


@pytest.mark.pipeline
def test_the_pipeline_s_report(baseline: Path) -> None:
    """The session's run (Kaggle names, no group_pattern, an unlabelled test set): the stage
    ran, its page shows metrics.json's figures offline, the card reads back."""
    page = (baseline / "reports/report.html").read_text()
    metrics = json.loads((baseline / "metrics.json").read_text())
    assert_figures(page, metrics, "val_")
    assert_offline(page)
    assert_links_resolve(page)
    assert 'id="data-groups"' not in page and 'id="checklist"' not in page
    assert "is unlabelled: no test figures" in page
    commit = (baseline / ".git").is_dir()
    assert commit and re.search(r"<code>[0-9a-f]{40}</code>", page)
    assert "data/raw/train" in page.split('id="run-inputs"')[1].split("</table>")[0]
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import ModelCard

    results = ModelCard.load(baseline / "reports/model_card.md").data.eval_results
    assert {r.metric_type: r.metric_value for r in results} == {
        kind: metrics["val_" + name] for name, kind in report.model_card.TYPES.items()
        if metrics.get("val_" + name) is not None}


def test_three_classes_have_no_threshold_and_the_page_still_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """K > 2: the most probable class decides; no sensitivity rows, no operating point."""
    root = fabricate(tmp_path / "run", pattern="")
    classes = ["ant", "moth", "zebra"]
    rng = np.random.default_rng(1)
    labels = np.arange(12) % 3
    probs = rng.dirichlet(np.ones(3), 12)
    metrics = {"val_loss": evaluation.log_loss(labels, probs),
               "val_accuracy": evaluation.accuracy(labels, probs),
               **evaluation.scores(labels, probs, "val_"), "threshold": 0.5,
               "threshold_low": None, "threshold_high": None, "temperature": 1.0,
               "val_ece": decision.ece(labels, probs),
               **intervals.intervals(labels, probs, 0.5, "val_"), "best_epoch": 2}
    h5io.write_json(root / "metrics.json", metrics)
    evaluation.write_plots(root / "reports/val", classes, labels, probs, split="val")
    evaluation.write_predictions(root / "reports/val/predictions.csv",
                                 [f"{classes[c]}/{i}.jpg" for i, c in enumerate(labels)], probs,
                                 classes, [classes[c] for c in labels], exact=True)
    summary = predict.summary(probs, classes, labels)
    evaluation.write_plots(root / "reports/test", classes, labels, probs, split="test")
    h5io.write_json(root / "reports/test/summary.json", summary)
    evaluation.write_predictions(root / "pred.csv", [f"t{i}.jpg" for i in range(12)], probs,
                                 classes, [classes[c] for c in labels])
    with h5py.File(root / "models/model_2.h5", "a") as f:
        f.attrs["classes"] = classes
    with h5py.File(root / "data/features/train/fused.h5", "a") as f:
        f.attrs["classes"] = classes
    (root / "params.yaml").write_text(yaml.safe_dump({**DEFAULTS, "group_pattern": ""}))
    page, card = written(root, monkeypatch)
    assert "the most probable class" in card
    assert "the most probable of the 3 classes" in page and ">sensitivity<" not in page
    auc = re.search(r"<td>AUC</td><td>([^<]*)</td>", page)
    assert auc and auc.group(1) == f"{metrics['val_auc']:.3f}"
    assert "the most probable class: called" in page
    assert_offline(page)


def test_the_ece_before_the_temperature_is_that_of_the_uncalibrated_probabilities(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fabricate(tmp_path / "run")
    metrics = json.loads((root / "metrics.json").read_text())
    h5io.write_json(root / "metrics.json", {**metrics, "temperature": 2.0})
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump({**params, "calibrate": "temperature"}))
    rows = run_record.read_csv(root / "reports/val/predictions.csv")
    p1 = np.array([float(r["label"]) for r in rows])
    z = 2.0 * np.log(p1 / (1 - p1))  # the logits before they were divided by T = 2
    before = 1 / (1 + np.exp(-z))
    labels = np.array([CLASSES.index(r["true_class"]) for r in rows])
    want = decision.ece(labels, np.stack([1 - before, before], axis=1))
    page, _ = written(root, monkeypatch)
    assert (f"before calibration {want:.3f}, after {metrics['val_ece']:.3f}") in page
    assert "fitted on the validation split (minimum log loss)" in page
