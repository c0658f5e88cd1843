"""batch_memory: batch arrays are recycled, and never while any view of them lives."""

import gc
import pickle
from pathlib import Path

import numpy as np

from ldattn_jax import input_pipeline as ip
from ldattn_jax.batch_memory import BatchMemory


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_memory_comes_back_only_after_the_last_view_is_gone():
    memory = BatchMemory()
    a = memory.empty((4, 3, 5), np.uint8)
    assert a.shape == (4, 3, 5) and a.dtype == np.uint8 and a.flags.writeable
    a[...] = 7
    first = _address(a)
    view = a[1:].transpose(2, 0, 1)[::2]  # a view of a view of a view
    del a
    gc.collect()
    b = memory.empty((4, 3, 5), np.uint8)  # the first block is still in use by `view`
    assert _address(b) != first
    b[...] = 0
    assert np.all(view == 7)  # untouched by the new batch
    del view, b
    gc.collect()
    x, y = memory.empty((4, 3, 5), np.uint8), memory.empty((4, 3, 5), np.uint8)
    assert first in {_address(x), _address(y)}  # reused once nothing refers to it


def test_a_zero_copy_consumer_keeps_the_memory():
    memory = BatchMemory()
    a = memory.empty((8, 8), np.float32)
    a[...] = 1.5
    held = memoryview(a)  # what a zero-copy consumer holds (the buffer protocol)
    del a
    gc.collect()
    memory.empty((8, 8), np.float32)[...] = 0
    assert np.all(np.asarray(held) == 1.5)


def test_sizes_and_dtypes_are_kept_apart_and_pickling_starts_empty():
    memory = BatchMemory()
    a = memory.empty((2, 6), np.int32)
    addr = _address(a)
    del a
    gc.collect()
    b = memory.empty((3, 4), np.int32)  # same bytes, other shape: the block is reused
    assert b.shape == (3, 4) and _address(b) == addr
    c = memory.empty((2, 6), np.uint8)  # other size: a new block
    assert c.shape == (2, 6) and c.dtype == np.uint8 and _address(c) != addr
    assert memory.empty((0, 5), np.uint8).shape == (0, 5)
    copy = pickle.loads(pickle.dumps(memory))  # what a grain worker process gets
    del b, c
    gc.collect()
    assert copy._free == {}


def test_stack_batch_recycles_a_batch_only_once_it_is_dropped():
    stacks = [np.full((2, 4, 4, 3), i, np.uint8) for i in range(3)]
    batcher = ip.StackBatch()
    one = batcher([{"frames": s, "label": 0} for s in stacks])
    two = batcher([{"frames": s[:, ::-1], "label": 1} for s in stacks])
    assert _address(one["frames"]) != _address(two["frames"])
    np.testing.assert_array_equal(one["frames"], np.stack(stacks))
    kept = one["frames"][1]
    del one
    gc.collect()
    three = batcher([{"frames": s + 10, "label": 0} for s in stacks])
    np.testing.assert_array_equal(kept, stacks[1])  # still the first batch's values
    del kept, two
    gc.collect()
    np.testing.assert_array_equal(three["frames"], np.stack(stacks) + 10)
    pickle.loads(pickle.dumps(batcher))  # grain sends the batch_fn to worker processes


def test_jax_arrays_made_from_a_batch_survive_its_reuse():
    # What training does with a host batch: device_put / global arrays. On the
    # CPU backend jax may alias numpy memory; it must then keep the array alive.
    import jax

    from ldattn_jax import sharding
    from ldattn_jax.config_utils import load_config

    config = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "demo.py"))

    memory = BatchMemory()
    a = memory.empty((8, 16, 16, 3), np.uint8)
    a[...] = 5
    put = jax.device_put(a)
    mesh = sharding.make_mesh(config)
    sharded = sharding.shard_batch(mesh, {"frames": a})["frames"]
    del a
    gc.collect()
    for _ in range(3):  # whatever block comes back is overwritten
        memory.empty((8, 16, 16, 3), np.uint8)[...] = 0
    assert int(np.asarray(put).min()) == 5 and int(np.asarray(sharded).min()) == 5
