"""Reading API for the shards `python -m data_prep.build` writes (docs/interfaces.md).

    src = open_split(data_dir, 'train'); len(src); rec = src[i]
    info = read_info(data_dir)

`data_dir` is the --out of the build. Uncompressed shards are read by
data_prep.array_record_file (one preadv per record), compressed ones by
array_record's reader through TFDS; records are decoded by data_prep.record_view
or TFDS's numpy path (no TensorFlow). The source holds only paths, so it
pickles cheaply into grain worker processes; each process opens the files on
first access.
"""

from __future__ import annotations

import glob
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from data_prep.array_record_file import RecordFiles, UnsupportedLayout
from data_prep.builder import NAME, VERSION
from data_prep.record_view import RecordFormatError, RecordView

SPLITS = ("train", "val", "test")
# 'array_record' makes every source read through array_record's own reader,
# which checks riegeli's hashes (data_prep.array_record_file does not).
READER_ENV = "LDATTN_RECORD_READER"


def find_builder_dir(data_dir: str) -> str:
    """OUT/lda_faces/<config>/<version>: the one TFDS dataset directory under data_dir."""
    data_dir = os.fspath(data_dir)
    if os.path.isfile(os.path.join(data_dir, "dataset_info.json")):
        return data_dir  # already the TFDS directory
    found = sorted(glob.glob(os.path.join(data_dir, NAME, "*", VERSION, "dataset_info.json")))
    if not found:
        raise FileNotFoundError(
            f"no built shards under {data_dir!r} (expected {NAME}/<config>/{VERSION}/"
            "dataset_info.json); run `python -m data_prep.build ... --out DIR` first"
        )
    if len(found) > 1:
        configs = [os.path.relpath(os.path.dirname(p), data_dir) for p in found]
        raise ValueError(
            f"{data_dir!r} holds several builds {configs}; pass one of these directories instead"
        )
    return os.path.dirname(found[0])


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_malloc_tuned = False


def _tune_malloc() -> None:
    """Keep multi-MB record buffers on the heap instead of fresh mmaps (glibc only).

    A 398x398 stack is ~2 MB; glibc serves each such allocation with a new
    mmap whose 500 pages then fault in one by one, which we measured to cost
    ~3 ms per record (280 instead of 2000 raw reads/s on one core). Raising
    the mmap and trim thresholds reuses the memory instead; the price is that
    a reading process keeps up to 256 MB of freed heap. The mmap threshold is
    64 MB where glibc takes it (2.36 does); older glibc (the 2.2x series at
    least) refuses more than 32 MB (``HEAP_MAX_SIZE / 2``) and a refused call
    changes nothing, so 32 MB is the fallback. Both are far above a record's
    size; at batch 128 they measured within noise of each other here
    (benchmarks/README.md, session 9).
    """
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        if not libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20):
            libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20)
    except (OSError, AttributeError):  # not glibc: slower, still correct
        pass


def _text(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _int32(v) -> np.ndarray:
    return np.asarray(v, np.int32)


def _float32(v) -> np.ndarray:
    return np.asarray(v, np.float32)


# Python/numpy types of each record field (docs/interfaces.md); frames and mask
# stay the read-only arrays TFDS decodes (no copy).
_FIELD_TYPES = {
    "label": int,
    "dataset": _text,
    "compression": _text,
    "method": _text,
    "video_id": _text,
    "frame_index": int,
    "box": _int32,
    "landmarks": _float32,
    "has_mask": bool,
}


def _same(v):
    return v


def _to_record(ex: dict) -> dict:
    return {k: _FIELD_TYPES.get(k, _same)(v) for k, v in ex.items()}


# Module-level, as SplitSource is pickled to grain's workers (a lock is not).
_OPEN_LOCK = threading.Lock()


class SplitSource:
    """Random-access, picklable view of one split; __getitem__ decodes one record.

    ``features`` names the fields to decode (default: all). Training reads
    ('frames', 'label'), evaluation its EVAL_FIELDS: such subsets are read
    straight off the record's bytes (data_prep.record_view; raw frames are not
    copied). Subsets with the box or landmarks, and every field, go through
    TFDS's parser, which also parses only the named fields (measured,
    benchmarks/README.md).
    """

    def __init__(self, builder_dir: str, split: str, features: tuple[str, ...] | None = None):
        self.builder_dir = builder_dir
        self.split = split
        self.features = None if features is None else tuple(features)
        with open(os.path.join(builder_dir, "dataset_info.json")) as f:
            splits = {s["name"]: s for s in json.load(f).get("splits", [])}
        if split not in splits:
            raise KeyError(
                f"split {split!r} is not in {builder_dir!r} (has {sorted(splits)}); "
                "a split with no records (e.g. every video failed) is not written"
            )
        with open(os.path.join(builder_dir, "features.json")) as f:
            features_json = json.load(f)
        known = sorted(features_json["featuresDict"]["features"])
        if self.features is not None:
            unknown = [k for k in self.features if k not in known]
            if unknown or not self.features:
                raise ValueError(
                    f"features={self.features}: {unknown or 'none'} not in the build "
                    f"{builder_dir!r}; choose from {known}"
                )
        self._len = sum(int(n) for n in splits[split]["shardLengths"])
        # None when a field is one RecordView leaves to TFDS (box, landmarks:
        # small number arrays), e.g. when every field is read.
        self._view = RecordView.for_features(features_json, self.features or known)
        self._source = None
        self._decode = None

    def _open(self):
        if self._source is None:
            # grain's read threads all arrive here at the first batch. The decoder
            # is set before the source, and the source last: a thread that sees a
            # source must find its decoder (it read None mid-open, a TypeError).
            with _OPEN_LOCK:
                if self._source is None:
                    self._decode, source = self._open_files()
                    self._source = source
        return self._source

    def _open_files(self):
        """(decode, source) of this split: opened once per process (`_open`)."""
        import tensorflow_datasets as tfds

        _tune_malloc()
        builder = tfds.builder_from_directory(self.builder_dir)
        decode = self._view
        if decode is None:
            decoder = builder.info.features
            if self.features is not None:
                # TFDS's own parser, given only these specs, parses only them.
                decoder = tfds.features.FeaturesDict({k: decoder[k] for k in self.features})
            decode = decoder.deserialize_example_np
        source = self._direct_files(builder)
        if source is None:
            source = builder.as_data_source(
                self.split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES
            )
        return decode, source

    def _direct_files(self, builder) -> RecordFiles | None:
        """data_prep.array_record_file's one-copy reader, where the files allow it.

        None (array_record's own, checksummed reader) for compressed builds
        ('snappy', 'zstd'), with LDATTN_RECORD_READER=array_record, or where
        the OS has no preadv.
        """
        choice = os.environ.get(READER_ENV, "auto")
        if choice not in ("auto", "array_record"):
            raise ValueError(f"{READER_ENV}={choice!r}: use 'auto' (the default) or 'array_record'")
        if choice == "array_record" or not hasattr(os, "preadv"):
            return None
        info = builder.info.splits[self.split]
        try:
            return RecordFiles(info.filepaths, info.shard_lengths)
        except UnsupportedLayout:
            return None

    @property
    def reader(self) -> str:
        """'direct' (data_prep.array_record_file) or 'array_record': who reads the bytes."""
        return "direct" if isinstance(self._open(), RecordFiles) else "array_record"

    @property
    def decoder(self) -> str:
        """'zero_copy' (data_prep.record_view) or 'tfds': who decodes the records."""
        return "tfds" if self._view is None else "zero_copy"

    def _decoded(self, raw, index) -> dict:
        try:
            # A memoryview: TFDS's parser takes no numpy array (the direct reader's).
            return _to_record(self._decode(memoryview(raw)))
        except RecordFormatError as e:
            raise RecordFormatError(
                f"record {index} of split {self.split!r} in {self.builder_dir!r}: {e}; "
                "the shard is damaged or was not written by data_prep.build: rebuild it"
            ) from e

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index) -> dict:
        index = int(index)
        if not -self._len <= index < self._len:
            raise IndexError(f"record {index} out of range for split {self.split!r} ({self._len})")
        raw = self._open()[index % self._len]
        return self._decoded(raw, index)

    def __getitems__(self, indices) -> list[dict]:
        indices = [int(i) for i in indices]
        raws = self._open().__getitems__(indices)
        return [self._decoded(raw, i) for raw, i in zip(raws, indices, strict=True)]

    def labels(self) -> np.ndarray | None:
        """Every record's label from the build's index (no record decoded), or None.

        Builds made before the index existed return None; callers then read
        the labels from the records (``input_pipeline.record_labels``).
        """
        from data_prep.record_index import load_label_index

        return load_label_index(self.builder_dir, self.split, self._len)

    def __getstate__(self):
        # Open file handles do not cross processes; each worker reopens.
        state = dict(self.__dict__)
        state["_source"] = state["_decode"] = None
        return state

    def __repr__(self) -> str:
        fields = "" if self.features is None else f", features={self.features}"
        return f"SplitSource({self.builder_dir!r}, {self.split!r}, len={self._len}{fields})"


def read_labels(source) -> np.ndarray:
    """Every record's label by reading the records (threads: the reads are I/O-bound).

    The slow way, for builds without a label index (``SplitSource.labels``).
    """
    with ThreadPoolExecutor(8) as pool:
        return np.fromiter(
            pool.map(lambda i: int(source[i]["label"]), range(len(source))),
            dtype=np.int64,
            count=len(source),
        )


def open_split(data_dir: str, split: str, features: tuple[str, ...] | None = None) -> SplitSource:
    """Random-access source of decoded records of `split` ('train' | 'val' | 'test').

    `features`: the record fields to decode (default all; see SplitSource).
    """
    return SplitSource(find_builder_dir(data_dir), split, features)


def read_info(data_dir: str) -> dict:
    """{'dataset', 'stack', 'size', 'encoding', 'splits': {split: {'records', 'videos',
    'by_label': {...}, 'by_method': {...}}}, 'builder_dir'} of a build."""
    builder_dir = find_builder_dir(data_dir)
    with open(os.path.join(builder_dir, "metadata.json")) as f:
        meta = json.load(f)
    return {
        "dataset": meta["dataset"],
        "stack": int(meta["stack"]),
        "size": int(meta["size"]),
        "encoding": meta["encoding"],
        "splits": meta.get("counts", {}),
        "builder_dir": builder_dir,
    }


def benchmark_read(
    data_dir: str, split: str = "train", seconds: float = 2.0, features: tuple | None = None
) -> dict:
    """Decoded records/s of open_split in this process (one core), in index order,
    and the time per record of its two stages: the read of the bytes
    (``reader``: 'direct' or 'array_record') and their decoding (``decoder``:
    'zero_copy' or 'tfds')."""
    import time

    src = open_split(data_dir, split, features)
    src[0]  # open files outside the timing
    records, clock = src._open(), time.perf_counter
    n, read_s, decode_s = 0, 0.0, 0.0
    start = clock()
    while clock() - start < seconds:
        t0 = clock()
        raw = records[n % len(src)]
        t1 = clock()
        src._decoded(raw, n % len(src))
        read_s, decode_s = read_s + t1 - t0, decode_s + clock() - t1
        n += 1
    elapsed = clock() - start
    rec = src[0]
    return {
        "records_per_s": n / elapsed,
        "read_ms": 1e3 * read_s / n,
        "decode_ms": 1e3 * decode_s / n,
        "reader": src.reader,
        "decoder": src.decoder,
        "frames_shape": list(rec["frames"].shape),
        "encoding": read_info(data_dir)["encoding"],
        "features": sorted(rec),
    }
