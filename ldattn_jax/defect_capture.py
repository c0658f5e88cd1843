"""Defect capture as a number (paper V-D, Fig. 8, made measurable).

The paper shows qualitatively that the attention maps light up the tampered
region. On data with manipulated-region masks (the synthetic set; FF++ with its
mask videos, data_prep.masks) we measure it, for fakes, per manipulation method
and per attention module:

- attention mass share: sum(map * mask_frac) / sum(map), where ``mask_frac``
  is the fraction of each g x g attention cell covered by the mask;
- pointing game: does the map's peak cell overlap the mask?

Each is reported beside the same number for a uniform map (the chance level):
mass share = mean mask fraction, pointing = share of cells that overlap the
mask. A module that "captures the defect" beats its uniform baseline.

Maps are N * (linear combination of softmaxes) and the 1x1 combination can
have negative weights, so a map can have negative cells; negatives are
clipped to 0 before normalising (a negative weight is suppression, not
attention). The m maps of a module are reduced by their mean (after
clipping), the same map the overlays show.
"""

from __future__ import annotations

from collections import defaultdict

import cv2
import numpy as np

MODULES = ("spatial", "temporal")
STAT_KEYS = (
    "n",
    "mass_share",
    "mass_share_uniform",
    "pointing_hit_rate",
    "pointing_uniform",
    "map_contrast",
)


def mask_to_grid(mask: np.ndarray, grid: int) -> np.ndarray:
    """[S, S] mask (any non-zero = manipulated) → [g, g] covered fraction per cell.

    Area interpolation averages exactly over each cell's footprint, also
    when S is not a multiple of g.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask_to_grid: mask must be [S, S], got shape {mask.shape}")
    binary = (mask > 0).astype(np.float32)
    if binary.shape == (grid, grid):
        return binary
    return cv2.resize(binary, (grid, grid), interpolation=cv2.INTER_AREA).clip(0.0, 1.0)


def reduce_maps(maps: np.ndarray) -> np.ndarray:
    """[..., m, g, g] → [..., g, g]: clip negatives, then mean over the m maps."""
    return np.clip(np.asarray(maps, dtype=np.float64), 0.0, None).mean(axis=-3)


def capture_scores(attn: np.ndarray, mask_frac: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample scores for reduced maps ``attn`` [B, g, g] and ``mask_frac`` [B, g, g].

    Ties for the peak (e.g. a flat map) are scored as the expected hit of
    breaking them at random, so a flat map scores exactly its uniform
    baseline instead of whatever cell ``argmax`` happens to return first.
    """
    a = np.clip(np.asarray(attn, dtype=np.float64), 0.0, None)
    f = np.asarray(mask_frac, dtype=np.float64)
    if a.shape != f.shape or a.ndim != 3:
        raise ValueError(
            f"capture_scores: maps {a.shape} and mask fractions {f.shape} must both be [B, g, g]"
        )
    b = a.shape[0]
    a, f = a.reshape(b, -1), f.reshape(b, -1)
    covered = f > 0
    uniform_mass = f.mean(axis=1)
    uniform_point = covered.mean(axis=1)
    total = a.sum(axis=1)
    flat = total <= 0  # all-zero map after clipping carries no preference
    mass = np.where(flat, uniform_mass, (a * f).sum(axis=1) / np.where(flat, 1.0, total))
    peak = a.max(axis=1, keepdims=True)
    at_peak = np.isclose(a, peak, rtol=1e-6, atol=0.0) | (flat[:, None])
    hit = (at_peak & covered).sum(axis=1) / at_peak.sum(axis=1)
    # (max - min) / mean: 0 for a flat map. A near-flat map (e.g. right after
    # init, when every map is ~1) has a "peak" decided by noise, so its pointing
    # score says nothing; the contrast tells the reader whether it does.
    contrast = np.where(
        flat, 0.0, (a.max(axis=1) - a.min(axis=1)) / np.maximum(a.mean(axis=1), 1e-30)
    )
    return {
        "mass_share": mass,
        "mass_share_uniform": uniform_mass,
        "pointing_hit": hit,
        "pointing_uniform": uniform_point,
        "map_contrast": contrast,
    }


def _summary(rows: list[dict[str, np.ndarray]]) -> dict:
    if not rows:
        return {k: (0 if k == "n" else None) for k in STAT_KEYS}
    cat = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    return {
        "n": int(cat["mass_share"].size),
        "mass_share": float(cat["mass_share"].mean()),
        "mass_share_uniform": float(cat["mass_share_uniform"].mean()),
        "pointing_hit_rate": float(cat["pointing_hit"].mean()),
        "pointing_uniform": float(cat["pointing_uniform"].mean()),
        "map_contrast": float(cat["map_contrast"].mean()),
    }


class DefectCapture:
    """Accumulates capture scores over eval batches; :meth:`summary` → metrics.json block."""

    def __init__(self):
        self._rows: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        self._grid: int | None = None
        self._skipped_empty = 0

    def add(self, maps: dict, masks, has_mask, labels, methods) -> None:
        """One batch. ``maps``: module → [B, m, g, g]; masks [B, S, S]; others [B]."""
        labels = np.asarray(labels)
        keep = np.asarray(has_mask, dtype=bool) & (labels == 1)
        if not keep.any() or not maps:
            return
        masks = np.asarray(masks)[keep]
        methods = np.asarray(methods).astype(str)[keep]
        grid = next(iter(maps.values())).shape[-1]
        self._grid = grid
        fracs = np.stack([mask_to_grid(m, grid) for m in masks])
        nonempty = fracs.reshape(len(fracs), -1).max(axis=1) > 0
        self._skipped_empty += int((~nonempty).sum())
        if not nonempty.any():
            return
        fracs, methods = fracs[nonempty], methods[nonempty]
        for module, m in maps.items():
            attn = reduce_maps(np.asarray(m)[keep][nonempty])
            scores = capture_scores(attn, fracs)
            for method in np.unique(methods):
                sel = methods == method
                self._rows[module][str(method)].append({k: v[sel] for k, v in scores.items()})

    def summary(self) -> dict:
        """{available, reason, grid, clip_negative, skipped_empty_masks, modules}."""
        modules = {}
        for module in sorted(self._rows):
            per_method = {m: _summary(r) for m, r in sorted(self._rows[module].items())}
            everything = [row for rows in self._rows[module].values() for row in rows]
            modules[module] = {"all": _summary(everything), "per_method": per_method}
        available = bool(modules)
        return {
            "available": available,
            "reason": None
            if available
            else "no fake sample with a manipulated-region mask (has_mask) and attention maps",
            "grid": self._grid,
            "clip_negative": True,
            "skipped_empty_masks": self._skipped_empty,
            "modules": modules,
        }
