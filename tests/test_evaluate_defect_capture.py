"""Defect capture scores from attention maps + manipulated-region masks (paper V-D)."""

import numpy as np
import pytest

from ldattn_jax import defect_capture as dcap


def test_mask_to_grid_is_area_fraction():
    mask = np.zeros((28, 28), np.uint8)
    mask[:7, :14] = 255  # 14 px cells: the top-left cell is half covered
    frac = dcap.mask_to_grid(mask, 2)
    np.testing.assert_allclose(frac, [[0.5, 0.0], [0.0, 0.0]])
    # Non-multiple sizes: total covered area is preserved.
    rng = np.random.default_rng(0)
    mask = (rng.random((118, 118)) > 0.7).astype(np.uint8)
    frac = dcap.mask_to_grid(mask, 14)
    assert frac.shape == (14, 14)
    assert frac.mean() == pytest.approx((mask > 0).mean(), abs=1e-3)
    with pytest.raises(ValueError, match=r"\[S, S\]"):
        dcap.mask_to_grid(np.zeros((2, 4, 4)), 2)


def test_capture_scores_hand_cases():
    frac = np.zeros((1, 4, 4))
    frac[0, 0, 0] = 1.0  # one of 16 cells manipulated
    peaked = np.zeros((1, 4, 4))
    peaked[0, 0, 0] = 3.0
    peaked[0, 3, 3] = 1.0
    s = dcap.capture_scores(peaked, frac)
    assert s["mass_share"][0] == pytest.approx(0.75)
    assert s["pointing_hit"][0] == 1.0
    assert s["mass_share_uniform"][0] == pytest.approx(1 / 16)
    assert s["pointing_uniform"][0] == pytest.approx(1 / 16)
    # A flat map scores exactly its uniform baseline (ties broken in expectation).
    flat = dcap.capture_scores(np.ones((1, 4, 4)), frac)
    assert flat["mass_share"][0] == pytest.approx(1 / 16)
    assert flat["pointing_hit"][0] == pytest.approx(1 / 16)
    assert flat["map_contrast"][0] == 0.0 and s["map_contrast"][0] == pytest.approx(3 / (4 / 16))
    # Negative cells are clipped: a big negative elsewhere does not inflate the share.
    neg = peaked.copy()
    neg[0, 1, 1] = -100.0
    assert dcap.capture_scores(neg, frac)["mass_share"][0] == pytest.approx(0.75)
    # Peak outside the mask misses.
    miss = dcap.capture_scores(peaked[:, ::-1, ::-1].copy(), frac)
    assert miss["pointing_hit"][0] == 0.0 and miss["mass_share"][0] == pytest.approx(0.25)


def test_accumulator_per_method_and_module_only_fakes_with_masks():
    g, s = 4, 16
    masks = np.zeros((4, s, s), np.uint8)
    masks[:, :4, :4] = 1  # exactly cell (0, 0)
    good = np.zeros((4, 2, g, g))
    good[:, :, 0, 0] = 1.0  # all mass in the mask
    maps = {"spatial": good, "temporal": np.ones((4, 2, g, g))}
    acc = dcap.DefectCapture()
    acc.add(
        maps,
        masks,
        has_mask=[True, True, True, False],
        labels=[1, 1, 0, 1],  # the real one and the mask-less fake are ignored
        methods=["blur", "eyes", "real", "blur"],
    )
    out = acc.summary()
    assert out["available"] and out["grid"] == g and out["clip_negative"]
    sp, tp = out["modules"]["spatial"], out["modules"]["temporal"]
    assert sp["all"]["n"] == 2 and sorted(sp["per_method"]) == ["blur", "eyes"]
    assert sp["all"]["mass_share"] == 1.0 and sp["all"]["pointing_hit_rate"] == 1.0
    assert tp["all"]["mass_share"] == pytest.approx(1 / 16)
    assert tp["all"]["mass_share"] == pytest.approx(tp["all"]["mass_share_uniform"])
    assert tp["all"]["pointing_hit_rate"] == pytest.approx(tp["all"]["pointing_uniform"])


def test_no_masks_reports_unavailable_with_reason():
    acc = dcap.DefectCapture()
    acc.add(
        {"spatial": np.ones((2, 1, 2, 2))}, np.zeros((2, 4, 4)), [False, False], [1, 1], ["a"] * 2
    )
    out = acc.summary()
    assert not out["available"] and "mask" in out["reason"] and out["modules"] == {}
