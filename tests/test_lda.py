"""The four variants: full-size shapes, input contract, training, bf16, init files."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ldattn_jax.models.lda import VARIANTS, build_model, required_frames
from ldattn_jax.models.view import resize_square
from ldattn_jax.models.vit_init import expected_vit_shapes
from ldattn_jax.smoke import random_batch, tiny_model_config, train_losses


def _full_config(name):
    cfg = tiny_model_config(name)
    cfg.update(image_size=398, attention_size=224, patch_size=16, embed_dim=768, num_templates=12)
    cfg.update(stack=3, middle_blocks=8)
    return cfg


@pytest.mark.parametrize("name", VARIANTS)
def test_full_size_output_shapes(name):
    cfg = _full_config(name)
    frames = jax.ShapeDtypeStruct((2, 4, 398, 398, 3), jnp.uint8)
    logits, maps = jax.eval_shape(lambda f: build_model(cfg, rngs=nnx.Rngs(0))(f), frames)
    assert logits.shape == (2, 2) and logits.dtype == jnp.float32
    expected = {"xception": set(), "lda_spatial": {"spatial"}, "lda_temporal": {"temporal"}}
    assert set(maps) == expected.get(name, {"spatial", "temporal"})
    for m in maps.values():
        assert m.shape == (2, 4, 14, 14) and m.dtype == jnp.float32
    assert required_frames(cfg) == (4 if "temporal" in maps else 1)


def test_resize_matches_jax_image_resize():
    x = jax.random.uniform(jax.random.key(0), (2, 2, 398, 398, 3)) * 255
    ref = jax.image.resize(x, (2, 2, 224, 224, 3), "bilinear", antialias=True)
    np.testing.assert_allclose(resize_square(x, 224), ref, atol=1e-3)


@pytest.mark.parametrize("name", ["xception", "lda_spatial", "lda_temporal"])
def test_only_temporal_variants_read_frames_after_the_first(name):
    cfg = tiny_model_config(name)
    model = build_model(cfg, rngs=nnx.Rngs(0))
    model.eval()
    frames, _ = random_batch(tiny_model_config("lda_st"), batch=2)  # n+1 frames for all
    other = frames.at[:, 1:].set(255 - frames[:, 1:])
    forward = nnx.jit(lambda m, f: m(f))
    (a, maps_a), (b, maps_b) = forward(model, frames), forward(model, other)
    if name == "lda_temporal":  # the check is able to fail: here frames 1..n matter
        assert not np.allclose(a, b, atol=1e-6)
    else:
        np.testing.assert_array_equal(a, b)
        jax.tree.map(np.testing.assert_array_equal, maps_a, maps_b)


def test_tiny_train_step_lowers_loss():
    losses = train_losses(tiny_model_config("lda_st"), steps=6)
    assert np.all(np.isfinite(losses))
    assert min(losses[-3:]) < 0.5 * losses[0], losses


def test_gradients_reach_every_attention_parameter():
    model = build_model(tiny_model_config("lda_st"), rngs=nnx.Rngs(1))
    model.train()
    frames, labels = random_batch(tiny_model_config("lda_st"), batch=2)

    def loss(m):
        logits, _ = m(frames)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(2), labels])

    grads = nnx.jit(nnx.grad(loss))(model)
    for part in ("spatial", "temporal"):
        flat = nnx.to_flat_state(getattr(grads, part))
        assert len(flat) == 9
        for path, g in flat:
            assert float(jnp.abs(g[...]).max()) > 0, (part, path)


def test_bfloat16_compute_keeps_params_and_stats_fp32():
    cfg32, cfg16 = tiny_model_config("lda_st"), tiny_model_config("lda_st", dtype="bfloat16")
    m32, m16 = build_model(cfg32, rngs=nnx.Rngs(0)), build_model(cfg16, rngs=nnx.Rngs(0))
    frames, _ = random_batch(cfg32, batch=2)
    forward = nnx.jit(lambda m, f: m(f))
    m16.train()
    forward(m16, frames)  # one train-mode call updates the running statistics
    for var in jax.tree.leaves(nnx.state(m16, nnx.Param)) + jax.tree.leaves(
        nnx.state(m16, nnx.BatchStat)
    ):
        assert var.dtype == jnp.float32
    m16.eval()
    nnx.update(m32, nnx.state(m16))
    m32.eval()
    (l16, maps16), (l32, maps32) = forward(m16, frames), forward(m32, frames)
    assert l16.dtype == jnp.float32 and all(m.dtype == jnp.float32 for m in maps16.values())
    assert np.all(np.isfinite(l16))
    # Same weights: bf16 logits are close to fp32 ones but not bit-identical
    # (so the bf16 path really computes in bf16).
    np.testing.assert_allclose(l16, l32, atol=0.25 + 0.05 * float(jnp.abs(l32).max()))
    assert not np.array_equal(np.asarray(l16), np.asarray(l32))
    np.testing.assert_allclose(maps16["spatial"], maps32["spatial"], rtol=0.05, atol=0.05)


@pytest.mark.parametrize(
    "override,frames_shape,message",
    [
        (dict(name="resnet"), None, "not a model; choose one of"),
        (dict(spatial_stage="conv9"), None, "spatial_stage='conv9' is not an Xception stage"),
        (dict(num_maps=65), None, r"num_maps=65 must lie in \[1, 64\]"),
        (dict(dtype="float16"), None, "dtype='float16'"),
        ({}, (1, 3, 64, 64, 3), "frames are 64x64, the model expects 62x62"),
        ({}, (1, 2, 62, 62, 3), "needs 3 frames per sample"),
        (dict(stack=0), None, r"stack=0: lda_st needs n >= 1 following frames"),
        (dict(stack=-1), None, r"stack=-1: lda_st needs n >= 1"),
    ],
)
def test_bad_config_or_input_is_a_clear_error(override, frames_shape, message):
    cfg = tiny_model_config("lda_st")
    cfg.update(override)

    def run():
        model = build_model(cfg, rngs=nnx.Rngs(0))
        if frames_shape:
            model(jax.ShapeDtypeStruct(frames_shape, jnp.uint8))

    with pytest.raises(ValueError, match=message):
        jax.eval_shape(run)


def test_required_frames_refuses_a_temporal_model_without_following_frames():
    assert required_frames(dict(name="lda_spatial", stack=0)) == 1  # no temporal module
    with pytest.raises(ValueError, match=r"stack=0: lda_temporal needs n >= 1"):
        required_frames(dict(name="lda_temporal", stack=0))


def test_build_model_loads_vit_npz_into_both_modules(tmp_path):
    cfg = tiny_model_config("lda_st")
    model = build_model(cfg, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    arrays = {
        k: rng.normal(size=s).astype(np.float32)
        for k, s in expected_vit_shapes(model.spatial).items()
    }
    np.savez(tmp_path / "vit.npz", **arrays)
    cfg.vit_init = str(tmp_path / "vit.npz")
    loaded = build_model(cfg, rngs=nnx.Rngs(0))
    kernel = arrays["embedding/kernel"]
    for module in (loaded.spatial, loaded.temporal):
        np.testing.assert_array_equal(module.patch_embed.kernel[...], kernel)
    np.testing.assert_array_equal(
        loaded.spatial.templates[...], loaded.temporal.templates[...]
    )  # same cls query, then trained apart
    assert loaded.temporal.pos_embed.shape == (1, 3 * 196, 32)


@pytest.mark.filterwarnings("ignore::DeprecationWarning:keras")
def test_build_model_loads_keras_backbone(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    km = keras.applications.Xception(
        weights=None, classes=2, classifier_activation=None, input_shape=(71, 71, 3)
    )
    km.save_weights(tmp_path / "x.weights.h5")
    cfg = tiny_model_config("lda_spatial", middle_blocks=8)
    cfg.backbone_init = str(tmp_path / "x.weights.h5")
    model = build_model(cfg, rngs=nnx.Rngs(0))
    # Conv weights do not depend on the input size: the 71-px Keras file loads at 62.
    np.testing.assert_array_equal(
        model.backbone.block12.sepconv2.pointwise.kernel[...],
        km.get_layer("block13_sepconv2").pointwise_kernel.numpy(),
    )
    np.testing.assert_array_equal(
        model.backbone.head.kernel[...], km.get_layer("predictions").kernel.numpy()
    )


def test_batch_sharded_forward_matches_single_device():
    """Data-parallel jit over 8 fake devices: train-mode BN uses global-batch statistics.

    Auto axis types, as ldattn_jax.sharding.make_mesh builds them.
    """
    if jax.device_count() < 8:
        pytest.skip("needs the 8 simulated CPU devices of tests/conftest.py")
    cfg = tiny_model_config("lda_st")
    model = build_model(cfg, rngs=nnx.Rngs(0))
    model.train()
    graphdef, state = nnx.split(model)
    frames, _ = random_batch(cfg, batch=8)

    @jax.jit
    def forward(state, frames):
        m = nnx.merge(graphdef, state, copy=True)
        return m(frames)

    single = forward(state, frames)
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharded_frames = jax.device_put(frames, jax.NamedSharding(mesh, jax.P("data")))
    sharded = forward(state, sharded_frames)
    assert sharded[0].sharding.spec[0] == "data"
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), single, sharded)


def test_bn_momentum_reaches_every_batchnorm_and_changes_running_stats():
    frames = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 3, 62, 62, 3), np.uint8))

    def running_mean_after_one_step(momentum):
        cfg = tiny_model_config("lda_st")
        cfg.bn_momentum = momentum
        model = build_model(cfg, rngs=nnx.Rngs(0))
        bns = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]
        assert bns and all(m.momentum == momentum for m in bns)
        model.train()
        model(frames)
        return np.asarray(model.backbone.conv1.bn.mean[...])

    slow, fast = running_mean_after_one_step(0.99), running_mean_after_one_step(0.5)
    # Running mean starts at 0: after one update it is (1 - momentum) * batch mean.
    np.testing.assert_allclose(fast, slow * 50, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="bn_momentum=1.5"):
        cfg = tiny_model_config("xception")
        cfg.bn_momentum = 1.5
        build_model(cfg, rngs=nnx.Rngs(0))


def test_template_init_std_reaches_both_attention_modules():
    def template_std(std):
        cfg = tiny_model_config("lda_st")
        cfg.template_init_std = std
        model = build_model(cfg, rngs=nnx.Rngs(0))
        return [float(jnp.std(m.templates[...])) for m in (model.spatial, model.temporal)]

    default, wide = template_std(0.02), template_std(2.0)
    for d, w in zip(default, wide, strict=True):
        assert 0.005 < d < 0.05 and 0.5 < w < 5.0
