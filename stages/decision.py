"""The operating point and how sure the figures are: the decision a threshold makes, the
threshold a target resolves to on validation, one temperature that calibrates the probabilities
(or why none does), the expected calibration error with its reliability rows, the scores
themselves (`weighted_scores`: one implementation of them; stages/intervals.py gives their
intervals).

NumPy only, as `evaluation`: scikit-learn or SciPy would add a second to every TensorFlow
stage's start (Keras imports scikit-learn when present); the tests compare against scikit-learn.
"""

from __future__ import annotations

import math

import numpy as np

from stages.cli import UserError

TARGETS = ("sensitivity", "specificity")
# The temperatures searched: outside them the head is broken rather than miscalibrated.
T_RANGE = (0.05, 20.0)


class ThresholdError(UserError, ValueError):
    """A `threshold` that cannot be resolved on the validation split."""


def predicted(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class indices, int64. Two classes: 1 where p(class 1) >= threshold (as scikit-learn's
    `roc_curve` thresholds mean), else 0; K > 2: the most probable class (threshold ignored)."""
    probs = np.asarray(probs)
    if probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).astype(np.int64)
    return np.argmax(probs, axis=1).astype(np.int64)


def _rates(labels: np.ndarray, p1: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                          int, int]:
    """Every distinct score as a threshold, rising, with the positives it predicts positive
    (true positives) and the negatives it predicts negative (true negatives), as integers, and
    the numbers of positives and negatives."""
    truth = np.asarray(labels).astype(np.int64) == 1
    p1 = np.asarray(p1, np.float64)
    thresholds, first = np.unique(p1, return_inverse=True)
    pos_at = np.bincount(first[truth], minlength=len(thresholds))
    neg_at = np.bincount(first[~truth], minlength=len(thresholds))
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    # threshold i predicts positive every row scored >= thresholds[i]
    tp = n_pos - np.r_[0, np.cumsum(pos_at)[:-1]]
    tn = np.r_[0, np.cumsum(neg_at)[:-1]]
    return thresholds, tp, tn, n_pos, n_neg


def _inside(t: float) -> float:
    """A chosen score as a threshold in (0, 1), where params and the model keep it. A sigmoid's
    float32 output is exactly 1.0 above z ≈ 17, and the largest float64 below 1 still predicts
    those rows positive and no float32 score less, so the decisions stay the same; exactly 0.0
    (z below about −103) becomes the smallest positive float64, which predicts those rows
    negative rather than positive: the one decision that changes, on rows the head is sure of."""
    return float(min(max(t, np.nextafter(0.0, 1.0)), np.nextafter(1.0, 0.0)))


def resolve_threshold(spec: str | float, labels: np.ndarray, p1: np.ndarray) -> float:
    """The threshold a `threshold` param means on these validation labels and p(class 1): a
    number itself; a rule, midway (in logit units, `midway`) between the score `chosen_score`
    picks and the next score below it, so that it lies on no validation score and a new image
    scored a hair below a validation positive is decided as that positive was. Raises
    ThresholdError as `chosen_score` does."""
    number = _number(spec)
    if number is not None:
        return chosen_score(spec, labels, p1)
    at = chosen_score(spec, labels, p1)
    p1 = np.asarray(p1, np.float64)
    below = p1[p1 < at]
    return midway(float(below.max()) if len(below) else None, at)


def chosen_score(spec: str | float, labels: np.ndarray, p1: np.ndarray) -> float:
    """The validation score a `threshold` param picks on these labels and p(class 1):
    - a number in (0, 1): itself;
    - `youden`: the threshold maximising sensitivity + specificity − 1; of several equally good,
      the largest (the one with the highest specificity);
    - `sensitivity:X`: of the thresholds reaching sensitivity >= X, the one with the highest
      specificity; of several with that specificity, the smallest (the highest sensitivity:
      between them lie only positives, so it is the better on both);
    - `specificity:X`: of the thresholds reaching specificity >= X, the one with the highest
      sensitivity; of several, the largest (the highest specificity), for the same reason.
    The candidates are the distinct values of `p1`; a row is positive when p1 >= threshold.
    Raises ThresholdError (one line) for an unknown form, a split lacking one of the classes, or
    a target that no threshold reaches."""
    number = _number(spec)
    if number is not None:
        if not 0.0 < number < 1.0:
            raise ThresholdError(f"threshold {spec} is outside (0, 1): give a number between, "
                                 "'youden', 'sensitivity:X' or 'specificity:X'")
        return number
    form, _, target_text = str(spec).partition(":")
    form = form.strip()
    if form == "youden" and not target_text:
        target = None
    elif form in TARGETS and (target := _number(target_text)) is not None and 0 < target <= 1:
        pass
    else:
        raise ThresholdError(f"threshold '{spec}' is not a number in (0, 1), 'youden', "
                             "'sensitivity:X' or 'specificity:X' with X in (0, 1]")
    thresholds, tp, tn, n_pos, n_neg = _rates(labels, p1)
    if n_pos == 0 or n_neg == 0:
        lacking = "class 1 (positives)" if n_pos == 0 else "class 0 (negatives)"
        raise ThresholdError(f"threshold '{spec}' needs both classes on the validation split, "
                             f"which has no images of {lacking}: sensitivity and specificity "
                             "are undefined there; give a number instead, or a split with both")
    if target is None:
        # in integers, so that equal values tie exactly: (J + 1) · n_pos · n_neg
        j = tp * n_neg + tn * n_pos
        return _inside(thresholds[np.flatnonzero(j == j.max())[-1]])
    sensitivity, specificity = tp / n_pos, tn / n_neg
    reach, other = ((sensitivity, specificity) if form == "sensitivity"
                    else (specificity, sensitivity))
    ok = reach >= target
    if not ok.any():
        best = int(np.argmax(reach))  # the smallest threshold giving the most: the other's best
        raise ThresholdError(
            f"threshold '{spec}': {form} {target:g} cannot be reached on the validation split: "
            f"the most any threshold gives there is {reach[best]:.4f} (at threshold "
            f"{thresholds[best]:.4g}); lower the target or choose another form")
    best_other = other[ok].max()
    among = np.flatnonzero(ok & (other == best_other))
    return _inside(thresholds[among[0] if form == "sensitivity" else among[-1]])


# Where no validation score lies below the chosen one (every row decided positive), the threshold
# sits this far below it, in logit units: the rule gives no second score to be midway to.
EDGE_LOGITS = 1.0


def _logit(p: float) -> float:
    p = _inside(p)
    return math.log(p) - math.log1p(-p)


def midway(below: float | None, at: float) -> float:
    """The probability midway in logit units between two neighbouring scores `below` < `at`
    (logits are where a head's scores are evenly spread: midway in probabilities would put
    the threshold next to the score near 0 or 1); `below` None: EDGE_LOGITS under `at`. Every
    score >= `at` stays positive and every score <= `below` negative."""
    z = (_logit(at) - EDGE_LOGITS if below is None
         else (_logit(below) + _logit(at)) / 2)
    t = _inside(1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z)))
    # rounding at the ends of (0, 1) may land on a score: then on the right side of it
    if t > at:
        return at
    return float(np.nextafter(below, 1.0)) if below is not None and t <= below else t


def decision_range(p1: np.ndarray, threshold: float) -> tuple[float, float]:
    """(low, high): every threshold t with low < t <= high makes the decisions `threshold`
    makes on these scores: low the largest score below it (0.0 where none), high the smallest
    at or above it (1.0 where none)."""
    p1 = np.asarray(p1, np.float64)
    below, above = p1[p1 < threshold], p1[p1 >= threshold]
    return (float(below.max()) if len(below) else 0.0,
            float(above.min()) if len(above) else 1.0)


def _number(spec: str | float) -> float | None:
    """A param given as a number, or as the text of one; None for anything else."""
    if isinstance(spec, bool):
        return None
    if isinstance(spec, int | float | np.floating | np.integer):
        return float(spec)
    try:
        return float(spec)
    except ValueError:
        return None


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean −log p(true class) of softmax(logits / T), or of sigmoid(z / T) for 1-D `logits`,
    through log-sum-exp so that large logits neither overflow nor lose the small probabilities."""
    u = logits / temperature
    if u.ndim == 1:  # −log sigmoid(u) for class 1, −log(1 − sigmoid(u)) = −log sigmoid(−u) for 0
        return float(np.mean(np.logaddexp(0.0, u) - labels * u))
    top = u.max(axis=1)
    log_z = top + np.log(np.exp(u - top[:, None]).sum(axis=1))
    return float(np.mean(log_z - u[np.arange(len(u)), labels]))


def logit_log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean −log p(true class) of sigmoid(z) on (N,) (or (N, 1)) logits z, or of softmax on
    (N, K) ones: a head's cross-entropy from its logits, as Keras computes its loss. Exact
    where the float32 probability of a confident mistake rounds to 0 (|z| above about 17),
    which a log loss of the probabilities can only clamp."""
    logits, labels = _logits_and_labels(logits, labels)
    return _nll(logits, labels, 1.0)


def probabilities_of_logits(logits: np.ndarray) -> np.ndarray:
    """(N, K) class probabilities, float64, of a head's logits: sigmoid of (N,) (or (N, 1))
    ones as (1 − p, p), softmax of (N, K) ones; neither overflows where a logit is large, and
    a sigmoid's small probabilities keep their relative precision."""
    z = np.asarray(logits, np.float64)
    if z.ndim == 2 and z.shape[1] == 1:
        z = z[:, 0]
    if z.ndim == 1:  # each side from exp(−|z|): nothing overflows, small ones keep digits
        e = np.exp(-np.abs(z))
        big, small = 1.0 / (1.0 + e), e / (1.0 + e)
        return np.stack([np.where(z >= 0, small, big), np.where(z >= 0, big, small)], axis=1)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _logits_and_labels(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 logits, (N,) for a sigmoid head's (N,) or (N, 1), and int64 labels."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    return logits, np.asarray(labels).astype(np.int64)


def _best_log_t(logits: np.ndarray, labels: np.ndarray) -> float:
    """log T of the least mean negative log-likelihood over T_RANGE, by a golden-section search:
    the log-likelihood is concave in 1/T, so one minimum, found to about 1e-4 in log T (an end
    of the range where the minimum lies beyond it)."""
    def nll(log_t: float) -> float:
        return _nll(logits, labels, math.exp(log_t))

    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    while hi - lo > 1e-4:
        if fa <= fb:  # the minimum lies in [lo, b]
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return (lo + hi) / 2


def _at_edge(log_t: float) -> bool:
    return min(log_t - math.log(T_RANGE[0]), math.log(T_RANGE[1]) - log_t) < 1e-3


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float | None:
    """The temperature T > 0 that minimises the mean negative log-likelihood of
    softmax(logits / T) on (N, K) logits, or of sigmoid(z / T) on the (N,) (or (N, 1))
    pre-activations of a sigmoid head, labels in {0, 1}: a golden-section search on log T over
    T_RANGE (`_best_log_t`). T = 1 is returned unless the fit beats it, so the fit never raises
    the validation log loss. None where the minimum is at an end of T_RANGE: no temperature
    fits (`why_no_temperature` says which of its two causes it was)."""
    logits, labels = _logits_and_labels(logits, labels)
    log_t = _best_log_t(logits, labels)
    if _at_edge(log_t):
        return None
    return 1.0 if _nll(logits, labels, 1.0) <= _nll(logits, labels, math.exp(log_t)) \
        else math.exp(log_t)


def logit_mistakes(logits: np.ndarray, labels: np.ndarray) -> int:
    """How many rows the logits decide wrong at 0.5: a sigmoid's z >= 0 is class 1 (as
    `predicted`), a softmax's largest logit its class."""
    logits, labels = _logits_and_labels(logits, labels)
    decided = (logits >= 0).astype(np.int64) if logits.ndim == 1 else np.argmax(logits, axis=1)
    return int(np.sum(decided != labels))


def why_no_temperature(logits: np.ndarray, labels: np.ndarray) -> str:
    """Why `fit_temperature` found none, as the rest of a sentence, with what to do. Two causes:
    - the head makes no mistake on the split: its log loss only falls as the probabilities
      sharpen, without end (seen on 120 real photos: T went to 0.05, and the test log loss
      doubled); a larger split, with mistakes to learn from, gives a temperature;
    - it makes mistakes, but its logits barely tell the classes apart (nearly constant, the
      head having learnt little), so the search runs to an end of T_RANGE: a larger split does
      not help, training does."""
    logits, labels = _logits_and_labels(logits, labels)
    wrong = logit_mistakes(logits, labels)
    if wrong == 0:
        return ("the head makes no mistake there, so its log loss falls the sharper the "
                "probabilities get, without end. A larger val_split, with mistakes to learn "
                "from, gives one; `folds: 5` fits it on every training image")
    edge = T_RANGE[0] if _best_log_t(logits, labels) < 0 else T_RANGE[1]
    return (f"the fit ran to the end of its range (T = {edge:g}) although the head makes "
            f"{wrong} of {len(labels)} mistakes there: its logits barely tell the classes apart "
            f"(they lie between {logits.min():.4g} and {logits.max():.4g}). The head has "
            "learnt little: see reports/history.png, and check the features, learning_rate "
            "and epochs (a larger val_split will not help)")


def _bins(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Each confidence's bin of `bins` equal-width bins over [0, 1], right-inclusive as Guo et
    al. 2017: edges[b] < c <= edges[b + 1] is bin b, so a confidence of 1.0 is in the last."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    # a largest probability is at least 1/K, never 0, but a 0 would join the first bin
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> list[dict]:
    """The reliability diagram's rows, one per non-empty bin of top-label confidence: its label
    (`bin`, "0.93–1.00"), mean confidence, accuracy (the share whose most probable class is the
    true one) and count. A perfectly calibrated model puts every row on accuracy = confidence."""
    probs = np.asarray(probs, np.float64)
    confidence = probs.max(axis=1)  # top-label: max(p, 1 − p) for two classes
    correct = np.argmax(probs, axis=1) == np.asarray(labels).astype(np.int64)
    which = _bins(confidence, bins)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, confidence, minlength=bins)
    right = np.bincount(which, correct.astype(np.float64), minlength=bins)
    edges = np.linspace(0.0, 1.0, bins + 1)
    return [{"bin": f"{edges[b]:.2f}–{edges[b + 1]:.2f}", "confidence": float(conf_sum[b] / n),
             "accuracy": float(right[b] / n), "count": int(n)}
            for b, n in enumerate(count.tolist()) if n]


def ece(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error, top-label: Σ over the bins of (|bin| / N) · |accuracy −
    mean confidence|, from `reliability`'s rows (`bins` equal-width bins over [0, 1])."""
    rows = reliability(labels, probs, bins)
    total = sum(r["count"] for r in rows)
    return float(sum(r["count"] / total * abs(r["accuracy"] - r["confidence"]) for r in rows))


def weighted_auc(w: np.ndarray, truth: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Per row of the (B, N) weights `w` (each row's multiplicity: ones, the sample itself),
    the ROC AUC of `score` for `truth` as the Mann–Whitney statistic: the weighted share of
    (positive, negative) pairs ranked right, ties counting half — the trapezoidal area under
    the ROC curve, as scikit-learn's `roc_auc_score`. NaN without both classes."""
    order = np.argsort(score, kind="stable")
    score, truth, w = score[order], truth[order], w[:, order]
    # each row's run of equal scores: [start, end]
    new = np.r_[True, score[1:] != score[:-1]]
    start = np.flatnonzero(new)[np.cumsum(new) - 1]
    end = np.r_[np.flatnonzero(new)[1:], len(score)][np.cumsum(new) - 1] - 1
    neg = np.cumsum(w * ~truth, axis=1)
    below = np.where(start > 0, neg[:, np.maximum(start - 1, 0)], 0.0)
    tied = neg[:, end] - below
    pos_w = w * truth
    n_pos, n_neg = pos_w.sum(axis=1), neg[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        area = (pos_w * (below + 0.5 * tied)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), area, np.nan)


def weighted_scores(w: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                    decided: np.ndarray) -> dict[str, np.ndarray]:
    """Per row of the (B, N) weights `w` (as `weighted_auc`), the scores: `accuracy`,
    `balanced_accuracy` (the mean recall over the classes present), `auc` (two classes: of
    class 1; K: the macro mean of one-vs-rest AUCs over the classes present beside another)
    and for two classes `sensitivity` and `specificity` (the recalls of classes 1 and 0), of
    the `decided` classes; NaN where undefined. The one implementation of them:
    `evaluation.scores` scores the sample itself with it (unit weights)."""
    w, probs = np.asarray(w, np.float64), np.asarray(probs, np.float64)
    labels, decided = np.asarray(labels).astype(np.int64), np.asarray(decided)
    k = probs.shape[1]
    correct = (decided == labels).astype(np.float64)
    in_class = labels[None, :] == np.arange(k)[:, None]  # (K, N)
    count = w @ in_class.T  # (B, K)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = (w @ (in_class * correct).T) / count
        accuracy = (w @ correct) / w.sum(axis=1)
    recall = np.where(count > 0, recall, np.nan)
    out = {"accuracy": accuracy, "balanced_accuracy": _nanmean(recall.T)}
    if k == 2:
        out["auc"] = weighted_auc(w, labels == 1, probs[:, 1])
        out["sensitivity"], out["specificity"] = recall[:, 1], recall[:, 0]
    else:  # macro mean of one-vs-rest over the classes present beside another
        out["auc"] = _nanmean(np.stack([weighted_auc(w, labels == c, probs[:, c])
                                        for c in range(k)]))
    return out


def _nanmean(values: np.ndarray) -> np.ndarray:
    """The mean down the first axis of the defined values; NaN where none is (without
    np.nanmean's warning about an empty slice)."""
    defined = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, values, 0.0).sum(axis=0) / defined.sum(axis=0)
