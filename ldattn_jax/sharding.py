"""Device mesh, parameter shardings and global batches.

One code path for 1 CPU, 1 GPU, 8 simulated devices or a TPU pod: the mesh
comes from `config.mesh` (e.g. [('data', -1), ('fsdp', 1)]), the batch is split
over every mesh axis (pure data parallelism, plus FSDP when its axis is > 1),
parameters are replicated unless the fsdp axis is > 1, in which case large
arrays are split along their largest divisible dimension.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ldattn_jax.config_utils import ConfigError

__all__ = [
    "BATCH_AXES",
    "batch_sharding",
    "make_mesh",
    "param_shardings",
    "replicated",
    "shard_batch",
]

# Axes the batch is split over; 'fsdp' devices also see different examples.
BATCH_AXES = ("data", "fsdp")


def _mesh_axes(config) -> list[tuple[str, int]]:
    axes = [(str(name), int(size)) for name, size in config.mesh]
    names = [n for n, _ in axes]
    unknown = sorted(set(names) - set(BATCH_AXES))
    if unknown or len(set(names)) != len(names):
        raise ConfigError(
            f"config.mesh={config.mesh!r}: axis names must be distinct and among "
            f"{BATCH_AXES}, e.g. [('data', -1), ('fsdp', 1)]"
        )
    for name in BATCH_AXES:  # missing axes are size 1, so specs can always name both
        if name not in names:
            axes.append((name, 1))
    return axes


def make_mesh(config, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Mesh over all devices (of all processes) with the axes of `config.mesh`.

    One axis may be -1: it takes the devices the others leave. A mesh with
    fixed sizes smaller than the device count uses the first devices.
    """
    devices = list(jax.devices() if devices is None else devices)
    axes = _mesh_axes(config)
    sizes = [s for _, s in axes]
    if sizes.count(-1) > 1:
        raise ConfigError(f"config.mesh={config.mesh!r}: at most one axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ConfigError(
                f"config.mesh={config.mesh!r}: {len(devices)} devices are not divisible "
                f"by the fixed axes' product {known}"
            )
        sizes = [len(devices) // known if s == -1 else s for s in sizes]
    if math.prod(sizes) > len(devices):
        raise ConfigError(
            f"config.mesh={config.mesh!r} needs {math.prod(sizes)} devices, "
            f"but {len(devices)} are visible; use -1 for one axis"
        )
    if math.prod(sizes) < len(devices):
        # An explicit smaller mesh (e.g. [('data', 1)] to debug on one device).
        if jax.process_count() > 1:
            raise ConfigError(
                f"config.mesh={config.mesh!r} uses {math.prod(sizes)} of {len(devices)} "
                "devices; a multi-process run must use all of them (use -1 for one axis)"
            )
        devices = devices[: math.prod(sizes)]
    names = tuple(n for n, _ in axes)
    # Auto axes: classic GSPMD propagation inside jit. Explicit (sharding-in-types)
    # would make every model op declare its output sharding.
    types = (AxisType.Auto,) * len(names)
    if len(devices) == len(jax.devices()):
        # jax.make_mesh orders devices for the physical topology (ICI rings on TPU).
        return jax.make_mesh(tuple(sizes), names, axis_types=types, devices=devices)
    return Mesh(np.asarray(devices).reshape(sizes), names, axis_types=types)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data and fsdp axes."""
    return NamedSharding(mesh, P(BATCH_AXES))


def _fsdp_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
    """Splits the largest dimension divisible by `fsdp`; small arrays stay replicated."""
    if fsdp <= 1 or math.prod(shape) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            spec = [None] * len(shape)
            spec[dim] = "fsdp"
            return P(*spec)
    return P()


def param_shardings(mesh: Mesh, abstract_state, min_size: int = 2**18):
    """A NamedSharding for every leaf of (an abstract) state pytree."""
    fsdp = mesh.shape.get("fsdp", 1)
    return jax.tree.map(
        lambda x: NamedSharding(mesh, _fsdp_spec(tuple(x.shape), fsdp, min_size)),
        abstract_state,
    )


def shard_batch(mesh: Mesh, local_batch):
    """Builds global arrays from this process's rows of the batch.

    Every process passes its own `local_batch` (a pytree of numpy arrays whose
    leading dimension is the per-process batch); its rows land, in order, on
    this process's devices of the batch axes. The global row order therefore
    follows the mesh: it is process order only when each process's devices form
    one contiguous block of the batch axes, which jax.make_mesh does not promise
    (on TPU pods it interleaves hosts). Arrays that must stay row-aligned (frames,
    labels, masks) must all go through this function together, and be read back
    from the global arrays (e.g. multihost_utils.process_allgather(x, tiled=True)),
    never re-assembled from host-side copies.
    """
    sharding = batch_sharding(mesh)
    n_batch_devices = math.prod(mesh.shape[a] for a in BATCH_AXES)
    for leaf in jax.tree.leaves(local_batch):
        global_rows = leaf.shape[0] * jax.process_count()
        if global_rows % n_batch_devices:
            raise ValueError(
                f"global batch of {global_rows} rows cannot be split over "
                f"{n_batch_devices} devices; choose --config.batch_size as a multiple "
                f"of {n_batch_devices}"
            )
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )
