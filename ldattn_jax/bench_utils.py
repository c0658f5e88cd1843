"""Measurement helpers shared by the benchmark CLI and benchmarks/ scripts.

Timing rules (so numbers are comparable across runs and machines): warm-up runs
are excluded, every timed call is synchronised with ``block_until_ready``, and
we report the median of several repeats together with min/max.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

# Dense peak FLOP/s per device from vendor data sheets (no sparsity). Used only
# to report the fraction of peak; unknown devices report null rather than a
# guess.
PEAK_FLOPS = {
    # device_kind substring: {dtype: flop/s}
    "H100": {"bfloat16": 989e12, "float32": 67e12},
    "H200": {"bfloat16": 989e12, "float32": 67e12},
    "A100": {"bfloat16": 312e12, "float32": 19.5e12},
    "TPU v4": {"bfloat16": 275e12, "float32": 275e12 / 4},
    "TPU v5 lite": {"bfloat16": 197e12, "float32": 197e12 / 4},
    "TPU v5p": {"bfloat16": 459e12, "float32": 459e12 / 4},
    "TPU v6": {"bfloat16": 918e12, "float32": 918e12 / 4},
}


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: devices, host, library versions."""
    import flax

    from ldattn_jax.models.xception import use_stencils

    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "host_cpu_cores": os.cpu_count(),
        # The "2-core VM" has been an AMD EPYC in some sessions and an Intel
        # Xeon in others, with loader rates 1.8x apart: CPU numbers compare
        # only within one model.
        "host_cpu_model": cpu_model(),
        "host": platform.node(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        # Which form the 3x3 window ops took (LDATTN_STENCILS; models/xception.py).
        "stencils": use_stencils(),
        "date": time.strftime("%Y-%m-%d"),
    }


def cpu_model() -> str:
    """The host CPU's model name (Linux: /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_json(path: str, data: dict) -> None:
    """Writes ``data`` to ``path`` atomically (a reader never sees half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(target)


def peak_flops(device_kind: str, dtype: str) -> float | None:
    for key, table in PEAK_FLOPS.items():
        if key.lower() in device_kind.lower():
            return table.get(dtype)
    return None


def time_fn(
    fn: Callable[[], Any], *, warmup: int = 2, repeats: int = 5, inner: int = 1
) -> dict[str, float]:
    """Median / min / max seconds per call of ``fn`` (which returns jax arrays).

    ``inner`` calls are chained per timed repeat so very short steps are not
    dominated by dispatch jitter; the result is divided by ``inner``.
    """
    for _ in range(warmup):
        jax.block_until_ready(fn())
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = None
        for _ in range(inner):
            out = fn()
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - t0) / inner)
    return {
        "median_s": statistics.median(samples),
        "min_s": min(samples),
        "max_s": max(samples),
        "repeats": repeats,
    }


def compiled_flops(compiled) -> float | None:
    """FLOPs of one call from XLA's cost analysis (None where the backend gives none)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    if not cost:
        return None
    flops = cost.get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def compiled_memory_bytes(compiled) -> int | None:
    """Device bytes one call of ``compiled`` needs by XLA's memory analysis:
    arguments + outputs - donated (aliased) buffers + temporaries. None where
    the backend gives no analysis."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    return int(
        m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
        + m.temp_size_in_bytes
    )  # fmt: skip


def device_memory_limit_bytes() -> int | None:
    """Bytes the allocator may use on device 0 (None on backends without stats, e.g. CPU)."""
    stats = jax.devices()[0].memory_stats()
    return int(stats["bytes_limit"]) if stats and stats.get("bytes_limit") else None


def peak_device_memory_bytes() -> int | None:
    """Peak bytes in use on device 0 since start (None on backends without stats, e.g. CPU)."""
    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    return int(stats.get("peak_bytes_in_use", 0)) or None
