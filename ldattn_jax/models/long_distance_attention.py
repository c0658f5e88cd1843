"""Long-distance attention (paper IV-B) and how its maps re-weight features (VI-D).

One module = the class-token-to-patch attention of one ViT layer, per head:

    z_i  = PatchEmbed(p_i) + pos_i                      (16x16 patches -> D)
    x_i^k = U_k LN(z_i)                                  (head k's key projection, D -> d)
    a_k(i) = softmax_i(<t_k, x_i^k> / sqrt(d))           (template t_k "consults" patch i)
    A_j  = sum_k w_jk (N a_k) + b_j                      (1x1 conv 12 -> m, w init 1/12)

With ``slots`` > 1 (temporal model) the frame and the n motion residuals are
patchified with the same embedding into one sequence of slots*N tokens; the
softmax runs over all of them and the activation of a region is the sum over
its slots, so each a_k is still a distribution over the g x g regions.
See models/README.md for why each choice was made.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class PatchEmbed(nnx.Module):
    """The "trainable linear projection of flattened patches" (= a p x p conv, stride p).

    Kernel in Google's ViT layout ``embedding/kernel`` [p, p, 3, D]. Written as an
    einsum over [B, slots, g, p, g, p, 3] so the batch axis is never merged with
    another axis (a batch-sharded input stays sharded under explicit sharding).
    """

    def __init__(self, patch_size: int, embed_dim: int, *, dtype, rngs: nnx.Rngs):
        self.patch_size = patch_size
        self.dtype = dtype
        self.kernel = nnx.Param(
            nnx.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=3)(
                rngs.params(), (patch_size, patch_size, 3, embed_dim)
            )
        )
        self.bias = nnx.Param(jnp.zeros((embed_dim,)))

    def __call__(self, images: jax.Array) -> jax.Array:
        """[B, S, H, W, 3] -> [B, S, H/p, W/p, D]."""
        b, s, h, w, c = images.shape
        p = self.patch_size
        x = images.astype(self.dtype).reshape(b, s, h // p, p, w // p, p, c)
        z = jnp.einsum("bsipjqc,pqcd->bsijd", x, self.kernel[...].astype(self.dtype))
        return z + self.bias[...].astype(self.dtype)


class LongDistanceAttention(nnx.Module):
    """Maps [B, m, g, g] (float32, mean 1 at init) from images [B, slots, S, S, 3].

    Args:
      image_size: S, side of the (square) attention input (224 in the paper).
      patch_size: side of a patch (16): grid g = S // patch_size.
      slots: images per sample patchified into one sequence (1 spatial, n+1 temporal).
      embed_dim: D (768 for ViT-B).
      num_templates: number of templates / heads (12); head dim d = D / num_templates.
      num_maps: m, maps after the 1x1 combination (4).
      template_init_std: std of the random templates (when no ViT weights load).
      dtype: compute dtype of the projections; softmax and maps are float32.
    """

    def __init__(
        self,
        *,
        image_size: int = 224,
        patch_size: int = 16,
        slots: int = 1,
        embed_dim: int = 768,
        num_templates: int = 12,
        num_maps: int = 4,
        template_init_std: float = 0.02,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if image_size % patch_size:
            raise ValueError(
                f"attention_size {image_size} is not a multiple of patch_size {patch_size}"
            )
        if not template_init_std >= 0:
            raise ValueError(
                f"config.model.template_init_std={template_init_std} must be >= 0 "
                "(0.02 = ViT's init; larger gives peaked maps from the first step)"
            )
        if embed_dim % num_templates:
            raise ValueError(
                f"embed_dim {embed_dim} must be divisible by num_templates {num_templates}"
            )
        self.grid = image_size // patch_size
        self.slots = slots
        self.num_templates = num_templates
        self.head_dim = embed_dim // num_templates
        self.dtype = jnp.dtype(dtype)
        self.patch_embed = PatchEmbed(patch_size, embed_dim, dtype=dtype, rngs=rngs)
        n_tokens = slots * self.grid * self.grid
        self.pos_embed = nnx.Param(
            nnx.initializers.normal(0.02)(rngs.params(), (1, n_tokens, embed_dim))
        )
        # ViT is pre-norm: its query/key act on LayerNorm_0(z). Keeping the LN
        # makes the pretrained U and templates see the inputs they were trained on.
        self.norm = nnx.LayerNorm(embed_dim, epsilon=1e-6, dtype=dtype, rngs=rngs)
        # U: one D -> d projection per template = a ViT key projection [D, heads, d].
        # No bias: <t_k, b_k> is the same for every patch, so a key bias cancels
        # in the softmax over patches (it would be a parameter with zero gradient).
        self.key_kernel = nnx.Param(
            nnx.initializers.xavier_uniform(in_axis=0, out_axis=(1, 2))(
                rngs.params(), (embed_dim, num_templates, self.head_dim)
            )
        )
        # Small random templates (ViT's 0.02) give near-uniform maps (every
        # region weighted ~1 after the combination) while still receiving
        # gradient. Larger ones start the maps peaked, as pretrained ViT
        # weights would (an experiment knob: docs/evaluation.md).
        self.templates = nnx.Param(
            nnx.initializers.normal(template_init_std)(
                rngs.params(), (num_templates, self.head_dim)
            )
        )
        # Combination of the 12 maps into m (VI-B), applied to N * activations
        # (mean 1 over the regions). Weights 1/12, bias 0: every map has mean
        # exactly 1 at init.
        self.combine = nnx.Conv(
            num_templates,
            num_maps,
            (1, 1),
            kernel_init=nnx.initializers.constant(1.0 / num_templates),
            bias_init=nnx.initializers.zeros,
            rngs=rngs,
        )

    def activations(self, images: jax.Array) -> jax.Array:
        """Per-template activations [B, num_templates, g, g] (each sums to 1), float32."""
        b, s, h, w, c = images.shape
        if s != self.slots:
            raise ValueError(f"attention module expects {self.slots} image(s) per sample, got {s}")
        if h != w or h != self.grid * self.patch_embed.patch_size:
            raise ValueError(
                f"attention input {h}x{w} does not give the {self.grid}x{self.grid} patch grid "
                f"of patch size {self.patch_embed.patch_size}"
            )
        z = self.patch_embed(images)  # [B, slots, g, g, D]
        z = z.reshape(b, s * self.grid * self.grid, -1) + self.pos_embed[...].astype(self.dtype)
        keys = jnp.einsum("bnd,dhk->bhnk", self.norm(z), self.key_kernel[...].astype(self.dtype))
        logits = jnp.einsum("bhnk,hk->bhn", keys, self.templates[...].astype(self.dtype))
        # Softmax in fp32: 196..784 logits, a bf16 softmax loses the small weights.
        a = jax.nn.softmax(logits.astype(jnp.float32) / math.sqrt(self.head_dim), axis=-1)
        a = a.reshape(b, self.num_templates, s, self.grid, self.grid)
        return a.sum(axis=2)  # temporal: a region's activation over its frame + residuals

    def __call__(self, images: jax.Array) -> jax.Array:
        a = self.activations(images)  # [B, K, g, g]
        # Softmax activations have mean 1/N; scaled to mean 1 BEFORE the 1x1 conv,
        # so its bias moves a map by its own value. Scaling the conv's output
        # instead (N * (w a + b)) gave the bias N times the gradient and N times
        # the effect (N^2 = 38,416 times a kernel weight's learning rate at N =
        # 196): one SGD step at the paper's lr 3e-4 shifted a map's mean by ~3,
        # and within 40 steps the maps were constants of +-20 with their 14x14
        # pattern ~0.1% of them (models/README.md item 5).
        n = self.grid * self.grid
        maps = self.combine(jnp.transpose(a, (0, 2, 3, 1)) * n)  # [B, g, g, m], fp32
        return jnp.transpose(maps, (0, 3, 1, 2))


def adaptive_pool_matrix(out_size: int, in_size: int) -> np.ndarray:
    """[out, in] averaging matrix of PyTorch's adaptive_avg_pool (bins floor/ceil).

    For out = k * in it is exact k-fold repetition; otherwise each output cell
    averages the input cells its bin overlaps (paper VI-D's fallback).
    """
    m = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -(-((i + 1) * in_size) // out_size)
        m[i, start:end] = 1.0 / (end - start)
    return m


def expand_maps(maps: jax.Array, height: int, width: int) -> jax.Array:
    """[B, m, g, g] -> [B, m, height, width].

    Exact integer repetition when the feature size is a multiple of g (each
    cell covers a (height/g) x (width/g) block: 14x14 of conv2 at 398, 7x7 of
    block1), else adaptive average pooling.
    """
    g_h, g_w = maps.shape[-2:]
    if height % g_h == 0 and width % g_w == 0:
        return jnp.repeat(jnp.repeat(maps, height // g_h, axis=-2), width // g_w, axis=-1)
    ph = jnp.asarray(adaptive_pool_matrix(height, g_h))
    pw = jnp.asarray(adaptive_pool_matrix(width, g_w))
    return jnp.einsum("Hh,bmhw,Ww->bmHW", ph, maps, pw)


def channel_groups(channels: int, num_maps: int) -> np.ndarray:
    """Map index of each channel: m contiguous groups, as equal as possible.

    Channel c belongs to group floor(c*m/C), so group j holds channels
    [ceil(j*C/m), ceil((j+1)*C/m)); when m divides C every group has C/m
    channels. Unequal groups keep Table IX's m = 3 and m = 5 runnable on the
    64-channel conv2 stage.
    """
    if not 1 <= num_maps <= channels:
        raise ValueError(
            f"num_maps m={num_maps} must lie in [1, {channels}] (the channels of the "
            "re-weighted stage): each map scales a group of at least one channel"
        )
    return (np.arange(channels) * num_maps) // channels


def apply_maps(features: jax.Array, maps: jax.Array) -> jax.Array:
    """Element-wise re-weighting of features [B, H, W, C] by maps [B, m, g, g].

    Channel group j (``channel_groups``) is multiplied by map j.
    """
    b, h, w, c = features.shape
    m = maps.shape[1]
    groups = channel_groups(c, m)
    full = expand_maps(maps, h, w)  # [B, m, H, W] fp32
    full = jnp.transpose(full, (0, 2, 3, 1)).astype(features.dtype)  # [B, H, W, m]
    if c % m == 0:
        # Broadcast over equal groups: no [B, H, W, C] copy of the maps.
        return (features.reshape(b, h, w, m, c // m) * full[..., None]).reshape(b, h, w, c)
    return features * full[..., groups]
