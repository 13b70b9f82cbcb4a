"""The operating point (stages/decision.py): thresholds resolved on validation, the fitted
temperature, the expected calibration error and the scores, against scikit-learn and direct
computations. Their intervals: tests/test_intervals.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from stages import cli, decision, evaluation

# Hand-made validation predictions: p(class 1) of four negatives and four positives.
#   threshold    0.1  0.2  0.35  0.4  0.6  0.8  0.85  0.9
#   sensitivity  1    1    1     1    .75  .75  .5    .25
#   specificity  0    .25  .5    .75  .75  1    1     1
#   Youden's J   0    .25  .5    .75  .5   .75  .5    .25
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
P1 = np.array([0.1, 0.2, 0.35, 0.6, 0.4, 0.8, 0.85, 0.9])


@pytest.mark.parametrize(("spec", "expected"), [
    (0.3, 0.3), ("0.7", 0.7),
    ("youden", 0.8),  # J ties at 0.4 and 0.8: the largest
    ("sensitivity:0.9", 0.4), ("sensitivity:1", 0.4), ("sensitivity:0.75", 0.8),
    ("sensitivity:0.5", 0.8),  # 0.8 and 0.85 both reach it with specificity 1: the smaller
    ("specificity:0.75", 0.4), ("specificity:0.8", 0.8), ("specificity:1.0", 0.8),
    ("specificity:0.5", 0.4),  # 0.35 and 0.4 both reach it with sensitivity 1: the larger
])
def test_each_threshold_form_resolves_as_defined(spec: str | float, expected: float) -> None:
    assert decision.chosen_score(spec, LABELS, P1) == expected
    t = decision.resolve_threshold(spec, LABELS, P1)
    same = decision.predicted(evaluation.probabilities(P1[:, None]), expected)
    assert (decision.predicted(evaluation.probabilities(P1[:, None]), t) == same).all()
    if isinstance(spec, str) and not spec[0].isdigit():
        assert t not in P1  # a rule's threshold lies on no score


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


@pytest.mark.parametrize("spec", ["youden", "sensitivity:0.9", "specificity:0.8"])
def test_a_rule_puts_the_threshold_midway_in_logits_between_two_scores(spec: str) -> None:
    """Issue 32, point 3: a threshold on a validation score (0.94 with a perfectly separated
    split) calls a new positive scored a hair below it negative; midway in logit units between
    the chosen score and the next below, it is as far from either as the head's own scale
    allows."""
    t = decision.resolve_threshold(spec, LABELS, P1)
    at = decision.chosen_score(spec, LABELS, P1)
    below = max(p for p in P1 if p < at)
    assert logit(t) == pytest.approx((logit(below) + logit(at)) / 2, abs=1e-12)
    assert decision.decision_range(P1, t) == (below, at)


def test_the_decision_range_holds_every_threshold_that_decides_alike() -> None:
    p1 = np.array([0.02, 0.3, 0.3, 0.9])
    assert decision.decision_range(p1, 0.5) == (0.3, 0.9)
    assert decision.decision_range(p1, 0.3) == (0.02, 0.3)
    assert decision.decision_range(p1, 0.95) == (0.9, 1.0)
    assert decision.decision_range(p1, 0.01) == (0.0, 0.02)
    # every row positive: the rule's threshold sits EDGE_LOGITS below the lowest score
    t = decision.resolve_threshold("sensitivity:1", np.array([1, 1, 0, 1]), p1)
    assert logit(t) == pytest.approx(logit(0.02) - decision.EDGE_LOGITS)


def test_a_perfectly_separated_split_gets_a_threshold_between_the_classes() -> None:
    """The issue's case: seed 1's validation split was perfectly separated and
    `sensitivity:0.95` chose the lowest positive's score, 0.94. Midway to the highest
    negative's score the threshold keeps clear of both classes."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    p1 = np.array([0.01, 0.05, 0.2, 0.94, 0.97, 0.99])
    t = decision.resolve_threshold("sensitivity:0.95", labels, p1)
    assert 0.2 < t < 0.94 and logit(t) == pytest.approx((logit(0.2) + logit(0.94)) / 2)


def test_a_target_no_threshold_reaches_names_the_best_reachable() -> None:
    labels, p1 = np.array([0, 0, 1, 1]), np.array([0.1, 0.95, 0.5, 0.9])  # a negative on top
    with pytest.raises(decision.ThresholdError) as e:
        decision.resolve_threshold("specificity:0.99", labels, p1)
    message = str(e.value)
    assert "\n" not in message
    assert "specificity 0.99 cannot be reached" in message
    assert "is 0.5000 (at threshold 0.5)" in message
    assert isinstance(e.value, cli.UserError) and isinstance(e.value, ValueError)


@pytest.mark.parametrize("spec", ["youden", "sensitivity:0.9", "specificity:0.9"])
@pytest.mark.parametrize("missing", [0, 1])
def test_a_split_without_both_classes_cannot_resolve_a_target(spec: str, missing: int) -> None:
    labels = np.full(4, 1 - missing)
    with pytest.raises(decision.ThresholdError, match=f"no images of class {missing}"):
        decision.resolve_threshold(spec, labels, np.array([0.2, 0.4, 0.6, 0.8]))
    assert decision.resolve_threshold(0.4, labels, np.array([0.2, 0.4, 0.6, 0.8])) == 0.4


@pytest.mark.parametrize("spec", [0.0, 1.0, "1.5", "youden:0.3", "recall:0.9",
                                  "sensitivity:0", "specificity:1.2", "sensitivity", True])
def test_unknown_forms_are_one_line_errors(spec: object) -> None:
    with pytest.raises(decision.ThresholdError) as e:
        decision.resolve_threshold(spec, LABELS, P1)  # type: ignore[arg-type]
    assert "\n" not in str(e.value)


def test_a_chosen_score_of_exactly_0_or_1_stays_inside_the_interval() -> None:
    labels, p1 = np.array([0, 1, 1]), np.array([0.0, 1.0, 1.0])
    t = decision.resolve_threshold("youden", labels, p1)
    assert 0.0 < t < 1.0 and list(decision.predicted(evaluation.probabilities(p1[:, None]), t)
                                  ) == [0, 1, 1]
    t = decision.resolve_threshold("sensitivity:1", np.array([1, 0]), np.array([0.0, 0.0]))
    assert 0.0 < t < 1e-300


def validation(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores rounded to two decimals, so that many rows tie."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return labels, np.round(1 / (1 + np.exp(-(rng.normal(0, 1.5, n) + 2 * labels - 1))), 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_targets_agree_with_scikit_learn(seed: int) -> None:
    from sklearn import metrics as skm

    labels, p1 = validation(seed)
    fpr, tpr, thresholds = skm.roc_curve(labels, p1, drop_intermediate=False)
    finite = np.isfinite(thresholds)  # the first, inf, predicts nothing positive
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    j = tpr - fpr  # descending thresholds: argmax is the largest of the best
    assert decision.chosen_score("youden", labels, p1) == thresholds[np.argmax(j)]
    for form, target in (("sensitivity", 0.9), ("sensitivity", 0.95), ("specificity", 0.9),
                         ("specificity", 0.8)):
        t = decision.resolve_threshold(f"{form}:{target}", labels, p1)
        decided = (p1 >= t).astype(int)
        sensitivity = skm.recall_score(labels, decided, pos_label=1)
        specificity = skm.recall_score(labels, decided, pos_label=0)
        got = evaluation.scores(labels, evaluation.probabilities(p1[:, None]), "val_",
                                threshold=t)
        assert (got["val_sensitivity"], got["val_specificity"]) == pytest.approx(
            (sensitivity, specificity))
        # reaches the target, and no threshold reaching it does better on the other
        if form == "sensitivity":
            assert sensitivity >= target
            assert specificity == pytest.approx((1 - fpr)[tpr >= target].max())
        else:
            assert specificity >= target
            assert sensitivity == pytest.approx(tpr[1 - fpr >= target].max())


def test_predicted_two_classes_at_a_threshold_k_classes_by_argmax() -> None:
    two = evaluation.probabilities(np.array([[0.2], [0.5], [0.7]]))
    assert decision.predicted(two).tolist() == [0, 1, 1]
    assert decision.predicted(two, 0.75).tolist() == [0, 0, 0]
    assert decision.predicted(two).dtype == np.int64
    three = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    assert decision.predicted(three, 0.9).tolist() == [1, 0]


def sigmoid_data(seed: int, n: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Pre-activations z and labels drawn from sigmoid(z): calibrated at scale 1; the logits
    returned are z × scale (overconfident above 1, underconfident below)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    return z * scale, (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)


def sigmoid_loss(z: np.ndarray, labels: np.ndarray, t: float) -> float:
    p1 = 1 / (1 + np.exp(-z / t))
    return evaluation.log_loss(labels, evaluation.probabilities(p1[:, None]))


def test_the_temperature_is_about_1_on_calibrated_data() -> None:
    z, labels = sigmoid_data(0, 50_000)
    assert decision.fit_temperature(z, labels) == pytest.approx(1.0, abs=0.05)
    assert decision.fit_temperature(z[:, None], labels) == pytest.approx(1.0, abs=0.05)


def test_overconfident_logits_get_t_above_1_underconfident_below() -> None:
    z, labels = sigmoid_data(1, 20_000, scale=3.0)
    assert decision.fit_temperature(z, labels) == pytest.approx(3.0, rel=0.1)
    z, labels = sigmoid_data(1, 20_000, scale=1 / 3)
    assert decision.fit_temperature(z, labels) == pytest.approx(1 / 3, rel=0.1)


def test_softmax_temperature() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (20_000, 3))
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (rng.random(len(p))[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    assert decision.fit_temperature(2 * logits, labels) == pytest.approx(2.0, rel=0.1)
    assert decision.fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.05)
    # large logits neither overflow nor make the loss infinite
    assert decision.fit_temperature(10 * logits, labels) == pytest.approx(10.0, rel=0.1)


@pytest.mark.parametrize("seed", range(6))
def test_the_fitted_temperature_never_raises_the_validation_loss(seed: int) -> None:
    z, labels = sigmoid_data(seed, 30, scale=[0.5, 1, 2][seed % 3])
    t = decision.fit_temperature(z, labels)
    assert sigmoid_loss(z, labels, t) <= sigmoid_loss(z, labels, 1.0)
    assert decision.T_RANGE[0] <= t <= decision.T_RANGE[1]


def direct_ece(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Guo et al.'s loop over the bins."""
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            gap = np.mean(predicted[inside] == labels[inside]) - np.mean(confidence[inside])
            total += inside.mean() * abs(gap)
    return total


@pytest.mark.parametrize("k", [2, 3])
def test_ece_is_the_direct_computation(k: int) -> None:
    rng = np.random.default_rng(k)
    logits = rng.normal(0, 2, (500, k))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs[:5] = np.eye(k)[0]  # confidence exactly 1.0: the last bin
    probs[5:10] = 0.4 if k == 2 else np.array([0.4, 0.3, 0.3])  # exactly on an edge (6/15)
    labels = rng.integers(0, k, 500)
    assert decision.ece(labels, probs) == pytest.approx(direct_ece(labels, probs), abs=1e-12)
    assert decision.ece(labels, probs, bins=10) == pytest.approx(
        direct_ece(labels, probs, 10), abs=1e-12)
    rows = decision.reliability(labels, probs)
    assert rows[-1]["bin"] == "0.93–1.00" and rows[-1]["count"] >= 5
    assert sum(r["count"] for r in rows) == 500


def test_ece_of_a_perfectly_calibrated_toy_is_0() -> None:
    # p(class 1) 0.8 for ten rows, eight of them class 1; 0.3 for ten, three of them class 1
    p1 = np.r_[np.full(10, 0.8), np.full(10, 0.3)]
    labels = np.r_[np.ones(8), np.zeros(2), np.ones(3), np.zeros(7)].astype(int)
    probs = evaluation.probabilities(p1[:, None])
    assert decision.ece(labels, probs) == pytest.approx(0.0, abs=1e-12)
    rows = decision.reliability(labels, probs)
    assert [v for r in rows for v in (r["confidence"], r["accuracy"], r["count"])] == (
        pytest.approx([0.7, 0.7, 10, 0.8, 0.8, 10]))


def predictions(n: int, seed: int = 0, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1.5, (n, k)) + 1.5 * np.eye(k)[labels]
    return labels, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


@pytest.mark.parametrize(("k", "threshold"), [(2, 0.5), (2, 0.3), (3, 0.5), (5, 0.5)])
@pytest.mark.parametrize("seed", range(3))
def test_the_weighted_scores_of_unit_weights_are_evaluations_score(k: int, threshold: float,
                                                                   seed: int) -> None:
    """Issue 31, point 19: one implementation of the scores. `weighted_scores` with unit
    weights (the sample itself) are `evaluation`'s, to the last bit, ties included (they were
    two: the trapezoid and the Mann–Whitney AUC differed by 1e-16)."""
    labels, probs = predictions(301, seed=seed, k=k)
    probs = np.round(probs, 2)  # ties in the scores
    got = decision.weighted_scores(np.ones((1, 301)), labels, probs,
                                   decision.predicted(probs, threshold))
    expected = evaluation.scores(labels, probs, "", threshold=threshold)
    expected["accuracy"] = evaluation.accuracy(labels, probs, threshold=threshold)
    assert {name: float(v[0]) for name, v in got.items()} == expected


@pytest.mark.parametrize("k", [2, 3])
def test_weights_score_as_the_rows_repeated(k: int) -> None:
    """A row of weights (how often each row counts) scores as those rows repeated."""
    labels, probs = predictions(120, seed=4, k=k)
    probs = np.round(probs, 1)  # many ties
    counts = np.random.default_rng(0).integers(0, 3, (3, 120))
    decided = decision.predicted(probs, 0.4)
    got = decision.weighted_scores(counts, labels, probs, decided)
    for r, w in enumerate(counts):
        rows = np.repeat(np.arange(120), w)
        expected = evaluation.scores(labels[rows], probs[rows], "", threshold=0.4)
        expected["accuracy"] = evaluation.accuracy(labels[rows], probs[rows], threshold=0.4)
        assert {name: float(v[r]) for name, v in got.items()} == pytest.approx(expected,
                                                                                abs=1e-12)


def test_no_temperature_fits_a_split_without_mistakes() -> None:
    """Separated classes: the log loss only falls as T shrinks, so the search ends on T_RANGE's
    bound; that is no fit (it doubled the test log loss on real photos)."""
    z = np.r_[np.linspace(1, 8, 50), -np.linspace(1, 8, 50)]
    labels = np.r_[np.ones(50), np.zeros(50)].astype(int)
    assert decision.fit_temperature(z, labels) is None
    labels[0] = 0  # one mistake: a temperature exists again
    assert decision.fit_temperature(z, labels) is not None


def test_why_no_temperature_fits_tells_its_two_causes_apart() -> None:
    """Issue 31, point 13: no mistakes (the log loss falls without end as T shrinks: a larger
    val_split helps) is not the case of a head that makes mistakes but whose logits are nearly
    constant (the fit runs to T_RANGE's other end: a larger val_split does not help)."""
    z = np.r_[np.linspace(1, 8, 50), -np.linspace(1, 8, 50)]
    labels = np.r_[np.ones(50), np.zeros(50)].astype(int)
    assert decision.fit_temperature(z, labels) is None
    why = decision.why_no_temperature(z, labels)
    assert "makes no mistake" in why and "A larger val_split" in why

    # 18 validation images, 9 of them wrong: logits within 0.001 of each other
    z = 0.2 + np.linspace(0, 1e-3, 18)
    labels = np.arange(18) % 2
    assert decision.logit_mistakes(z, labels) == 9
    assert decision.fit_temperature(z, labels) is None
    why = decision.why_no_temperature(z, labels)
    assert "9 of 18 mistakes" in why and "T = 20" in why and "barely tell the classes apart" in why
    assert "no mistake" not in why and "a larger val_split will not help" in why
    # softmax logits alike
    three = np.stack([z, z + 1e-4, z - 1e-4], axis=1)
    assert "mistakes there" in decision.why_no_temperature(three, np.arange(18) % 3)


def test_the_log_loss_of_logits_is_exact_where_a_probability_rounds_to_certainty() -> None:
    """`val_loss` is the saved head's cross-entropy from its logits, as Keras computes its own:
    a confident mistake (z = 30 on a class-0 image) costs its 30, where the float32
    probability, exactly 1.0, can only be clamped (34.5)."""
    z, labels = np.array([30.0, -2.0, 1.0]), np.array([0, 0, 1])
    expected = np.mean([30 + np.log1p(np.exp(-30)), np.log1p(np.exp(-2)), np.log1p(np.exp(-1))])
    assert decision.logit_log_loss(z, labels) == pytest.approx(expected, rel=1e-12)
    assert decision.logit_log_loss(z[:, None], labels) == decision.logit_log_loss(z, labels)
    p1 = (1 / (1 + np.exp(-z))).astype(np.float32)
    assert evaluation.log_loss(labels, evaluation.probabilities(p1[:, None])) > expected + 1
    softmax = np.stack([np.zeros(3), z], axis=1)  # the same head, as two softmax logits
    assert decision.logit_log_loss(softmax, labels) == pytest.approx(expected, rel=1e-12)


def test_probabilities_of_logits_are_sigmoid_and_softmax_without_overflow() -> None:
    from scipy.special import expit, softmax

    z = np.array([-1000.0, -20.0, -0.3, 0.0, 2.5, 40.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        two = decision.probabilities_of_logits(z)
        assert decision.probabilities_of_logits(z[:, None]).tolist() == two.tolist()
        many = decision.probabilities_of_logits(np.stack([z, -z, 0 * z], axis=1))
    np.testing.assert_allclose(two[:, 1], expit(z), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(two[:, 0], expit(-z), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(two.sum(axis=1), 1.0)
    np.testing.assert_allclose(many, softmax(np.stack([z, -z, 0 * z], axis=1), axis=1),
                               rtol=1e-12, atol=1e-300)
