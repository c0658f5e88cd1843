"""Figures from arrays: ROC curves (paper Fig. 7), reliability diagrams, attention
overlays (Figs. 2, 10, 11) and predict's score timelines.

Uses matplotlib's object API with the Agg canvas (no pyplot): no global
backend state, no display needed, safe in worker threads and on servers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn import metrics as skm


def _save(fig: Figure, path: str | os.PathLike) -> str:
    """Saves ``fig`` to ``path`` (format from its extension) through
    `json_out.atomic_open`: a kill or a full disk never leaves half a PNG
    under the name."""
    from ldattn_jax import json_out

    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    FigureCanvasAgg(fig)
    fmt = os.path.splitext(path)[1][1:].lower() or None  # None: matplotlib's default (png)
    with json_out.atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=100, format=fmt)
    return path


def roc_figure(curves: Mapping[str, tuple], path: str | os.PathLike, title: str = "") -> str:
    """One ROC plot with a curve per entry ``name -> (labels, scores)``.

    Entries with a single class (ROC undefined) are listed in the legend as
    such instead of being drawn.
    """
    fig = Figure(figsize=(4.8, 4.8))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", c="0.6", lw=1, label="chance")
    for name, (labels, scores) in curves.items():
        labels = np.asarray(labels)
        if len(np.unique(labels)) < 2:
            ax.plot([], [], label=f"{name}: one class, no ROC")
            continue
        fpr, tpr, _ = skm.roc_curve(labels, scores)
        auc = skm.auc(fpr, tpr)
        ax.plot(fpr, tpr, lw=2, label=f"{name} (AUC = {auc:.4f}, n = {labels.size})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate")
    ax.set_title(title or "ROC")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def reliability_figure(
    curves: Mapping[str, tuple], path: str | os.PathLike, title: str = ""
) -> str:
    """Reliability diagram: per entry ``name -> (labels, scores)``, the fraction
    of fakes against the mean P(fake) in each of metrics.ECE_BINS equal-width
    bins (scikit-learn's ``calibration_curve``), with its ECE in the legend.

    Points on the diagonal: a score of p is fake p of the time. A model that
    ranks well (ROC) can still lie far from it, e.g. trained on FF++'s four
    fakes per real; then its P(fake) is not a probability to read as such.
    """
    from sklearn.calibration import calibration_curve

    from ldattn_jax.metrics import ECE_BINS, expected_calibration_error

    fig = Figure(figsize=(4.8, 4.8))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", c="0.6", lw=1, label="calibrated")
    for name, (labels, scores) in curves.items():
        frac, mean = calibration_curve(labels, scores, n_bins=ECE_BINS)
        ece = expected_calibration_error(labels, scores)
        n = np.asarray(labels).size
        ax.plot(mean, frac, marker="o", lw=1.5, label=f"{name} (ECE = {ece:.4f}, n = {n})")
    ax.set(xlim=(0, 1), ylim=(-0.01, 1.01), xlabel="Mean P(fake) in bin", ylabel="Fraction fake")
    ax.set_title(title or "Reliability")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def upsample_map(attn: np.ndarray, size: int) -> np.ndarray:
    """[g, g] → [size, size] by bilinear resize (smooth for viewing, values kept)."""
    return cv2.resize(np.asarray(attn, np.float32), (size, size), interpolation=cv2.INTER_LINEAR)


def attention_overlay(
    face: np.ndarray,
    maps: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    title: str = "",
    mask: np.ndarray | None = None,
    each_map: bool = False,
) -> str:
    """Key frame beside its spatial / temporal maps overlaid, as one PNG.

    ``face`` is the key frame [S, S, 3] uint8; ``maps`` maps a module name
    ('spatial', 'temporal') to its [m, g, g] maps. The first row shows the
    face and, per module, the mean of the m maps (negatives clipped, as in
    defect capture) upsampled onto the face; with ``each_map`` a row per map
    follows. ``mask`` (the manipulated region, if known) is outlined in every
    panel so capture can be judged by eye.
    """
    face = np.asarray(face)
    if face.ndim != 3 or face.shape[-1] != 3:
        raise ValueError(f"attention_overlay: face must be [S, S, 3], got {face.shape}")
    size = face.shape[0]
    modules = list(maps)
    rows = 1 + (max(np.asarray(m).shape[0] for m in maps.values()) if each_map and maps else 0)
    cols = 1 + len(modules)
    fig = Figure(figsize=(2.6 * cols, 2.7 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()

    def panel(ax, attn, label):
        ax.imshow(face)
        if attn is not None:
            up = upsample_map(np.clip(attn, 0, None), size)
            ax.imshow(up, cmap="jet", alpha=0.5, extent=(0, size, size, 0))
        if mask is not None and np.any(mask):
            ax.contour(np.asarray(mask) > 0, levels=[0.5], colors="white", linewidths=1)
        ax.set_title(label, fontsize=8)

    panel(axes[0, 0], None, "face (key frame)")
    for j, name in enumerate(modules, start=1):
        m = np.asarray(maps[name], np.float32)
        panel(axes[0, j], m.clip(0, None).mean(0), f"{name}: mean of {m.shape[0]} maps")
        if each_map:
            for i in range(m.shape[0]):
                panel(axes[1 + i, j], m[i], f"{name} map {i}")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def score_timeline(
    lines: Mapping[str, tuple],
    threshold: float,
    path: str | os.PathLike,
    title: str = "",
    fps: float | None = None,
) -> str:
    """P(fake) of each scored key frame along a video: per entry ``name ->
    (frame indices, probabilities)`` one line (a face, with ``predict --faces
    all``), the decision threshold dashed; seconds on the x axis where ``fps``
    is known, else frame indices. Where in the video the evidence lies: a
    manipulation of a few seconds shows as a run of frames above the line that
    the video's mean score may dilute."""
    fig = Figure(figsize=(7.2, 3.0))
    ax = fig.add_subplot()
    for name, (frames, probs) in lines.items():
        x = np.asarray(frames, np.float64) / fps if fps else frames
        ax.plot(x, probs, marker="o", ms=3, lw=1.2, label=name)
    ax.axhline(threshold, ls="--", c="0.4", lw=1, label=f"threshold {threshold:.4g}")
    xlabel = f"time (s; frame / {fps:.4g} fps)" if fps else "frame"
    ax.set(ylim=(-0.02, 1.02), xlabel=xlabel, ylabel="P(fake)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="best", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
