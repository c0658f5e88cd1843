"""On-device input views: normalisation and the attention-size resize.

``jax.image.resize`` implements an antialiased resize as a dense matrix
product: 398 -> 224 costs 224*398*398*3 + 224*224*398*3 = 166 M multiply-adds
per frame, more than the whole spatial attention module's patch embedding.
The triangle filter touches only ~4 input pixels per output pixel, so
``resize_square`` gathers that band and weights it: the same numbers (the
weights are read off jax.image.resize itself) for ~2 M multiply-adds.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def normalize(frames: jax.Array) -> jax.Array:
    """uint8 / 0..255 -> [-1, 1] (Keras Xception's and Google ViT's normalisation)."""
    return frames.astype(jnp.float32) / 127.5 - 1.0


@functools.cache
def resize_band(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices [out, K], weights [out, K]) of jax.image.resize(bilinear, antialias) on one axis."""
    # Evaluated eagerly even when first called under jit: the band is a constant.
    with jax.ensure_compile_time_eval():
        dense = np.asarray(
            jax.image.resize(
                np.eye(in_size, dtype=np.float32),
                (out_size, in_size),
                method="bilinear",
                antialias=True,
            )
        )
    nz = np.abs(dense) > 0
    first = nz.argmax(axis=1)
    last = in_size - 1 - nz[:, ::-1].argmax(axis=1)
    k = int((last - first).max()) + 1
    idx = np.minimum(first[:, None] + np.arange(k)[None, :], in_size - 1)
    weights = np.take_along_axis(dense, idx, axis=1)
    # Columns past a row's span were clipped onto a valid pixel: zero their weight.
    weights[first[:, None] + np.arange(k)[None, :] > last[:, None]] = 0.0
    return idx.astype(np.int32), weights.astype(np.float32)


def resize_square(x: jax.Array, size: int) -> jax.Array:
    """Bilinear antialiased resize of [..., S, S, C] to [..., size, size, C] (float32)."""
    s = x.shape[-2]
    if x.shape[-3] != s:
        raise ValueError(f"resize_square needs square images, got {x.shape[-3]}x{s}")
    if s == size:
        return x.astype(jnp.float32)
    idx, w = resize_band(s, size)
    x = x.astype(jnp.float32)
    # Height: gather the band [.., size, K, S, C] and contract K.
    x = jnp.einsum("...akwc,ak->...awc", x[..., idx, :, :], w)
    # Width.
    return jnp.einsum("...hakc,ak->...hac", x[..., :, idx, :], w)
