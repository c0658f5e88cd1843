"""grain input pipeline: shards → per-process numpy batches.

Training stream (deterministic for a seed, checkpointable):

    indices (one epoch; minority class repeated when balance='sample')
      → seeded global shuffle, reshuffled every epoch → repeat forever
      → draw a horizontal flip, ONE decision per stack (the residuals stay face motion)
      → this process's slice [process_index::process_count]
      → load the record (the shard source decodes in __getitem__)
      → keep the frames the model needs, resize to image_size if the shards differ
      → per-process batch, flipping while copying → worker processes (mp_prefetch)
      → host batch

A global step consumes `batch_size` consecutive elements of the shuffled
stream, whatever the number of processes, so an epoch is the same set of
examples, flipped alike, on 1 CPU and on a pod. The iterator's state (grain
`DatasetIterator.get_state`) goes into the same orbax checkpoint as the model.

The source is anything with `__len__` and `__getitem__` returning the dicts
of docs/interfaces.md (`data_prep.shards.open_split`, or a list in tests); it
must be picklable when `worker_count > 0`. Only the RECORD_FIELDS are read.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import os
import signal
import threading
import time

import cv2
import grain
import numpy as np
from absl import flags

from ldattn_jax.batch_memory import BatchMemory
from ldattn_jax.config_utils import ConfigError

__all__ = [
    "BALANCE_MODES",
    "RECORD_FIELDS",
    "ClassCounts",
    "class_counts",
    "class_weights",
    "epoch_indices",
    "in_worker_processes",
    "iterator_position",
    "iterator_state_at",
    "iterator_worker_count",
    "make_eval_batches",
    "make_train_iterator",
    "record_labels",
    "release_worker_batches",
]

BALANCE_MODES = ("none", "sample", "loss_weight")

# The record fields LoadRecord reads: open training and validation sources
# with `open_split(..., features=RECORD_FIELDS)` so nothing else is decoded.
RECORD_FIELDS = ("frames", "label")


@dataclasses.dataclass(frozen=True)
class ClassCounts:
    real: int
    fake: int

    @property
    def total(self) -> int:
        return self.real + self.fake


def record_labels(source) -> np.ndarray:
    """Labels of every record, cheaply when the source offers them.

    A source may expose `labels` (array or method) so that nothing is decoded;
    otherwise every record is read once (threads, I/O-bound).
    """
    labels = getattr(source, "labels", None)
    if callable(labels):
        labels = labels()
    if labels is not None:
        return np.asarray(labels, dtype=np.int64)
    from data_prep.shards import read_labels

    logging.info("reading the label of %d records (the source has no .labels)", len(source))
    return read_labels(source)


def class_counts(labels: np.ndarray) -> ClassCounts:
    bad = np.setdiff1d(np.unique(labels), [0, 1])
    if bad.size:
        raise ValueError(f"labels must be 0 (real) or 1 (fake); found {bad.tolist()}")
    return ClassCounts(real=int((labels == 0).sum()), fake=int((labels == 1).sum()))


def class_weights(counts: ClassCounts) -> np.ndarray:
    """Loss weights N / (2 n_c) ('balanced' in sklearn's sense): both classes weigh equally."""
    if counts.real == 0 or counts.fake == 0:
        raise ValueError(f"cannot balance a split with one class missing: {counts}")
    return np.array(
        [counts.total / (2 * counts.real), counts.total / (2 * counts.fake)], np.float32
    )


def epoch_indices(labels: np.ndarray, balance: str) -> np.ndarray:
    """The record indices of one (unshuffled) epoch.

    'sample' repeats the minority class cyclically up to the majority's count,
    so every epoch sees each fake once and each real ~4 times on FF++ (4:1).
    """
    if balance not in BALANCE_MODES:
        raise ConfigError(f"config.data.balance={balance!r}: expected one of {BALANCE_MODES}")
    idx = np.arange(len(labels), dtype=np.int64)
    if balance != "sample":
        return idx
    real, fake = idx[labels == 0], idx[labels == 1]
    if not len(real) or not len(fake):
        raise ConfigError(
            "config.data.balance='sample' needs both classes in the training split; "
            "use --config.data.balance=none or rebuild with both classes"
        )
    n = max(len(real), len(fake))
    return np.sort(np.concatenate([np.resize(real, n), np.resize(fake, n)]))


class LoadRecord(grain.transforms.Map):
    """Index → {'frames': uint8 [T, S, S, 3], 'label': int32} (T = frames the model needs)."""

    def __init__(self, source, num_frames: int, image_size: int):
        self.source = source
        self.num_frames = num_frames
        self.image_size = image_size

    def map(self, index):
        rec = self.source[int(index)]
        frames = np.asarray(rec["frames"])
        if frames.ndim != 4 or frames.shape[0] < self.num_frames or frames.shape[-1] != 3:
            raise ValueError(
                f"record {index}: 'frames' has shape {frames.shape}; expected "
                f"[>= {self.num_frames}, S, S, 3] uint8"
            )
        frames = frames[: self.num_frames]
        if frames.shape[1:3] != (self.image_size, self.image_size):
            # Shards built at another size (e.g. the demo's); INTER_AREA when shrinking.
            interp = cv2.INTER_AREA if frames.shape[1] > self.image_size else cv2.INTER_CUBIC
            size = (self.image_size, self.image_size)
            frames = np.stack([cv2.resize(f, size, interpolation=interp) for f in frames])
        return {"frames": np.ascontiguousarray(frames, np.uint8), "label": np.int32(rec["label"])}


class DrawFlip(grain.transforms.RandomMap):
    """Index → (index, flip): draws the horizontal flip (p = 0.5) of a stack;
    `StackBatch` applies it.

    One decision per stack, so every frame flips alike and the residuals stay
    face motion. Drawn on the global stream, before the per-process slice:
    grain seeds an element's draw with its position in the dataset it is
    applied to, so a draw after the slice gave element i of every process the
    same flip (P hosts: B/P independent draws per global batch) and another
    augmentation on a pod than on one host. Flipping while the batch is copied
    together saves a 2 MB copy per flipped stack (benchmarks/README.md, session 8).
    """

    def random_map(self, index, rng: np.random.Generator):
        return int(index), bool(rng.random() < 0.5)


class LoadDrawnRecord(LoadRecord):
    """(index, flip) → LoadRecord's dict with the stack's ``flip``."""

    def map(self, element):
        index, flip = element
        return dict(super().map(index), flip=flip)


class StackBatch:
    """grain batch_fn: each field stacked; the frames into recycled memory
    (``batch_memory``: 6-25% more stacks per CPU-second at batch 128 than fresh
    memory per batch), each stack flipped on the way if it drew a flip (``DrawFlip``).

    One per iterator, so the recycled buffers go when the iterator does.
    """

    def __init__(self):
        self._memory = BatchMemory()

    def __call__(self, elements) -> dict:
        first = elements[0]["frames"]
        frames = self._memory.empty((len(elements), *first.shape), first.dtype)
        for out, element in zip(frames, elements, strict=True):
            if element.get("flip", False):
                # cv2.flip is ~35x faster than copying numpy's reversed view (3.4 ms ->
                # 0.1 ms per 4x398x398 stack, measured).
                for t, frame in enumerate(element["frames"]):
                    cv2.flip(frame, 1, dst=out[t])
            else:
                out[...] = element["frames"]
        rest = (k for k in elements[0] if k not in ("frames", "flip"))
        # np.stack of each field, as grain's default batch_fn does.
        return {"frames": frames} | {k: np.stack([e[k] for e in elements]) for k in rest}


def _read_options(config) -> grain.ReadOptions:
    return grain.ReadOptions(
        num_threads=max(1, config.data.read_threads),
        # grain wants the buffer >= the threads, or the extra threads idle.
        prefetch_buffer_size=max(1, config.data.prefetch, config.data.read_threads),
    )


def _per_process_batch(batch_size: int, process_count: int) -> int:
    if batch_size % process_count:
        raise ValueError(
            f"config.batch_size={batch_size} is not divisible by the {process_count} processes"
        )
    return batch_size // process_count


# The training stream's version (config.data.stream_version; a run's config.json
# records it, and a run begun before it existed resumes with 1: data_stream).
# 1: grain shuffles epoch e with seed + e, so config.seed s + 1 drew seed s's
#    epoch orders one epoch later (ablation seeds shared all but one order).
# 2: the shuffle seed is config.seed times an odd constant mod 2**32 (a
#    bijection; seed 0 stays 0, so its stream is version 1's): seeds below 1000
#    lie >= 1.9 million apart, so no two share an epoch's order.
STREAM_VERSION = 2
_SEED_SPREAD = 0x9E3779B1  # 2**32 / golden ratio, odd


def config_stream_version(config) -> int:
    """config.data.stream_version; STREAM_VERSION for a config without the key."""
    return config.data.get("stream_version", STREAM_VERSION)


def shuffle_seed(seed: int, stream_version: int = STREAM_VERSION) -> int:
    """grain's shuffle seed for config.seed (see STREAM_VERSION)."""
    if stream_version == 1:
        return int(seed)
    if stream_version == 2:
        return int(seed) * _SEED_SPREAD % 2**32
    raise ConfigError(
        f"config.data.stream_version={stream_version!r}: this code knows 1 and 2 "
        f"(STREAM_VERSION, {STREAM_VERSION}, for new runs)"
    )


def make_train_iterator(
    source,
    config,
    *,
    num_frames: int,
    indices: np.ndarray,
    process_index: int = 0,
    process_count: int = 1,
):
    """An infinite, checkpointable grain iterator of per-process training batches.

    `indices` is one epoch (from `epoch_indices`); `config` is the full config
    (uses seed, batch_size, model.image_size and data.*, data.stream_version
    among them: STREAM_VERSION where absent).
    """
    stream_version = config_stream_version(config)
    local_batch = _per_process_batch(config.batch_size, process_count)
    ds = grain.MapDataset.source(indices)
    # Explicit seeds (not ds.seed()) so adding a transformation never changes the order.
    ds = ds.shuffle(seed=shuffle_seed(config.seed, stream_version)).repeat(None)
    load = LoadRecord
    if config.data.flip:
        ds = ds.random_map(DrawFlip(), seed=config.seed + 1)  # before the slice: DrawFlip
        load = LoadDrawnRecord
    ds = ds[process_index::process_count]
    ds = ds.map(load(source, num_frames, config.model.image_size))
    ds = ds.batch(local_batch, drop_remainder=True, batch_fn=StackBatch())
    # Threads read whole batches ahead; the buffer is in batches, so keep it small
    # (grain's default of 500 would hold ~30 GB of 398px stacks).
    it_ds = ds.to_iter_dataset(_read_options(config))
    return iter(in_worker_processes(it_ds, config))


def in_worker_processes(it_ds: grain.IterDataset, config) -> grain.IterDataset:
    """`it_ds` run by config.data.worker_count grain processes (0: unchanged).

    Order is kept (grain interleaves the workers' slices deterministically).
    Workers add cores past one process's GIL, at ~2.5x the CPU per stack
    (grain copies each batch into fresh shared memory); since reads take one
    preadv (session 10) the threads of one process hold the GIL 50-66% of the
    time at ~1,500 stacks/s (it was 81% at ~500 in session 6).
    """
    workers = int(config.data.get("worker_count", 0))
    if workers <= 0:
        return it_ds
    # grain's workers read absl flags; a plain `python -m` run never parsed them.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    _start_resource_tracker_deaf_to_stop_signals()
    return it_ds.mp_prefetch(
        grain.MultiprocessingOptions(
            num_workers=workers,
            per_worker_buffer_size=int(config.data.get("worker_buffer_size", 2)),
        ),
        # This process's pid, taken here: a worker still starting when the trainer
        # dies is already reparented when its init runs, and must know it.
        worker_init_fn=functools.partial(ignore_stop_signals, trainer=os.getpid()),
    )


# What train._Preemption turns into "save, then exit 0" in the training process.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def ignore_stop_signals(
    worker_index: int = 0, worker_count: int = 0, *, trainer: int | None = None
) -> None:
    """grain worker start-up: leave the stop signals to the training process.

    Ctrl-C (the terminal's process group), SLURM's --signal/scancel (every
    process of the job step) and a TPU VM's shutdown reach the workers too. With
    the default actions they died at once, the next batch failed ("Worker process
    was terminated unexpectedly") before the training process reached the step
    where it saves, and the run lost every step since its last checkpoint. The
    workers are daemons: they end when the iterator is closed or the trainer exits.
    """
    del worker_index, worker_count
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    # Deaf to the stop signals, a worker would outlive a trainer killed outright
    # (SIGKILL, the OOM killer): grain does not watch its parent, so this does.
    parent = os.getppid() if trainer is None else trainer
    if os.getppid() != parent:
        os._exit(0)  # the trainer died while this worker was starting
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(0)  # reparented: the trainer is gone, and nothing reads this worker's batches


def _start_resource_tracker_deaf_to_stop_signals() -> None:
    """Starts multiprocessing's resource tracker with SIGHUP blocked.

    The workers' batches are shared memory that this tracker accounts for. It
    ignores SIGINT and SIGTERM itself but not SIGHUP, so a dropped terminal
    session killed it: relaunched, it knew none of the live segments, and closing
    the iterator after the save failed (FileNotFoundError; exit 1). A blocked
    signal stays blocked across the tracker's fork and exec. Already running: as is.
    """
    from multiprocessing import resource_tracker

    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def release_worker_batches() -> None:
    """Frees the shared memory of worker batches still alive, before the process exits.

    grain's worker processes hand each batch over in shared memory, which the
    training process unlinks when the array is deleted, in a background
    thread. The last batches of a run (on a CPU, jax arrays alias them) were
    deleted only at interpreter exit, when that thread no longer ran, so the
    resource tracker unlinked them itself and warned "There appear to be N
    leaked shared_memory objects": nothing leaked, but every run with
    data.worker_count > 0 ended on what read as a fault. Call it once the
    training state is gone (train.main, after train_and_evaluate returns).
    """
    gc.collect()  # batches held in reference cycles (jax arrays) go now, not at exit
    # grain 0.2.x's deletion pool (pinned; a grain without it has nothing to wait for).
    from grain._src.python.ipc.shared_memory_array import SharedMemoryArray

    pool = getattr(SharedMemoryArray, "_del_thread_pool", None)
    if pool is not None:
        pool.close()
        pool.join()  # every queued unlink done
        SharedMemoryArray._disable_async_del()  # the next worker iterator makes a new pool


# grain's training-iterator states (grain 0.2.x), by data.worker_count:
#   0   {"next_index": n}: the threaded iterator over the batches;
#   w>0 mp_prefetch's interleave over w worker streams, worker i reading batches
#       i, i + w, ...: {"next_index_in_cycle": n % w, "iterators_in_use_states":
#       [{"next_index": k_i}, ...], ...}, with sum(k_i) = n (w = 1 reads the whole
#       stream through one worker, with the same interleave wrapper).
# Either way the whole position is n, the batches this process has taken, so a
# run can resume with another worker_count (docs/training.md tells users to
# raise it when the loader stalls).
_INTERLEAVE_KEYS = {"next_index_in_cycle", "iterators_in_use_indices", "iterators_in_use_states"}


def iterator_worker_count(state) -> int:
    """data.worker_count that made `state` (0 for the plain iterator)."""
    if isinstance(state, dict) and set(state) == {"next_index"}:
        return 0
    if isinstance(state, dict) and set(state) >= _INTERLEAVE_KEYS:
        return len(state["iterators_in_use_indices"])
    raise ValueError(f"not a training-iterator state of this project's pipeline: {state!r:.300}")


def iterator_position(state) -> int:
    """Batches this process's training iterator had taken when it gave `state`."""
    workers = iterator_worker_count(state)
    if workers == 0:
        return int(state["next_index"])
    inner = state["iterators_in_use_states"]
    ok = (
        state["iterators_in_use_indices"] == list(range(workers))
        and not any(state.get("exhausted", []))  # the stream repeats forever
        and not state.get("future_states")
        and all(isinstance(x, dict) and set(x) == {"next_index"} for x in inner)
    )
    if not ok:
        raise ValueError(f"unexpected grain worker state (grain version?): {state!r:.300}")
    n = sum(int(x["next_index"]) for x in inner)
    if n % workers != state["next_index_in_cycle"]:
        raise ValueError(f"inconsistent grain worker state: {state!r:.300}")
    return n


def iterator_state_at(position: int, like) -> dict:
    """A state in the format of `like` (a fresh iterator's state) after `position` batches."""
    workers = iterator_worker_count(like)
    if workers == 0:
        return {"next_index": int(position)}
    # Worker i has produced batches i, i + w, ... below `position`.
    return {
        "next_index_in_cycle": position % workers,
        "next_index_in_datasets": workers,
        "iterators_in_use_indices": list(range(workers)),
        "iterators_in_use_states": [
            {"next_index": max(0, -(-(position - i) // workers))} for i in range(workers)
        ],
        "exhausted": [0] * workers,
        "future_states": {},
    }


class _LoadOrPad(grain.transforms.Map):
    """Eval: global index → record; indices past the split are padding (valid = 0)."""

    def __init__(self, load: LoadRecord, size: int):
        self.load = load
        self.size = size

    def map(self, index):
        valid = index < self.size
        element = self.load.map(index if valid else 0)
        element["valid"] = np.bool_(valid)
        return element


def make_eval_batches(
    source,
    config,
    *,
    num_frames: int,
    process_index: int = 0,
    process_count: int = 1,
    max_batches: int = -1,
):
    """(iterator of per-process batches with a 'valid' mask, number of batches).

    Every process yields the same number of batches (the last is padded), so
    the jitted eval step runs in lock-step on all hosts; global batch b holds
    records [b * batch_size, (b + 1) * batch_size).
    """
    local_batch = _per_process_batch(config.batch_size, process_count)
    n = len(source)
    if n == 0:
        raise ConfigError(
            "the validation split is empty: rebuild the shards with a val split, or turn "
            "validation off with --config.eval_every=0"
        )
    num_batches = -(-n // config.batch_size)
    if max_batches > 0:
        num_batches = min(num_batches, max_batches)
    grid = np.arange(num_batches * config.batch_size).reshape(
        num_batches, process_count, local_batch
    )
    ds = grain.MapDataset.source(grid[:, process_index].reshape(-1))
    ds = ds.map(_LoadOrPad(LoadRecord(source, num_frames, config.model.image_size), n))
    ds = ds.batch(local_batch, batch_fn=StackBatch())
    return iter(ds.to_iter_dataset(_read_options(config))), num_batches
