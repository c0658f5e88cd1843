"""Side by side, same GPU, same run: timm's PyTorch ``legacy_xception`` vs our Flax ``xception``.

Both train one SGD(momentum 0.9) step on 398x398 inputs with a 2-way head, bf16
compute by default (torch: autocast + channels_last + torch.compile; ours:
dtype=bfloat16, fp32 params). Reports images/s per batch size, the ratio ours /
timm, and both parameter counts (equal: 20,811,050 — the same network).

    python benchmarks/torch_vs_jax.py [--batch-sizes 32,128] [--dtype bfloat16|float32]
        [--torch-compile-mode MODE] [--json OUT] [--allow-cpu]

On a GPU, XLA wraps a step's kernels in command buffers (CUDA graphs) by
default, while ``torch.compile``'s default mode launches each kernel by
itself; Xception has many small depthwise/pointwise kernels, so at batch 32
launch overhead can tilt the ratio towards JAX by a few percent.
``--torch-compile-mode reduce-overhead`` (CUDA graphs) or
``max-autotune-no-cudagraphs`` (Triton/GEMM autotuning, no graphs) shows how
much; every row records the mode it ran.

Skips cleanly (exit 0, a line saying why) where torch, timm or a GPU is absent,
so it can sit in any environment. Never run by the test suite.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from data_prep import cli

# JAX would otherwise take 75% of the GPU at its first call, leaving timm's
# larger batches to fail for lack of memory rather than for being slow.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# Steps chained per timed sample on both sides (ours: train_step_measurement's inner).
INNER = 5
# torch.compile's modes ("default": what a user gets without asking).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")


def _sync(torch, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timm_train_step(
    batch: int, size: int, repeats: int, warmup: int, device: str, dtype: str,
    mode: str = "default",
) -> dict:  # fmt: skip
    """timm ``legacy_xception``'s training step: step_s (median), images/s, compile_s,
    params, peak_memory_bytes (CUDA only), compile_mode (``torch.compile``'s
    ``mode``, one of COMPILE_MODES)."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"torch.compile mode {mode!r}: choose from {COMPILE_MODES}")
    import timm
    import torch

    torch.backends.cudnn.benchmark = True
    # Dynamo caches compiled code per Python code object, and `step` below is
    # the same code object for every batch size: the second batch size fails
    # the first compile's guards, and Dynamo's automatic-dynamic rule then
    # recompiles it with a symbolic batch dimension (seen with
    # TORCH_LOGS=dynamic). Each batch size gets a fresh, static compile
    # instead, as a user training at one batch size has.
    torch._dynamo.reset()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = timm.create_model("legacy_xception", pretrained=False, num_classes=2).to(device)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=3e-4, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    step = torch.compile(step, dynamic=False, mode=None if mode == "default" else mode)
    t0 = time.perf_counter()
    step()
    _sync(torch, device)
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    _sync(torch, device)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(INNER):
            step()
        _sync(torch, device)
        samples.append((time.perf_counter() - t0) / INNER)
    med = statistics.median(samples)
    params = sum(p.numel() for p in model.parameters())
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return {
        "step_s": med,
        "images_per_s": batch / med,
        "compile_s": compile_s,
        "params": params,
        "peak_memory_bytes": peak,  # torch's allocator peak during this batch size
        "compile_mode": mode,
    }


def our_param_count(size: int) -> int:
    import jax
    from flax import nnx

    from ldattn_jax.benchmark import bench_config
    from ldattn_jax.models.lda import build_model

    config = bench_config("xception", image_size=size)
    model = build_model(config.model, rngs=nnx.Rngs(0))
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _jax_images_per_s(batch: int, size: int, repeats: int, warmup: int, dtype: str) -> dict:
    from ldattn_jax.benchmark import train_step_measurement

    r = train_step_measurement(
        "xception", batch=batch, dtype=dtype, image_size=size, repeats=repeats,
        warmup=warmup, inner=INNER,
    )  # fmt: skip
    return {
        "step_s": r["step_s"],
        "images_per_s": r["images_per_s"],
        "compile_s": r["compile_s"],
        "params": our_param_count(size),
    }


def side_by_side_row(batch: int, timm_row: dict, ours: dict) -> dict:
    """One comparison row (ratio = ours / timm images/s), printed as it is made."""
    row = {
        "batch": batch,
        "timm": timm_row,
        "ours": ours,
        "ratio": ours["images_per_s"] / timm_row["images_per_s"],
    }
    if timm_row["params"] != ours["params"]:  # same network or the ratio means nothing
        print(f"WARNING: parameter counts differ: timm {timm_row['params']}, ours {ours['params']}")
    print(
        f"batch {batch:4d}: timm legacy_xception {timm_row['images_per_s']:8.1f} img/s | "
        f"ours {ours['images_per_s']:8.1f} img/s | ratio {row['ratio']:.2f}x",
        flush=True,
    )
    return row


def one_device_problem() -> str | None:
    """Why the comparison would be unfair here, or None: timm trains on one GPU,
    and our step runs on every device JAX sees (the training mesh)."""
    import jax

    n = jax.device_count()
    if n == 1:
        return None
    return (
        f"JAX sees {n} devices and would shard our step over all of them while timm "
        "trains on one; run with CUDA_VISIBLE_DEVICES=0"
    )


def main(argv=None) -> int:
    p = cli.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="32,128")
    p.add_argument("--size", type=int, default=398)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--dtype",
        choices=["bfloat16", "float32"],
        default="bfloat16",
        help="compute dtype (torch: autocast on/off); params stay fp32 on both sides",
    )
    p.add_argument(
        "--torch-compile-mode",
        choices=COMPILE_MODES,
        default="default",
        help="torch.compile's mode for timm (XLA:GPU uses command buffers by default; "
        "torch's default mode does not)",
    )
    p.add_argument("--json", default="")
    p.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run on the CPU where no GPU is visible: only to check this script, not a result",
    )
    args = p.parse_args(argv)
    try:
        import timm  # noqa: F401
        import torch
    except ImportError as e:
        print(f"skipped: {e.name} is not installed (this comparison needs torch + timm on a GPU)")
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.allow_cpu:
        print("skipped: no CUDA GPU visible to torch (--allow-cpu runs it anyway, as a check)")
        return 0
    problem = one_device_problem()
    if problem:
        print(f"skipped: {problem}")
        return 0
    import jax

    from ldattn_jax import bench_utils

    # Every torch run first, its cache emptied, then every JAX run: two
    # allocators that each keep what they took must not share the GPU's memory
    # (JAX's preallocation is off for the same reason, see the top).
    batches = [int(x) for x in args.batch_sizes.split(",")]
    timm_rows = {
        b: timm_train_step(
            b, args.size, args.repeats, args.warmup, device, args.dtype, args.torch_compile_mode
        )
        for b in batches
    }
    if device == "cuda":
        torch.cuda.empty_cache()
    rows = [
        side_by_side_row(
            b, timm_rows[b], _jax_images_per_s(b, args.size, args.repeats, args.warmup, args.dtype)
        )
        for b in batches
    ]
    out = {
        "machine": bench_utils.machine_info(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "torch_device": device,
        "steps_per_sample": INNER,
        "jax_devices": [d.device_kind for d in jax.devices()],
        "size": args.size,
        "dtype": args.dtype,
        "torch_compile_mode": args.torch_compile_mode,
        "rows": rows,
    }
    if args.json:
        bench_utils.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
