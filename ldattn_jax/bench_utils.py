"""Measurement helpers shared by the benchmark CLI and benchmarks/ scripts.

Timing rules (so numbers are comparable across runs and machines): warm-up runs
are excluded, every timed call is synchronised with ``block_until_ready``, and
we report the median of several repeats together with min/max.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax

# Dense peak FLOP/s per device (no 2:4 sparsity: NVIDIA's headline tensor
# figures are sparse, twice these), from the vendors' data sheets; matched as
# a substring of jax's ``device_kind`` ('NVIDIA H100 80GB HBM3' is the SXM
# part, 'NVIDIA H100 PCIe', 'NVIDIA H200', 'NVIDIA A100-SXM4-80GB'), first
# match wins, so the specific names come first. Keys: 'bfloat16' (tensor
# cores / MXU), 'tf32' (tensor cores on float32 inputs: what XLA:GPU runs a
# float32 dot or conv as at JAX's default matmul precision) and 'float32'
# (CUDA cores: the ceiling at jax_default_matmul_precision='highest'). A kind
# or dtype with no verified figure (None, or no entry) reports no fraction
# rather than a guess: the NVL boards, and TPU float32, whose default
# precision runs bf16 passes.
PEAK_FLOPS = [
    # device_kind substring, {basis: flop/s}
    ("H100 PCIe", {"bfloat16": 756e12, "tf32": 378e12, "float32": 51e12}),
    ("NVL", {}),  # H100 NVL / H200 NVL: other clocks; not verified here
    ("H100", {"bfloat16": 989.4e12, "tf32": 494.7e12, "float32": 66.9e12}),  # SXM
    ("H200", {"bfloat16": 989.4e12, "tf32": 494.7e12, "float32": 66.9e12}),  # SXM, GH200
    ("A100", {"bfloat16": 312e12, "tf32": 156e12, "float32": 19.5e12}),  # SXM4 and PCIe
    ("TPU v4", {"bfloat16": 275e12}),
    ("TPU v5 lite", {"bfloat16": 197e12}),
    ("TPU v5p", {"bfloat16": 459e12}),
    ("TPU v6", {"bfloat16": 918e12}),
]


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
        # A VM's model name can be generic ("Intel(R) Xeon(R) Processor") for
        # CPU generations a bf16 or AMX kernel tells apart.
        "host_cpu_id": cpu_id(),
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


def cpu_id(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """'GenuineIntel family 6 model 207 stepping 2', or None where not on record."""
    fields = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("vendor_id", "cpu family", "model", "stepping"):
                    fields.setdefault(key, value.strip())
                elif not key:  # the first processor's block ends
                    break
    except OSError:
        return None
    if len(fields) < 4:
        return None
    return (f"{fields['vendor_id']} family {fields['cpu family']} model {fields['model']} "
            f"stepping {fields['stepping']}")  # fmt: skip


def write_json(path: str, data: dict) -> None:
    """Writes ``data`` to ``path`` atomically (a reader never sees half a file).

    An OSError (``path`` a directory, a full disk) is raised with no
    ``path.tmp`` left behind; the caller decides where the data goes instead."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(target)
    except BaseException:  # Ctrl-C mid-write included: no stray half-file beside the target
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def json_problem(path: str) -> str | None:
    """Why ``write_json(path, ...)`` cannot write, or None; for ``--json``,
    checked before measuring so that a typo in the path does not cost the run.

    Creates the folder, as write_json would, and tries a file in it
    (evaluate.writable_dir, as evaluate and predict check their output folders)."""
    from ldattn_jax import json_out
    from ldattn_jax.evaluate import OutputDirError, writable_dir

    if os.path.isdir(path):
        return json_out.problem(path, "bench.json")  # "--json DIR is a directory: ..."
    folder = Path(path).absolute().parent
    existing = next(d for d in (folder, *folder.parents) if d.exists())
    if not existing.is_dir():
        return f"--json {path}: {existing} is a file, not a folder; name a file in a folder"
    try:
        writable_dir(str(folder), f"--json {path}: its folder")
    except OutputDirError as e:
        return str(e)
    return None


@contextlib.contextmanager
def scratch_dir(path: str, prefix: str) -> Iterator[str]:
    """`path` when given (kept, to look at afterwards); else a temp dir removed at the end.

    The loader, loop and predict measurements write shards and clips (over a GB at
    the paper's 398 px): a default run must not leave them in /tmp.
    """
    if path:
        os.makedirs(path, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        yield scratch


def peak_basis(device_kind: str, dtype: str, matmul_precision: str | None = None) -> str:
    """Which peak a ``dtype`` step is held to: 'bfloat16', 'tf32' or 'float32'.

    float32 on an NVIDIA GPU runs its dots and convs on TF32 tensor cores at
    JAX's default matmul precision (jax.default_matmul_precision's docs), so
    it is held to the TF32 peak unless the precision asks for full float32.
    """
    if dtype != "float32" or "tpu" in device_kind.lower():
        return dtype
    full = str(matmul_precision or "").lower() in ("highest", "float32", "f32_f32_f32")
    return "float32" if full else "tf32"


def peak_flops(device_kind: str, dtype: str, matmul_precision: str | None = None) -> float | None:
    """Dense peak FLOP/s of one device of ``device_kind`` for a ``dtype`` step (None: unknown)."""
    basis = peak_basis(device_kind, dtype, matmul_precision)
    for key, table in PEAK_FLOPS:
        if key.lower() in device_kind.lower():
            return table.get(basis)
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


def _flops(cost) -> float | None:
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    if not cost:
        return None
    flops = cost.get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def compiled_flops(compiled) -> float | None:
    """FLOPs of one call on ONE device, from XLA's cost analysis of the compiled
    (optimised, SPMD-partitioned) program; None where the backend gives none.

    Per device: a batch sharded over n devices counts 1/n of the work here.
    XLA counts a multiply-add as 2 FLOPs (papers' "FLOPs" are often
    multiply-adds, e.g. the LDA paper's Table VII).
    """
    return _flops(compiled.cost_analysis())


def cpu_client_hlo_flops(lowered) -> float | None:
    """FLOPs of the lowered (unoptimised, unpartitioned) program by XLA's cost
    analysis run through the CPU client, which every jax install has; None
    where any of the private calls this needs is missing or fails.

    ``lowered.cost_analysis()`` gives None on a PJRT C-API backend (the CUDA
    plugin: jax-ml/jax#22713), while the HLO module it would analyse is the
    same whatever the platform, so the CPU client's analysis counts it. Private
    API (checked on jax 0.10.2 and 0.11.2), hence every step is guarded."""
    try:
        from jax._src import xla_bridge as xb
        from jax._src.lib import _jax

        module = lowered._lowering.hlo().as_hlo_module()
        return _flops(_jax.hlo_module_cost_analysis(xb.get_backend("cpu"), module))
    except Exception:
        return None


def step_flops(lowered, compiled, n_devices: int) -> dict[str, Any]:
    """FLOPs of one whole call (every device together), and where they come from.

    From the lowered program (before optimisation and partitioning: the
    computation as written, whatever libraries the backend later calls) where
    its cost analysis answers ('hlo'); else the same program analysed through
    the CPU client ('hlo (cpu client)': a GPU behind the PJRT C API gives no
    analysis of its own, see cpu_client_hlo_flops); else the compiled
    program's per-device count times ``n_devices`` ('compiled x devices').
    Both are kept: on GPU the compiled count has missed cuBLAS/cuDNN calls in
    some jax versions (jax-ml/jax#16008, #22249).
    """
    try:
        per_device = compiled_flops(compiled)
    except Exception:  # cost_analysis raises, rather than answers None, on some backends
        per_device = None
    try:
        total = _flops(lowered.cost_analysis())
    except Exception:  # a backend without analysis of unoptimised HLO
        total = None
    source = "hlo"
    if total is None:
        total, source = cpu_client_hlo_flops(lowered), "hlo (cpu client)"
    if total is None and per_device is not None:
        total, source = per_device * n_devices, "compiled x devices"
    return {
        "flops_per_step": total,
        "flops_source": source if total is not None else None,
        "compiled_flops_per_device": per_device,
    }


def compiled_memory_bytes(compiled) -> int | None:
    """Bytes one call of ``compiled`` needs on EACH device by XLA's memory
    analysis (of the partitioned program): arguments + outputs - donated
    (aliased) buffers + temporaries. None where the backend gives no analysis."""
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
    """Peak bytes in use on device 0 since the process started: the allocator's
    high-water mark over everything run so far, not one step's own need (None
    on backends without allocator stats, e.g. CPU)."""
    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    return int(stats.get("peak_bytes_in_use", 0)) or None
