"""Metrics: parity with scikit-learn, hand-computable cases, video grouping, schema pin."""

import json

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn import metrics as skm

from ldattn_jax import metrics


def _random_set(seed, n=400, ties=False):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    # Informative but overlapping scores, so every metric is non-trivial.
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0.0, 1.0)
    if ties:
        scores = np.round(scores, 1)
    return labels, scores


def _eer_reference(labels, scores):
    # The widely used brentq formulation (independent of our segment walk).
    fpr, tpr, _ = skm.roc_curve(labels, scores)
    return brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_parity_with_sklearn_on_random_scores(seed, ties):
    labels, scores = _random_set(seed, ties=ties)
    m = metrics.binary_metrics(labels, scores)
    pred = (scores > 0.5).astype(int)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert m["ap"] == pytest.approx(skm.average_precision_score(labels, scores), abs=1e-12)
    assert m["acc"] == pytest.approx(skm.accuracy_score(labels, pred), abs=1e-12)
    assert m["log_loss"] == pytest.approx(skm.log_loss(labels, scores), abs=1e-9)
    assert m["confusion_matrix"] == skm.confusion_matrix(labels, pred).tolist()
    assert m["eer"] == pytest.approx(_eer_reference(labels, scores), abs=1e-6)
    assert m["counts"] == {"real": int((labels == 0).sum()), "fake": int(labels.sum())}
    assert m["undefined_reason"] is None


def test_hand_computable_cases():
    labels = np.array([0, 0, 1, 1])
    sep = metrics.binary_metrics(labels, [0.1, 0.2, 0.8, 0.9])
    assert (sep["auc"], sep["eer"], sep["ap"], sep["acc"]) == (1.0, 0.0, 1.0, 1.0)
    inv = metrics.binary_metrics(labels, [0.9, 0.8, 0.2, 0.1])
    assert (inv["auc"], inv["eer"], inv["acc"]) == (0.0, 1.0, 0.0)
    assert inv["confusion_matrix"] == [[0, 2], [2, 0]]
    # Constant scores: no ranking information, EER on the diagonal = 0.5.
    flat = metrics.binary_metrics(labels, [0.5] * 4)
    assert flat["auc"] == 0.5 and flat["eer"] == pytest.approx(0.5)
    # Threshold is strict: 0.5 is "real", like argmax of a tied softmax.
    assert flat["confusion_matrix"] == [[2, 0], [2, 0]]
    # One wrong pair out of 4: AUC = 3/4 (one discordant pair among 2x2).
    one_off = metrics.binary_metrics(labels, [0.1, 0.7, 0.6, 0.9])
    assert one_off["auc"] == 0.75 and one_off["eer"] == pytest.approx(0.5)


def _rates(labels, scores, t):
    pred = scores > t
    return float(np.mean(~pred[labels == 1])), float(np.mean(pred[labels == 0]))  # FNR, FPR


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_eer_threshold_is_the_best_balanced_cut(seed, ties):
    labels, scores = _random_set(seed, ties=ties)
    # An offset model (what unbalanced training gives): ranks well, calls all fake at 0.5.
    scores = np.clip(scores + 0.3, 0.0, 1.0)
    t = metrics.eer_threshold(labels, scores)
    fnr, fpr = _rates(labels, scores, t)
    # Brute force over every cut between distinct scores (and above / below all).
    u = np.unique(scores)
    cuts = np.concatenate([[u[0] - 1], (u[:-1] + u[1:]) / 2, [u[-1]]])
    best = min(abs(a - b) for a, b in (_rates(labels, scores, c) for c in cuts))
    assert abs(fnr - fpr) == pytest.approx(best, abs=1e-12)
    if not ties:  # ...and it sits at the EER, within one sample's step of a rate.
        step = 1 / min(labels.sum(), (labels == 0).sum())
        assert abs((fnr + fpr) / 2 - metrics.equal_error_rate(labels, scores)) <= step
    # Midway between two scores: no score lies on it.
    assert not np.any(scores == t)
    m = metrics.binary_metrics(labels, scores, threshold=t)
    assert m["eer_threshold"] == t and m["acc"] > metrics.binary_metrics(labels, scores)["acc"]


def test_eer_threshold_edge_cases():
    labels = np.array([0, 0, 1, 1])
    assert 0.2 < metrics.eer_threshold(labels, [0.1, 0.2, 0.8, 0.9]) < 0.8
    # Inverted: every cut has |FNR - FPR| = 1 except the extremes (0 with both 1 or 0).
    t = metrics.eer_threshold(labels, [0.9, 0.8, 0.2, 0.1])
    assert _rates(labels, np.array([0.9, 0.8, 0.2, 0.1]), t) in ((1.0, 1.0), (0.0, 0.0))
    # Constant scores: everything real (nothing above 1.0) balances FNR = 1 vs FPR = 0
    # no worse than everything fake; the first (highest) cut is kept.
    assert metrics.eer_threshold(labels, [0.5] * 4) == 1.0
    # Adjacent floats (a confident model's scores near 1): no midpoint exists, and
    # one rounded up to the fake's score called it real (ACC 0.5 at AUC 1).
    for real, fake in [
        (0.9999999999999999, 1.0),
        (0.9999999999999628, 0.9999999999999629),
        (0.9, np.nextafter(0.9, 1.0)),
    ]:
        scores = np.array([0.1, real, fake, fake])
        t = metrics.eer_threshold(labels, scores)
        assert _rates(labels, scores, t) == (0.0, 0.0), (real, fake, t)
        assert metrics.binary_metrics(labels, scores, threshold=t)["acc"] == 1.0
    with pytest.raises(ValueError, match="needs both classes"):
        metrics.eer_threshold([1, 1], [0.2, 0.3])
    assert metrics.binary_metrics([1, 1], [0.2, 0.3])["eer_threshold"] is None


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_auc_is_sklearns_with_sample_weight(ties):
    labels, scores = _random_set(3, n=300, ties=ties)
    _, rank = np.unique(scores, return_inverse=True)
    weight = np.random.default_rng(0).integers(0, 4, labels.size).astype(float)  # resample counts
    got = metrics.weighted_auc(rank, labels == 1, weight)
    assert got == pytest.approx(skm.roc_auc_score(labels, scores, sample_weight=weight), abs=1e-12)
    assert metrics.weighted_auc(rank, labels == 1, np.ones(labels.size)) == pytest.approx(
        skm.roc_auc_score(labels, scores), abs=1e-12
    )


def _videos(seed, n_videos, frames, separation=0.6):
    """Frame scores of videos whose frames are alike: a per-video score + small noise."""
    rng = np.random.default_rng(seed)
    video_label = np.arange(n_videos) % 2
    video_score = rng.normal(separation * video_label, 1.0)
    labels = np.repeat(video_label, frames)
    ids = np.repeat([f"v{i}" for i in range(n_videos)], frames)
    logits = np.repeat(video_score, frames) + rng.normal(0, 0.05, labels.size)
    return labels, 1 / (1 + np.exp(-logits)), ids


def test_auc_ci_resamples_videos_not_frames():
    labels, scores, ids = _videos(0, 60, 16)
    auc = skm.roc_auc_score(labels, scores)
    lo, hi = metrics.auc_ci(labels, scores, ids)
    assert lo < auc < hi
    assert metrics.auc_ci(labels, scores, ids) == (lo, hi)  # fixed seed: same numbers
    # 16 near-copies of each video are ~60 independent samples, not 960: the
    # interval by videos is about as wide as the video-level one, and resampling
    # frames one by one would be ~4x (sqrt 16) too narrow.
    v = metrics.video_scores(ids, labels, scores)
    vlo, vhi = metrics.auc_ci(v["label"], v["score"])
    flo, fhi = metrics.auc_ci(labels, scores)
    assert 0.8 < (hi - lo) / (vhi - vlo) < 1.25
    assert (fhi - flo) < (hi - lo) / 2.5
    # binary_metrics reports it; compute_all passes the video ids at frame level.
    m = metrics.binary_metrics(labels, scores, groups=ids)
    assert m["auc_ci95"] == [lo, hi]
    assert metrics.binary_metrics([0, 0, 0], [0.1, 0.2, 0.3])["auc_ci95"] is None
    with pytest.raises(ValueError, match="holds frames of both labels"):
        metrics.auc_ci([0, 1, 1], [0.1, 0.2, 0.3], ["a", "a", "b"])


def test_acc_interval_is_sklearns_accuracy_over_the_same_video_resamples():
    labels, scores, ids = _videos(2, 40, 8)
    t = 0.55
    m = metrics.binary_metrics(labels, scores, threshold=t, groups=ids)
    pred = (scores > t).astype(int)
    accs = [
        skm.accuracy_score(labels, pred, sample_weight=w)
        for w in metrics.bootstrap_weights(labels, ids, resamples=1000, seed=0)
    ]
    assert m["acc_ci95"] == pytest.approx(list(np.percentile(accs, [2.5, 97.5])), abs=1e-12)
    assert m["acc_ci95"][0] < m["acc"] < m["acc_ci95"][1]
    # The AUC's interval comes from the same resamples, unchanged by the ACC's.
    assert m["auc_ci95"] == list(metrics.auc_ci(labels, scores, ids))
    assert metrics.binary_metrics(labels, scores, with_ci=False)["acc_ci95"] is None
    assert metrics.binary_metrics([1, 1], [0.9, 0.2])["acc_ci95"] is None  # one class


def test_no_interval_where_a_class_has_one_video():
    # One real video is redrawn in every resample: its error would be left out and
    # the "95%" interval shrink to a point (it was [0.875, 0.875] here).
    labels = np.array([0] * 4 + [1] * 4)
    scores = np.array([0.1, 0.2, 0.6, 0.3, 0.5, 0.7, 0.8, 0.9])
    ids = np.array(["r"] * 4 + ["f"] * 2 + ["g"] * 2)
    m = metrics.binary_metrics(labels, scores, groups=ids)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(labels, scores))  # still measured
    assert m["auc_ci95"] is None and m["acc_ci95"] is None
    assert m["undefined_reason"].startswith("no intervals: 1 real video")
    # Two per class: an interval again (and no reason).
    ids2 = np.array(["r", "r", "s", "s", "f", "f", "g", "g"])
    m2 = metrics.binary_metrics(labels, scores, groups=ids2)
    assert m2["auc_ci95"] is not None and m2["undefined_reason"] is None
    with pytest.raises(metrics.TooFewVideos, match="1 fake video"):
        metrics.paired_auc_difference([0, 0, 1], [0.1, 0.2, 0.9], [0.2, 0.1, 0.8])


def test_a_perfect_ranking_gets_an_exact_bound_not_a_point_interval():
    # 6 real + 24 fake videos (the demo's test split), every fake above every real:
    # every resample is perfect too, and the percentile interval was [1, 1].
    labels = np.array([0] * 6 + [1] * 24)
    scores = np.where(labels == 1, 0.9, 0.1) + np.linspace(0, 0.05, 30)
    m = metrics.binary_metrics(labels, scores)
    bound = 0.025 ** (1 / 6)  # min(6, 24) disjoint real-fake pairs, one-sided 97.5%
    assert m["auc"] == 1.0 and m["auc_ci95"] == pytest.approx([bound, 1.0])
    assert metrics.separation_bound(6) == pytest.approx(bound) and bound < 0.55
    assert (
        "exact distribution-free bound" in m["ci95_note"]
        and "6 real and 24 fake" in (m["ci95_note"])
    )
    # ACC 1 likewise: each class's rate bounded (Clopper-Pearson, n of n), weighted by share.
    want = 0.2 * bound + 0.8 * 0.025 ** (1 / 24)
    assert m["acc"] == 1.0 and m["acc_ci95"] == pytest.approx([want, 1.0])
    # More videos, a tighter bound: 140 + 140 (an FF++ method) bounds the AUC at 0.974.
    assert metrics.separation_bound(140) == pytest.approx(0.974, abs=5e-4)
    # Frame level: the units are videos (their frames are not independent).
    ids = np.repeat([f"v{i}" for i in range(30)], 4)
    fm = metrics.binary_metrics(np.repeat(labels, 4), np.repeat(scores, 4), groups=ids)
    assert fm["auc_ci95"] == pytest.approx([bound, 1.0])
    # Perfectly inverted: the mirror bound.
    inv = metrics.binary_metrics(labels, 1 - scores)
    assert inv["auc"] == 0.0 and inv["auc_ci95"] == pytest.approx([0.0, 1 - bound])
    # Every score tied: no resample varies and no bound exists: null, said why.
    tied = metrics.bootstrap_intervals(labels, np.full(30, 0.5))
    assert tied["auc"] is None and "every real-fake pair tied" in tied["auc_note"]
    # An ordinary sample keeps its percentile interval and no note.
    noisy = metrics.binary_metrics(*_random_set(0, n=200))
    assert noisy["ci95_note"] is None and noisy["auc_ci95"][0] < noisy["auc_ci95"][1]


def test_separation_bound_holds_at_its_level_for_the_worst_case_distribution():
    # Reals at 0, fakes at +1 with probability auc (else -1): a perfect ranking of
    # n fakes has probability exactly auc ** n, the most any distribution allows.
    n = 6
    bound = metrics.separation_bound(n)
    rng = np.random.default_rng(0)
    for auc in (bound - 0.02, bound + 0.02):
        perfect = np.mean([(rng.random(n) < auc).all() for _ in range(20000)])
        assert (perfect < 0.025) == (auc < bound), (auc, perfect)


def test_both_perfect_paired_difference_cannot_tell_instead_of_p_1():
    labels = np.array([0] * 6 + [1] * 24)
    a = np.where(labels == 1, 0.9, 0.1) + np.linspace(0, 0.05, 30)
    r = metrics.paired_auc_difference(labels, a, a**2)  # both rank every pair right
    bound = metrics.separation_bound(6)
    assert r["delta"] == 0 and r["p_value"] is None
    assert r["delta_ci95"] == pytest.approx([bound - 1, 1 - bound])
    assert "cannot tell these AUCs apart on 6 real and 24 fake videos" in r["note"]
    # Identical rankings of an imperfect sample: delta 0 in every resample, p 1.
    labels, scores = _random_set(1, n=100)
    same = metrics.paired_auc_difference(labels, scores, scores)
    assert same["delta_ci95"] == [0.0, 0.0] and same["p_value"] == 1.0 and same["note"] is None


def test_auc_ci_covers_the_true_auc_about_95_percent_of_the_time():
    # Binormal scores: the true AUC is Phi(d / sqrt 2). 200 test sets of 80 samples.
    from scipy.stats import norm

    d, hits, trials = 1.0, 0, 200
    truth = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(1)
    for t in range(trials):
        labels = np.repeat([0, 1], 40)
        scores = norm.cdf(rng.normal(d * labels, 1.0))
        lo, hi = metrics.auc_ci(labels, scores, resamples=400, seed=t)
        hits += lo <= truth <= hi
    assert 0.89 <= hits / trials <= 0.99, hits / trials


def test_one_class_subset_is_null_with_reason_not_a_crash():
    m = metrics.binary_metrics([1, 1, 1], [0.9, 0.2, 0.7])
    assert m["auc"] is None and m["eer"] is None and m["ap"] is None
    assert "only fake" in m["undefined_reason"]
    assert m["acc"] == pytest.approx(2 / 3)
    assert m["log_loss"] == pytest.approx(skm.log_loss([1, 1, 1], [0.9, 0.2, 0.7], labels=[0, 1]))
    empty = metrics.binary_metrics([], [])
    assert empty["n"] == 0 and empty["undefined_reason"] == "empty subset"
    # Called alone on one class, the EER refuses (it returned 0.0 for all-real).
    for labels in ([0, 0, 0], [1, 1, 1]):
        with pytest.raises(ValueError, match="needs both classes"):
            metrics.equal_error_rate(labels, [0.9, 0.2, 0.7])


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="labels must be 0"):
        metrics.binary_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="not logits"):
        metrics.binary_metrics([0, 1], [-3.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        metrics.binary_metrics([0, 1], [np.nan, 0.2])


def test_video_grouping_by_unique_id_keeps_same_file_names_apart():
    # FF++: Deepfakes and FaceSwap fakes are both called 000_003.mp4; the unique
    # video_id includes the method, so they must stay two videos.
    ids = ["ff/c23/Deepfakes/000_003"] * 2 + ["ff/c23/FaceSwap/000_003"] * 3 + ["ff/c23/real/000"]
    labels = [1, 1, 1, 1, 1, 0]
    scores = [0.9, 0.7, 0.1, 0.2, 0.3, 0.4]
    methods = ["Deepfakes"] * 2 + ["FaceSwap"] * 3 + ["real"]
    v = metrics.video_scores(ids, labels, scores, extra={"method": methods})
    assert v["video_id"].tolist() == [ids[0], ids[2], ids[5]]
    np.testing.assert_allclose(v["score"], [0.8, 0.2, 0.4])
    assert v["num_frames"].tolist() == [2, 3, 1]
    assert v["method"].tolist() == ["Deepfakes", "FaceSwap", "real"]
    assert v["label"].tolist() == [1, 1, 0]


def test_video_ids_that_are_not_unique_are_rejected():
    with pytest.raises(ValueError, match="disagree on 'label'"):
        metrics.video_scores(["a", "a"], [0, 1], [0.1, 0.2])


def _frame_cols():
    rng = np.random.default_rng(0)
    rows = []
    for method, label in [("real", 0), ("Deepfakes", 1), ("NeuralTextures", 1)]:
        for comp in ["c23", "c40"]:
            for v in range(3):
                for _ in range(4):
                    rows.append((f"ff/{comp}/{method}/{v:03d}", label, method, comp))
    ids, labels, methods, comps = map(np.array, zip(*rows, strict=True))
    return {
        "video_id": ids,
        "label": labels,
        "score": np.clip(rng.normal(0.3 + 0.4 * labels, 0.2), 0, 1),
        "method": methods,
        "compression": comps,
    }


def test_per_method_subsets_are_real_plus_that_methods_fakes():
    fc = _frame_cols()
    out, vc = metrics.compute_all(fc)
    assert sorted(out["per_method"]) == ["Deepfakes", "NeuralTextures"]
    df = out["per_method"]["Deepfakes"]
    assert df["frame"]["counts"] == {"real": 24, "fake": 24}
    assert df["video"]["counts"] == {"real": 6, "fake": 6}
    sel = (fc["label"] == 0) | (fc["method"] == "Deepfakes")
    assert df["frame"]["auc"] == pytest.approx(
        skm.roc_auc_score(fc["label"][sel], fc["score"][sel])
    )
    assert out["per_compression"]["c40"]["video"]["counts"] == {"real": 3, "fake": 6}
    assert out["video"]["n"] == len(vc["video_id"]) == 18


def test_a_method_with_its_own_reals_is_paired_with_those_only():
    # FF++'s DeepFakeDetection: its reals are the actors' videos (method
    # "DeepFakeDetection", label 0), the other methods' the YouTube ones ("real").
    # A detector that tells YouTube footage from fakes but scores the actors high:
    # pooled reals made Deepfakes 0.5 and DFD 1.0; each against its own, both 1.0.
    vid = ["yt0", "yt1", "df0", "df1", "ac0", "ac1", "dfd0", "dfd1"]
    method = ["real", "real", "Deepfakes", "Deepfakes"] + ["DeepFakeDetection"] * 4
    label = [0, 0, 1, 1, 0, 0, 1, 1]
    score = [0.1, 0.2, 0.8, 0.9, 0.85, 0.95, 0.97, 0.99]
    masks = metrics.method_subsets(method, label)
    assert {m: np.flatnonzero(v).tolist() for m, v in masks.items()} == {
        "DeepFakeDetection": [4, 5, 6, 7],
        "Deepfakes": [0, 1, 2, 3],
    }
    out, _ = metrics.compute_all(
        {
            "video_id": vid,
            "label": label,
            "score": score,
            "method": method,
            "compression": ["c23"] * 8,
        }
    )
    for m in ("Deepfakes", "DeepFakeDetection"):
        assert out["per_method"][m]["video"]["counts"] == {"real": 2, "fake": 2}
        assert out["per_method"][m]["video"]["auc"] == 1.0
    assert out["video"]["counts"] == {"real": 4, "fake": 4}  # the whole split keeps every real


# Pinned nested key structure of metrics.json (schema_version 1). If this test
# fails you renamed/removed a key: update docs/evaluation.md, bump
# SCHEMA_VERSION, and say so in the changelog.
BLOCK = set(metrics.METRIC_KEYS)
LEVELS = {"frame", "video"}
TOP = {
    "schema_version",
    "dataset",
    "split",
    "model",
    "model_settings",
    "threshold",
    "threshold_source",
    "checkpoint",
    "compute_dtype",
    "config_sha256",
    "shards_sha256",
    "shards_fingerprint_version",
    "trained_on",
    "num_frames",
    "num_videos",
    "frame",
    "video",
    "per_method",
    "per_compression",
    "calibration",
    "defect_capture",
    "provenance",
}
PROVENANCE = {
    "ldattn_jax",
    "git_commit",
    "git_dirty",
    "python",
    "platform",
    "devices",
    "packages",
    "command",
    "started_utc",
    "finished_utc",
    "training",
}


def assert_schema_v1(doc):
    assert doc["schema_version"] == 1
    assert set(doc) == TOP
    assert set(doc["checkpoint"]) == {"step", "which", "state_sha256"}
    if doc["provenance"] is not None:
        assert set(doc["provenance"]) == PROVENANCE
        assert set(doc["provenance"]["devices"]) == {"platform", "kind", "count"}
    assert set(doc["calibration"]) == {"fit", "applied"}
    if doc["calibration"]["fit"] is not None:
        assert set(doc["calibration"]["fit"]) == {"method", "a", "b", "counts"}
    if doc["calibration"]["applied"] is not None:
        assert set(doc["calibration"]["applied"]) == {
            "source",
            "a",
            "b",
            "ece_even_odds_before",
            "ece_even_odds_after",
        }
    for level in LEVELS:
        assert set(doc[level]) == BLOCK
        assert set(doc[level]["counts"]) == {"real", "fake"}
    for group in ("per_method", "per_compression"):
        for sub in doc[group].values():
            assert set(sub) == LEVELS
            for level in LEVELS:
                assert set(sub[level]) == BLOCK
    dc = doc["defect_capture"]
    if dc is not None:
        assert set(dc) == {
            "available",
            "reason",
            "grid",
            "clip_negative",
            "skipped_empty_masks",
            "modules",
        }
        for mod in dc["modules"].values():
            assert set(mod) == {"all", "per_method"}
            assert set(mod["all"]) == {
                "n",
                "mass_share",
                "mass_share_uniform",
                "pointing_hit_rate",
                "pointing_uniform",
                "map_contrast",
            }


def test_schema_pin():
    from ldattn_jax.defect_capture import DefectCapture

    assert metrics.METRIC_KEYS == (
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
    dc = DefectCapture()
    mask = np.zeros((2, 8, 8), np.uint8)
    mask[:, :4, :4] = 1
    dc.add({"spatial": np.ones((2, 2, 4, 4))}, mask, [True, True], [1, 1], ["blur", "eyes"])
    doc, _ = metrics.metrics_document(
        _frame_cols(),
        dataset="ff",
        split="test",
        model="lda_st",
        checkpoint_step=7,
        checkpoint_which="best",
        config_sha256="0" * 64,
        shards_sha256="1" * 64,
        defect_capture=dc.summary(),
    )
    assert_schema_v1(doc)
    # Strict JSON round trip (no NaN tokens, only builtin types).
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc


def test_config_hash_is_canonical():
    import ml_collections

    a = ml_collections.ConfigDict({"model": {"name": "lda_st", "m": 4}, "lr": 0.1})
    b = ml_collections.ConfigDict({"lr": 0.1, "model": {"m": 4, "name": "lda_st"}})
    assert metrics.config_hash(a) == metrics.config_hash(b)
    b.lr = 0.2
    assert metrics.config_hash(a) != metrics.config_hash(b)


def test_shards_fingerprint_tracks_info_and_sizes(tmp_path):
    d = tmp_path / "synth" / "1.0.0"
    d.mkdir(parents=True)
    (d / "dataset_info.json").write_text('{"name": "synth"}')
    (d / "synth-test.array_record-00000-of-00001").write_bytes(b"x" * 10)
    fp = metrics.shards_fingerprint(tmp_path)
    assert fp == metrics.shards_fingerprint(tmp_path)
    (d / "synth-test.array_record-00000-of-00001").write_bytes(b"x" * 11)
    fp2 = metrics.shards_fingerprint(tmp_path)
    assert fp2 != fp
    (d / "dataset_info.json").write_text('{"name": "synth2"}')
    assert metrics.shards_fingerprint(tmp_path) != fp2
    with pytest.raises(FileNotFoundError, match="does not exist"):
        metrics.shards_fingerprint(tmp_path / "nope")


def _build(root, shard_bytes=10):
    """A data_prep.build --out as far as the fingerprint reads it."""
    d = root / "lda_faces" / "synthetic_n3_s62" / "1.0.0"
    d.mkdir(parents=True)
    (d / "dataset_info.json").write_text('{"name": "lda_faces"}')
    (d / "features.json").write_text('{"image": "uint8"}')
    (d / "metadata.json").write_text('{"stack": 3}')
    (d / "labels.test.npy").write_bytes(b"\x00" * 8)
    (d / "lda_faces-test.array_record-00000-of-00001").write_bytes(b"x" * shard_bytes)
    (d / "build_args.json").write_text('{"root": "/videos/here"}')
    (root / "summary.json").write_text("{}")
    return d


def test_shards_fingerprint_is_the_builds_shards_only(tmp_path):
    builder = _build(tmp_path / "out")
    fp = metrics.shards_fingerprint(tmp_path / "out")
    # What data_prep.build keeps beside the shards is not the build: its face
    # cache (a stale one it advises deleting), temp files, a killed build's
    # incomplete.* folder, the source folder named in build_args.json.
    cache = tmp_path / "out" / "cache" / "f8_n3_s62_faces2"
    cache.mkdir(parents=True)
    (cache / "v0.npz").write_bytes(b"c" * 100)
    (builder / ".tmp-abc.npz").write_bytes(b"t")
    (builder / "labels.test.npy.tmp.npy").write_bytes(b"t")
    # data_prep.atomic_files' temp names: hidden, the file's name, then the writer.
    for name in ("labels.test.npy", "lda_faces-test.array_record-00000-of-00001"):
        (builder / f".{name}.tmp-somehost-1234-0123abcd").write_bytes(b"t")
    incomplete = builder.parent / "incomplete.ABC123_1.0.0"
    incomplete.mkdir()
    (incomplete / "dataset_info.json").write_text("{}")
    (builder / "build_args.json").write_text('{"root": "/videos/elsewhere"}')
    assert metrics.shards_fingerprint(tmp_path / "out") == fp
    import shutil

    shutil.rmtree(cache)  # as data_prep.build advises for a stale cache
    assert metrics.shards_fingerprint(tmp_path / "out") == fp
    # A copy of only the builder directory (or of lda_faces/) is the same build.
    shutil.copytree(builder, tmp_path / "copy")
    assert metrics.shards_fingerprint(tmp_path / "copy") == fp
    shutil.copytree(tmp_path / "out" / "lda_faces", tmp_path / "lf")
    assert metrics.shards_fingerprint(tmp_path / "lf") == fp
    # What is the build does count.
    for name, data in (
        ("lda_faces-test.array_record-00000-of-00001", b"x" * 11),
        ("features.json", '{"image": "uint16"}'),
        ("labels.test.npy", b"\x00" * 9),
    ):
        path = builder / name
        old = path.read_bytes()
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        assert metrics.shards_fingerprint(tmp_path / "out") != fp, name
        path.write_bytes(old)
    assert metrics.shards_fingerprint(tmp_path / "out") == fp
    # OUT/lda_faces a symlink (the shards on another disk): still read, so two
    # builds so laid out do not share one fingerprint.
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "lda_faces").symlink_to(tmp_path / "lf", target_is_directory=True)
    assert metrics.shards_fingerprint(tmp_path / "linked") == fp


def test_a_version_1_fingerprint_is_compared_in_its_version_or_unknown(tmp_path):
    out = tmp_path / "out"
    _build(out)
    cache = out / "cache" / "f8_n3_s62"
    cache.mkdir(parents=True)
    (cache / "v0.npz").write_bytes(b"c" * 100)
    old = metrics.legacy_shards_fingerprint(out)  # what a metrics.json of before holds
    new = metrics.shards_fingerprint(out)
    assert old != new
    version = metrics.FINGERPRINT_VERSION
    assert metrics.fingerprint_matches(new, version, out) is True
    assert metrics.fingerprint_matches(old, None, out) is True  # recomputed in version 1
    assert metrics.fingerprint_matches(new, None, out) is True  # unversioned, yet new
    (cache / "v0.npz").unlink()  # the cache deleted: version 1 moves, the build did not
    assert metrics.fingerprint_matches(old, None, out) is None  # cannot tell, not "rebuilt"
    assert metrics.fingerprint_matches("0" * 64, version, out) is False
    assert metrics.fingerprint_matches(None, version, out) is None


def test_demo_table_shows_every_variant_method_and_the_ablation():
    from ldattn_jax import demo

    results = {}
    for variant in ("xception", "lda_st"):
        doc, _ = metrics.metrics_document(
            _frame_cols(), dataset="ff", split="test", model=variant, checkpoint_step=7,
            checkpoint_which="best", config_sha256="0" * 64, shards_sha256="1" * 64,
        )  # fmt: skip
        results[variant] = {
            "metrics": doc, "metrics_json": f"/x/{variant}/metrics.json",
            "roc": f"/x/{variant}/roc.png", "out_dir": f"/x/{variant}", "attention": [],
            "calibration": f"/x/{variant}/calibration.png",
            "failures": [f"/x/{variant}/failures/real_0_v_f0.png"],
        }  # fmt: skip
    text = demo.table(results)
    needles = ["== xception (step 7) ==", "== lda_st (step 7) ==", "real+Deepfakes"]
    needles += ["real+NeuralTextures", "/x/lda_st/metrics.json", "== ablation: video AUC"]
    needles += ["/x/lda_st/calibration.png", "failures:     /x/lda_st/failures/ (1 PNGs"]
    for needle in needles:
        assert needle in text, needle
    auc = f"{results['lda_st']['metrics']['video']['auc']:.3f}"
    assert any(line.split()[:2] == ["lda_st", auc] for line in text.splitlines())


def _group_reference(ids, labels, scores, extra):
    """Plain-Python per-video table: mean score, label and extra columns per id."""
    table = {}
    for i, vid in enumerate(ids):
        row = table.setdefault(vid, {"label": labels[i], "scores": [], "order": len(table)})
        row["scores"].append(scores[i])
        for k, col in extra.items():
            row[k] = col[i]
    return table


def test_video_rows_stay_aligned_when_first_appearance_is_not_sorted_order():
    # Frames of videos interleaved, ids first seen in anti-alphabetical order:
    # every returned column must describe the same video, in first-appearance order.
    rng = np.random.default_rng(5)
    names = ["zeta", "alpha", "mid", "beta", "omega"]
    vid_label = {"zeta": 1, "alpha": 0, "mid": 1, "beta": 0, "omega": 1}
    ids = names + list(rng.choice(names, 25))
    labels = [vid_label[v] for v in ids]
    methods = ["real" if vid_label[v] == 0 else f"m_{v}" for v in ids]
    scores = rng.uniform(0, 1, len(ids))
    v = metrics.video_scores(ids, labels, scores, extra={"method": methods})
    ref = _group_reference(ids, labels, scores, {"method": methods})
    assert v["video_id"].tolist() == names  # first appearance, not np.unique's sorted order
    for j, vid in enumerate(v["video_id"]):
        assert v["label"][j] == ref[vid]["label"]
        assert v["method"][j] == ref[vid]["method"]
        assert v["num_frames"][j] == len(ref[vid]["scores"])
        assert v["score"][j] == pytest.approx(np.mean(ref[vid]["scores"]), abs=1e-12)


def test_video_level_subset_metrics_use_the_videos_of_that_subset():
    # Per-compression and per-method video metrics against sklearn on a video table
    # grouped independently; the two compressions score differently, so a subset
    # mask applied to the wrong videos changes the AUC.
    rng = np.random.default_rng(1)
    rows = []
    for comp, shift in (("c23", 0.4), ("c40", 0.05)):
        for method, label in (("real", 0), ("Deepfakes", 1), ("FaceSwap", 1)):
            for v in range(6):
                mu = 0.3 + shift * label * (2.0 if method == "FaceSwap" else 1.0)
                for _ in range(3):
                    rows.append((f"ff/{comp}/{method}/{v:03d}", label, method, comp, mu))
    ids, labels, methods, comps, mus = map(np.array, zip(*rows, strict=True))
    scores = np.clip(rng.normal(mus.astype(float), 0.15), 0, 1)
    fc = {"video_id": ids, "label": labels.astype(int), "score": scores}
    fc |= {"method": methods, "compression": comps}
    out, _ = metrics.compute_all(fc)
    ref = _group_reference(
        ids.tolist(), fc["label"], scores, {"method": methods, "compression": comps}
    )
    vids = sorted(ref)
    v_label = np.array([ref[v]["label"] for v in vids])
    v_score = np.array([np.mean(ref[v]["scores"]) for v in vids])
    v_method = np.array([ref[v]["method"] for v in vids])
    v_comp = np.array([ref[v]["compression"] for v in vids])
    assert out["video"]["auc"] == pytest.approx(skm.roc_auc_score(v_label, v_score), abs=1e-12)
    for comp in ("c23", "c40"):
        sel = v_comp == comp
        got = out["per_compression"][comp]
        assert got["video"]["auc"] == pytest.approx(
            skm.roc_auc_score(v_label[sel], v_score[sel]), abs=1e-12
        )
        assert got["video"]["counts"] == {"real": 6, "fake": 12}
        fsel = comps == comp
        assert got["frame"]["auc"] == pytest.approx(
            skm.roc_auc_score(fc["label"][fsel], scores[fsel]), abs=1e-12
        )
    for method in ("Deepfakes", "FaceSwap"):
        sel = (v_label == 0) | (v_method == method)
        assert out["per_method"][method]["video"]["auc"] == pytest.approx(
            skm.roc_auc_score(v_label[sel], v_score[sel]), abs=1e-12
        )
    assert out["per_compression"]["c23"]["video"]["auc"] != pytest.approx(
        out["per_compression"]["c40"]["video"]["auc"], abs=0.02
    )  # the check is able to fail: the subsets differ


@pytest.mark.parametrize("seed", [0, 1])
def test_calibration_matches_sklearns_reliability_curve(seed):
    from sklearn.calibration import calibration_curve

    labels, scores = _random_set(seed)
    scores[:20] = np.linspace(0, 1, 15 + 1).repeat(2)[:20]  # scores on bin edges too
    m = metrics.binary_metrics(labels, scores)
    assert m["brier"] == pytest.approx(skm.brier_score_loss(labels, scores), abs=1e-12)
    # ECE from sklearn's curve: per non-empty bin, the fraction of fakes and the
    # mean score; the bin of each point is found from its mean score's neighbours.
    frac, mean = calibration_curve(labels, scores, n_bins=metrics.ECE_BINS)
    ece = 0.0
    for f, p in zip(frac, mean, strict=True):
        # sklearn's bins: (edge_k, edge_k+1], the first one closed below.
        k = max(int(np.ceil(p * metrics.ECE_BINS)) - 1, 0)
        lo, hi = k / metrics.ECE_BINS, (k + 1) / metrics.ECE_BINS
        inside = ((scores > lo) | (k == 0)) & (scores <= hi)
        assert scores[inside].mean() == pytest.approx(p)
        ece += inside.mean() * abs(f - p)
    assert m["ece"] == pytest.approx(ece, abs=1e-12)


def test_calibration_hand_computable_cases():
    # A score of p that is fake p of the time: calibrated, whatever its AUC.
    labels = [0, 0, 0, 1, 0, 1, 1, 1]
    calibrated = metrics.binary_metrics(labels, [0.25] * 4 + [0.75] * 4)
    assert calibrated["ece"] == pytest.approx(0.0, abs=1e-12)
    # Always 0.9 on half fakes: well off by 0.4, with no ranking at all.
    constant = metrics.binary_metrics([0, 1] * 4, [0.9] * 8)
    assert constant["ece"] == pytest.approx(0.4) and constant["auc"] == 0.5
    assert constant["brier"] == pytest.approx((0.9**2 + 0.1**2) / 2)
    # Perfectly ranked, badly calibrated: AUC 1 does not make a probability.
    ranked = metrics.binary_metrics([0, 0, 1, 1], [0.6, 0.65, 0.7, 0.99])
    assert ranked["auc"] == 1.0 and ranked["ece"] == pytest.approx((0.6 + 0.65 + 0.3 + 0.01) / 4)
    # Defined on one class too (a per-method subset of a small split).
    one = metrics.binary_metrics([1, 1], [0.9, 0.5])
    assert one["ece"] == pytest.approx(0.3) and one["brier"] == pytest.approx(0.13)


def test_build_identity_reads_the_builds_summary(tmp_path):
    assert metrics.build_identity(tmp_path) is None  # no summary.json
    assert metrics.build_identity(None) is None
    (tmp_path / "summary.json").write_text('{"args": {"dataset": "ffpp", "compression": "c40"}}')
    assert metrics.build_identity(tmp_path) == {"dataset": "ffpp", "compression": "c40"}
    # Compression names FF++'s quality only; other readers ignore the flag.
    (tmp_path / "summary.json").write_text('{"args": {"dataset": "celebdf", "compression": "c23"}}')
    assert metrics.build_identity(str(tmp_path)) == {"dataset": "celebdf", "compression": None}
    (tmp_path / "summary.json").write_text("{not json")
    assert metrics.build_identity(tmp_path) is None
