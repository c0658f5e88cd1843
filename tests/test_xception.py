"""Xception backbone: stage geometry and parity with keras.applications.Xception."""

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from flax import nnx

from ldattn_jax.models.keras_convert import load_keras_xception, read_keras_weights
from ldattn_jax.models.xception import Xception, stage_names, stage_shapes

SMALL = 71  # Keras' minimum Xception input
# Keras' own numpy-2 deprecation noise, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras")


def _keras_xception(size: int, seed: int = 0):
    """Keras Xception whose BN running stats are real batch statistics.

    With the initial stats (mean 0, var 1) a random deep net collapses to
    almost input-independent logits, and a parity test on those could not
    fail; momentum 0 + one training-mode call sets every BN to the statistics
    of a calibration batch, so logits genuinely depend on the image.
    """
    keras.utils.set_random_seed(seed)
    km = keras.applications.Xception(
        weights=None, classes=2, classifier_activation=None, input_shape=(size, size, 3)
    )
    for layer in km.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    calib = np.random.default_rng(seed).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    km(calib, training=True)
    return km


def _abstract_stage_shapes(image_size, middle_blocks):
    model = nnx.eval_shape(lambda: Xception(middle_blocks=middle_blocks, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    seen = {}

    def record(name):
        def f(y):
            seen[name] = tuple(y.shape[1:])
            return y

        return f

    def fwd(state, x):
        m = nnx.merge(graphdef, state)
        return m(x, modulators={n: record(n) for n in stage_names(middle_blocks)})

    x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    logits = jax.eval_shape(fwd, state, x)
    return seen, logits


def test_full_size_stage_shapes_match_paper_geometry():
    seen, logits = _abstract_stage_shapes(398, 8)
    assert seen == stage_shapes(398, 8)
    # The geometry the paper relies on (VI-D): 196 = 14*14, 98 = 7*14.
    assert seen["conv2"] == (196, 196, 64)
    assert seen["block1"] == (98, 98, 128)
    assert seen["block12"] == (13, 13, 1024)
    assert logits.shape == (1, 2) and logits.dtype == jnp.float32


def test_stage_shapes_tiny_geometry():
    seen, _ = _abstract_stage_shapes(118, 1)
    assert seen == stage_shapes(118, 1)
    assert seen["conv2"][:2] == (56, 56) and seen["block1"][:2] == (28, 28)


def test_unknown_stage_name_is_rejected():
    model = nnx.eval_shape(lambda: Xception(middle_blocks=0, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((1, SMALL, SMALL, 3), jnp.float32)
    with pytest.raises(KeyError, match="block99"):
        jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, {"block99": lambda y: y}), state, x)


@pytest.fixture(scope="module")
def keras_small():
    return _keras_xception(SMALL)


def _parity(km, size, batch, seed):
    model = Xception(num_classes=2, rngs=nnx.Rngs(seed))
    report = load_keras_xception(model, km)
    assert report["skipped"] == [] and len(report["loaded"]) == 81
    model.eval()
    x = np.random.default_rng(seed + 1).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    ref = np.asarray(km(x, training=False))
    ours = np.asarray(model(jnp.asarray(x)))
    return ref, ours


def test_keras_parity_small(keras_small):
    ref, ours = _parity(keras_small, SMALL, 3, 1)
    assert np.ptp(ref, axis=0).max() > 1e-2  # logits depend on the image: the check can fail
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_keras_parity_398():
    km = _keras_xception(398, seed=3)
    ref, ours = _parity(km, 398, 1, 4)
    assert np.abs(ref).max() > 1e-3
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fmt", ["weights.h5", "keras", "legacy.h5"])
def test_load_saved_keras_file(keras_small, tmp_path, fmt):
    path = tmp_path / f"x.{fmt}"
    if fmt == "keras":
        keras_small.save(path)
    elif fmt == "legacy.h5":  # the Keras 2 layout of the downloadable ImageNet file
        import h5py
        from keras.src.legacy.saving import legacy_h5_format

        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, keras_small)
    else:
        keras_small.save_weights(path)
    model = Xception(num_classes=2, rngs=nnx.Rngs(7))
    load_keras_xception(model, path)
    model.eval()
    x = np.random.default_rng(5).uniform(-1, 1, (2, SMALL, SMALL, 3)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(model(jnp.asarray(x))), np.asarray(keras_small(x, training=False)), atol=1e-4
    )


def test_head_of_other_width_is_skipped_like_imagenet(keras_small, tmp_path):
    """An ImageNet file has a 1000-way head: everything but the head loads."""
    path = tmp_path / "x.weights.h5"
    keras_small.save_weights(path)
    model = Xception(num_classes=3, rngs=nnx.Rngs(0))
    head_before = np.asarray(model.head.kernel[...]).copy()
    report = load_keras_xception(model, path)
    assert len(report["loaded"]) == 80 and report["skipped"][0].startswith("head")
    np.testing.assert_array_equal(np.asarray(model.head.kernel[...]), head_before)
    model.eval()
    ref_model = Xception(num_classes=2, rngs=nnx.Rngs(0))
    load_keras_xception(ref_model, keras_small)
    ref_model.eval()
    x = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (1, SMALL, SMALL, 3)), jnp.float32)
    np.testing.assert_allclose(model.features(x), ref_model.features(x), atol=1e-5)
    with pytest.raises(ValueError, match="head kernel expected"):
        load_keras_xception(Xception(num_classes=3, rngs=nnx.Rngs(0)), path, load_head=True)


def test_bad_keras_files_name_the_problem(keras_small, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.weights.h5"):
        load_keras_xception(Xception(rngs=nnx.Rngs(0)), tmp_path / "nope.weights.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="junk.h5"):
        read_keras_weights(junk)
    path = tmp_path / "x.weights.h5"
    keras_small.save_weights(path)
    # A shallower middle flow has fewer separable convs than the file.
    with pytest.raises(ValueError, match="middle_blocks=2"):
        load_keras_xception(Xception(middle_blocks=2, rngs=nnx.Rngs(0)), path)


def test_train_eval_switch_batchnorm_mode():
    model = Xception(middle_blocks=0, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, SMALL, SMALL, 3)), jnp.float32)
    model.eval()
    before = jax.tree.map(np.array, nnx.state(model, nnx.BatchStat))  # a copy
    model(x)
    assert jax.tree.all(jax.tree.map(jnp.array_equal, before, nnx.state(model, nnx.BatchStat)))
    model.train()
    model(x)
    changed = jax.tree.map(
        lambda a, b: not bool(jnp.array_equal(a, b)), before, nnx.state(model, nnx.BatchStat)
    )
    assert all(jax.tree.leaves(changed))


def test_bf16_model_gives_float32_logits_from_a_float32_head():
    # bf16 logits step by 2^-5 at |l| ~ 5: frame scores would tie and the loss
    # round. The head alone computes in float32 on the fp32 pooled features.
    model = Xception(middle_blocks=0, dtype="bfloat16", rngs=nnx.Rngs(0))
    model.eval()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, SMALL, SMALL, 3)), jnp.float32)
    logits = model(x)
    pooled = jnp.mean(model.features(x).astype(jnp.float32), axis=(1, 2))
    want = np.asarray(pooled, np.float64) @ np.asarray(model.head.kernel[...], np.float64)
    want += np.asarray(model.head.bias[...], np.float64)
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(logits), want, rtol=1e-5, atol=1e-6)
    as_bf16 = np.asarray(logits.astype(jnp.bfloat16).astype(jnp.float32))
    assert not np.array_equal(as_bf16, np.asarray(logits))  # not bf16 values in fp32 clothing


def _logits_and_grads(dtype: str, stencils: str, monkeypatch):
    model = Xception(middle_blocks=1, dtype=dtype, rngs=nnx.Rngs(0))
    model.eval()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, SMALL, SMALL, 3)), jnp.float32)

    def loss(params):
        logits = nnx.merge(graphdef, params, rest)(x)
        return jnp.sum(logits.astype(jnp.float32) ** 2), logits

    monkeypatch.setenv("LDATTN_STENCILS", stencils)
    # A fresh jit per call: the choice is read when tracing.
    (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    kernels = {
        "depthwise": grads["block1"]["sepconv1"]["depthwise"]["kernel"],
        "pointwise": grads["block2"]["sepconv2"]["pointwise"]["kernel"],
        "skip": grads["block3"]["skip"]["kernel"],  # stride 2 at an odd size (SMALL=71)
        "conv2": grads["conv2"]["conv"]["kernel"],
        "conv1": grads["conv1"]["conv"]["kernel"],  # the deepest backward path
    }
    return np.asarray(logits, np.float32), {
        k: np.asarray(v[...], np.float32) for k, v in kernels.items()
    }


def _cos(a, b):
    return float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_stencils_equal_native_window_ops_fp32(monkeypatch):
    # Stencil and native depthwise conv / max-pool give the same logits and
    # gradients: the choice is speed only (a checkpoint resumes under either).
    # SMALL = 71 takes the pools through odd and even input sizes.
    l_native, g_native = _logits_and_grads("float32", "off", monkeypatch)
    l_stencil, g_stencil = _logits_and_grads("float32", "on", monkeypatch)
    assert np.abs(l_native).max() > 1e-3  # logits that depend on something
    np.testing.assert_allclose(l_stencil, l_native, rtol=1e-5, atol=1e-5 * np.abs(l_native).max())
    for k, want in g_native.items():
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(
            g_stencil[k], want, rtol=1e-5, atol=1e-5 * np.abs(want).max(), err_msg=k
        )


def test_stencils_in_bf16_are_as_accurate_as_native_ops(monkeypatch):
    # bf16 rounds per op, so the two orders of summation differ element by
    # element; judged against the fp32 result, the stencil path must be no
    # worse than the native one (it sums its nine taps in fp32).
    _, g_ref = _logits_and_grads("float32", "off", monkeypatch)
    l_native, g_native = _logits_and_grads("bfloat16", "off", monkeypatch)
    l_stencil, g_stencil = _logits_and_grads("bfloat16", "on", monkeypatch)
    np.testing.assert_allclose(l_stencil, l_native, rtol=5e-2, atol=5e-2 * np.abs(l_native).max())
    for k, ref in g_ref.items():
        native, stencil = _cos(g_native[k], ref), _cos(g_stencil[k], ref)
        assert native > 0.9, (k, native)  # the bf16 net itself is sane
        assert stencil >= native - 0.01, (k, stencil, native)


@pytest.mark.parametrize("size", [6, 7, 25])
@pytest.mark.parametrize("stride", [1, 2])  # the shortcut convs are 1x1/2 'SAME'
def test_pointwise_matmul_matches_1x1_conv(size, stride):
    from ldattn_jax.models.xception import pointwise_matmul

    rng = np.random.default_rng(size)
    x = jnp.asarray(rng.standard_normal((2, size, size + 1, 5)), jnp.float32)
    conv = nnx.Conv(5, 3, (1, 1), strides=stride, padding="SAME", use_bias=False, rngs=nnx.Rngs(0))
    k = conv.kernel[...]
    np.testing.assert_allclose(
        pointwise_matmul(x, k, jnp.float32, stride), conv(x), rtol=1e-5, atol=1e-5
    )
    g_want = jax.grad(lambda k: jnp.sum(jnp.sin(_conv1x1(x, k, stride))))(k)
    g_got = jax.grad(lambda k: jnp.sum(jnp.sin(pointwise_matmul(x, k, jnp.float32, stride))))(k)
    np.testing.assert_allclose(g_got, g_want, rtol=1e-5, atol=1e-5 * np.abs(g_want).max())


def _conv1x1(x, k, stride):
    dn = ("NHWC", "HWIO", "NHWC")
    return jax.lax.conv_general_dilated(x, k, (stride, stride), "SAME", dimension_numbers=dn)


@pytest.mark.parametrize(("size", "stride"), [(9, 1), (10, 2), (11, 2)])
def test_im2col_conv_matches_valid_conv(size, stride):
    from ldattn_jax.models.xception import conv3x3_valid_im2col

    rng = np.random.default_rng(size)
    x = jnp.asarray(rng.standard_normal((2, size, size + 2, 4)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((3, 3, 4, 6)), jnp.float32)

    def native(x, k):
        dn = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(x, k, (stride, stride), "VALID", dimension_numbers=dn)

    def ours(x, k):
        return conv3x3_valid_im2col(x, k, jnp.float32, stride)

    np.testing.assert_allclose(ours(x, k), native(x, k), rtol=1e-5, atol=1e-5)
    g_got = jax.grad(lambda x, k: jnp.sum(jnp.sin(ours(x, k))), argnums=(0, 1))(x, k)
    g_want = jax.grad(lambda x, k: jnp.sum(jnp.sin(native(x, k))), argnums=(0, 1))(x, k)
    for a, b in zip(g_got, g_want, strict=True):  # input and kernel gradients
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_bf16_matmul_runs_bf16_dots_accumulated_in_f32_forward_and_backward():
    import re

    from ldattn_jax.models.xception import matmul_f32_acc

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((300, 40)), jnp.bfloat16)
    b = jnp.asarray(rng.standard_normal((40, 24)), jnp.bfloat16)
    g = jnp.asarray(rng.standard_normal((300, 24)), jnp.bfloat16)
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    y, pull = jax.vjp(matmul_f32_acc, a, b)
    da, db = pull(g)
    # Exact sums of the bf16 values, rounded once to bf16 (half an ulp, 2^-9).
    for got, want in [(y, f64(a) @ f64(b)), (da, f64(g) @ f64(b).T), (db, f64(a).T @ f64(g))]:
        assert got.dtype == jnp.bfloat16
        np.testing.assert_allclose(f64(got), want, rtol=2**-8, atol=1e-6)
    # The property that makes it fast on a CPU with bf16 units: every dot,
    # backward included, takes bf16 operands and gives float32 (autodiff of the
    # forward alone would widen the backward dots' operands to float32).
    grad = jax.grad(lambda a, b: jnp.sum(matmul_f32_acc(a, b) * g), argnums=(0, 1))
    hlo = jax.jit(matmul_f32_acc).lower(a, b).as_text() + jax.jit(grad).lower(a, b).as_text()
    dots = re.findall(r"dot_general.*?: \((tensor<[^>]*>), (tensor<[^>]*>)\) -> (tensor<[^>]*>)",
                      hlo)  # fmt: skip
    assert len(dots) == 3, dots  # forward, then the input's and the kernel's gradients
    for lhs, rhs, out in dots:
        assert lhs.endswith("bf16>") and rhs.endswith("bf16>") and out.endswith("f32>"), dots
    # In float32 it is the plain matmul.
    a32, b32 = a.astype(jnp.float32), b.astype(jnp.float32)
    np.testing.assert_array_equal(matmul_f32_acc(a32, b32), a32 @ b32)


@pytest.mark.parametrize(("backend", "out"), [("cpu", "f32"), ("gpu", "bf16")])
def test_stencil_matmuls_accumulate_explicitly_only_on_cpu(monkeypatch, backend, out):
    # Measured on XLA:CPU only; a GPU's stencil form keeps the plain bf16 dot.
    from ldattn_jax.models import xception

    monkeypatch.setattr(xception.jax, "default_backend", lambda: backend)
    x = jnp.ones((1, 5, 5, 8), jnp.float32)
    k = jnp.ones((1, 1, 8, 4), jnp.float32)
    hlo = jax.jit(lambda x, k: xception.pointwise_matmul(x, k, jnp.bfloat16)).lower(x, k)
    (dot,) = [line for line in hlo.as_text().splitlines() if "dot_general" in line]
    assert dot.rstrip().endswith(f"x{out}>"), dot


@pytest.mark.parametrize("size", [6, 7, 98, 49, 25])
def test_max_pool_stencil_matches_reduce_window(size):
    from ldattn_jax.models.xception import max_pool3x3s2_stencil

    x = jnp.asarray(
        np.random.default_rng(size).standard_normal((2, size, size + 1, 3)), jnp.float32
    )
    want = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    np.testing.assert_array_equal(max_pool3x3s2_stencil(x), want)
    g_want = jax.grad(lambda x: jnp.sum(nnx.max_pool(x, (3, 3), (2, 2), "SAME") ** 2))(x)
    g_got = jax.grad(lambda x: jnp.sum(max_pool3x3s2_stencil(x) ** 2))(x)
    np.testing.assert_allclose(g_got, g_want, rtol=1e-6)


def test_max_pool_stencil_in_bf16_is_exact():
    from ldattn_jax.models.xception import max_pool3x3s2_stencil

    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 49, 50, 8)), jnp.bfloat16)
    got = max_pool3x3s2_stencil(x)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_array_equal(got, nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME"))
    # bf16 has ties; where they occur the two backward passes share the
    # gradient out differently, but each output's gradient arrives whole.
    g = jax.grad(lambda x: jnp.sum(max_pool3x3s2_stencil(x).astype(jnp.float32)))(x)
    assert g.dtype == jnp.bfloat16
    np.testing.assert_allclose(float(jnp.sum(g.astype(jnp.float32))), got.size, rtol=1e-3)


def test_unknown_stencil_choice_is_a_clear_error(monkeypatch):
    from ldattn_jax.models.xception import use_stencils

    monkeypatch.setenv("LDATTN_STENCILS", "winograd")
    with pytest.raises(ValueError, match="LDATTN_STENCILS='winograd'"):
        use_stencils()
    monkeypatch.setenv("LDATTN_STENCILS", "auto")
    assert use_stencils()  # the suite runs on CPU


def test_block1_reads_conv2_unrectified_so_negative_modulations_count():
    # Keras' entry flow: conv2 ends with a ReLU and block1 (Keras block2) starts
    # with its separable conv, no second ReLU. The attention maps that multiply
    # conv2's output can be negative (their 1x1 combination has signed weights):
    # block1's main path must see those values, not a rectified copy. The two
    # modulations below agree where block1's 1x1/2 shortcut samples (even rows
    # and columns) and differ, by negative values only, elsewhere.
    from ldattn_jax.models.xception import Block

    abstract = nnx.eval_shape(lambda: Xception(middle_blocks=0, rngs=nnx.Rngs(0)))
    assert not abstract.block1.start_with_relu and abstract.block2.start_with_relu
    block = Block(8, (16, 16), downsample=True, start_with_relu=False, rngs=nnx.Rngs(0),
                  dtype=jnp.float32)  # fmt: skip
    block.eval()
    y = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (1, 9, 9, 8)), jnp.float32)
    even = np.zeros((1, 9, 9, 1), np.float32)
    even[:, ::2, ::2] = 1.0
    assert float(jnp.abs(block(-y) - block(-y * even)).max()) > 1e-3
