"""Chollet's Xception (CVPR 2017) in Flax NNX, with named stages.

Layout follows keras.applications.Xception exactly (so its weights load 1:1,
see ``keras_convert.py``); stage names follow the paper / timm numbering:

    conv1   3x3/2 valid, 32   + BN + ReLU          (398 -> 198)
    conv2   3x3/1 valid, 64   + BN + ReLU          (198 -> 196)
    block1  entry, 128, /2                         (196 -> 98)
    block2  entry, 256, /2                         (98 -> 49)
    block3  entry, 728, /2                         (49 -> 25)
    block4 .. block{3+M}   middle, 728             (25)
    block{4+M}  exit, 728 -> 1024, /2              (25 -> 13)
    conv3   separable 1536 + BN + ReLU
    conv4   separable 2048 + BN + ReLU
    head    global average pool + dense

``modulators`` lets a caller re-weight the output of any stage by name (the
long-distance attention maps multiply the conv2 / block1 features).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

# Keras BatchNormalization defaults; matched so Keras weights give Keras logits.
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3

# He init suits ReLU nets; the paper trains the backbone from scratch (V-A).
_conv_init = nnx.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


class BatchNorm(nnx.BatchNorm):
    """nnx.BatchNorm that always normalises in float32.

    nnx.BatchNorm with dtype=bfloat16 casts the running mean/var to bf16 in
    eval mode; computing in fp32 and casting the *output* keeps the statistics
    and the normalisation exact while the convolutions run in bf16.
    """

    def __init__(self, num_features: int, *, compute_dtype=jnp.float32, rngs: nnx.Rngs):
        super().__init__(
            num_features,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            dtype=jnp.float32,
            param_dtype=jnp.float32,
            use_fast_variance=False,  # two-pass variance: stable for large activations
            rngs=rngs,
        )
        self.compute_dtype = compute_dtype

    def __call__(self, x, use_running_average=None, *, mask=None):
        y = super().__call__(x.astype(jnp.float32), use_running_average, mask=mask)
        return y.astype(self.compute_dtype)


# How Xception's convolutions and pools run. Native: XLA's convolution
# (grouped, feature_group_count = C, for the depthwise 3x3) and reduce_window
# max-pool. Stencil: the same results as slices and matmuls -- the depthwise
# 3x3 and the max-pool as nine shifted (strided) slices combined elementwise,
# which XLA fuses, backward included; the 1x1 convs as one matmul; conv1/conv2
# as one matmul over their nine concatenated taps (im2col). Results are equal
# (tests/test_xception.py; a max-pool tie may split its gradient between the
# tied inputs where reduce_window's backward gives it to one). Speed is not:
# XLA:CPU's native depthwise fwd+bwd is 14-24x slower, its pool 5-11x, and it
# computes every conv's kernel gradient as a convolution with a whole-map
# window at ~5 GFLOP/s; a 398-px train step is 4.5-4.7x faster with stencils
# (benchmarks/README.md). 'auto' uses stencils on CPU and the native ops
# elsewhere until GPU/TPU measurements decide; LDATTN_STENCILS=on|off
# overrides (the benchmarks compare both). Not a config key: it changes no
# parameter and no result, so a checkpoint resumes under either.
STENCIL_CHOICES = ("auto", "on", "off")


def use_stencils() -> bool:
    """Whether this trace writes the 3x3 window ops as stencils."""
    choice = os.environ.get("LDATTN_STENCILS", "auto")
    if choice not in STENCIL_CHOICES:
        raise ValueError(f"LDATTN_STENCILS={choice!r}: choose one of {STENCIL_CHOICES}")
    if choice == "auto":
        return jax.default_backend() == "cpu"
    return choice == "on"


def _same_pads(size: int, stride: int, window: int = 3) -> tuple[int, int, int]:
    """(output size, pad before, pad after) of a 'SAME' window, as XLA computes it."""
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return out, total // 2, total - total // 2


def max_pool3x3s2_stencil(x: jax.Array) -> jax.Array:
    """3x3/2 'SAME' max-pool of NHWC ``x`` as the max of nine strided slices.

    Runs in float32 whatever ``x`` is (a max is exact in any precision): XLA:CPU
    made the bf16 form's backward 10x slower than the native pool (measured,
    benchmarks/README.md), the float32 form 1.4-1.7x faster than it.
    """
    dtype = x.dtype
    x = x.astype(jnp.float32)
    (ho, top, bottom), (wo, left, right) = _same_pads(x.shape[1], 2), _same_pads(x.shape[2], 2)
    xp = jnp.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)], constant_values=-jnp.inf)
    out = None
    for i in range(3):
        for j in range(3):
            tap = xp[:, i : i + 2 * ho - 1 : 2, j : j + 2 * wo - 1 : 2, :]
            out = tap if out is None else jnp.maximum(out, tap)
    return out.astype(dtype)


def _taps(xp: jax.Array, h: int, w: int) -> list[jax.Array]:
    """The nine shifted [..., h, w, C] views of a 1-padded ``xp``, in kernel order (i, j)."""
    return [xp[..., i : i + h, j : j + w, :] for i in range(3) for j in range(3)]


def _pad1(x: jax.Array) -> jax.Array:
    return jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)])


def _stencil3x3(x: jax.Array, k: jax.Array) -> jax.Array:
    h, w = x.shape[-3], x.shape[-2]
    out = None
    for tap, weight in zip(_taps(_pad1(x), h, w), k.reshape(9, -1), strict=True):
        out = tap * weight if out is None else out + tap * weight
    return out


@jax.custom_vjp
def _depthwise3x3_f32(x: jax.Array, k: jax.Array) -> jax.Array:
    return _stencil3x3(x, k)


def _depthwise3x3_fwd(x, k):
    return _stencil3x3(x, k), (x, k)


def _depthwise3x3_bwd(res, g):
    x, k = res
    _, pull = jax.vjp(lambda x: _stencil3x3(x, k), x)
    (dx,) = pull(g)
    # The kernel gradient is nine sums of tap * g over every position. Written
    # as nine reductions XLA:CPU reads x and g nine times; one variadic reduce
    # computes all nine in a single pass (1.8-5.4x faster, benchmarks/README.md).
    # It reduces along rows (W) first and sums the small [..., H, C] partials
    # after: reducing N, H and W at once, XLA:CPU's loop ran scalar on one core
    # (3-3.5x slower at 196x196x128, measured).
    h, w = x.shape[-3], x.shape[-2]
    row_sums = jax.lax.reduce(
        [tap * g for tap in _taps(_pad1(x), h, w)],
        [jnp.zeros((), g.dtype)] * 9,
        lambda a, b: [u + v for u, v in zip(a, b, strict=True)],
        (g.ndim - 2,),
    )
    sums = [jnp.sum(r, axis=tuple(range(r.ndim - 1))) for r in row_sums]
    return dx, jnp.stack(sums).reshape(k.shape)


_depthwise3x3_f32.defvjp(_depthwise3x3_fwd, _depthwise3x3_bwd)


@jax.custom_vjp
def matmul_f32_acc(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` in ``a``'s dtype, accumulated in float32, its gradients likewise.

    A bf16 x bf16 -> bf16 dot accumulates in float32 anyway; asking for the
    float32 result explicitly lets XLA:CPU run it on the CPU's bf16 units
    (AVX512-BF16/AMX), where it otherwise widens both operands to float32
    first: 1.8x faster forward on the Xeon of benchmarks/README.md (session
    11). Autodiff of that form would give float32 cotangents and float32
    backward dots, so the backward is written out the same way. In float32
    it is a plain matmul.
    """
    return jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(a.dtype)


def _matmul_f32_acc_fwd(a, b):
    return matmul_f32_acc(a, b), (a, b)


def _matmul_f32_acc_bwd(res, g):
    a, b = res
    da = jnp.matmul(g, b.T, preferred_element_type=jnp.float32).astype(a.dtype)
    db = jnp.matmul(a.T, g, preferred_element_type=jnp.float32).astype(b.dtype)
    return da, db


matmul_f32_acc.defvjp(_matmul_f32_acc_fwd, _matmul_f32_acc_bwd)


def _stencil_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """The stencil forms' matmul: ``matmul_f32_acc`` on XLA:CPU, where it was
    measured; elsewhere the plain dot, so that a GPU's stencil form (timed
    against the native ops by the device kit) writes no float32 products."""
    return matmul_f32_acc(a, b) if jax.default_backend() == "cpu" else a @ b


def pointwise_matmul(x: jax.Array, kernel: jax.Array, dtype, stride: int = 1) -> jax.Array:
    """A 1x1 convolution (kernel [1, 1, C, D]) of NHWC ``x`` as one [N*H*W, C] @ [C, D] matmul.

    XLA:CPU lowers the 1x1 conv's *kernel gradient* as a convolution whose
    window is the whole feature map (196x196 in block1), which ran at ~5
    GFLOP/s and took 60% of a 398-px train step; as a matmul its gradient is
    the plain x^T @ g, 7-18x faster (benchmarks/README.md). ``stride`` 2 (the
    shortcut convs, 'SAME'): a 1x1 window needs no padding, so it is every
    other row and column. Inputs are rounded to ``dtype`` as nnx.Conv rounds them.
    """
    if stride != 1:
        x = x[:, ::stride, ::stride, :]
    n, h, w, c = x.shape
    k = kernel.reshape(c, -1).astype(dtype)
    return _stencil_matmul(x.astype(dtype).reshape(n * h * w, c), k).reshape(n, h, w, -1)


def conv3x3_valid_im2col(x: jax.Array, kernel: jax.Array, dtype, stride: int) -> jax.Array:
    """A 3x3 'VALID' convolution of NHWC ``x`` as one matmul over the nine taps (im2col).

    The taps are concatenated in the kernel's (row, column, channel) order, so
    the [3, 3, C, D] kernel is simply reshaped to [9C, D]. conv1 and conv2 run
    2-2.5x faster this way on XLA:CPU, whose conv kernel gradient has the
    same whole-map window as ``pointwise_matmul``'s.
    """
    x = x.astype(dtype)
    n, h, w, c = x.shape
    ho, wo = (h - 3) // stride + 1, (w - 3) // stride + 1
    span_h, span_w = (ho - 1) * stride + 1, (wo - 1) * stride + 1
    cols = jnp.concatenate(
        [
            x[:, i : i + span_h : stride, j : j + span_w : stride, :]
            for i in range(3)
            for j in range(3)
        ],
        axis=-1,
    )
    k = kernel.reshape(9 * c, -1).astype(dtype)
    return _stencil_matmul(cols.reshape(n * ho * wo, 9 * c), k).reshape(n, ho, wo, -1)


def depthwise3x3_shift(x: jax.Array, kernel: jax.Array, dtype) -> jax.Array:
    """'SAME'-padded, stride-1 depthwise 3x3 of NHWC ``x`` with a [3, 3, 1, C] kernel.

    Inputs are rounded to ``dtype`` as nnx.Conv rounds them; products and the
    nine-term sum are float32 (as a convolution accumulates), the result ``dtype``.
    """
    x = x.astype(dtype).astype(jnp.float32)
    k = kernel.astype(dtype).astype(jnp.float32)
    return _depthwise3x3_f32(x, k).astype(dtype)


class SeparableConv(nnx.Module):
    """Depthwise 3x3 (one filter per channel) followed by pointwise 1x1, no bias."""

    def __init__(self, in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs):
        self.depthwise = nnx.Conv(
            in_features,
            in_features,
            (3, 3),
            padding="SAME",
            feature_group_count=in_features,
            use_bias=False,
            dtype=dtype,
            kernel_init=_conv_init,
            rngs=rngs,
        )
        self.pointwise = nnx.Conv(
            in_features,
            out_features,
            (1, 1),
            use_bias=False,
            dtype=dtype,
            kernel_init=_conv_init,
            rngs=rngs,
        )

    def __call__(self, x):
        if not use_stencils():
            return self.pointwise(self.depthwise(x))
        x = depthwise3x3_shift(x, self.depthwise.kernel[...], self.depthwise.dtype)
        return pointwise_matmul(x, self.pointwise.kernel[...], self.pointwise.dtype)


class ConvBN(nnx.Module):
    """Plain conv (no bias) + BN + ReLU, used for conv1 and conv2."""

    def __init__(self, cin, cout, stride: int, *, dtype, rngs):
        self.conv = nnx.Conv(
            cin,
            cout,
            (3, 3),
            strides=stride,
            padding="VALID",
            use_bias=False,
            dtype=dtype,
            kernel_init=_conv_init,
            rngs=rngs,
        )
        self.bn = BatchNorm(cout, compute_dtype=dtype, rngs=rngs)

    def __call__(self, x):
        if use_stencils():
            x = conv3x3_valid_im2col(x, self.conv.kernel[...], self.conv.dtype, self.conv.strides)
        else:
            x = self.conv(x)
        return jax.nn.relu(self.bn(x))


class SepConvBN(nnx.Module):
    """Separable conv + BN + ReLU, used for conv3 and conv4 (Keras block14)."""

    def __init__(self, cin, cout, *, dtype, rngs):
        self.sepconv = SeparableConv(cin, cout, dtype=dtype, rngs=rngs)
        self.bn = BatchNorm(cout, compute_dtype=dtype, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.bn(self.sepconv(x)))


class Block(nnx.Module):
    """One Xception block: (ReLU -> sepconv -> BN) x len(widths), then either
    3x3/2 max-pool + (1x1/2 conv + BN) shortcut, or an identity shortcut.

    The shortcut branches off *before* the first ReLU, as in Keras.
    """

    def __init__(self, cin, widths, *, downsample, start_with_relu=True, dtype, rngs):
        self.start_with_relu = start_with_relu
        self.downsample = downsample
        self.num_convs = len(widths)
        c = cin
        for i, w in enumerate(widths, start=1):
            setattr(self, f"sepconv{i}", SeparableConv(c, w, dtype=dtype, rngs=rngs))
            setattr(self, f"bn{i}", BatchNorm(w, compute_dtype=dtype, rngs=rngs))
            c = w
        if downsample:
            self.skip = nnx.Conv(
                cin,
                c,
                (1, 1),
                strides=2,
                padding="SAME",
                use_bias=False,
                dtype=dtype,
                kernel_init=_conv_init,
                rngs=rngs,
            )
            self.skip_bn = BatchNorm(c, compute_dtype=dtype, rngs=rngs)
        else:
            if cin != c:
                raise ValueError(f"identity shortcut needs cin == cout, got {cin} -> {c}")
            self.skip = None
            self.skip_bn = None

    def __call__(self, x):
        shortcut = x
        for i in range(1, self.num_convs + 1):
            if i > 1 or self.start_with_relu:
                x = jax.nn.relu(x)
            x = getattr(self, f"bn{i}")(getattr(self, f"sepconv{i}")(x))
        if self.downsample:
            if use_stencils():
                x = max_pool3x3s2_stencil(x)
                shortcut = pointwise_matmul(shortcut, self.skip.kernel[...], self.skip.dtype, 2)
            else:
                x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
                shortcut = self.skip(shortcut)
            shortcut = self.skip_bn(shortcut)
        return x + shortcut


def stage_names(middle_blocks: int = 8) -> tuple[str, ...]:
    """Names of the stages in forward order (the keys ``modulators`` accepts)."""
    blocks = tuple(f"block{i}" for i in range(1, middle_blocks + 5))
    return ("conv1", "conv2", *blocks, "conv3", "conv4")


def _same_down(n: int) -> int:
    return -(-n // 2)  # ceil: stride-2 'SAME' pooling / 1x1 conv


def stage_shapes(image_size: int, middle_blocks: int = 8) -> dict[str, tuple[int, int, int]]:
    """(H, W, C) of every stage output for a square input, without building anything."""
    s = (image_size - 3) // 2 + 1
    out = {"conv1": (s, s, 32)}
    s -= 2
    out["conv2"] = (s, s, 64)
    names = stage_names(middle_blocks)
    for name in names[2:-2]:
        idx = int(name[5:])
        if idx <= 3:
            s = _same_down(s)
            c = (128, 256, 728)[idx - 1]
        elif idx <= 3 + middle_blocks:
            c = 728
        else:
            s = _same_down(s)
            c = 1024
        out[name] = (s, s, c)
    out["conv3"] = (s, s, 1536)
    out["conv4"] = (s, s, 2048)
    return out


class Xception(nnx.Module):
    """Xception classifier on normalised float images [B, H, W, 3] (Keras: x/127.5 - 1).

    Args:
      num_classes: width of the final dense layer.
      middle_blocks: depth of the middle flow (8 in Chollet's network).
      dtype: compute dtype of convs/dense ('float32' or 'bfloat16'); params stay fp32.
    """

    def __init__(
        self,
        *,
        num_classes: int = 2,
        middle_blocks: int = 8,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dtype = jnp.dtype(dtype)
        self.middle_blocks = middle_blocks
        self.stages = stage_names(middle_blocks)
        kw = dict(dtype=dtype, rngs=rngs)
        self.conv1 = ConvBN(3, 32, 2, **kw)
        self.conv2 = ConvBN(32, 64, 1, **kw)
        # Entry flow: block1 starts without ReLU because conv2 already ends with one.
        self.block1 = Block(64, (128, 128), downsample=True, start_with_relu=False, **kw)
        self.block2 = Block(128, (256, 256), downsample=True, **kw)
        self.block3 = Block(256, (728, 728), downsample=True, **kw)
        for i in range(4, 4 + middle_blocks):
            setattr(self, f"block{i}", Block(728, (728, 728, 728), downsample=False, **kw))
        setattr(self, f"block{4 + middle_blocks}", Block(728, (728, 1024), downsample=True, **kw))
        self.conv3 = SepConvBN(1024, 1536, **kw)
        self.conv4 = SepConvBN(1536, 2048, **kw)
        # The head computes in float32 whatever the compute dtype: bf16 logits
        # keep 8 significant bits, so margins of ~8 step by 0.06 -- frame scores
        # tie (AUC) and the loss rounds. 2048 x num_classes costs nothing.
        self.head = nnx.Linear(2048, num_classes, dtype=jnp.float32, rngs=rngs)

    def features(
        self, x: jax.Array, modulators: Mapping[str, Callable[[jax.Array], jax.Array]] | None = None
    ) -> jax.Array:
        """Runs every stage; ``modulators[name](y)`` replaces stage ``name``'s output y."""
        modulators = dict(modulators or {})
        unknown = set(modulators) - set(self.stages)
        if unknown:
            raise KeyError(f"unknown Xception stage(s) {sorted(unknown)}; valid: {self.stages}")
        x = x.astype(self.dtype)
        for name in self.stages:
            x = getattr(self, name)(x)
            if name in modulators:
                x = modulators[name](x).astype(self.dtype)
        return x

    def __call__(self, x, modulators=None) -> jax.Array:
        x = self.features(x, modulators)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # global average pool in fp32
        return self.head(x)
