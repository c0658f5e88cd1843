"""Long-distance attention: geometry, ViT .npz init, map expansion and application."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ldattn_jax.models.long_distance_attention import (
    LongDistanceAttention,
    adaptive_pool_matrix,
    apply_maps,
    channel_groups,
    expand_maps,
)
from ldattn_jax.models.vit_init import expected_vit_shapes, load_vit_npz

# Tiny geometry: 16x16 images, 4x4 patches -> 4x4 grid, D=32, 4 templates of 8 dims.
TINY = dict(image_size=16, patch_size=4, embed_dim=32, num_templates=4, num_maps=2)


def _tiny(slots=1, seed=0):
    return LongDistanceAttention(slots=slots, **TINY, rngs=nnx.Rngs(seed))


@pytest.mark.parametrize("slots", [1, 4])
def test_full_size_shapes(slots):
    def build_and_run(x):
        module = LongDistanceAttention(slots=slots, rngs=nnx.Rngs(0))
        return module(x), module.pos_embed[...]

    x = jax.ShapeDtypeStruct((2, slots, 224, 224, 3), jnp.float32)
    maps, pos = jax.eval_shape(build_and_run, x)
    assert maps.shape == (2, 4, 14, 14) and maps.dtype == jnp.float32
    assert pos.shape == (1, slots * 196, 768)


@pytest.mark.parametrize("slots", [1, 3])
def test_maps_have_mean_one_at_init(slots):
    module = _tiny(slots)
    x = jax.random.normal(jax.random.key(1), (2, slots, 16, 16, 3))
    a, maps = nnx.jit(lambda m, x: (m.activations(x), m(x)))(module, x)
    np.testing.assert_allclose(a.sum(axis=(-2, -1)), 1.0, rtol=1e-5)
    assert maps.shape == (2, 2, 4, 4)
    np.testing.assert_allclose(maps.mean(axis=(-2, -1)), 1.0, rtol=1e-5)
    assert float(jnp.std(maps)) > 0  # not a constant map


def test_template_init_std_sets_how_peaked_the_initial_maps_are():
    # config.model.template_init_std: ViT's 0.02 starts every map near uniform;
    # a larger std starts them peaked (lower entropy), mean still 1.
    x = jax.random.normal(jax.random.key(1), (2, 1, 16, 16, 3))

    def entropy(std):
        module = LongDistanceAttention(slots=1, **TINY, template_init_std=std, rngs=nnx.Rngs(0))
        a = module.activations(x)
        np.testing.assert_allclose(module(x).mean(axis=(-2, -1)), 1.0, rtol=1e-5)
        return float(-(a * jnp.log(a)).sum(axis=(-2, -1)).mean())

    uniform = np.log(16)  # 4x4 grid
    assert uniform - entropy(0.02) < 1e-3
    assert uniform - entropy(3.0) > 0.1
    with pytest.raises(ValueError, match="template_init_std=-1"):
        LongDistanceAttention(slots=1, **TINY, template_init_std=-1.0, rngs=nnx.Rngs(0))


def _fake_vit_npz(path, module, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        k: rng.normal(0, 0.3, s).astype(np.float32) for k, s in expected_vit_shapes(module).items()
    }
    arrays["Transformer/encoderblock_1/LayerNorm_0/scale"] = np.ones(
        32, np.float32
    )  # extra: ignored
    np.savez(path, **arrays)
    return arrays


def _vit_layer0_cls_attention(w, images, patch):
    """Reference: ViT layer-0 attention weights of the cls query over the patch keys."""
    b, h, _, _ = images.shape
    g = h // patch
    patches = images.reshape(b, g, patch, g, patch, 3).transpose(0, 1, 3, 2, 4, 5)
    kernel = w["embedding/kernel"]  # [p, p, 3, D]
    z = np.einsum("bijpqc,pqcd->bijd", patches, kernel).reshape(b, g * g, -1) + w["embedding/bias"]
    cls = np.broadcast_to(w["cls"], (b, 1, z.shape[-1]))
    tokens = np.concatenate([cls, z], axis=1) + w["Transformer/posembed_input/pos_embedding"]
    ln = "Transformer/encoderblock_0/LayerNorm_0"
    mu, var = tokens.mean(-1, keepdims=True), tokens.var(-1, keepdims=True)
    y = (tokens - mu) / np.sqrt(var + 1e-6) * w[f"{ln}/scale"] + w[f"{ln}/bias"]
    att = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1"
    q = np.einsum("bnd,dhk->bhnk", y, w[f"{att}/query/kernel"]) + w[f"{att}/query/bias"][:, None]
    key_bias = np.random.default_rng(9).normal(size=q.shape[1:2] + q.shape[3:])
    # ViT has a key bias; it shifts every patch logit equally, so it cannot matter.
    k = np.einsum("bnd,dhk->bhnk", y, w[f"{att}/key/kernel"]) + key_bias[:, None]
    logits = np.einsum("bhk,bhnk->bhn", q[:, :, 0], k[:, :, 1:]) / np.sqrt(q.shape[-1])
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).reshape(b, -1, g, g)


def test_vit_npz_init_reproduces_vit_cls_attention(tmp_path):
    module = _tiny(slots=1)
    w = _fake_vit_npz(tmp_path / "vit.npz", module)
    load_vit_npz(module, tmp_path / "vit.npz")
    images = np.random.default_rng(3).normal(size=(2, 16, 16, 3)).astype(np.float32)
    ours = module.activations(jnp.asarray(images[:, None]))
    ref = _vit_layer0_cls_attention(w, images, patch=4)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=1e-4)


def test_vit_npz_tiles_position_table_over_temporal_slots(tmp_path):
    module = _tiny(slots=3)
    w = _fake_vit_npz(tmp_path / "vit.npz", module)
    load_vit_npz(module, tmp_path / "vit.npz")
    pos = np.asarray(module.pos_embed[...])
    table = w["Transformer/posembed_input/pos_embedding"][0, 1:]
    for s in range(3):
        np.testing.assert_array_equal(pos[0, s * 16 : (s + 1) * 16], table)


def test_vit_npz_missing_or_misshaped_key(tmp_path):
    module = _tiny()
    w = _fake_vit_npz(tmp_path / "ok.npz", module)
    missing = dict(w)
    del missing["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/bias"]
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(KeyError, match=r"query/bias' \(expected shape \(4, 8\)\)"):
        load_vit_npz(module, tmp_path / "missing.npz")
    bad = dict(w)
    bad["Transformer/posembed_input/pos_embedding"] = np.zeros((1, 197, 32), np.float32)
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(
        ValueError, match=r"pos_embedding' has shape \(1, 197, 32\), expected \(1, 17, 32\)"
    ):
        load_vit_npz(module, tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        load_vit_npz(module, tmp_path / "nothere.npz")


@pytest.mark.parametrize("size,block", [(196, 14), (98, 7)])
def test_one_hot_map_reweights_exactly_its_block(size, block):
    maps = jnp.zeros((1, 1, 14, 14)).at[0, 0, 3, 9].set(1.0)
    full = np.asarray(expand_maps(maps, size, size))[0, 0]
    expected = np.zeros((size, size))
    expected[3 * block : 4 * block, 9 * block : 10 * block] = 1.0
    np.testing.assert_array_equal(full, expected)


def test_apply_maps_scales_channel_group_of_its_map():
    feats = jnp.ones((1, 28, 28, 8))
    maps = jnp.ones((1, 4, 14, 14)).at[0, 2, 5, 6].set(3.0)  # map 2 -> channels 4, 5
    out = np.asarray(apply_maps(feats, maps))
    changed = np.argwhere(out != 1.0)
    assert {tuple(c[1:]) for c in changed} == {
        (y, x, ch) for y in (10, 11) for x in (12, 13) for ch in (4, 5)
    }
    assert np.all(out[out != 1.0] == 3.0)


def test_apply_maps_unequal_groups_when_m_does_not_divide_channels():
    # Table IX's m = 3 on 8 channels: groups [0..2], [3..5], [6..7].
    np.testing.assert_array_equal(channel_groups(8, 3), [0, 0, 0, 1, 1, 1, 2, 2])
    feats = jnp.ones((1, 14, 14, 8))
    maps = jnp.stack([jnp.full((14, 14), v) for v in (2.0, 3.0, 5.0)])[None]
    out = np.asarray(apply_maps(feats, maps))
    np.testing.assert_array_equal(out[0, 0, 0], [2, 2, 2, 3, 3, 3, 5, 5])
    with pytest.raises(ValueError, match=r"m=9 must lie in \[1, 8\]"):
        apply_maps(feats, jnp.ones((1, 9, 14, 14)))


def test_non_multiple_sizes_use_adaptive_average_pooling():
    # PyTorch adaptive_avg_pool1d(2 -> 3) bins: [0], [0, 1], [1].
    np.testing.assert_allclose(adaptive_pool_matrix(3, 2), [[1, 0], [0.5, 0.5], [0, 1]])
    # On a multiple the pooling matrix is exact repetition (same as the fast path).
    maps = jax.random.uniform(jax.random.key(0), (2, 3, 14, 14))
    via_matrix = jnp.einsum(
        "Hh,bmhw,Ww->bmHW", adaptive_pool_matrix(28, 14), maps, adaptive_pool_matrix(28, 14)
    )
    np.testing.assert_allclose(expand_maps(maps, 28, 28), via_matrix, atol=1e-6)
    out = expand_maps(maps, 25, 25)  # block3 at 398: not a multiple of 14
    assert out.shape == (2, 3, 25, 25)
    # Averaging preserves a constant map and stays within the input range.
    np.testing.assert_allclose(expand_maps(jnp.full((1, 1, 14, 14), 2.5), 25, 25), 2.5)
    assert float(out.max()) <= float(maps.max()) + 1e-6


def test_gradients_reach_every_attention_parameter():
    module = _tiny(slots=2)
    x = jax.random.normal(jax.random.key(2), (2, 2, 16, 16, 3))
    target = jax.random.normal(jax.random.key(3), (2, 2, 4, 4))

    def loss(m):
        return jnp.sum(m(x) * target)

    grads = nnx.jit(nnx.grad(loss))(module)
    norms = {"/".join(map(str, p)): float(jnp.abs(g).max()) for p, g in nnx.to_flat_state(grads)}
    assert len(norms) == 9  # patch kernel+bias, pos, LN scale+bias, U, templates, combine (2)
    assert all(v > 0 for v in norms.values()), norms


def test_vit_npz_templates_use_vits_layernorm_epsilon(tmp_path):
    # ViT-B's LayerNorm has eps 1e-6. With a class token + position row whose
    # variance is near that, the template (the cls query) depends on eps.
    module = _tiny(slots=1)
    w = _fake_vit_npz(tmp_path / "ok.npz", module)
    w["cls"] = w["cls"] * 1e-3
    pos = "Transformer/posembed_input/pos_embedding"
    w[pos] = w[pos] * 1e-3
    np.savez(tmp_path / "vit.npz", **w)
    load_vit_npz(module, tmp_path / "vit.npz")
    images = np.random.default_rng(4).normal(size=(2, 16, 16, 3)).astype(np.float32)
    ours = module.activations(jnp.asarray(images[:, None]))
    ref = _vit_layer0_cls_attention(w, images, patch=4)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=1e-4)
