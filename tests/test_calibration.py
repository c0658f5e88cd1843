"""Platt scaling at even odds: the fit, its cross-check, its measurement, its lookup."""

import numpy as np
import pytest
from scipy import special
from sklearn.calibration import _sigmoid_calibration
from test_thresholds import _val_doc as val_doc

from ldattn_jax import calibration, metrics, thresholds


def _two_gaussians(n_real, n_fake, seed, temperature=1.0, offset=0.0):
    """Video scores whose log-odds z are N(-1, 1) for reals and N(+1, 1) for fakes:
    the likelihood ratio of z is exp(2z), so the exact map at even odds is
    sigmoid(2 z). The model's score is sigmoid(z / temperature + offset): below
    1 over-confident, above under-confident; an offset as training at another
    class mix gives."""
    rng = np.random.default_rng(seed)
    z = np.concatenate([rng.normal(-1, 1, n_real), rng.normal(1, 1, n_fake)])
    labels = np.concatenate([np.zeros(n_real, int), np.ones(n_fake, int)])
    return labels, special.expit(z / temperature + offset), z


def test_the_fit_is_sklearns_platt_with_each_class_weighted_to_half():
    labels, scores, _ = _two_gaussians(60, 240, seed=0, temperature=2.0)
    got = calibration.fit(labels, scores)
    # sklearn's P = 1 / (1 + exp(A f + B)): ours is sigmoid(a f + b), a = -A, b = -B.
    big_a, big_b = _sigmoid_calibration(
        calibration.log_odds(scores), labels, sample_weight=calibration.even_odds_weights(labels)
    )
    assert got["method"] == calibration.METHOD
    assert got["a"] == pytest.approx(-big_a, abs=1e-4)
    assert got["b"] == pytest.approx(-big_b, abs=1e-4)
    assert got["counts"] == {"real": 60, "fake": 240}


def test_four_fakes_per_real_give_the_likelihood_ratio_not_the_splits_odds():
    # The exact map is sigmoid(2 z) whatever the class mix; a fit at the split's
    # own mix (4:1) would add log 4 = 1.39 to b.
    labels, scores, z = _two_gaussians(4000, 16000, seed=1, temperature=2.0)
    fit = calibration.fit(labels, scores)
    # scores = sigmoid(z / 2): logit(score) = z / 2, so a ~ 4, b ~ 0.
    assert fit["a"] == pytest.approx(4.0, rel=0.05) and abs(fit["b"]) < 0.08
    calibrated = calibration.apply(fit, scores)
    assert np.abs(calibrated - special.expit(2 * z)).max() < 0.03
    # Monotone: the ranking, and so AUC, is the raw score's.
    assert metrics.binary_metrics(labels, calibrated)["auc"] == pytest.approx(
        metrics.binary_metrics(labels, scores)["auc"]
    )


def test_a_split_that_separates_perfectly_still_gives_finite_probabilities():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9, 1.0])  # 1.0: a saturated softmax
    fit = calibration.fit(labels, scores)
    assert np.isfinite([fit["a"], fit["b"]]).all() and fit["a"] > 0
    p = calibration.apply(fit, scores)
    assert np.all((p > 0) & (p < 1)) and np.all(np.diff(p) > 0)
    # Platt's targets keep it from certainty (hard targets would drive a to infinity).
    assert p.max() < 0.99 and p.min() > 0.01


def test_one_class_has_no_map():
    assert calibration.fit([1, 1, 1], [0.2, 0.5, 0.9]) is None
    assert calibration.fit([0, 0], [0.2, 0.5]) is None


def test_even_odds_ece_weights_each_class_to_half():
    labels, _, z = _two_gaussians(2000, 8000, seed=2)
    exact = special.expit(2 * z)  # right at even odds, not at the split's 4:1
    w = calibration.even_odds_weights(labels)
    assert w[labels == 0].sum() == pytest.approx(w[labels == 1].sum())
    assert metrics.expected_calibration_error(labels, exact, sample_weight=w) < 0.02
    assert metrics.expected_calibration_error(labels, exact) > 0.1
    ones = np.ones(labels.size)
    assert metrics.expected_calibration_error(
        labels, exact, sample_weight=ones
    ) == metrics.expected_calibration_error(labels, exact)


def test_a_map_fitted_on_val_is_measured_on_another_split():
    # An over-confident model, offset towards fake: val's map brings it back on test
    # (to the sampling noise of 1,000 videos in 15 bins, ~0.04).
    val_labels, val_scores, _ = _two_gaussians(300, 1200, seed=3, temperature=0.5, offset=1.5)
    test_labels, test_scores, _ = _two_gaussians(200, 800, seed=4, temperature=0.5, offset=1.5)
    fit = calibration.fit(val_labels, val_scores)
    block = metrics.calibration_block(test_labels, test_scores, (fit, "eval/x/metrics.json"))
    applied = block["applied"]
    assert applied["source"] == "eval/x/metrics.json" and applied["a"] == fit["a"]
    assert applied["ece_even_odds_before"] > 0.15 and applied["ece_even_odds_after"] < 0.06
    assert block["fit"]["counts"] == {"real": 200, "fake": 800}
    # One class: nothing to measure at even odds, said as None.
    one = metrics.calibration_block([1, 1], [0.3, 0.9], (fit, "v"))
    assert one["fit"] is None and one["applied"]["ece_even_odds_after"] is None
    assert metrics.calibration_block([0, 1], [0.3, 0.9])["applied"] is None


def _val_doc(workdir, name, fit, *, step=7):
    """test_thresholds' val document with ``fit`` as its calibration ("absent": none)."""
    extra = {} if fit == "absent" else {"calibration": {"fit": fit, "applied": None}}
    return val_doc(workdir, name, step=step, eer=0.4, **extra)


def test_val_calibration_is_found_as_the_threshold_is_and_checked(tmp_path):
    fit = {"method": calibration.METHOD, "a": 1.5, "b": -0.25, "counts": {"real": 3, "fake": 9}}
    wd = tmp_path / "run"
    rel = _val_doc(wd, "synthetic_val_7", fit)
    _val_doc(wd, "synthetic_val_6", {**fit, "a": 9.0}, step=6)
    got, source = thresholds.val_calibration(str(wd), 7, "float32")
    assert source == rel and (got["a"], got["b"]) == (1.5, -0.25)
    with pytest.raises(FileNotFoundError, match="--calibration val: no val evaluation of "):
        thresholds.val_calibration(str(wd), 8, "float32")

    for i, (bad, message) in enumerate(
        [
            # A val result of an older version: named, with its error, not skipped.
            ("absent", "unreadable, so not used: eval/synthetic_val_7/metrics.json \\(KeyError"),
            (None, "has no calibration \\(its val split lacks a class\\)"),
            ({**fit, "a": None}, "synthetic_val_7/metrics.json gives calibration.fit without a"),
            ({**fit, "method": "isotonic"}, "not a platt_even_odds map; remove that directory"),
        ]
    ):
        other = tmp_path / f"run{i}"
        _val_doc(other, "synthetic_val_7", bad)
        with pytest.raises((FileNotFoundError, ValueError), match=message):
            thresholds.val_calibration(str(other), 7, "float32")
    # Two val results that disagree.
    _val_doc(wd, "synthetic_val_7_t0.3", {**fit, "b": 0.5})
    with pytest.raises(ValueError, match="disagree on the calibration"):
        thresholds.val_calibration(str(wd), 7, "float32")


def test_calibration_val_is_refused_on_the_val_split_itself():
    import ml_collections

    config = ml_collections.ConfigDict({"data": {"val_split": "val", "dir": ""}})
    with pytest.raises(ValueError, match="--calibration val on the val split itself"):
        thresholds.resolve_calibration("val", config, "/nowhere", 7, splits=("val",))
    assert thresholds.resolve_calibration(None, config, "/nowhere", 7, splits=("val",)) is None


def test_a_confident_models_scores_keep_their_log_odds_and_fit():
    # evaluate keeps P(fake) in float64 from the logit margin: margins of 20 and
    # 30 are different videos, and a clip at 1e-7 made them one (log-odds 16.1).
    margins = np.array([-30.0, -20.0, -5.0, 5.0, 20.0, 30.0])
    assert calibration.log_odds(special.expit(margins)) == pytest.approx(margins, abs=5e-3)
    # A confident model (margins ~ N(+-20, 8)): the fit on its scores is the fit on
    # its exact margins, so a calibrated value rises with the margin beyond 16.
    rng = np.random.default_rng(3)
    z = np.concatenate([rng.normal(-20, 8, 140), rng.normal(20, 8, 560)])
    z = np.clip(z, -35, 35)  # within float64's resolution next to 1
    labels = np.concatenate([np.zeros(140, int), np.ones(560, int)])
    got = calibration.fit(labels, special.expit(z))
    big_a, big_b = _sigmoid_calibration(
        z, labels, sample_weight=calibration.even_odds_weights(labels)
    )
    assert got["a"] == pytest.approx(-big_a, rel=1e-3)
    assert got["b"] == pytest.approx(-big_b, abs=1e-3)
    p = calibration.apply(got, special.expit(np.array([18.0, 25.0, 30.0])))
    assert np.all(np.diff(p) > 0)
