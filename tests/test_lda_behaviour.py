"""What the attention maps are computed from and where they act (paper IV-C/IV-D).

Each test rebuilds one step of the forward from its definition (independent
reference ops where one exists: jax.image.resize for the attention view) and
checks the model against it, with peaked maps (large template_init_std) so
that a wrong input or a wrong stage changes the numbers visibly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ldattn_jax.models import lda
from ldattn_jax.models.lda import build_model
from ldattn_jax.models.long_distance_attention import LongDistanceAttention
from ldattn_jax.models.xception import stage_shapes
from ldattn_jax.smoke import random_batch, tiny_model_config


def _attention_view(frames, size):
    """Paper's attention input: the frames in [-1, 1], bilinear antialiased to size."""
    x = np.asarray(frames, np.float32) / 127.5 - 1.0
    return jax.image.resize(x, (*x.shape[:2], size, size, 3), "bilinear", antialias=True)


class _StageProbe(nnx.Module):
    """Stands in for Xception (its init is most of a tiny model's cost): passes
    ones of each modulated stage's shape through that stage's modulator and
    records what comes out, so the test sees exactly how each stage is re-weighted."""

    seen: dict = {}

    def __init__(self, *, num_classes, middle_blocks, dtype, rngs):
        del dtype, rngs
        self.num_classes, self.middle_blocks = num_classes, middle_blocks

    def __call__(self, x, modulators):
        shapes = stage_shapes(x.shape[1], self.middle_blocks)
        for name, modulate in modulators.items():
            _StageProbe.seen[name] = np.asarray(modulate(jnp.ones((x.shape[0], *shapes[name]))))
        return jnp.zeros((x.shape[0], self.num_classes))


@pytest.fixture
def probe_backbone(monkeypatch):
    monkeypatch.setattr(lda, "Xception", _StageProbe)
    _StageProbe.seen = {}
    return _StageProbe.seen


def test_temporal_maps_come_from_frame_t_and_scaled_forward_residuals(probe_backbone):
    # r^t = I^{t+1} - I^t (IV-D), times config.model.residual_scale, after frame t.
    cfg = tiny_model_config("lda_temporal", residual_scale=3.0, template_init_std=2.0)
    model = build_model(cfg, rngs=nnx.Rngs(0))
    frames, _ = random_batch(cfg, batch=2)  # [2, n+1 = 3, 62, 62, 3]
    view = _attention_view(frames, cfg.attention_size)
    residuals = [3.0 * (view[:, t + 1] - view[:, t]) for t in range(cfg.stack)]
    expected = model.temporal(jnp.stack([view[:, 0], *residuals], axis=1))
    got = model.attention_maps(frames)["temporal"]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    # The check is able to fail: backward residuals give other maps.
    backward = model.temporal(jnp.stack([view[:, 0], *(-r for r in residuals)], axis=1))
    assert float(jnp.abs(backward - expected).max()) > 0.05


def _expected_reweighting(maps, shape):
    """Paper VI-D: channel group j of an H x W x C stage times map j, each map cell
    repeated over its (H/g) x (W/g) block; features of ones give the weights."""
    maps = np.asarray(maps)
    b, m, g, _ = maps.shape
    h, w, c = shape
    cells = np.repeat(np.repeat(maps, h // g, axis=2), w // g, axis=3)  # [B, m, H, W]
    return np.repeat(cells, c // m, axis=1).transpose(0, 2, 3, 1)  # [B, H, W, C]


def test_spatial_and_temporal_maps_reweight_their_configured_stages(probe_backbone):
    cfg = tiny_model_config("lda_st", template_init_std=2.0)
    model = build_model(cfg, rngs=nnx.Rngs(0))
    frames, _ = random_batch(cfg, batch=2)
    _, maps = model(frames)
    shapes = stage_shapes(cfg.image_size, cfg.middle_blocks)
    assert set(probe_backbone) == {cfg.spatial_stage, cfg.temporal_stage}  # conv2, block1
    for kind, stage in (("spatial", cfg.spatial_stage), ("temporal", cfg.temporal_stage)):
        np.testing.assert_allclose(
            probe_backbone[stage], _expected_reweighting(maps[kind], shapes[stage]), rtol=1e-6
        )
    assert not np.allclose(maps["spatial"], maps["temporal"], atol=0.05)  # able to fail


def test_a_regions_temporal_activation_sums_its_slots():
    # Temporal module (IV-D): the frame and the residuals are patchified into
    # one sequence; region (i, j)'s activation is the softmax mass of its tokens
    # in every slot. With the same image in both slots and the position table
    # tiled (as the ViT init does), each region's two tokens tie, so the
    # activation equals the one-slot module's on that image.
    kw = dict(image_size=16, patch_size=4, embed_dim=32, num_templates=4, num_maps=2)
    one = LongDistanceAttention(slots=1, template_init_std=3.0, **kw, rngs=nnx.Rngs(0))
    two = LongDistanceAttention(slots=2, template_init_std=3.0, **kw, rngs=nnx.Rngs(1))
    pure = nnx.to_pure_dict(nnx.state(one))
    pure["pos_embed"] = jnp.tile(pure["pos_embed"], (1, 2, 1))
    state = nnx.state(two)
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(two, state)
    image = jax.random.normal(jax.random.key(2), (2, 1, 16, 16, 3))
    a_one = one.activations(image)
    a_two = two.activations(jnp.concatenate([image, image], axis=1))
    np.testing.assert_allclose(a_two, a_one, rtol=1e-5, atol=1e-6)
    assert float(a_one.max()) > 3 * float(a_one.min())  # peaked: region order matters


def test_maps_are_the_1x1_combination_of_the_activations_in_region_order():
    # A_j = sum_k w_jk (N a_k) + b_j (the module's definition, VI-B), each
    # map laid out like the activations: cell (i, j) is region (i, j).
    module = LongDistanceAttention(
        slots=1, image_size=16, patch_size=4, embed_dim=32, num_templates=4, num_maps=2,
        template_init_std=3.0, rngs=nnx.Rngs(0),
    )  # fmt: skip
    w = np.array([[0.5, 0.0], [0.25, 1.0], [0.25, 0.0], [0.0, 2.0]], np.float32)  # [K, m]
    b = np.array([0.01, -0.02], np.float32)
    module.combine.kernel[...] = jnp.asarray(w)[None, None]
    module.combine.bias[...] = jnp.asarray(b)
    images = jax.random.normal(jax.random.key(4), (2, 1, 16, 16, 3))
    a = np.asarray(module.activations(images))  # [B, K, 4, 4]
    expected = np.einsum("bkhw,km->bmhw", 16 * a, w) + b[None, :, None, None]
    np.testing.assert_allclose(module(images), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected, expected.transpose(0, 1, 3, 2), atol=1e-2)  # able to fail
