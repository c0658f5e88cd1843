"""ROC and attention-overlay figures render from plain arrays."""

import numpy as np
import pytest
from matplotlib.image import imread

from ldattn_jax import figures


def test_roc_figure_writes_png_and_tolerates_one_class(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    scores = rng.random(50)
    path = figures.roc_figure(
        {"frame": (labels, scores), "video": (np.ones(3, int), [0.2, 0.5, 0.9])},
        tmp_path / "roc.png",
    )
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_attention_overlay_panels(tmp_path):
    rng = np.random.default_rng(0)
    face = rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)
    maps = {"spatial": rng.random((4, 7, 7)), "temporal": rng.random((4, 7, 7)) - 0.5}
    mask = np.zeros((56, 56), np.uint8)
    mask[10:20, 10:30] = 1
    one_row = imread(figures.attention_overlay(face, maps, tmp_path / "a.png", "fake", mask))
    grid = imread(figures.attention_overlay(face, maps, tmp_path / "b.png", each_map=True))
    # 3 panels side by side; each_map adds one row per map (1 + 4 rows).
    assert one_row.shape[1] > one_row.shape[0]
    assert grid.shape[0] > 4 * one_row.shape[0]
    with pytest.raises(ValueError, match=r"\[S, S, 3\]"):
        figures.attention_overlay(face[..., 0], maps, tmp_path / "c.png")


def test_roc_figure_draws_each_curve_from_its_own_labels_and_scores(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or str(path))
    # By hand: threshold 0.8 catches one fake, 0.4 one real, 0.35 the other fake.
    video = ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    # Reversed scores: every fake below every real, AUC 0.
    frame = ([1, 1, 0, 0, 0], [0.1, 0.2, 0.3, 0.6, 0.9])
    figures.roc_figure({"video": video, "frame": frame, "one": ([1, 1], [0.2, 0.3])}, tmp_path)
    (ax,) = drawn[0].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"chance", "video (AUC = 0.7500, n = 4)", "frame (AUC = 0.0000, n = 5)",
                          "one: one class, no ROC"}  # fmt: skip
    v = lines["video (AUC = 0.7500, n = 4)"]
    corners = {(x, y) for x, y in zip(v.get_xdata(), v.get_ydata(), strict=True)}
    assert {(0, 0), (0, 0.5), (0.5, 0.5), (0.5, 1), (1, 1)} <= corners
    f = lines["frame (AUC = 0.0000, n = 5)"]
    points = list(zip(f.get_xdata(), f.get_ydata(), strict=True))
    assert (1, 0) in points and all(y == 0 for x, y in points if x < 1)  # no fake caught early
    assert len(lines["one: one class, no ROC"].get_xdata()) == 0


def test_reliability_figure_plots_sklearns_curve_with_the_ece(tmp_path, monkeypatch):
    from sklearn.calibration import calibration_curve

    from ldattn_jax import metrics

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or str(path))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.2, 200), 0, 1)
    one = ([1, 1, 1], [0.2, 0.5, 0.9])  # one class: still a curve (all fake)
    figures.reliability_figure({"frame": (labels, scores), "one": one}, tmp_path / "c.png")
    (ax,) = drawn[0].axes
    lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines()}
    assert set(lines) == {"calibrated", "frame", "one"}
    frac, mean = calibration_curve(labels, scores, n_bins=metrics.ECE_BINS)
    np.testing.assert_allclose(lines["frame"].get_xdata(), mean)
    np.testing.assert_allclose(lines["frame"].get_ydata(), frac)
    ece = metrics.expected_calibration_error(labels, scores)
    assert lines["frame"].get_label() == f"frame (ECE = {ece:.4f}, n = 200)"
    assert list(lines["one"].get_ydata()) == [1, 1, 1]
    monkeypatch.undo()
    img = imread(figures.reliability_figure({"frame": (labels, scores)}, tmp_path / "c.png"))
    assert img.ndim == 3 and img.shape[0] > 100
