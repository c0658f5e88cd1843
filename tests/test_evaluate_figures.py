"""ROC and attention-overlay figures render from plain arrays."""

import os

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


def test_attention_overlay_draws_the_clipped_mean_map_the_right_way_up(tmp_path, monkeypatch):
    # The docstring: the first row shows, per module, the mean of its m maps after
    # clipping negatives, bilinearly upsampled onto the face, and the mask outlined in
    # every panel. A map whose mass is in cell (row 0, column g - 1) must show in the
    # top-right of the drawn panel, as the face's own top-right corner is there: a map
    # drawn transposed or flipped would point at another part of the face.
    import cv2
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or str(path))
    size, g = 56, 4
    maps = np.zeros((2, g, g), np.float32)
    maps[0, 0, g - 1], maps[1, 0, g - 1] = 1.0, 0.5
    # Clipped then averaged: (1 + 0) / 2 = 0.5 here; averaging first then clipping
    # would give 0 (cell (1, 1), which stays below the peak either way).
    maps[0, 1, 1], maps[1, 1, 1] = 1.0, -3.0
    maps[1, g - 1, 0] = -2.0  # negative only: 0 after clipping
    mask = np.zeros((size, size), np.uint8)
    mask[30:45, 5:20] = 1  # rows 30-44, columns 5-19
    face = np.zeros((size, size, 3), np.uint8)  # black: the overlay's colours alone
    figures.attention_overlay(face, {"spatial": maps}, tmp_path / "o.png", mask=mask)
    (fig,) = drawn
    face_ax, map_ax = fig.axes
    assert map_ax.get_title() == "spatial: mean of 2 maps"

    # The plotted values: the clipped mean ([[0, 0, 0, .75], [0, .5, 0, 0], 0...]) resized
    # bilinearly to the face; placed on the face's pixels, row 0 at the top.
    mean = np.zeros((g, g), np.float32)
    mean[0, g - 1], mean[1, 1] = 0.75, 0.5
    want = cv2.resize(mean, (size, size), interpolation=cv2.INTER_LINEAR)
    _face_image, overlay = map_ax.get_images()
    np.testing.assert_allclose(np.asarray(overlay.get_array()), want, rtol=1e-6)
    assert tuple(overlay.get_extent()) == (0, size, size, 0)
    peak = np.unravel_index(np.argmax(want), want.shape)
    assert peak[0] < size // 2 <= peak[1]  # top-right quadrant (by the spec, not the code)

    # Rendered: over the black face, each map pixel is half of jet(value / max), so its
    # colour gives the value back (the nearest of jet's 256 colours); the decoded panel
    # must be the expected map, its peak in the panel's top-right quadrant.
    from matplotlib import colormaps

    FigureCanvasAgg(fig).draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(np.float32)
    x0, y0, x1, y1 = (int(round(v)) for v in map_ax.get_window_extent().extents)
    height = rgba.shape[0]
    panel = rgba[height - y1 : height - y0, x0:x1]  # display y grows upwards
    jet = 0.5 * 255 * colormaps["jet"](np.linspace(0, 1, 256))[:, :3]
    nearest = np.argmin(((panel[:, :, None, :] - jet) ** 2).sum(-1), axis=-1)
    seen = 0.75 * nearest / 255.0
    row, col = np.unravel_index(np.argmax(seen), seen.shape)
    assert row < seen.shape[0] / 2 < col, (row, col, seen.shape)
    expected = cv2.resize(want, seen.shape[::-1], interpolation=cv2.INTER_NEAREST)
    # 0.013 as drawn (the outline, resampling at the edges); 0.14 flipped or transposed.
    assert np.abs(seen - expected).mean() < 0.04

    # The mask's outline, in every panel, around rows 30-44 and columns 5-19 (the 0.5
    # level of the {0, 1} mask lies half a pixel outside them).
    for ax in (face_ax, map_ax):
        (outline,) = [c for c in ax.collections if hasattr(c, "levels")]
        xy = np.concatenate([p.vertices for p in outline.get_paths()])
        np.testing.assert_allclose(xy.min(0), [4.5, 29.5])
        np.testing.assert_allclose(xy.max(0), [19.5, 44.5])


def test_a_figure_cut_short_never_stands_under_its_name(tmp_path, monkeypatch):
    # A kill (or a full disk) while matplotlib writes: the earlier PNG stays whole.
    from matplotlib.figure import Figure

    path = tmp_path / "roc.png"
    figures.roc_figure({"video": (np.array([0, 1]), np.array([0.2, 0.8]))}, path)
    before = path.read_bytes()
    assert before.startswith(b"\x89PNG")

    def dies(self, fname, **kw):
        if isinstance(fname, str | os.PathLike):
            with open(fname, "wb") as f:
                f.write(b"\x89PNG half")
        else:
            fname.write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", dies)
    with pytest.raises(KeyboardInterrupt):
        figures.roc_figure({"video": (np.array([0, 1]), np.array([0.8, 0.2]))}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["roc.png"]
