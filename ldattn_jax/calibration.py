"""A video's fake probability an analyst can read as one: Platt scaling at even odds.

The model's P(fake) ranks videos well but is not a probability to quote: its
training's class mix (FF++ holds four fakes per real; Celeb-DF and DFDC are
balanced by loss weights) and the usual over-confidence of a network bend it.
``evaluate`` fits, on a split's *videos*, the map

    P_even(fake | s) = sigmoid(a * logit(s) + b)        s: the video score

by Platt's method (Platt 1999: maximum likelihood with the targets of each
class pulled towards the other by one sample, so that a split whose classes
separate perfectly still gives a finite map), each class weighted to half the
total: the fitted probability is P(fake | score) for a video that is fake or
real at even odds, i.e. the likelihood ratio LR of the score as LR / (1 + LR).
Why even odds and not the split's own mix: the mix of a validation split says
how a dataset was made, not how likely a suspect video is to be fake. An
analyst with prior odds O (fakes per real) multiplies the even-odds odds by O.

The map is monotone increasing where a > 0 (any detector that ranks fakes
above reals on val), so it changes no ranking: AUC, and the verdict at a
threshold, are those of the raw score; predict warns when a is not positive.
``predict --calibration val`` reports it beside the raw score, fitted on the
run's own val split (looked up as ``--threshold val`` is,
`ldattn_jax.thresholds`); ``evaluate --calibration val`` measures on another
split whether it holds there (ECE at even odds, before and after).

The fit uses scipy's L-BFGS on the two parameters: scikit-learn's Platt fit
(``CalibratedClassifierCV(method="sigmoid")``) needs a fitted classifier to
wrap and its function is private; tests cross-check ours against it.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special

METHOD = "platt_even_odds"
# Scores of exactly 0 or 1 would have infinite log-odds. The clip is float64's
# resolution next to 1, not a round 1e-7: evaluate and predict compute P(fake)
# in float64 from the logit margin so that a confident model's scores stay
# apart, and a 1e-7 clip would fold every margin above ~16 into one value (and
# bend the fit of a confident model, whose videos mostly sit there). log-odds
# thus span +-36, the margins float64 can still tell apart near 1.
_EPS = float(np.finfo(np.float64).eps)


def log_odds(scores) -> np.ndarray:
    s = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(s) - np.log1p(-s)


def even_odds_weights(labels) -> np.ndarray:
    """Per-sample weights that give each class half of the total (n / 2 each)."""
    labels = np.asarray(labels)
    n, n_fake = labels.size, int(labels.sum())
    return np.where(labels == 1, n / (2.0 * n_fake), n / (2.0 * (n - n_fake)))


def fit(labels, scores) -> dict | None:
    """Platt's map at even odds from video ``labels`` (1 = fake) and ``scores``
    (P(fake), checked by the caller); None when a class is missing (nothing to
    tell apart)."""
    labels = np.asarray(labels)
    n_fake = int(labels.sum())
    n_real = int(labels.size) - n_fake
    if not n_fake or not n_real:
        return None
    x = log_odds(scores)
    w = even_odds_weights(labels)
    # Platt's targets: (N+ + 1) / (N+ + 2) for fakes, 1 / (N- + 2) for reals, with
    # N the weighted count (n / 2 for both at even odds).
    half = labels.size / 2.0
    target = np.where(labels == 1, (half + 1.0) / (half + 2.0), 1.0 / (half + 2.0))

    def loss_and_grad(ab):
        z = ab[0] * x + ab[1]
        # Weighted binary cross-entropy with soft targets, computed stably.
        loss = np.sum(w * (np.logaddexp(0.0, z) - target * z))
        g = w * (special.expit(z) - target)
        return loss, np.array([g @ x, g.sum()])

    res = optimize.minimize(
        loss_and_grad,
        np.zeros(2),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-10, "ftol": 1e-14},
    )
    a, b = (float(v) for v in res.x)
    return {"method": METHOD, "a": a, "b": b, "counts": {"real": n_real, "fake": n_fake}}


def apply(calibration: dict, scores) -> np.ndarray:
    """The even-odds probability of each score under a `fit` map."""
    z = calibration["a"] * log_odds(scores) + calibration["b"]
    return special.expit(z)


def validate(value) -> dict:
    """A map read from a file: a dict of this method with finite ``a`` and ``b``,
    else ValueError saying what is wrong."""
    if not isinstance(value, dict) or value.get("method") != METHOD:
        raise ValueError(f"gives calibration.fit = {value!r}, not a {METHOD} map")
    try:
        a, b = float(value["a"]), float(value["b"])
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(f"gives calibration.fit without a number: {e!r}") from None
    if not (np.isfinite(a) and np.isfinite(b)):
        raise ValueError(f"gives calibration.fit with a non-finite parameter (a={a}, b={b})")
    out = {"method": METHOD, "a": a, "b": b}
    counts = value.get("counts")
    if isinstance(counts, dict) and all(isinstance(counts.get(k), int) for k in ("real", "fake")):
        out["counts"] = {"real": counts["real"], "fake": counts["fake"]}  # how firm the map is
    return out
