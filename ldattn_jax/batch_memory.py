"""Batch arrays whose memory is used again once nothing refers to them.

Why: a host batch of 128 398-px four-frame stacks is 243 MB. A fresh numpy
array per batch is freshly mapped memory, which the kernel faults in and
zeroes on first write, batch after batch. Recycling it gave the training
loader 6-25% more stacks per CPU-second at batch 128 (six interleaved pairs,
benchmarks/README.md, session 9). Memory handed back here is already mapped.

Safety rests on numpy's view rule: every view of an array that does not own
its memory points (``.base``) at the first array in the chain whose own base
is not an array. ``empty`` returns a reshape of such an array (``owner``, made
by ``np.frombuffer`` over an anonymous mmap), so every view, slice or
transpose of a batch keeps ``owner`` alive, and so does any zero-copy consumer
(the buffer protocol holds the exporting array). The memory returns to the
free list only when ``owner`` is collected: after the last view is gone.
"""

from __future__ import annotations

import math
import mmap
import weakref

import numpy as np


class BatchMemory:
    """Recycled, uninitialised arrays: ``empty(shape, dtype)`` like ``np.empty``.

    Holds at most as many buffers per size as were alive at once (for a grain
    iterator: its prefetch buffer plus what the consumer holds), for as long as
    this object lives. Pickles empty: each grain worker process recycles its own.
    """

    def __init__(self):
        self._free: dict[int, list[mmap.mmap]] = {}

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        count = math.prod(shape)
        nbytes = count * np.dtype(dtype).itemsize
        if nbytes == 0:
            return np.empty(shape, dtype)
        free = self._free.setdefault(nbytes, [])
        try:
            memory = free.pop()
        except IndexError:
            memory = mmap.mmap(-1, nbytes)
            if hasattr(mmap, "MADV_HUGEPAGE"):
                # First touch then faults in 2 MB pages instead of 4 KB ones.
                memory.madvise(mmap.MADV_HUGEPAGE)
        owner = np.frombuffer(memory, dtype, count)
        weakref.finalize(owner, free.append, memory)
        return owner.reshape(shape)

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self._free = {}
