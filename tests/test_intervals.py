"""How sure the scores are (stages/intervals.py): Wilson against SciPy, DeLong and Obuchowski
against brute-force textbook formulas, the design effect and MOVER by hand, and no interval of
zero width on a finite set (issue 32, point 2)."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from stages import evaluation, intervals
from stages.intervals import auc_interval, design_effect, proportion_interval, wilson

Z = NormalDist().inv_cdf(0.975)
GRID = [(k, n) for n in (1, 3, 9, 12, 61, 500)
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n} & set(range(n + 1)))]


@pytest.mark.parametrize(("k", "n"), GRID)
def test_wilson_is_scipys(k: int, n: int) -> None:
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
    ci = binomtest(k, n).proportion_ci(confidence_level=0.9, method="wilson")
    assert wilson(k, n, level=0.9) == pytest.approx((ci.low, ci.high), abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 9, 12, 61, 500, 10_000])
def test_wilson_is_never_zero_width(n: int) -> None:
    for k in range(n + 1):
        low, high = wilson(k, n)
        assert 0.0 <= low <= k / n <= high <= 1.0
        assert high - low > 0.0
    assert wilson(n, n) == pytest.approx((n / (n + Z * Z), 1.0))
    assert wilson(0, n) == pytest.approx((0.0, Z * Z / (n + Z * Z)))


@pytest.mark.parametrize(("k", "n", "deff"), [(6, 12, 3.0), (0, 12, 2.0), (9, 9, 3.0),
                                              (40, 61, 1.7), (61, 61, 1.2)])
def test_a_design_effect_is_wilson_of_fewer_trials_and_wider(k: int, n: int,
                                                             deff: float) -> None:
    low, high = wilson(k, n, deff=deff)
    assert (low, high) == pytest.approx(wilson(k / deff, n / deff), abs=1e-12)
    if float(k / deff).is_integer() and float(n / deff).is_integer():
        ci = binomtest(round(k / deff), round(n / deff)).proportion_ci(method="wilson")
        assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    plain = wilson(k, n)
    assert high - low > plain[1] - plain[0]
    assert low <= plain[0] and high >= plain[1]
    assert wilson(k, n, deff=0.5) == plain  # below 1: never narrower


def test_the_design_effect_of_rows_each_its_own_group_is_n_over_n_minus_1() -> None:
    """Rao & Scott's I/(I − 1) factor is kept: singletons give N/(N − 1), not exactly 1."""
    y = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1])
    assert design_effect(y, np.arange(10)) == pytest.approx(10 / 9)


def test_the_design_effect_of_patients_wholly_right_or_wrong_by_hand() -> None:
    """Three patients of three images: a, c all right, b all wrong. p = 2/3, N = 9, I = 3;
    y_i − p·m_i = 1, −2, 1, so the robust variance is 3/2 · 6 / 81 = 1/9, the binomial one
    (2/3)(1/3)/9 = 2/81: a design effect of 4.5 (Kish's m = 3, times I/(I − 1))."""
    y = np.array([1, 1, 1, 0, 0, 0, 1, 1, 1])
    groups = np.array(["a", "a", "a", "b", "b", "b", "c", "c", "c"])
    assert design_effect(y, groups) == pytest.approx(4.5)
    assert design_effect(y, groups[::-1]) == pytest.approx(4.5)  # names do not matter
    low, high = proportion_interval(y, groups)  # type: ignore[misc]
    assert (low, high) == pytest.approx(wilson(6 / 4.5, 9 / 4.5))
    assert high - low > np.subtract(*wilson(6, 9)[::-1])


def test_the_design_effect_is_1_where_it_cannot_be_measured_or_would_narrow() -> None:
    groups = np.array([1, 1, 2, 2, 3, 3])
    assert design_effect(np.ones(6), groups) == 1.0  # p = 1: both variances zero
    assert design_effect(np.zeros(6), groups) == 1.0  # p = 0
    assert design_effect(np.array([1, 0, 1, 0, 0, 1]), np.zeros(6)) == 1.0  # one group
    # every patient one right, one wrong: no spread between groups, robust variance 0 < binomial
    assert design_effect(np.array([1, 0, 0, 1, 1, 0]), groups) == 1.0


def test_all_right_groups_read_as_their_number() -> None:
    """9 of 9 images of 3 patients: no variance to measure the clustering from, so the
    interval is that of the 3 patients, not of 9 independent images (issue 32's
    `val_sensitivity` 1.0 [1.0, 1.0] from 9 images of 3 patients)."""
    groups = np.repeat(["p1", "p2", "p3"], 3)
    assert proportion_interval(np.ones(9), groups) == pytest.approx(wilson(3, 3))
    assert proportion_interval(np.zeros(9), groups) == pytest.approx(wilson(0, 3))
    assert proportion_interval(np.ones(9)) == pytest.approx(wilson(9, 9))
    assert proportion_interval(np.ones(0)) is None


def brute_placements(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The textbook structural components: ψ(x, y) = 1, ½, 0 for x >, =, < y over every
    (positive, negative) pair, averaged over the other class."""
    pos, neg = score[truth], score[~truth]
    psi = np.array([[1.0 if x > y else 0.5 if x == y else 0.0 for y in neg] for x in pos])
    return psi.mean(axis=1), psi.mean(axis=0)


def brute_delong(truth: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """(AUC, variance) as DeLong et al. 1988 write them."""
    v10, v01 = brute_placements(truth, score)
    auc = float(v10.mean())
    s10 = sum((v - auc) ** 2 for v in v10) / (len(v10) - 1)
    s01 = sum((v - auc) ** 2 for v in v01) / (len(v01) - 1)
    return auc, s10 / len(v10) + s01 / len(v01)


def brute_obuchowski(truth: np.ndarray, score: np.ndarray,
                     groups: np.ndarray) -> tuple[float, float]:
    """(AUC, variance) as Obuchowski 1997 writes them, one group at a time."""
    v10, v01 = brute_placements(truth, score)
    auc = float(v10.mean())
    pos_groups, neg_groups = groups[truth], groups[~truth]
    big_m, big_n = len(v10), len(v01)
    i10, i01, i_all = len(set(pos_groups)), len(set(neg_groups)), len(set(groups))
    s10 = s01 = s11 = 0.0
    for g in set(groups):
        x = sum(v10[pos_groups == g]) - np.sum(pos_groups == g) * auc
        y = sum(v01[neg_groups == g]) - np.sum(neg_groups == g) * auc
        s10, s01, s11 = s10 + x * x, s01 + y * y, s11 + x * y
    s10 *= i10 / ((i10 - 1) * big_m)
    s01 *= i01 / ((i01 - 1) * big_n)
    s11 *= i_all / (i_all - 1)
    return auc, s10 / big_m + s01 / big_n + 2 * s11 / (big_m * big_n)


def scored(n: int, seed: int, decimals: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Random labels and scores that tell them apart somewhat, rounded: many ties."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.4
    truth[:2] = [True, False]
    return truth, np.round(rng.normal(0, 1, n) + truth, decimals)


def normal(auc: float, var: float) -> tuple[float, float, float]:
    half = Z * math.sqrt(var)
    return auc, max(0.0, auc - half), min(1.0, auc + half)


@pytest.mark.parametrize(("n", "seed", "decimals"), [(7, 0, 0), (30, 1, 1), (150, 2, 1),
                                                     (400, 3, 2)])
def test_delong_is_the_textbooks(n: int, seed: int, decimals: int) -> None:
    truth, score = scored(n, seed, decimals)
    auc, var = brute_delong(truth, score)
    assert auc_interval(truth, score) == pytest.approx(normal(auc, var), abs=1e-12)
    assert auc_interval(truth, score)[0] == pytest.approx(roc_auc_score(truth, score),
                                                          abs=1e-12)
    # as evaluation's point estimate, the one metrics.json reports
    probs = evaluation.probabilities(score[:, None] / 10 + 0.5)
    assert auc_interval(truth, probs[:, 1])[0] == pytest.approx(
        evaluation.scores(truth.astype(int), probs, "")["auc"], abs=1e-12)


@pytest.mark.parametrize(("n", "seed", "n_groups"), [(30, 4, 6), (150, 5, 40), (300, 6, 25)])
def test_obuchowski_is_the_textbooks(n: int, seed: int, n_groups: int) -> None:
    truth, score = scored(n, seed)
    groups = np.random.default_rng(seed).integers(0, n_groups, n)
    auc, var = brute_obuchowski(truth, score, groups)
    assert auc_interval(truth, score, groups) == pytest.approx(normal(auc, var), abs=1e-12)
    assert auc_interval(truth, score, groups.astype(str)) == pytest.approx(normal(auc, var),
                                                                           abs=1e-12)


def test_obuchowski_with_every_row_its_own_group_is_delong() -> None:
    """With Obuchowski's I10 and I01 (the groups holding positives, negatives), singletons
    make S10 and S01 DeLong's unbiased ones and S11 zero: the same interval."""
    truth, score = scored(200, 7)
    assert auc_interval(truth, score, np.arange(200)) == pytest.approx(
        auc_interval(truth, score), abs=1e-14)


def test_groups_that_agree_widen_the_auc() -> None:
    """Each patient's images scored alike: the clustered interval is wider."""
    rng = np.random.default_rng(8)
    patient_truth = rng.random(40) < 0.5
    patient_score = rng.normal(0, 1, 40) + patient_truth
    groups = np.repeat(np.arange(40), 4)
    truth, score = patient_truth[groups], patient_score[groups] + rng.normal(0, 0.1, 160)
    _, low, high = auc_interval(truth, score)
    _, g_low, g_high = auc_interval(truth, score, groups)
    assert g_high - g_low > 1.5 * (high - low)


@pytest.mark.parametrize(("positives", "negatives"), [(3, 10), (10, 3), (5, 5)])
def test_a_perfectly_separated_auc_falls_back_on_the_smaller_classes_wilson(
        positives: int, negatives: int) -> None:
    """DeLong's variance is zero at AUC 1 and 0: the interval would be zero-width. The
    Wilson interval of the smaller class stands instead: AUC 1.0 on 3 positives reads
    [0.44, 1], as 3 of 3 right."""
    truth = np.r_[np.ones(positives, bool), np.zeros(negatives, bool)]
    score = np.r_[np.linspace(0.6, 0.9, positives), np.linspace(0.1, 0.4, negatives)]
    small = min(positives, negatives)
    assert auc_interval(truth, score) == pytest.approx((1.0, *wilson(small, small)))
    assert auc_interval(truth, -score) == pytest.approx((0.0, *wilson(0, small)))
    if small == 3:
        assert auc_interval(truth, score)[1] == pytest.approx(0.4385, abs=1e-4)
    # with groups: the smaller class's groups (the 3 of it in one group of 2 and one of 1)
    groups = np.r_[np.arange(positives) // 2, 100 + np.arange(negatives) // 2]
    small_groups = min(-(-positives // 2), -(-negatives // 2))
    assert auc_interval(truth, score, groups) == pytest.approx(
        (1.0, *wilson(small_groups, small_groups)))


def test_an_auc_without_a_variance_still_has_an_interval() -> None:
    """Every score tied (AUC ½, variance zero) and a single positive (S10 undefined): the
    Wilson fallback, never zero-width; a class absent: NaN."""
    truth = np.array([1, 1, 0, 0, 0], bool)
    auc, low, high = auc_interval(truth, np.full(5, 0.3))
    assert (auc, low, high) == pytest.approx((0.5, *wilson(1, 2)))
    auc, low, high = auc_interval(np.array([1, 0, 0, 0], bool), np.array([0.5, 0.6, 0.2, 0.1]))
    assert (auc, low, high) == pytest.approx((2 / 3, *wilson(2 / 3, 1)))
    assert high > low
    assert all(math.isnan(v) for v in auc_interval(np.ones(4, bool), np.arange(4.0)))


def test_mover_by_hand() -> None:
    """Recalls 3/4 and 5/6: the mean ± the root of the summed squared distances to their
    Wilson ends, halved."""
    r = [0.75, 5 / 6]
    b = [wilson(3, 4), wilson(5, 6)]
    mean = (0.75 + 5 / 6) / 2
    low = mean - math.sqrt((r[0] - b[0][0]) ** 2 + (r[1] - b[1][0]) ** 2) / 2
    high = mean + math.sqrt((b[0][1] - r[0]) ** 2 + (b[1][1] - r[1]) ** 2) / 2
    assert intervals.mover_mean(r, b) == pytest.approx((mean, low, high))
    # as intervals() gives it for balanced accuracy: 3 of 4 negatives, 5 of 6 positives right
    labels = np.r_[np.zeros(4, int), np.ones(6, int)]
    p1 = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9, 0.6, 0.7, 0.55, 0.2])
    got = intervals.intervals(labels, evaluation.probabilities(p1[:, None]), 0.5, "test_")
    assert (got["test_balanced_accuracy_low"], got["test_balanced_accuracy_high"]) == (
        pytest.approx((low, high)))
    assert (got["test_specificity_low"], got["test_specificity_high"]) == (
        pytest.approx(wilson(3, 4)))
    assert (got["test_sensitivity_low"], got["test_sensitivity_high"]) == (
        pytest.approx(wilson(5, 6)))
    assert (got["test_accuracy_low"], got["test_accuracy_high"]) == pytest.approx(wilson(8, 10))


def probabilities(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (len(labels), k)) + 1.5 * np.eye(k)[labels]
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_the_keys_are_the_bootstraps_in_its_order() -> None:
    labels = np.random.default_rng(0).integers(0, 2, 50)
    got = intervals.intervals(labels, probabilities(labels, 2, 0), 0.5, "val_")
    names = ["auc", "balanced_accuracy", "accuracy", "sensitivity", "specificity"]
    assert list(got) == [f"val_{n}_{end}" for n in names for end in ("low", "high")]
    labels = np.random.default_rng(0).integers(0, 3, 50)
    got = intervals.intervals(labels, probabilities(labels, 3, 0), 0.5, "test_")
    assert list(got) == [f"test_{n}_{end}" for n in names[:3] for end in ("low", "high")]
    assert set(intervals.METHODS) == set(names)


def test_three_of_three_positives_right_reads_44_to_100() -> None:
    """Issue 32: a percentile bootstrap gave sensitivity [1.0, 1.0] here."""
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.6, 0.2, 0.3, 0.9, 0.8, 0.7])
    got = intervals.intervals(labels, evaluation.probabilities(p1[:, None]), 0.5, "")
    assert got["sensitivity_low"] == pytest.approx(0.4385, abs=1e-4)
    assert got["sensitivity_high"] == 1.0


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("case", ["all right", "all wrong", "mixed"])
@pytest.mark.parametrize("grouped", [False, True])
def test_no_interval_is_zero_width_on_a_finite_set(k: int, case: str, grouped: bool) -> None:
    """And each holds its point estimate."""
    labels = np.arange(12) % k
    probs = np.eye(k)[labels] * 0.8 + 0.2 / k  # every row right, perfectly separated
    if case == "all wrong":
        probs = np.eye(k)[(labels + 1) % k] * 0.8 + 0.2 / k
    elif case == "mixed":
        probs = probabilities(labels, k, 3)
    groups = np.arange(12) // 2 if grouped else None
    got = intervals.intervals(labels, probs, 0.5, "", groups)
    point = evaluation.scores(labels, probs, "", threshold=0.5)
    point["accuracy"] = evaluation.accuracy(labels, probs, threshold=0.5)
    assert len(got) == 2 * len(point)
    for name, value in point.items():
        low, high = got[f"{name}_low"], got[f"{name}_high"]
        assert low is not None and high is not None, name
        assert 0.0 <= low < high <= 1.0, (name, low, high)
        assert low <= value <= high, (name, low, value, high)  # type: ignore[operator]


def test_a_multiclass_auc_is_mover_over_one_vs_rest() -> None:
    labels = np.random.default_rng(1).integers(0, 3, 90)
    probs = probabilities(labels, 3, 1)
    per_class = [auc_interval(labels == c, probs[:, c]) for c in range(3)]
    mean, low, high = intervals.mover_mean([a for a, _, _ in per_class],
                                           [(lo, hi) for _, lo, hi in per_class])
    got = intervals.intervals(labels, probs, 0.5, "")
    assert (got["auc_low"], got["auc_high"]) == pytest.approx((low, high))
    assert mean == pytest.approx(evaluation.scores(labels, probs, "")["auc"])


def test_the_intervals_narrow_as_the_sample_grows() -> None:
    widths = []
    for n in (200, 5000):
        labels = np.random.default_rng(n).integers(0, 2, n)
        got = intervals.intervals(labels, probabilities(labels, 2, n), 0.4, "")
        widths.append([got[f"{name}_high"] - got[f"{name}_low"]  # type: ignore[operator]
                       for name in intervals.METHODS])
    assert all(big < small / 2 for small, big in zip(*widths, strict=True))


def test_a_figure_undefined_in_the_sample_has_no_interval() -> None:
    labels = np.zeros(50, np.int64)
    got = intervals.intervals(labels, probabilities(labels, 2, 0), 0.5, "val_")
    assert got["val_auc_low"] is None and got["val_auc_high"] is None
    assert got["val_sensitivity_low"] is None and got["val_sensitivity_high"] is None
    assert got["val_specificity_low"] is not None and got["val_accuracy_low"] is not None
    assert got["val_balanced_accuracy_low"] is not None


def test_groups_widen_the_proportions_where_patients_agree() -> None:
    """Two images per patient, decided alike: every proportion's interval widens; every row
    its own group changes them by the N/(N − 1) factor only."""
    rng = np.random.default_rng(2)
    patient_labels = rng.integers(0, 2, 60)
    patient_probs = probabilities(patient_labels, 2, 2)
    groups = np.repeat(np.arange(60), 2)
    labels, probs = patient_labels[groups], patient_probs[groups]
    plain = intervals.intervals(labels, probs, 0.5, "")
    grouped = intervals.intervals(labels, probs, 0.5, "", groups)
    singletons = intervals.intervals(labels, probs, 0.5, "", np.arange(120))
    for name in ("accuracy", "sensitivity", "specificity", "balanced_accuracy", "auc"):
        width = plain[f"{name}_high"] - plain[f"{name}_low"]  # type: ignore[operator]
        assert grouped[f"{name}_high"] - grouped[f"{name}_low"] > 1.2 * width  # type: ignore[operator]
        assert singletons[f"{name}_high"] - singletons[f"{name}_low"] == (  # type: ignore[operator]
            pytest.approx(width, rel=0.02))
