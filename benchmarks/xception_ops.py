"""Xception's conv and pool ops, native XLA vs stencil form, forward + backward.

    python benchmarks/xception_ops.py [--batch 4] [--size 398] [--dtype float32] [--json OUT]

Times ``jax.grad`` of each op alone at the shapes it has in Xception at
``--size``, native (``conv_general_dilated``, grouped for the depthwise conv;
``reduce_window``) and in the stencil forms of ``ldattn_jax.models.xception``:
the depthwise 3x3 and the 3x3/2 max-pool as nine shifted slices fused
elementwise, the 1x1 convs (stride 1, and the stride-2 shortcuts) as one
matmul, conv1/conv2 as an im2col matmul. This is the measurement behind the
``LDATTN_STENCILS`` default; ``python -m ldattn_jax.benchmark train`` shows
what it does to a whole step. (Named ``window_ops.py`` until session 4, when
it timed the depthwise conv and the pool only.)
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_prep import cli
from ldattn_jax import bench_utils
from ldattn_jax.models import xception

OPS = ("conv3x3", "depthwise", "pointwise", "max_pool")


def _cases(size: int) -> list[tuple]:
    """(op, (H, W, C_in), C_out, stride) of the timed ops in Xception at ``size``."""
    s = {k: v[0] for k, v in xception.stage_shapes(size, 1).items()}
    conv1, conv2, b1, b2, b3 = s["conv1"], s["conv2"], s["block1"], s["block2"], s["block3"]
    conv1_in = (conv1 - 1) * 2 + 3  # conv1 is 3x3/2 'VALID'
    return [
        # conv1 and conv2: plain 3x3 'VALID'.
        ("conv3x3", (conv1_in, conv1_in, 3), 32, 2),
        ("conv3x3", (conv1, conv1, 32), 64, 1),
        # First separable conv of blocks 1-3 and the middle/exit widths.
        *[
            ("depthwise", (h, h, c), c, 1)
            for h, c in [(conv2, 64), (b1, 128), (b2, 256), (b3, 728)]
        ],
        # Pointwise convs of those separable convs, and the 1x1/2 shortcut of block1.
        ("pointwise", (conv2, conv2, 64), 128, 1),
        ("pointwise", (conv2, conv2, 128), 128, 1),
        ("pointwise", (b1, b1, 256), 256, 1),
        ("pointwise", (b3, b3, 728), 728, 1),
        ("pointwise", (conv2, conv2, 64), 128, 2),
        # Pool inputs: each entry block pools its own input size.
        *[
            ("max_pool", (h, h, c), c, 2)
            for h, c in [(conv2, 128), (b1, 256), (b2, 728), (b3, 1024)]
        ],
    ]


def _conv(stride: int, padding: str, groups: int = 1):
    dn = ("NHWC", "HWIO", "NHWC")
    return lambda x, k: jax.lax.conv_general_dilated(
        x, k, (stride, stride), padding, dimension_numbers=dn, feature_group_count=groups
    )


def _pool(x):
    return nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")


def _forms(op: str, c_in: int, stride: int):
    """(native, stencil) functions of (x[, kernel]) and the kernel size (None: no kernel)."""
    if op == "conv3x3":
        ours = lambda x, k: xception.conv3x3_valid_im2col(x, k, x.dtype, stride)
        return _conv(stride, "VALID"), ours, 3
    if op == "depthwise":
        ours = lambda x, k: xception.depthwise3x3_shift(x, k, x.dtype)
        return _conv(1, "SAME", c_in), ours, 3
    if op == "pointwise":
        ours = lambda x, k: xception.pointwise_matmul(x, k, x.dtype, stride)
        return _conv(stride, "SAME"), ours, 1
    return _pool, xception.max_pool3x3s2_stencil, None


def _time_grad(fn, *args, repeats: int, inner: int | None = None) -> float:
    """Median seconds per call of the op's gradient. ``inner`` calls are queued per
    timed sample (default 10 on an accelerator, where one op alone takes about
    as long as its dispatch and a sync after each would time that; 1 on CPU)."""
    # Gradients for every input: a conv's kernel gradient is the costly one natively.
    loss = lambda *a: jnp.sum(fn(*a).astype(jnp.float32) ** 2)
    grad = jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))
    if inner is None:
        inner = 1 if jax.devices()[0].platform == "cpu" else 10
    t = bench_utils.time_fn(lambda: grad(*args), warmup=1, repeats=repeats, inner=inner)
    return t["median_s"]


def measure(batch: int, size: int, dtype: str, repeats: int, ops=None, rows=None, save=None):
    """Appends a row per op to ``rows``, calling ``save()`` after each (kept if killed)."""
    rng = np.random.default_rng(0)
    rows = [] if rows is None else rows
    for op, (h, w, c), c_out, stride in _cases(size):
        if ops and op not in ops:
            continue
        native_fn, stencil_fn, ksize = _forms(op, c, stride)
        args = [jnp.asarray(rng.standard_normal((batch, h, w, c)), dtype)]
        if ksize is not None:
            k_in = 1 if op == "depthwise" else c
            args.append(jnp.asarray(rng.standard_normal((ksize, ksize, k_in, c_out)), dtype))
        native = _time_grad(native_fn, *args, repeats=repeats)
        stencil = _time_grad(stencil_fn, *args, repeats=repeats)
        rows.append(
            {"op": op, "input": [batch, h, w, c], "out_channels": c_out, "stride": stride,
             "dtype": dtype, "native_s": native, "stencil_s": stencil,
             "speedup": native / stencil}
        )  # fmt: skip
        print(
            f"  {op:9s} {str((batch, h, w, c)):22s} -> {c_out:4d} /{stride}  "
            f"native {1e3 * native:8.2f} ms  stencil {1e3 * stencil:8.2f} ms  "
            f"x{native / stencil:5.1f}",
            flush=True,
        )
        if save:
            save()
    return rows


def main(argv=None) -> int:
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=398)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ops", default="", help="comma-separated subset of " + ",".join(OPS))
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    out = {"machine": bench_utils.machine_info(), "size": args.size}
    print("machine:", json.dumps(out["machine"]))
    ops = [o for o in args.ops.split(",") if o]
    unknown = set(ops) - set(OPS)
    if unknown:
        p.error(f"--ops: unknown {sorted(unknown)}; choose from {OPS}")
    out["rows"] = []
    save = (lambda: bench_utils.write_json(args.json, out)) if args.json else None
    measure(args.batch, args.size, args.dtype, args.repeats, ops, out["rows"], save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
