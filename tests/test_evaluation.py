"""Predictions against labels: probabilities, log loss, the plot files DVC's templates draw, and
the order of the mistakes picture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stages import evaluation


def test_one_sigmoid_unit_becomes_two_class_probabilities() -> None:
    p = evaluation.probabilities(np.array([[0.25], [0.9]], np.float32))
    np.testing.assert_allclose(p, [[0.75, 0.25], [0.1, 0.9]], rtol=1e-6)
    softmax = np.array([[0.2, 0.3, 0.5]])
    np.testing.assert_array_equal(evaluation.probabilities(softmax), softmax)


def test_log_loss_and_accuracy() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.0, 1.0]])
    labels = np.array([0, 1, 1, 0])
    expected = -np.mean(np.log([0.9, 0.8, 0.4, 1e-15]))  # a certain mistake costs 34.5
    assert evaluation.log_loss(labels, probs) == pytest.approx(expected)
    assert evaluation.accuracy(labels, probs) == 0.5


def test_mistakes_first_by_confidence_then_the_least_sure_right_answers() -> None:
    probs = np.array([[0.6, 0.4], [0.1, 0.9], [0.45, 0.55], [0.99, 0.01], [0.7, 0.3]])
    labels = np.array([1, 1, 0, 1, 0])
    # wrong: row 0 (p true 0.4), row 2 (0.45), row 3 (0.01); right: row 4 (0.7), row 1 (0.9)
    assert list(evaluation.worst_mistakes(labels, probs, n=4)) == [3, 0, 2, 4]
    assert list(evaluation.worst_mistakes(labels, probs)) == [3, 0, 2, 4, 1]
    # at threshold 0.35 row 0 (p1 0.4) is right and row 4 (p1 0.3) still right
    assert list(evaluation.worst_mistakes(labels, probs, threshold=0.35)) == [3, 2, 0, 4, 1]


def read(folder: Path, name: str) -> object:
    return json.loads((folder / "plots/sklearn" / f"{name}.json").read_text())


def test_two_class_plots_name_the_classes(tmp_path: Path) -> None:
    labels = np.array([0, 0, 1, 1])
    probs = evaluation.probabilities(np.array([[0.1], [0.6], [0.7], [0.8]]))
    evaluation.write_plots(tmp_path, ["Cat", "Dog"], labels, probs)
    assert read(tmp_path, "confusion_matrix") == [
        {"actual": "Cat", "predicted": "Cat"}, {"actual": "Cat", "predicted": "Dog"},
        {"actual": "Dog", "predicted": "Dog"}, {"actual": "Dog", "predicted": "Dog"}]
    roc = read(tmp_path, "roc")["roc"]  # type: ignore[index]
    assert roc[0]["fpr"] == 0 and roc[-1] == {**roc[-1], "fpr": 1.0, "tpr": 1.0}
    assert read(tmp_path, "precision_recall")["precision_recall"]  # type: ignore[index]


def test_k_class_curves_are_micro_averaged(tmp_path: Path) -> None:
    labels = np.array([0, 1, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
    evaluation.write_plots(tmp_path, ["a", "b", "c"], labels, probs)
    assert [r["predicted"] for r in read(tmp_path, "confusion_matrix")] == ["a", "b", "a"]
    # 9 (image, class) decisions, 3 of them positive: the curve reaches tpr 1 at fpr 1/6
    roc = read(tmp_path, "roc")["roc"]  # type: ignore[index]
    assert min(r["fpr"] for r in roc if r["tpr"] == 1.0) == pytest.approx(1 / 6)


def test_an_unlabelled_set_gets_empty_plot_files(tmp_path: Path) -> None:
    evaluation.write_plots(tmp_path, ["cat", "dog"], None, np.full((3, 2), 0.5))
    assert read(tmp_path, "confusion_matrix") == []
    assert read(tmp_path, "roc") == {"roc": []}
    assert read(tmp_path, "precision_recall") == {"precision_recall": []}
    assert json.loads((tmp_path / "plots/calibration.json").read_text()) == {"calibration": []}


def test_decisions_at_a_threshold(tmp_path: Path) -> None:
    from sklearn import metrics as skm

    labels, probs = random_predictions(2, seed=3)
    predicted = (probs[:, 1] >= 0.3).astype(int)
    got = evaluation.scores(labels, probs, "test_", threshold=0.3)
    assert got["test_sensitivity"] == pytest.approx(skm.recall_score(labels, predicted))
    assert got["test_specificity"] == pytest.approx(
        skm.recall_score(labels, predicted, pos_label=0))
    assert got["test_balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(labels, predicted))
    assert got["test_auc"] == evaluation.scores(labels, probs, "test_")["test_auc"]
    assert evaluation.accuracy(labels, probs, threshold=0.3) == pytest.approx(
        skm.accuracy_score(labels, predicted))
    evaluation.write_plots(tmp_path, ["cat", "dog"], labels, probs, threshold=0.3)
    assert [r["predicted"] == "dog" for r in read(tmp_path, "confusion_matrix")] == list(
        predicted == 1)  # type: ignore[union-attr]
    rows = json.loads((tmp_path / "plots/calibration.json").read_text())["calibration"]
    assert sum(r["count"] for r in rows) == len(labels)
    assert set(rows[0]) == {"bin", "confidence", "accuracy", "count"}


def test_mistakes_figure_is_a_grid_of_four_columns(tmp_path: Path) -> None:
    pictures = np.zeros((5, 16, 16, 3), np.uint8)
    probs = evaluation.probabilities(np.linspace(0.1, 0.9, 5)[:, None])
    path = tmp_path / "m.png"
    evaluation.mistakes_figure(path, pictures, [f"{i}.jpg" for i in range(5)], ["cat", "dog"],
                               np.array([1, 1, 0, 0, 1]), probs)
    with Image.open(path) as im:
        width, height = im.size
    assert width > height  # two rows of four
    first = path.read_bytes()
    evaluation.mistakes_figure(path, pictures, [f"{i}.jpg" for i in range(5)], ["cat", "dog"],
                               np.array([1, 1, 0, 0, 1]), probs)
    assert path.read_bytes() == first  # no timestamp or version: the same bytes


def test_curves_are_scikit_learns() -> None:
    # scikit-learn's own example: roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    roc, pr = evaluation.curves(np.array([0, 0, 1, 1]) == 1, np.array([0.1, 0.4, 0.35, 0.8]))
    assert [(r["fpr"], r["tpr"]) for r in roc] == [
        (0, 0), (0, 0.5), (0.5, 0.5), (0.5, 1), (1, 1)]
    assert [(r["precision"], r["recall"], r["threshold"]) for r in pr] == [
        (0.5, 1, 0.1), (pytest.approx(2 / 3), 1, 0.35), (0.5, 0.5, 0.4), (1, 0.5, 0.8)]
    assert evaluation.curves(np.array([True, True]), np.array([0.2, 0.3])) == ([], [])


def random_predictions(k: int, n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative but imperfect (N, K) probabilities, with ties."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + 1.5 * np.eye(k)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, np.round(probs, 2) / np.round(probs, 2).sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_clinical_scores_are_scikit_learns(k: int) -> None:
    from sklearn import metrics as skm

    labels, probs = random_predictions(k)
    got = evaluation.scores(labels, probs, "val_")
    # two classes: p(class 1) >= 0.5 is class 1 (decision.predicted), so a tie at exactly 0.5
    # (these rounded probabilities have some) goes to class 1 where argmax would say 0
    predicted = (probs[:, 1] >= 0.5).astype(int) if k == 2 else np.argmax(probs, axis=1)
    auc = (skm.roc_auc_score(labels, probs[:, 1]) if k == 2 else
           skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert got["val_auc"] == pytest.approx(auc, abs=1e-12)
    assert got["val_balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(labels, predicted), abs=1e-12)
    if k == 2:
        assert got["val_sensitivity"] == pytest.approx(skm.recall_score(labels, predicted))
        assert got["val_specificity"] == pytest.approx(
            skm.recall_score(labels, predicted, pos_label=0))
        assert set(got) == {"val_auc", "val_balanced_accuracy", "val_sensitivity",
                            "val_specificity"}
    else:
        assert set(got) == {"val_auc", "val_balanced_accuracy"}


def test_scores_where_a_class_is_missing() -> None:
    from sklearn import metrics as skm

    labels, probs = random_predictions(3)
    present = labels != 2  # a test set without class 2: AUC over the classes it holds
    got = evaluation.scores(labels[present], probs[present], "test_")
    expected = np.mean([skm.roc_auc_score(labels[present] == c, probs[present][:, c])
                        for c in (0, 1)])
    assert got["test_auc"] == pytest.approx(expected, abs=1e-12)
    one = evaluation.scores(np.ones(4, int), evaluation.probabilities(
        np.array([[0.2], [0.9], [0.6], [0.7]])), "test_")
    assert one["test_auc"] is None and one["test_specificity"] is None  # undefined, not 0
    assert one["test_sensitivity"] == 0.75 and one["test_balanced_accuracy"] == 0.75


def test_predictions_file_has_a_row_per_image(tmp_path: Path) -> None:
    path = tmp_path / "predictions.csv"
    probs = evaluation.probabilities(np.array([[0.25], [0.875]]))
    evaluation.write_predictions(path, ["NORMAL/a.jpeg", "PNEUMONIA/b.jpeg"], probs,
                                 ["NORMAL", "PNEUMONIA"], ["NORMAL", "NORMAL"],
                                 {"group": ["p1", "p2"]})
    assert path.read_text().splitlines() == [
        "id,label,true_class,group", "NORMAL/a.jpeg,0.250000,NORMAL,p1",
        "PNEUMONIA/b.jpeg,0.875000,NORMAL,p2"]


def test_exact_predictions_decide_as_the_model_at_its_threshold(tmp_path: Path) -> None:
    """Issue 31, point 4: a chosen threshold is one validation score, and the classify tool
    decides from reports/val/predictions.csv again; 6 decimals moved the rows at and near the
    threshold (float32 scores 1e-7 apart) to the other class."""
    from stages import decision

    p1 = np.float32(0.731059) + np.arange(-3, 4, dtype=np.float32) * np.float32(6e-8)
    assert len(set(np.round(p1.astype(np.float64), 6))) == 1  # one value at 6 decimals
    probs = evaluation.probabilities(p1[:, None])  # as train_head gets them: float64
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    threshold = decision.resolve_threshold("youden", labels, probs[:, 1])
    assert probs[2, 1] < threshold < probs[3, 1]  # midway between two scores 6e-8 apart
    decided = decision.predicted(probs, threshold)
    assert decided.tolist() == labels.tolist()
    for exact in (True, False):
        path = tmp_path / f"{exact}.csv"
        evaluation.write_predictions(path, [f"{i}.jpg" for i in range(7)], probs,
                                     ["cat", "dog"], ["cat"] * 7, exact=exact)
        text = [r.split(",")[1] for r in path.read_text().splitlines()[1:]]
        for dtype in (np.float64, np.float32):  # as the classify tool reads it, and as stored
            back = np.array([float(v) for v in text], dtype)
            again = decision.predicted(evaluation.probabilities(back[:, None]), threshold)
            assert (again.tolist() == decided.tolist()) is exact, (exact, dtype, text)
    assert path.read_text().splitlines()[1] == "0.jpg,0.731059,cat"  # pred.csv's 6 decimals


def test_the_reliability_diagram_is_titled_by_the_split_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage that builds its folder under a temporary name (`outputs.atomic_dir`) names the
    split; the title came from the folder's name."""
    titles: list[str] = []
    monkeypatch.setattr(evaluation, "reliability_figure", lambda _p, _r, title: titles.append(
        title))
    labels, probs = np.array([0, 1, 1]), evaluation.probabilities(np.array([[.2], [.7], [.4]]))
    evaluation.write_plots(tmp_path / ".val.tmp123", ["cat", "dog"], labels, probs, split="val")
    evaluation.write_plots(tmp_path / "test", ["cat", "dog"], labels, probs)
    assert [t.split(":")[0] for t in titles] == ["Validation", "Test"]


def test_no_caption_sits_on_the_picture_above_it() -> None:
    """Long names wrap to two lines; every caption stays clear of the row above it."""
    import matplotlib.pyplot as plt

    n = 16
    names = [f"PNEUMONIA/person{i}_bacteria_{1000 + i}_long_export_name.jpeg" for i in range(n)]
    fig = evaluation.mistakes_grid(np.zeros((n, 112, 112, 3), np.uint8), names, ["a", "b"],
                                   np.arange(n) % 2, np.full((n, 2), 0.5))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = fig.axes
    for i, ax in enumerate(axes[4:], start=4):  # from the second row on
        title = ax.title.get_window_extent(renderer)
        above = axes[i - 4].get_window_extent(renderer)  # the picture above
        assert title.y1 <= above.y0 + 0.5, (i, title, above)
    plt.close(fig)


@pytest.mark.parametrize(("labels", "title"), [
    # no mistakes: every tile a right answer, and the title says so (issue 24, point 14)
    ([0, 1, 0, 1], "No mistakes on the validation split:\nthe 4 right answers the model was "
                   "least sure of"),
    # fewer mistakes than tiles (`worst_mistakes`): all of them, then right answers
    ([1, 1, 0, 1], "The only mistake on the validation split,\nthen the 3 right answers the "
                   "model was least sure of"),
    ([1, 1, 1, 1], "All 2 mistakes on the validation split, most confident first,\nthen the 2 "
                   "right answers the model was least sure of"),
    ([1, 0, 1, 0], "The 4 most confident mistakes on the validation split"),
], ids=["no mistakes", "one mistake", "fewer mistakes than tiles", "only mistakes"])
def test_the_mistakes_picture_is_titled_for_what_it_shows(labels: list[int], title: str) -> None:
    import matplotlib.pyplot as plt

    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])  # predicts 0, 1, 0, 1
    fig = evaluation.mistakes_grid(np.zeros((4, 16, 16, 3), np.uint8),
                                   [f"{i}.jpg" for i in range(4)], ["cat", "dog"],
                                   np.array(labels), probs)
    assert fig.get_suptitle() == title + "\ndecided at p(dog) ≥ 0.5"
    plt.close(fig)


def test_a_labelled_split_gets_its_reliability_diagram_as_a_png(tmp_path: Path) -> None:
    """`dvc plots show`'s page needs the internet: the diagram is a PNG too, for a labelled
    split only (an unlabelled test set has nothing to draw)."""
    rng = np.random.default_rng(0)
    p1 = rng.random(200)
    probs = np.stack([1 - p1, p1], axis=1)
    evaluation.write_plots(tmp_path / "val", ["cat", "dog"], (rng.random(200) < p1).astype(int),
                           probs)
    assert (tmp_path / "val/reliability.png").read_bytes()[:4] == b"\x89PNG"
    evaluation.write_plots(tmp_path / "test", ["cat", "dog"], None, probs)
    assert not (tmp_path / "test/reliability.png").exists()


def reliability_rows(seed: int = 0, n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, and over-confident probabilities at temperature 1 and after T = 1.73."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    logits = (2 * labels - 1) * 1.5 + rng.normal(0, 2.5, n)
    before, after = (evaluation.probabilities((1 / (1 + np.exp(-logits / t)))[:, None])
                     for t in (1.0, 1.73))
    return labels, before, after


def test_the_reliability_diagram_is_600_px_wide_and_counts_each_bin(tmp_path: Path) -> None:
    """Issue 33: 288 px wide, and the count of a bin only as a dot's size; the PNG is at least
    600 px wide and writes each bin's number of images."""
    import matplotlib.pyplot as plt

    from stages import decision

    labels, _, probs = reliability_rows()
    evaluation.write_plots(tmp_path / "test", ["cat", "dog"], labels, probs)
    with Image.open(tmp_path / "test/reliability.png") as im:
        assert im.size[0] >= 600 and im.size[1] >= 500, im.size
    first = (tmp_path / "test/reliability.png").read_bytes()
    evaluation.write_plots(tmp_path / "test", ["cat", "dog"], labels, probs)
    assert (tmp_path / "test/reliability.png").read_bytes() == first  # the same bytes
    rows = decision.reliability(labels, probs)
    assert len(rows) > 3
    fig = evaluation.reliability_plot([("", rows)], "t")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == [str(r["count"]) for r in rows]
    assert fig.axes[0].get_legend() is None  # one curve: nothing to tell apart
    plt.close(fig)


def test_with_a_temperature_the_diagram_shows_before_and_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`calibrate: temperature`: validation's diagram draws the probabilities at temperature 1
    and after it, each with its counts, in a legend naming the temperature."""
    import matplotlib.pyplot as plt

    from stages import decision

    drawn: list = []
    titles: list[str] = []
    real = evaluation.reliability_figure
    monkeypatch.setattr(evaluation, "reliability_figure", lambda p, d, title: (
        drawn.extend(d), titles.append(title), real(p, d, title)))
    labels, before, after = reliability_rows()
    evaluation.write_plots(tmp_path / "val", ["cat", "dog"], labels, after, split="val",
                           before=before, temperature=1.7321)
    assert [label for label, _ in drawn] == ["before (T = 1)", "after (T = 1.73)"]
    assert drawn[0][1] == decision.reliability(labels, before)
    assert drawn[1][1] == decision.reliability(labels, after)
    assert drawn[0][1] != drawn[1][1]
    assert (f"ECE {decision.ece(labels, before):.3f} before the temperature, "
            f"{decision.ece(labels, after):.3f} after") in titles[0]
    # the plot files stay the model's (after): DVC's template draws those
    rows = json.loads((tmp_path / "val/plots/calibration.json").read_text())["calibration"]
    assert rows == drawn[1][1]
    fig = evaluation.reliability_plot(drawn, titles[0])
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["perfect calibration", "before (T = 1)", "after (T = 1.73)"]
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert texts == [str(r["count"]) for _, rows in drawn for r in rows]
    plt.close(fig)
    with Image.open(tmp_path / "val/reliability.png") as im:
        assert im.size[0] >= 600


def test_train_head_gives_the_probabilities_before_the_temperature() -> None:
    from stages import train_head

    logits = np.array([-2.0, 0.5, 3.0])
    before = train_head.uncalibrated(logits / 2.0, 2.0)
    np.testing.assert_allclose(before[:, 1], 1 / (1 + np.exp(-logits)))
    k = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    soft = train_head.uncalibrated(k / 1.5, 1.5)
    np.testing.assert_allclose(soft, np.exp(k) / np.exp(k).sum(axis=1, keepdims=True))
    assert train_head.uncalibrated(logits, 1.0) is None  # no temperature: one curve


def test_the_mistakes_picture_states_the_threshold_and_sets_each_p_against_it() -> None:
    import matplotlib.pyplot as plt

    probs = evaluation.probabilities(np.array([[0.18], [0.32], [0.6], [0.3204]]))
    fig = evaluation.mistakes_grid(np.zeros((4, 16, 16, 3), np.uint8),
                                   [f"{i}.jpeg" for i in range(4)], ["NORMAL", "PNEUMONIA"],
                                   np.array([1, 0, 0, 1]), probs, threshold=0.32)
    assert fig.get_suptitle().endswith("\ndecided at p(PNEUMONIA) ≥ 0.32")
    captions = [ax.get_title() for ax in fig.axes]
    assert captions == [
        "0.jpeg\nWRONG: PNEUMONIA called NORMAL\np(PNEUMONIA) 0.180, below 0.32",
        "1.jpeg\nWRONG: NORMAL called PNEUMONIA\np(PNEUMONIA) 0.320, at 0.32",
        "2.jpeg\nWRONG: NORMAL called PNEUMONIA\np(PNEUMONIA) 0.600, above 0.32",
        # 0.320 would read as the threshold itself: a decimal more
        "3.jpeg\nright: PNEUMONIA called PNEUMONIA\np(PNEUMONIA) 0.3204, above 0.32"]
    plt.close(fig)


XRAY_NAMES = ["PNEUMONIA/person1022_bacteria_2953.jpeg", "NORMAL/NORMAL2-IM-0131-0001.jpeg",
              "PNEUMONIA/person1_virus_6.jpeg", "NORMAL/IM-0115-0001.jpeg"]


@pytest.mark.parametrize("classes", [["NORMAL", "PNEUMONIA"],
                                     ["a", "golden_retriever_of_the_long_name", "c"]])
def test_long_file_names_never_run_into_the_next_caption(classes: list[str]) -> None:
    """Captions measured as drawn (matplotlib's text extents): with 60-character names and
    the X-rays' own, no caption's box overlaps another's or leaves its column."""
    import matplotlib.pyplot as plt

    n = 16
    long = "NORMAL/WWWWMMMM_a_very_long_export_name_of_scan_0001_xx.jpeg"
    assert len(long) == 60
    names = [long.replace("0001", f"{i:04d}") if i % 2 else XRAY_NAMES[i // 2 % 4]
             for i in range(n)]
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(len(classes)), n)
    fig = evaluation.mistakes_grid(np.zeros((n, 112, 112, 3), np.uint8), names, classes,
                                   np.arange(n) % len(classes), probs, threshold=0.3)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    column = fig.bbox.width / 4
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes]
    for i, box in enumerate(boxes):
        assert i % 4 * column <= box.x0 and box.x1 <= (i % 4 + 1) * column, (i, box)
        for j, other in enumerate(boxes[:i]):
            assert not box.overlaps(other), (i, j, box, other)
    assert max(ax.title.get_fontsize() for ax in fig.axes) == 8
    plt.close(fig)
