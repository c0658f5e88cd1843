"""Detection metrics at frame and video level (paper V-B, Tables III/IV).

Everything here works on plain numpy arrays so it can be tested without a
model. AUC, AP, ROC, log-loss and the confusion matrix come from
scikit-learn (the reference implementation the community compares against);
only the equal error rate is computed here, as the interpolated crossing of
the ROC curve with FNR = FPR, because sklearn has no EER.

Conventions (documented in docs/evaluation.md and pinned by tests):
- label 1 = fake (positive class), 0 = real; a score is P(fake).
- A frame/video is called fake when its score is strictly above the
  threshold (0.5 unless chosen, e.g. a validation split's ``eer_threshold``).
  ``>`` matches ``argmax`` of a 2-way softmax, which picks "real" (index 0)
  on an exact tie.
- A video's score is the mean of its frame scores, grouped by the record's
  ``video_id`` (unique across dataset, compression and method by contract),
  never by file or folder name: FF++ fakes of four methods share names like
  ``000_003``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn import metrics as skm

from data_prep import atomic_files
from ldattn_jax import calibration as calibration_lib

# Bump when a key of metrics.json is renamed, removed or changes meaning.
# Adding keys is backwards compatible and keeps the version.
SCHEMA_VERSION = 1

DEFAULT_THRESHOLD = 0.5
# metrics.json's threshold_source for 0.5 and for a --threshold P; a val
# lookup (ldattn_jax.thresholds) records the metrics.json it read instead.
DEFAULT_SOURCE = "default"
GIVEN_SOURCE = "given"
# AUC confidence intervals: percentile bootstrap, fixed seed so that
# metrics.json is the same on every run of the same scores.
BOOTSTRAP_RESAMPLES = 1000
CI_LEVEL = 0.95

# Keys of one metrics block; tests pin this tuple.
METRIC_KEYS = (
    "n",
    "counts",
    "acc",
    "acc_ci95",
    "auc",
    "auc_ci95",
    "eer",
    "eer_threshold",
    "ap",
    "log_loss",
    "brier",
    "ece",
    "confusion_matrix",
    "undefined_reason",
    "ci95_note",
)
# Expected calibration error: equal-width bins of P(fake), as in Guo et al.
# (ICML 2017) and sklearn.calibration.calibration_curve(strategy="uniform").
ECE_BINS = 15


def _check_inputs(labels, scores, what: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"{what}: labels and scores must be 1-D of equal length, got shapes "
            f"{labels.shape} and {scores.shape}"
        )
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        raise ValueError(
            f"{what}: labels must be 0 (real) or 1 (fake); found {np.unique(labels[bad])[:5]}"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{what}: scores contain NaN/inf; the model output is broken")
    if scores.size and (scores.min() < 0.0 or scores.max() > 1.0):
        raise ValueError(
            f"{what}: scores must be probabilities in [0, 1], got range "
            f"[{scores.min():.4g}, {scores.max():.4g}] (pass softmax outputs, not logits)"
        )
    return labels.astype(np.int64), scores


def equal_error_rate(labels, scores) -> float:
    """EER: the point of the ROC polyline where FNR == FPR, linearly interpolated.

    Walks the ROC points of ``sklearn.metrics.roc_curve`` (decreasing
    threshold) until FNR - FPR changes sign and intersects the segment with
    the anti-diagonal. A perfectly separable set gives 0, a perfectly
    inverted one 1. Requires both classes.
    """
    labels, scores = _check_inputs(labels, scores, "equal_error_rate")
    if len(np.unique(labels)) < 2:
        # roc_curve warns and returns NaN rates; the walk below would turn them into 0.
        raise ValueError(f"equal_error_rate needs both classes; labels are all {labels[0]}")
    fpr, tpr, _ = skm.roc_curve(labels, scores)
    fnr = 1.0 - tpr
    d = fnr - fpr  # starts at +1 (threshold = inf), ends at -1; non-increasing
    i = int(np.argmax(d <= 0.0))
    if d[i] == 0.0 or i == 0:
        return float(fpr[i])
    t = d[i - 1] / (d[i - 1] - d[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def eer_threshold(labels, scores) -> float:
    """The decision threshold at the equal error rate: calling a sample fake when
    its score is strictly above it gives the ROC point where FNR and FPR are
    closest (the first such point, i.e. the highest threshold, on a tie).

    Chosen on validation, it replaces 0.5 for test and for predict
    (``--threshold``): a model trained on unbalanced classes (FF++ is 4 fakes
    per real) or applied to another dataset is often well ranked (high AUC)
    but offset, so that at 0.5 nearly everything is called one class. The
    value lies midway between the score of that point and the next lower
    score, so a slightly shifted score keeps its side (on the lower score when
    the two are adjacent floats). Requires both classes.
    """
    labels, scores = _check_inputs(labels, scores, "eer_threshold")
    if len(np.unique(labels)) < 2:
        raise ValueError(f"eer_threshold needs both classes; labels are all {labels[0]}")
    # Every distinct score is a point: thr[i] calls fake the scores >= thr[i].
    fpr, tpr, thr = skm.roc_curve(labels, scores, drop_intermediate=False)
    i = int(np.argmin(np.abs((1.0 - tpr) - fpr)))
    if i == 0:  # thr[0] is +inf: nothing called fake
        return 1.0
    if i + 1 < len(thr):
        # Between two adjacent floats (a confident model's P(fake) near 1 takes
        # few values) the midpoint rounds to one of them; rounded up to thr[i],
        # '> threshold' would call the scores at thr[i] real: another ROC point.
        mid = (thr[i] + thr[i + 1]) / 2
        return float(mid if mid < thr[i] else thr[i + 1])
    return float(np.nextafter(thr[i], -np.inf))  # everything called fake


def expected_calibration_error(labels, scores, bins: int = ECE_BINS, sample_weight=None) -> float:
    """|fraction of fakes - mean P(fake)| per equal-width score bin, weighted by
    the bin's share of the samples: 0 when a score of p means "fake p of the
    time". Bins as sklearn's ``calibration_curve(strategy="uniform")``
    draws them (a score on an inner edge falls in the lower bin).

    Why beside AUC: AUC only ranks; a detector trained on FF++'s 4 fakes per
    real, or applied to another dataset, can rank well while its 0.9 means far
    less than 90% -- and predict reports that number to an analyst.
    ``sample_weight``: each sample's weight (`calibration.even_odds_weights`
    measures calibration at even odds on a split of any class mix).
    """
    labels, scores = _check_inputs(labels, scores, "expected_calibration_error")
    if labels.size == 0:
        raise ValueError("expected_calibration_error needs at least one sample")
    w = np.ones(labels.size) if sample_weight is None else np.asarray(sample_weight, np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.searchsorted(edges[1:-1], scores)
    gap = np.bincount(which, weights=w * (labels - scores), minlength=bins)
    return float(np.abs(gap).sum() / w.sum())


def weighted_auc(rank: np.ndarray, pos: np.ndarray, weight: np.ndarray) -> float:
    """AUC with sample weights: P(fake scores above real) + half P(tie).

    ``rank``: each sample's index among the distinct scores (ascending, as
    ``np.unique(scores, return_inverse=True)`` gives); ``pos``: its label is
    fake; ``weight``: its weight. O(n): bincounts and one cumulative sum.
    """
    w_pos = np.bincount(rank[pos], weights=weight[pos], minlength=rank.max() + 1)
    w_neg = np.bincount(rank[~pos], weights=weight[~pos], minlength=rank.max() + 1)
    below = np.cumsum(w_neg) - w_neg  # real weight strictly below each score
    return float(np.dot(w_pos, below + 0.5 * w_neg) / (w_pos.sum() * w_neg.sum()))


def bootstrap_weights(labels, groups=None, *, resamples: int, seed: int):
    """Yields, per bootstrap resample, each sample's multiplicity (float array).

    Each resample draws, within each class, as many ``groups`` as the class
    has, with replacement (stratified: every resample has both classes, as
    the test set does). ``groups``: the video id of each frame, so that a
    frame-level resample takes whole videos: the frames of one video are not
    independent, and resampling them one by one gives a falsely narrow
    interval. None: every sample is its own group (video level).
    """
    labels = np.asarray(labels)
    if groups is None:
        g = np.arange(labels.size)
    else:
        _, g = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    group_label = np.zeros(g.max() + 1, np.int64)
    group_label[g] = labels
    if np.any(group_label[g] != labels):
        raise ValueError("bootstrap: a group (video) holds frames of both labels")
    classes = [np.flatnonzero(group_label == c) for c in (0, 1)]
    for members, name in zip(classes, ("real", "fake"), strict=True):
        if members.size < MIN_VIDEOS_PER_CLASS:
            raise TooFewVideos(
                f"{members.size} {name} video{'s' if members.size != 1 else ''}: a 95% "
                f"interval needs at least {MIN_VIDEOS_PER_CLASS} videos of each class (a "
                "class of one is the same video in every resample, so its error would be "
                "left out)"
            )
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        counts = np.zeros(group_label.size)
        for members in classes:
            drawn = members[rng.integers(0, members.size, members.size)]
            counts += np.bincount(drawn, minlength=counts.size)
        yield counts[g]


# A stratified bootstrap redraws each class from its own videos: a class of one
# video is the same in every resample, so its sampling error would be left out
# and the "95%" interval (and a paired test's p) would shrink to a point.
MIN_VIDEOS_PER_CLASS = 2


class TooFewVideos(ValueError):
    """A class has fewer than MIN_VIDEOS_PER_CLASS videos to resample."""


def _interval(values, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


# Where every resample gives one value, the percentile bootstrap returns a point
# ([1, 1] for a perfect ranking, on 6 videos as on 6,000): no 95% interval at
# all. That happens exactly when each class is all right or all wrong (ACC), or
# every real-fake pair is ranked alike (AUC 1, 0, or every score tied: a
# stratified resample can repeat any one pair). Such a block gets instead the
# exact distribution-free bound below, or null, and ``ci95_note`` says which.


def separation_bound(n_units: int, level: float = CI_LEVEL) -> float:
    """Lower confidence bound of a rate (AUC, a class's share of right calls)
    whose sample of ``n_units`` independent units (videos) got every unit right.

    For an AUC, ``n_units`` = min(real videos, fake videos): pair them off into
    that many disjoint real-fake pairs; each pair is ranked right with
    probability AUC, independently, and a perfect ranking ranks every one of
    them right, so P(perfect ranking) <= AUC ** n_units, whatever the score
    distributions. An AUC below tail ** (1 / n_units) would give this sample
    less often than ``tail``, the tail of the percentile interval
    ((1 - level) / 2: the same one-sided level as its lower end, so [bound, 1]
    covers at least ``level``). The bound is sharp: reals all at 0 and fakes at
    +1 with probability AUC (else at -1) rank the smaller class's n units
    perfectly with probability exactly AUC ** n. For a class's share of right
    calls it is Clopper-Pearson's bound for n successes in n trials. At frame
    level the units are still videos (a random frame of each video is one
    independent draw). 6 real + 24 fake videos: AUC >= 0.541; 140 + 140: 0.974.
    """
    tail = (1.0 - level) / 2
    return float(tail ** (1.0 / n_units))


def _unit_counts(labels, groups) -> tuple[int, int]:
    """(real, fake) videos: groups per class (samples where ``groups`` is None)."""
    if groups is None:
        n_fake = int(np.sum(labels == 1))
        return int(labels.size) - n_fake, n_fake
    g = np.asarray(groups).astype(str)
    return len(set(g[labels == 0].tolist())), len(set(g[labels == 1].tolist()))


def _constant_auc_interval(auc: float, n_real: int, n_fake: int, level: float):
    """(interval or None, note) of an AUC that every resample reproduced."""
    n = min(n_real, n_fake)
    videos = f"{n_real} real and {n_fake} fake videos"
    if auc in (0.0, 1.0):
        bound = separation_bound(n, level)
        how = "above every real" if auc == 1.0 else "below every real"
        interval = (bound, 1.0) if auc == 1.0 else (0.0, 1.0 - bound)
        return interval, (
            f"AUC: every resample ranked every fake {how} (a percentile bootstrap would "
            f"give the point [{auc:g}, {auc:g}] on any number of videos); its interval is "
            f"the exact distribution-free bound of that ranking of {videos}: AUC "
            f"{'>=' if auc == 1.0 else '<='} {interval[0] if auc == 1.0 else interval[1]:.4f} "
            f"(metrics.separation_bound)."
        )
    return None, (
        f"AUC: every resample gave {auc:g} (every real-fake pair tied): the bootstrap "
        f"cannot bound this AUC on {videos}, so no interval."
    )


def _constant_acc_interval(labels, correct, groups, level: float):
    """(interval or None, note) of an ACC that every resample reproduced: each
    class all right or all wrong, bounded per class (`separation_bound`), then
    weighted by the class's share of the samples."""
    units = _unit_counts(labels, groups)
    lo = hi = 0.0
    for c, n in zip((0, 1), units, strict=True):
        rate = float(correct[labels == c].mean())
        share = float(np.mean(labels == c))
        if rate not in (0.0, 1.0):  # constant by coincidence of frame counts
            return None, "ACC: every resample gave the same value: no interval."
        bound = separation_bound(n, level)
        lo += share * (bound if rate == 1.0 else 0.0)
        hi += share * (1.0 if rate == 1.0 else 1.0 - bound)
    return (lo, hi), (
        "ACC: each class is all right or all wrong, the same in every resample; its "
        f"interval bounds each class's rate exactly on {units[0]} real and {units[1]} fake "
        "videos (metrics.separation_bound)."
    )


def _both_classes(labels, scores, what: str) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = _check_inputs(labels, scores, what)
    if len(np.unique(labels)) < 2:
        raise ValueError(f"{what} needs both classes; labels are all {labels[0]}")
    return labels, scores


def auc_ci(
    labels,
    scores,
    groups=None,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CI_LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the AUC (``bootstrap_weights``).

    Each resample's AUC is the weighted Mann-Whitney statistic over the
    distinct scores (ties count half), the same number as
    ``sklearn.metrics.roc_auc_score`` with the resample's multiplicities as
    ``sample_weight`` (tested), at ~0.5 ms instead of ~12 ms per resample on
    22k frames (2-vCPU Xeon): 1000 resamples for every block of an FF++ test
    evaluation would otherwise take minutes.

    Where every resample gives the same AUC (a perfect ranking: the percentile
    interval would be [1, 1] on any number of videos), the exact bound of
    `separation_bound` instead, or None (every score tied);
    `bootstrap_intervals`' ``note`` says which.
    """
    ci = bootstrap_intervals(labels, scores, groups, resamples=resamples, level=level, seed=seed)
    return ci["auc"]


def bootstrap_intervals(
    labels,
    scores,
    groups=None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CI_LEVEL,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """{'auc': interval, 'acc': interval, 'auc_note', 'acc_note', 'note'}: `auc_ci`'s, and
    ACC's at ``threshold`` on the same resamples (the resample's weighted share
    of correct calls; within-class draws keep the test set's class mix).

    An interval every resample agrees on is no interval: it is replaced by an
    exact bound (`separation_bound`) or None, and ``auc_note`` / ``acc_note``
    say so (else None; ``note``: both, for metrics.json's ``ci95_note``).
    """
    labels, scores = _both_classes(labels, scores, "bootstrap_intervals")
    _, u = np.unique(scores, return_inverse=True)  # distinct scores, ascending
    pos = labels == 1
    correct = ((scores > threshold) == pos).astype(np.float64)
    aucs, accs = [], []
    for w in bootstrap_weights(labels, groups, resamples=resamples, seed=seed):
        aucs.append(weighted_auc(u, pos, w))
        accs.append(np.dot(w, correct) / w.sum())
    out = {"auc": _interval(aucs, level), "acc": _interval(accs, level)}
    out["auc_note"] = out["acc_note"] = None
    if np.ptp(aucs) == 0:
        out["auc"], out["auc_note"] = _constant_auc_interval(
            float(aucs[0]), *_unit_counts(labels, groups), level
        )
    if np.ptp(accs) == 0:
        out["acc"], out["acc_note"] = _constant_acc_interval(labels, correct, groups, level)
    out["note"] = " ".join(n for n in (out["auc_note"], out["acc_note"]) if n) or None
    return out


def paired_auc_difference(
    labels,
    scores_a,
    scores_b,
    groups=None,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CI_LEVEL,
    seed: int = 0,
) -> dict:
    """AUC of B minus AUC of A on the same samples, with a paired bootstrap.

    Both detectors are scored on the same resamples (``bootstrap_weights``),
    so what they share (hard videos, easy videos) cancels: the interval of the
    difference is far narrower than two separate intervals suggest. The p-value
    is the two-sided normal test of pROC's bootstrap method: D = delta / sd of
    the resampled deltas. Returns {'auc_a', 'auc_b', 'delta', 'delta_ci95',
    'p_value', 'resamples', 'note'}; where both AUCs are the same in every
    resample (both perfect) ``p_value`` is None, ``delta_ci95`` the range the
    exact bounds of the two AUCs allow (None where there are none) and
    ``note`` says so (else None).
    """
    labels, a = _both_classes(labels, scores_a, "paired_auc_difference")
    _, b = _check_inputs(labels, scores_b, "paired_auc_difference")
    pos = labels == 1
    _, ua = np.unique(a, return_inverse=True)
    _, ub = np.unique(b, return_inverse=True)
    pairs = np.array(
        [
            (weighted_auc(ua, pos, w), weighted_auc(ub, pos, w))
            for w in bootstrap_weights(labels, groups, resamples=resamples, seed=seed)
        ]
    )
    deltas = pairs[:, 1] - pairs[:, 0]
    auc_a, auc_b = float(skm.roc_auc_score(labels, a)), float(skm.roc_auc_score(labels, b))
    delta, sd = auc_b - auc_a, float(deltas.std(ddof=1))
    out = {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "delta": delta,
        "delta_ci95": list(_interval(deltas, level)),
        "p_value": math.erfc(abs(delta) / sd / math.sqrt(2)) if sd > 0 else float(delta == 0),
        "resamples": resamples,
        "note": None,
    }
    if sd == 0 and np.ptp(pairs[:, 0]) == 0 and np.ptp(pairs[:, 1]) == 0:
        # Both AUCs the same in every resample (both perfect: B - A = 0 with
        # "p = 1" on 6 videos as on 6,000): the bootstrap cannot measure the
        # difference. What is known are the exact bounds of each AUC (joint
        # coverage >= level: each one-sided at (1 - level) / 2), so the
        # difference lies between their extremes; no p-value. (Identical
        # rankings of a sample that is not perfect, e.g. B = A, keep delta 0,
        # [0, 0] and p = 1: they rank every resample's pairs alike.)
        units = _unit_counts(labels, groups)
        (ia, _), (ib, _) = (_constant_auc_interval(float(x), *units, level) for x in pairs[0])
        out["p_value"] = None
        out["delta_ci95"] = None if ia is None or ib is None else [ib[0] - ia[1], ib[1] - ia[0]]
        out["note"] = (
            f"every resample gave A {pairs[0, 0]:g} and B {pairs[0, 1]:g}: the bootstrap "
            f"cannot tell these AUCs apart on {units[0]} real and {units[1]} fake videos"
            + (
                "; the interval of B - A is that of the exact bounds of each AUC "
                "(metrics.separation_bound), no p-value"
                if out["delta_ci95"] is not None
                else "; no interval, no p-value"
            )
        )
    return out


def binary_metrics(
    labels, scores, threshold: float = DEFAULT_THRESHOLD, groups=None, *, with_ci: bool = True
) -> dict:
    """ACC and AUC (with their 95% intervals), EER, AP, log-loss, Brier score,
    calibration error (ECE), counts and confusion matrix of one subset.
    ``groups``: video ids of frames, for the intervals (``bootstrap_intervals``);
    ``with_ci=False`` skips them (None): training's validation needs only the AUC.

    Ranking metrics (AUC, EER, AP) are undefined when only one class is
    present; they are then ``None`` and ``undefined_reason`` says why, instead
    of raising (a per-method subset of a small split can be one-class).
    """
    labels, scores = _check_inputs(labels, scores, "binary_metrics")
    n = int(labels.size)
    n_fake = int(labels.sum())
    out = {
        "n": n,
        "counts": {"real": n - n_fake, "fake": n_fake},
        "acc": None,
        "acc_ci95": None,
        "auc": None,
        "auc_ci95": None,
        "eer": None,
        "eer_threshold": None,
        "ap": None,
        "log_loss": None,
        "brier": None,
        "ece": None,
        "confusion_matrix": [[0, 0], [0, 0]],
        "undefined_reason": None,
        "ci95_note": None,  # how an interval that no resample varied was bounded instead
    }
    if n == 0:
        out["undefined_reason"] = "empty subset"
        return out
    pred = (scores > threshold).astype(np.int64)
    out["acc"] = float(skm.accuracy_score(labels, pred))
    # Rows: true real/fake; columns: predicted real/fake -> [[TN, FP], [FN, TP]].
    out["confusion_matrix"] = skm.confusion_matrix(labels, pred, labels=[0, 1]).tolist()
    # labels=[0, 1] keeps log-loss defined on one-class subsets.
    out["log_loss"] = float(skm.log_loss(labels, scores, labels=[0, 1]))
    # Calibration (defined on one class too): can the score be read as a probability?
    out["brier"] = float(skm.brier_score_loss(labels, scores, pos_label=1))
    out["ece"] = expected_calibration_error(labels, scores)
    if 0 < n_fake < n:
        out["auc"] = float(skm.roc_auc_score(labels, scores))
        if with_ci:
            try:
                ci = bootstrap_intervals(labels, scores, groups, threshold=threshold)
                out["auc_ci95"] = None if ci["auc"] is None else list(ci["auc"])
                out["acc_ci95"] = None if ci["acc"] is None else list(ci["acc"])
                out["ci95_note"] = ci["note"]
            except TooFewVideos as e:
                out["undefined_reason"] = f"no intervals: {e}"
        out["ap"] = float(skm.average_precision_score(labels, scores))
        out["eer"] = equal_error_rate(labels, scores)
        out["eer_threshold"] = eer_threshold(labels, scores)
    else:
        only = "fake" if n_fake else "real"
        out["undefined_reason"] = f"only {only} samples: AUC/EER/AP need both classes"
    return out


def video_scores(
    video_ids: Sequence[str], labels, scores, extra: Mapping[str, Sequence] | None = None
) -> dict:
    """Group frame scores by unique ``video_id``; a video's score is the mean.

    Returns a dict of equal-length arrays: ``video_id``, ``label``, ``score``,
    ``num_frames`` and every column of ``extra`` (e.g. method, compression),
    ordered by first appearance. Raises if frames of one id disagree on the
    label or on an ``extra`` column: that means ids are not unique.
    """
    video_ids = np.asarray(video_ids).astype(str)
    labels, scores = _check_inputs(labels, scores, "video_scores")
    if video_ids.shape != labels.shape:
        raise ValueError(
            f"video_scores: {video_ids.shape[0]} video ids for {labels.shape[0]} scores"
        )
    extra = {k: np.asarray(v).astype(str) for k, v in (extra or {}).items()}
    uniq, first, inverse = np.unique(video_ids, return_index=True, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(uniq))
    mean = np.bincount(inverse, weights=scores, minlength=len(uniq)) / counts
    cols = {"label": labels, **extra}
    grouped = {}
    for name, col in cols.items():
        rep = col[first]
        clash = col != rep[inverse]
        if clash.any():
            vid = video_ids[np.argmax(clash)]
            raise ValueError(
                f"video_scores: frames of video_id {vid!r} disagree on {name!r} "
                f"({sorted(set(col[video_ids == vid].tolist()))}); video ids must be unique "
                "across dataset/compression/method"
            )
        grouped[name] = rep
    order = np.argsort(first, kind="stable")  # first appearance
    return {
        "video_id": uniq[order],
        "label": grouped.pop("label")[order].astype(np.int64),
        "score": mean[order],
        "num_frames": counts[order],
        **{k: v[order] for k, v in grouped.items()},
    }


def method_subsets(methods, labels) -> dict[str, np.ndarray]:
    """Boolean masks for "the reals of one method + its fakes" (paper Tables III/IV).

    A real sample's method names whose original it is: a method with reals of
    its own (FF++'s DeepFakeDetection: the actors' videos, method
    "DeepFakeDetection", label 0) is paired with those only; the shared reals
    ("real": FF++'s YouTube originals) with every other method. Pooling both
    would score a method against footage of another kind, which a detector can
    tell apart without seeing any forgery.
    """
    methods = np.asarray(methods).astype(str)
    labels = np.asarray(labels)
    real = labels == 0
    fake_methods = sorted(set(methods[labels == 1].tolist()))
    own = set(methods[real].tolist()) & set(fake_methods)
    shared = real & ~np.isin(methods, sorted(own))
    return {
        m: (real & (methods == m) if m in own else shared) | (~real & (methods == m))
        for m in fake_methods
    }


def value_subsets(values) -> dict[str, np.ndarray]:
    """Boolean masks per distinct value (e.g. compression: both classes kept)."""
    values = np.asarray(values).astype(str)
    return {v: values == v for v in sorted(set(values.tolist()))}


def _level_pair(frame_cols: Mapping, video_cols: Mapping, fmask, vmask, threshold) -> dict:
    fc, vc = frame_cols, video_cols
    return {
        "frame": binary_metrics(
            fc["label"][fmask], fc["score"][fmask], threshold, fc["video_id"][fmask]
        ),
        "video": binary_metrics(vc["label"][vmask], vc["score"][vmask], threshold),
    }


def compute_all(
    frame_cols: Mapping[str, np.ndarray], threshold: float = DEFAULT_THRESHOLD
) -> tuple[dict, dict]:
    """Frame, video, per-method and per-compression metrics.

    ``frame_cols`` holds equal-length arrays ``video_id``, ``label``,
    ``score``, ``method``, ``compression``. Returns ``(metrics, video_cols)``
    where ``metrics`` has keys ``frame``, ``video``, ``per_method``,
    ``per_compression`` and ``video_cols`` is :func:`video_scores`' output.
    """
    fc = {k: np.asarray(v) for k, v in frame_cols.items()}
    vc = video_scores(
        fc["video_id"],
        fc["label"],
        fc["score"],
        extra={"method": fc["method"], "compression": fc["compression"]},
    )
    everything = np.ones(len(fc["label"]), bool)
    out = {
        **_level_pair(fc, vc, everything, np.ones(len(vc["label"]), bool), threshold),
        "per_method": {},
        "per_compression": {},
    }
    fm, vm = method_subsets(fc["method"], fc["label"]), method_subsets(vc["method"], vc["label"])
    for m in fm:
        out["per_method"][m] = _level_pair(fc, vc, fm[m], vm[m], threshold)
    fcmp, vcmp = value_subsets(fc["compression"]), value_subsets(vc["compression"])
    for c in fcmp:
        out["per_compression"][c] = _level_pair(fc, vc, fcmp[c], vcmp[c], threshold)
    return out, vc


def calibration_block(video_labels, video_scores, applied: tuple[Mapping, str] | None = None):
    """metrics.json's ``calibration``: ``fit``, Platt's map at even odds fitted on
    these videos (`ldattn_jax.calibration`; None on a one-class split), and
    ``applied``: a map fitted elsewhere (``applied`` = (map, where it came from),
    e.g. the run's val split) measured here by its ECE at even odds (each class
    weighted to half) before and after it, or None. The ECE at even odds of the
    fit's own split is no test of it (fitted on the same videos), so it is not
    reported."""
    labels, scores = _check_inputs(video_labels, video_scores, "calibration_block")
    out = {"fit": calibration_lib.fit(labels, scores), "applied": None}
    if applied is not None:
        cal, source = applied
        before = after = None
        if 0 < int(labels.sum()) < labels.size:  # even odds need both classes
            w = calibration_lib.even_odds_weights(labels)
            before = expected_calibration_error(labels, scores, sample_weight=w)
            calibrated = calibration_lib.apply(cal, scores)
            after = expected_calibration_error(labels, calibrated, sample_weight=w)
        out["applied"] = {
            "source": source,
            "a": float(cal["a"]),
            "b": float(cal["b"]),
            "ece_even_odds_before": before,
            "ece_even_odds_after": after,
        }
    return out


def config_hash(config) -> str:
    """sha256 of the canonical JSON (sorted keys) of a config or plain dict."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# Version of `shards_fingerprint`, recorded beside every value of it
# (metrics.json's shards_fingerprint_version, train_provenance.jsonl's
# data.fingerprint_version): values of different versions are never equal, so
# a comparison must know both. Version 1 (absent from the files: written before
# the version was) walked the whole --out of data_prep.build, its face cache
# (cache/), temp files and killed builds' incomplete.* folders included, so
# deleting a stale cache folder changed it; `legacy_shards_fingerprint` still
# computes it, for `fingerprint_matches`.
FINGERPRINT_VERSION = 2
# What of a TFDS builder directory (OUT/lda_faces/<config>/<version>) is the
# build: these metadata files by content, and the shards and label indexes
# (data_prep.record_index) by name and size. Not build_args.json: it names the
# source folder, which two builds of the same bytes may not share.
_FINGERPRINT_CONTENT = ("dataset_info.json", "features.json", "metadata.json")
_SKIPPED_DIRS = ("cache",)  # data_prep.build's face cache under OUT: not shards


def _is_shard_file(name: str) -> bool:
    # Not a temp file of a write in progress or killed: data_prep.atomic_files'
    # (".<name>.tmp-<host>-<pid>-<hex>", e.g. of a labels.<split>.npy), nor the
    # older names (".tmp-*", "*.tmp", "*.tmp.npy").
    if (
        name.startswith(".tmp-")
        or name.endswith((".tmp", ".tmp.npy"))
        or atomic_files.is_temp_name(name)
    ):
        return False
    return (
        ".array_record-" in name
        or ".tfrecord-" in name
        or (name.startswith("labels.") and name.endswith(".npy"))
    )


def builder_dirs(data_dir: str | os.PathLike) -> list[str]:
    """The TFDS builder directories of a build (those holding dataset_info.json),
    sorted: one for a data_prep.build --out or the builder directory itself. The
    face cache (``cache/``), temp folders and TFDS's ``incomplete.*`` folders of
    a killed build are not looked into. None found: ``[data_dir]`` itself."""
    root = os.fspath(data_dir)
    found, seen = [], set()
    # Symlinks followed (OUT/lda_faces on another disk is a common layout: not
    # followed, every such build had the same fingerprint), each real folder once.
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        top = dirpath == root
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(("incomplete.", ".tmp-"))
            and not atomic_files.is_temp_name(d)
            and not (top and d in _SKIPPED_DIRS)
        )
        if "dataset_info.json" in filenames:
            found.append(dirpath)
    return sorted(found) or [root]


def shards_fingerprint(data_dir: str | os.PathLike) -> str:
    """sha256 identifying a build's shards (version FINGERPRINT_VERSION): per TFDS
    builder directory (`builder_dirs`), the content of dataset_info.json,
    features.json and metadata.json and the names and sizes of the array_record
    shards and labels.<split>.npy, with paths relative to that directory.

    Cheap on purpose: identifies *which* build was evaluated without reading
    gigabytes of shards. Only the build counts: the face cache data_prep.build
    keeps under its --out (and advises deleting when stale), temp files and a
    killed build's leftovers do not, and a copy of only the builder directory
    (or of lda_faces/) fingerprints like the original wherever it lies.
    """
    root = os.fspath(data_dir)
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"shards_fingerprint: data dir {root!r} does not exist (pass the --out of "
            "data_prep.build)"
        )
    h = hashlib.sha256(f"shards_fingerprint v{FINGERPRINT_VERSION}\0".encode())
    dirs = builder_dirs(root)
    for d in dirs:
        if len(dirs) > 1:  # several builds under one folder: which is which counts
            h.update(f"dir\0{os.path.relpath(d, root).replace(os.sep, '/')}\0".encode())
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if not os.path.isfile(path):
                continue
            if name in _FINGERPRINT_CONTENT:
                with open(path, "rb") as f:
                    data = f.read()
                h.update(f"content\0{name}\0{len(data)}\0".encode())
                h.update(data)
            elif _is_shard_file(name):
                h.update(f"size\0{name}\0{os.path.getsize(path)}\0".encode())
    return h.hexdigest()


def legacy_shards_fingerprint(data_dir: str | os.PathLike) -> str:
    """Version 1 of `shards_fingerprint` (every .npz/.npy/shard under ``data_dir``,
    face cache included), to compare values recorded before version 2 with."""
    root = os.fspath(data_dir)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"legacy_shards_fingerprint: data dir {root!r} does not exist")
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if name in ("dataset_info.json", "metadata.json"):
                h.update(rel.encode())
                with open(path, "rb") as f:
                    h.update(f.read())
            elif "array_record" in name or name.endswith((".tfrecord", ".npz", ".npy")):
                h.update(f"{rel}:{os.path.getsize(path)}".encode())
    return h.hexdigest()


def fingerprint_matches(
    recorded: str | None,
    recorded_version,
    data_dir: str | os.PathLike,
    current: str | None = None,
) -> bool | None:
    """Whether a recorded fingerprint is the one of the build in ``data_dir``:
    True, False, or None where that cannot be told.

    ``recorded_version``: the version written beside it (None or absent: 1, a
    file from before versions were recorded). ``current``: this build's
    `shards_fingerprint` where the caller has it. A version-1 value is compared
    with version 1 recomputed; where that differs it is None, not False:
    version 1 also hashed the face cache, so a deleted cache folder changed it
    while the shards stayed the same.
    """
    if recorded is None:
        return None
    current = current or shards_fingerprint(data_dir)
    if recorded == current:
        return True
    if recorded_version == FINGERPRINT_VERSION:
        return False
    if isinstance(recorded_version, int) and recorded_version > FINGERPRINT_VERSION:
        return None  # written by a newer version of this code
    try:
        return True if recorded == legacy_shards_fingerprint(data_dir) else None
    except OSError:
        return None


def build_identity(data_dir: str | os.PathLike | None) -> dict | None:
    """{'dataset', 'compression'} of the data_prep build in ``data_dir`` (its
    summary.json), compression for FF++ only; None where it is not readable.

    Recorded as metrics.json's ``trained_on`` (the run's own shards), so that
    what a run trained on travels with its results: `report` needs it to
    pick the paper's table (Celeb-DF after Celeb-DF is Table II, after FF++
    Table VI) where the shards are not at hand.
    """
    try:
        with open(os.path.join(os.fspath(data_dir), "summary.json")) as f:
            args = json.load(f)["args"]
        dataset = str(args["dataset"])
    except (OSError, TypeError, ValueError, KeyError):
        return None
    compression = args.get("compression") if dataset == "ffpp" else None
    return {"dataset": dataset, "compression": compression}


def to_jsonable(obj):
    """numpy scalars/arrays → Python; NaN/inf → None (strict JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def metrics_document(
    frame_cols: Mapping[str, np.ndarray],
    *,
    dataset: str,
    split: str,
    model: str,
    checkpoint_step: int,
    checkpoint_which: str,
    config_sha256: str,
    shards_sha256: str,
    defect_capture: Mapping | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    threshold_source: str | None = None,
    compute_dtype: str = "float32",
    trained_on: Mapping | None = None,
    calibration: tuple[Mapping, str] | None = None,
    checkpoint_sha256: str | None = None,
    provenance: Mapping | None = None,
    model_settings: Mapping | None = None,
) -> tuple[dict, dict]:
    """The full metrics.json document (schema v1) and the per-video columns.

    The nested key structure is pinned by tests/test_metrics.py and documented
    in docs/evaluation.md; per-method / per-compression maps are keyed by the
    values found in the data. ``threshold_source``: how ``threshold`` was
    chosen (`ldattn_jax.thresholds`); by default DEFAULT_SOURCE at 0.5, else GIVEN_SOURCE.
    ``trained_on``: `build_identity` of the run's own shards. ``calibration``:
    (map, source) of a calibration fitted elsewhere to measure here
    (`calibration_block`). ``checkpoint_sha256``: the checkpoint's state files
    (`checkpointing.state_files_sha256`); ``provenance``: code, libraries,
    devices and command (`ldattn_jax.provenance`). ``model_settings``: the run's
    ``config.model`` (which network: `report` puts a run of other settings
    beside the paper's sweeps, Tables IX-XI, not beside its main tables).
    """
    levels, vc = compute_all(frame_cols, threshold)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "split": split,
        "model": model,
        "model_settings": dict(model_settings) if model_settings is not None else None,
        "threshold": threshold,
        "threshold_source": threshold_source
        or (DEFAULT_SOURCE if threshold == DEFAULT_THRESHOLD else GIVEN_SOURCE),
        "checkpoint": {
            "step": int(checkpoint_step),
            "which": str(checkpoint_which),
            "state_sha256": checkpoint_sha256,
        },
        "compute_dtype": compute_dtype,
        "config_sha256": config_sha256,
        "shards_sha256": shards_sha256,
        # Which shards_fingerprint made shards_sha256 (absent in older files: 1).
        "shards_fingerprint_version": FINGERPRINT_VERSION,
        "trained_on": dict(trained_on) if trained_on is not None else None,
        "num_frames": int(len(frame_cols["label"])),
        "num_videos": int(len(vc["label"])),
        **levels,
        "calibration": calibration_block(vc["label"], vc["score"], calibration),
        "defect_capture": dict(defect_capture) if defect_capture is not None else None,
        "provenance": dict(provenance) if provenance is not None else None,
    }
    return to_jsonable(doc), vc
