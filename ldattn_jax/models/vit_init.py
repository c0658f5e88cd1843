"""Partial ViT-B/16 init of a LongDistanceAttention module (paper V-A, VI-D).

Reads a checkpoint in google-research/vision_transformer's .npz layout (not
big_vision's, whose keys differ: a params/ prefix, a top-level pos_embedding,
MultiHeadDotProductAttention_0; such a file is refused naming the missing key)
and copies what the module shares with ViT's first layer:

    embedding/kernel [p,p,3,D], embedding/bias [D]         -> patch_embed
    Transformer/posembed_input/pos_embedding [1,1+N,D]     -> pos_embed (row 0 = cls)
    Transformer/encoderblock_0/LayerNorm_0/{scale,bias} [D] -> norm
    .../MultiHeadDotProductAttention_1/key/kernel [D,H,d]                  -> U
      (key/bias is not needed: it adds <t_k, b_k> to every patch's logit,
      which the softmax over patches cancels)
    cls [1,1,D] + pos row 0, LayerNorm_0, then query/{kernel,bias}         -> templates

i.e. the templates start as the class token's layer-0 query: the module then
computes exactly ViT-B's layer-0 cls->patch attention weights (minus the
cls->cls entry), and training moves on from there.
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ldattn_jax.models.long_distance_attention import LongDistanceAttention

BLOCK0 = "Transformer/encoderblock_0"
ATTN = f"{BLOCK0}/MultiHeadDotProductAttention_1"


def expected_vit_shapes(module: LongDistanceAttention) -> dict[str, tuple[int, ...]]:
    """The keys this module needs and their shapes in the .npz."""
    p = module.patch_embed.kernel.shape[0]
    d_model = module.patch_embed.kernel.shape[-1]
    n = module.grid * module.grid
    h, d = module.num_templates, module.head_dim
    return {
        "embedding/kernel": (p, p, 3, d_model),
        "embedding/bias": (d_model,),
        "cls": (1, 1, d_model),
        "Transformer/posembed_input/pos_embedding": (1, 1 + n, d_model),
        f"{BLOCK0}/LayerNorm_0/scale": (d_model,),
        f"{BLOCK0}/LayerNorm_0/bias": (d_model,),
        f"{ATTN}/query/kernel": (d_model, h, d),
        f"{ATTN}/query/bias": (h, d),
        f"{ATTN}/key/kernel": (d_model, h, d),
    }


def read_vit_npz(path: str | Path, expected: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Loads and shape-checks the needed arrays; errors name key, expected and found shape."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ViT checkpoint {path} does not exist; set config.model.vit_init to a ViT-B/16 "
            "'.npz' in Google's layout (e.g. ViT-B_16.npz / augreg .npz) or '' for random init"
        )
    with np.load(path) as npz:
        out = {}
        for key, shape in expected.items():
            if key not in npz.files:
                raise KeyError(
                    f"{path}: missing key '{key}' (expected shape {shape}); "
                    f"the file has {len(npz.files)} keys, e.g. {sorted(npz.files)[:5]}"
                )
            arr = np.asarray(npz[key], np.float32)
            if arr.shape != shape:
                raise ValueError(
                    f"{path}: key '{key}' has shape {arr.shape}, expected {shape} "
                    "(check patch_size / attention_size / embed_dim / num_templates)"
                )
            out[key] = arr
    return out


def _layer_norm(x, scale, bias, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def load_vit_npz(module: LongDistanceAttention, path: str | Path) -> None:
    """Initialises ``module`` in place from a Google-layout ViT .npz.

    The pretrained 14x14 position table (cls row dropped) is tiled over the
    module's slots, so every frame/residual slot starts with ViT's positions.
    """
    w = read_vit_npz(path, expected_vit_shapes(module))
    module.patch_embed.kernel.set_value(jnp.asarray(w["embedding/kernel"]))
    module.patch_embed.bias.set_value(jnp.asarray(w["embedding/bias"]))
    pos = w["Transformer/posembed_input/pos_embedding"]
    module.pos_embed.set_value(jnp.asarray(np.tile(pos[:, 1:], (1, module.slots, 1))))
    scale, bias = w[f"{BLOCK0}/LayerNorm_0/scale"], w[f"{BLOCK0}/LayerNorm_0/bias"]
    module.norm.scale.set_value(jnp.asarray(scale))
    module.norm.bias.set_value(jnp.asarray(bias))
    module.key_kernel.set_value(jnp.asarray(w[f"{ATTN}/key/kernel"]))
    cls = _layer_norm(w["cls"][0, 0] + pos[0, 0], scale, bias)
    query = np.einsum("d,dhk->hk", cls, w[f"{ATTN}/query/kernel"]) + w[f"{ATTN}/query/bias"]
    module.templates.set_value(jnp.asarray(query, jnp.float32))
