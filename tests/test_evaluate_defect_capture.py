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


def test_pointing_game_counts_overlap_not_coverage():
    # Paper V-D / the module's definition: a hit is a peak cell that overlaps the
    # mask at all; the chance level is the share of cells that overlap it.
    frac = np.array([[[0.25, 0.0], [0.0, 0.0]]])  # a quarter of cell (0, 0) manipulated
    attn = np.array([[[4.0, 1.0], [1.0, 1.0]]])
    s = dcap.capture_scores(attn, frac)
    assert s["pointing_hit"][0] == 1.0  # the peak lies on the mask: a full hit
    assert s["pointing_uniform"][0] == pytest.approx(1 / 4)  # 1 of 4 cells overlaps
    assert s["mass_share"][0] == pytest.approx(4 * 0.25 / 7)  # mass is area-weighted
    assert s["mass_share_uniform"][0] == pytest.approx(0.25 / 4)
    # Two tied peaks, one on the mask: the expected hit of a random tie-break.
    tied = dcap.capture_scores(np.array([[[4.0, 4.0], [1.0, 1.0]]]), frac)
    assert tied["pointing_hit"][0] == pytest.approx(0.5)


def test_maps_are_clipped_before_they_are_averaged():
    # A negative map (suppression) must not cancel another map's attention.
    maps = np.array([[[[2.0, 0.0], [0.0, 0.0]], [[-2.0, 0.0], [0.0, 1.0]]]])  # [B=1, m=2, 2, 2]
    np.testing.assert_allclose(dcap.reduce_maps(maps), [[[1.0, 0.0], [0.0, 0.5]]])
    acc = dcap.DefectCapture()
    mask = np.zeros((1, 4, 4), np.uint8)
    mask[0, :2, :2] = 1  # cell (0, 0)
    acc.add({"spatial": maps}, mask, [True], [1], ["m"])
    assert acc.summary()["modules"]["spatial"]["all"]["mass_share"] == pytest.approx(1 / 1.5)


def test_fakes_with_an_empty_mask_are_skipped_and_rows_stay_aligned():
    # An all-zero mask (e.g. a frame where the manipulation left no trace) has no
    # region to capture: it is counted as skipped, and the maps of the remaining
    # samples must still be scored against their own masks.
    g, s = 2, 8
    masks = np.zeros((3, s, s), np.uint8)
    masks[1, :4, :4] = 1  # sample 1: cell (0, 0)
    masks[2, 4:, 4:] = 1  # sample 2: cell (1, 1)
    maps = np.zeros((3, 1, g, g))
    maps[0, 0, 1, 1] = 1.0  # sample 0 (empty mask): anything
    maps[1, 0, 0, 0] = 1.0  # on its mask
    maps[2, 0, 1, 1] = 1.0  # on its mask
    acc = dcap.DefectCapture()
    acc.add({"spatial": maps}, masks, [True] * 3, [1] * 3, ["a", "a", "b"])
    out = acc.summary()
    assert out["skipped_empty_masks"] == 1
    sp = out["modules"]["spatial"]
    assert sp["all"]["n"] == 2 and sp["per_method"]["a"]["n"] == 1
    assert sp["all"]["mass_share"] == 1.0 and sp["all"]["pointing_hit_rate"] == 1.0
