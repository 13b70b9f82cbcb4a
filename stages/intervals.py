"""How sure the scores are: analytic 95 % intervals that do not collapse at 0 and 1 on a small
set (a percentile bootstrap gives [1, 1] for 3 of 3 right: no resample can do better or worse).

- Proportions (accuracy, sensitivity, specificity, each class's recall): Wilson's score interval
  (Wilson 1927), never zero-width on a finite set; with groups (`group_pattern`: several images
  of one patient) widened by Rao & Scott's (1992) design effect.
- AUC: DeLong et al.'s (1988) variance from the placement values, Obuchowski's (1997)
  clustered form with groups; a normal interval, with a Wilson fallback where the variance is
  zero (a perfectly separated set).
- Balanced accuracy and the multi-class (macro) AUC, means of per-class figures: Zou & Donner's
  (2008) MOVER from the per-class intervals.

NumPy and the standard library only, as `decision`: SciPy or scikit-learn would add a second to
every TensorFlow stage's start; the tests compare against them.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from stages import decision

# Each figure's interval as the docs and reports name it.
METHODS = {
    "accuracy": "Wilson score; Rao–Scott design effect for groups",
    "sensitivity": "Wilson score; Rao–Scott design effect for groups",
    "specificity": "Wilson score; Rao–Scott design effect for groups",
    "balanced_accuracy": "MOVER (Zou & Donner) from the per-class recalls' Wilson intervals",
    "auc": ("DeLong (two classes; Obuchowski's clustered form for groups; Wilson of the "
            "smaller class where the classes are perfectly separated); K classes: MOVER over "
            "the one-vs-rest AUCs"),
}

Interval = tuple[float, float]


def _z(level: float) -> float:
    """The two-sided normal quantile of `level` (1.96 for 0.95)."""
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson(k: float, n: float, level: float = 0.95, deff: float = 1.0) -> Interval:
    """Wilson's score interval (no continuity correction) of the proportion k/n. With a design
    effect `deff` >= 1 (`design_effect`), Rao & Scott's (1992) adjustment: the interval of
    (k/deff) of (n/deff), the same proportion from fewer effective trials. Never zero-width
    for n > 0: at k = 0 it is [0, z²/(n + z²)], at k = n [n/(n + z²), 1]."""
    if n <= 0:
        raise ValueError(f"wilson: n must be positive, not {n}")
    n_eff = n / max(deff, 1.0)
    p = k / n
    z2 = _z(level) ** 2
    centre = (p + z2 / (2 * n_eff)) / (1 + z2 / n_eff)
    half = math.sqrt(z2) / (1 + z2 / n_eff) * math.sqrt(p * (1 - p) / n_eff
                                                         + z2 / (4 * n_eff ** 2))
    # the exact ends at k = 0 and k = n (the formula gives them up to rounding)
    low = 0.0 if k <= 0 else max(0.0, centre - half)
    high = 1.0 if k >= n else min(1.0, centre + half)
    return low, high


def _codes(groups: np.ndarray) -> tuple[np.ndarray, int]:
    """Each row's group as 0..I−1, and I."""
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    codes = codes.ravel()
    return codes, (int(codes.max()) + 1 if len(codes) else 0)


def design_effect(successes: np.ndarray, groups: np.ndarray) -> float:
    """Rao & Scott's (1992) design effect of the proportion p of `successes` (0/1, one per row)
    over rows clustered in `groups` (one id per row, a patient say): the cluster-robust (ratio
    estimator) variance of p, I/(I−1) · Σ_i (y_i − p·m_i)² / N² over the I groups (y_i the
    successes and m_i the rows of group i, N rows), divided by the binomial variance
    p(1 − p)/N. The I/(I−1) factor is Rao & Scott's small-sample one and is kept: with every
    row its own group the design effect is N/(N − 1), a hair above 1, not exactly 1.
    Floored at 1: groups never narrow an interval (a design effect below 1, patients' images
    disagreeing more than chance, is on a small set mostly noise, and claiming more certainty
    than independent images give is the one mistake an interval must not make). 1 where p is
    0 or 1 (both variances are zero: nothing to estimate the clustering from) or with one
    group (no spread between groups to measure)."""
    y = np.asarray(successes, np.float64).ravel()
    n_rows = len(y)
    codes, n_groups = _codes(groups)
    if n_rows == 0 or n_groups < 2:
        return 1.0
    p = float(y.mean())
    if p <= 0.0 or p >= 1.0:
        return 1.0
    y_i = np.bincount(codes, y, minlength=n_groups)
    m_i = np.bincount(codes, minlength=n_groups)
    robust = n_groups / (n_groups - 1) * float(np.sum((y_i - p * m_i) ** 2)) / n_rows ** 2
    return max(1.0, robust / (p * (1 - p) / n_rows))


def proportion_interval(successes: np.ndarray, groups: np.ndarray | None = None,
                        level: float = 0.95) -> Interval | None:
    """The interval of the share of `successes` (0/1 per row): Wilson's, with `groups` widened
    by the rows' design effect (`design_effect`). Where every row succeeds or every row fails
    there is no variance to estimate the clustering from; the design effect is then taken as
    N/I, Kish's design effect for groups whose rows always agree (intra-class correlation 1,
    which an all-right set is consistent with): the interval of the I groups themselves, so
    9 of 9 images of 3 patients read as 3 of 3. None without rows."""
    y = np.asarray(successes, np.float64).ravel()
    n = len(y)
    if n == 0:
        return None
    k = float(y.sum())
    if groups is None:
        return wilson(k, n, level)
    if k in (0.0, float(n)):
        return wilson(k, n, level, deff=n / _codes(groups)[1])
    return wilson(k, n, level, deff=design_effect(y, groups))


def _placements(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components: each positive's share of the negatives scored below it,
    and each negative's share of the positives scored above it, ties counting half. Their
    means are both the AUC. O(N log N): each class's scores sorted, the other's searched."""
    pos, neg = score[truth], score[~truth]
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    below = np.searchsorted(neg_sorted, pos, "left")  # negatives strictly below
    below_or_tied = np.searchsorted(neg_sorted, pos, "right")
    v10 = (below + below_or_tied) / 2 / len(neg)
    above = len(pos) - np.searchsorted(pos_sorted, neg, "right")  # positives strictly above
    above_or_tied = len(pos) - np.searchsorted(pos_sorted, neg, "left")
    v01 = (above + above_or_tied) / 2 / len(pos)
    return v10, v01


def _delong_variance(truth: np.ndarray, v10: np.ndarray, v01: np.ndarray, auc: float,
                     groups: np.ndarray | None) -> float:
    """The AUC's variance: DeLong et al. (1988) without groups, S10/M + S01/N with the
    unbiased S10 = Σ (V10_j − A)² / (M − 1) over the M positives (S01 likewise over the N
    negatives); with groups Obuchowski (1997): per group i, V10_i = the sum of its positives'
    placement values and V01_i its negatives', and
        S10 = I10 / ((I10 − 1) M) · Σ_i (V10_i − m_i A)²,
        S01 = I01 / ((I01 − 1) N) · Σ_i (V01_i − n_i A)²,
        S11 = I / (I − 1) · Σ_i (V10_i − m_i A)(V01_i − n_i A),
        var = S10/M + S01/N + 2 S11/(M N),
    m_i, n_i a group's positives and negatives, I10 and I01 the groups holding positives and
    negatives (Obuchowski's counts, not all I groups: with every row its own group, S10 and
    S01 are DeLong's and S11 is 0, so the two forms agree exactly). NaN where undefined (one
    positive, or all positives in one group, say)."""
    n_pos, n_neg = len(v10), len(v01)
    with np.errstate(invalid="ignore", divide="ignore"):
        if groups is None:
            s10 = float(np.sum((v10 - auc) ** 2)) / (n_pos - 1) if n_pos > 1 else math.nan
            s01 = float(np.sum((v01 - auc) ** 2)) / (n_neg - 1) if n_neg > 1 else math.nan
            return s10 / n_pos + s01 / n_neg
        codes, n_groups = _codes(groups)
        pos_codes, neg_codes = codes[truth], codes[~truth]
        x = np.bincount(pos_codes, v10, n_groups) - np.bincount(pos_codes, None, n_groups) * auc
        y = np.bincount(neg_codes, v01, n_groups) - np.bincount(neg_codes, None, n_groups) * auc
        i10, i01 = len(np.unique(pos_codes)), len(np.unique(neg_codes))
        if min(i10, i01) < 2:
            return math.nan
        s10 = i10 / ((i10 - 1) * n_pos) * float(np.sum(x * x))
        s01 = i01 / ((i01 - 1) * n_neg) * float(np.sum(y * y))
        s11 = n_groups / (n_groups - 1) * float(np.sum(x * y))
        return s10 / n_pos + s01 / n_neg + 2 * s11 / (n_pos * n_neg)


def auc_interval(truth: np.ndarray, score: np.ndarray, groups: np.ndarray | None = None,
                 level: float = 0.95) -> tuple[float, float, float]:
    """(AUC, low, high) of `score` for the boolean `truth`: the Mann–Whitney AUC (ties half, as
    scikit-learn's `roc_auc_score`) and its normal interval A ± z·sqrt(var) clipped to [0, 1],
    the variance DeLong's or with `groups` Obuchowski's (`_delong_variance`).
    Where that variance is zero or undefined (a perfectly separated set, AUC 1 or 0; every
    score tied; a single image or group of a class) DeLong's interval would be zero-width or
    none; then the Wilson interval of A·n of n (`wilson`), n the smaller class's images (with
    groups: its groups). A conservative rule: one image of the smaller class ranked below every
    image of the other moves the AUC by 1/n, so AUC 1.0 on 3 positives reads [0.44, 1] as
    3 of 3 right would. NaNs where a class is absent."""
    truth = np.asarray(truth, bool).ravel()
    score = np.asarray(score, np.float64).ravel()
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan, math.nan, math.nan
    v10, v01 = _placements(truth, score)
    auc = float(v10.mean())
    var = _delong_variance(truth, v10, v01, auc, groups)
    if not var > 0:  # zero, or NaN
        if groups is None:
            n_small = min(n_pos, n_neg)
        else:
            codes = _codes(groups)[0]
            n_small = min(len(np.unique(codes[truth])), len(np.unique(codes[~truth])))
        return (auc, *wilson(auc * n_small, n_small, level))
    half = _z(level) * math.sqrt(var)
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def mover_mean(estimates: list[float], bounds: list[Interval]) -> tuple[float, float, float]:
    """(mean, low, high) of the mean of K estimates r_c with intervals [l_c, u_c] by Zou &
    Donner's (2008) MOVER (method of variance estimates recovery): low = mean −
    sqrt(Σ (r_c − l_c)²) / K, high = mean + sqrt(Σ (u_c − r_c)²) / K. It treats the K
    estimates as independent."""
    r = np.asarray(estimates, np.float64)
    lo, hi = np.asarray(bounds, np.float64).reshape(-1, 2).T
    mean, k = float(r.mean()), len(r)
    return (mean, max(0.0, mean - math.sqrt(float(np.sum((r - lo) ** 2))) / k),
            min(1.0, mean + math.sqrt(float(np.sum((hi - r) ** 2))) / k))


def _auc(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray | None,
         level: float) -> Interval | None:
    """The AUC's interval: two classes, class 1's (`auc_interval`); K classes, MOVER over the
    one-vs-rest AUCs of the classes present beside another (the macro mean
    `decision.weighted_scores` reports), treating them as independent: an approximation, as
    they share their rows. None with one class."""
    if probs.shape[1] == 2:
        got = auc_interval(labels == 1, probs[:, 1], groups, level)
        return None if math.isnan(got[0]) else (got[1], got[2])
    per_class = [auc_interval(labels == c, probs[:, c], groups, level)
                 for c in range(probs.shape[1])]
    defined = [got for got in per_class if not math.isnan(got[0])]
    if not defined:
        return None
    _, low, high = mover_mean([a for a, _, _ in defined], [(lo, hi) for _, lo, hi in defined])
    return low, high


def _rows(groups: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if groups is None else np.asarray(groups)[rows]


def intervals(labels: np.ndarray, probs: np.ndarray, threshold: float, prefix: str,
              groups: np.ndarray | None = None, level: float = 0.95
              ) -> dict[str, float | None]:
    """The `level` intervals of AUC, balanced accuracy and accuracy, and for two classes of
    sensitivity (class 1's recall) and specificity (class 0's), of the decisions made at
    `threshold` (`decision.predicted`): flat keys `{prefix}{name}_low` / `_high`
    (`val_auc_low`, …), None where the figure is undefined (a class absent). `groups` (one id
    per row, a patient say) widens them for rows that are not independent. METHODS names
    each interval's method."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    probs = np.asarray(probs, np.float64)
    correct = decision.predicted(probs, threshold) == labels
    recalls: dict[int, tuple[float, Interval]] = {}
    for c in range(probs.shape[1]):
        rows = labels == c
        got = proportion_interval(correct[rows], _rows(groups, rows), level)
        if got is not None:
            recalls[c] = (float(correct[rows].mean()), got)
    balanced = (mover_mean([r for r, _ in recalls.values()], [b for _, b in recalls.values()])
                [1:] if recalls else None)
    found: dict[str, Interval | None] = {
        "auc": _auc(labels, probs, groups, level),
        "balanced_accuracy": balanced,
        "accuracy": proportion_interval(correct, groups, level),
    }
    if probs.shape[1] == 2:
        found["sensitivity"] = recalls[1][1] if 1 in recalls else None
        found["specificity"] = recalls[0][1] if 0 in recalls else None
    out: dict[str, float | None] = {}
    for name, bounds in found.items():
        out[f"{prefix}{name}_low"], out[f"{prefix}{name}_high"] = bounds or (None, None)
    return out
