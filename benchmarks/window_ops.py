"""Xception's two 3x3 window ops, native XLA vs stencil form, forward + backward.

    python benchmarks/window_ops.py [--batch 4] [--size 398] [--dtype float32] [--json OUT]

Times ``jax.grad`` of each op alone at the shapes it has in Xception at
``--size`` (depthwise 3x3 of every separable conv stage; the four 3x3/2
max-pools), native (grouped ``conv_general_dilated``, ``reduce_window``) and as
the stencils of ``ldattn_jax.models.xception`` (nine shifted slices fused
elementwise). This is the measurement behind the ``LDATTN_STENCILS`` default;
``python -m ldattn_jax.benchmark train`` shows what it does to a whole step.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ldattn_jax import bench_utils
from ldattn_jax.models import xception


def _shapes(size: int) -> dict[str, list[tuple[int, int, int]]]:
    """(H, W, C) of each window op's input in Xception at ``size``."""
    s = {k: v[0] for k, v in xception.stage_shapes(size, 1).items()}
    conv2, b1, b2, b3 = s["conv2"], s["block1"], s["block2"], s["block3"]
    return {
        # First separable conv of blocks 1-3 and the middle/exit widths.
        "depthwise": [(conv2, conv2, 64), (b1, b1, 128), (b2, b2, 256), (b3, b3, 728)],
        # Pool inputs: each entry block pools its own input size.
        "max_pool": [(conv2, conv2, 128), (b1, b1, 256), (b2, b2, 728), (b3, b3, 1024)],
    }


def _depthwise_native(x, k):
    return jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[-1],
    )  # fmt: skip


def _time_grad(fn, *args, repeats: int) -> float:
    # Gradients for every input: the depthwise kernel's is the costly one natively.
    loss = lambda *a: jnp.sum(fn(*a).astype(jnp.float32) ** 2)
    grad = jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))
    return bench_utils.time_fn(lambda: grad(*args), warmup=1, repeats=repeats)["median_s"]


def measure(batch: int, size: int, dtype: str, repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for op, shapes in _shapes(size).items():
        for h, w, c in shapes:
            x = jnp.asarray(rng.standard_normal((batch, h, w, c)), dtype)
            if op == "depthwise":
                k = jnp.asarray(rng.standard_normal((3, 3, 1, c)), dtype)
                native = _time_grad(_depthwise_native, x, k, repeats=repeats)
                stencil = _time_grad(
                    lambda x, k: xception.depthwise3x3_shift(x, k, x.dtype), x, k, repeats=repeats
                )
            else:
                pool = lambda x: nnx.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
                native = _time_grad(pool, x, repeats=repeats)
                stencil = _time_grad(xception.max_pool3x3s2_stencil, x, repeats=repeats)
            rows.append(
                {"op": op, "input": [batch, h, w, c], "dtype": dtype, "native_s": native,
                 "stencil_s": stencil, "speedup": native / stencil}
            )  # fmt: skip
            print(
                f"  {op:9s} {str((batch, h, w, c)):22s} native {1e3 * native:8.2f} ms  "
                f"stencil {1e3 * stencil:8.2f} ms  x{native / stencil:5.1f}",
                flush=True,
            )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=398)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    out = {"machine": bench_utils.machine_info(), "size": args.size}
    print("machine:", json.dumps(out["machine"]))
    out["rows"] = measure(args.batch, args.size, args.dtype, args.repeats)
    if args.json:
        bench_utils.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
