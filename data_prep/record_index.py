"""Per-split label index written beside the shards: `labels.<split>.npy`.

Training needs the label of every record before the first step (class counts,
loss weights, balanced sampling). Without an index that means decoding every
record once per start: for FF++ c23 (~115k four-frame 398 px stacks) about
220 GB of reads on every process at every (re)start. The build knows each
record's label, but not where TFDS put it: TFDS writes a split sorted by
md5(split name + example key). So the index is computed from that rule and
then *checked* against records read back (first, last and a random sample);
if the rule ever changes (a TFDS upgrade), the check fails and the index is
built the slow, certain way, by reading every record's label.
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np

from data_prep.atomic_files import atomic_open
from data_prep.shards import SplitSource, read_labels

FILE = "labels.{split}.npy"
# Records read back to check the computed order (plus the first and the last).
CHECK_SAMPLE = 64


def record_key(video_id: str, frame_index: int) -> str:
    """The TFDS example key of one record (builder.LdaFaces._generate_examples)."""
    return f"{video_id}#{int(frame_index):06d}"


def _tfds_order(split: str, keys: list[str]) -> np.ndarray:
    """Positions of ``keys`` in the written split: sorted by md5(salt = split name, key)."""
    salt = hashlib.md5(split.encode())

    def hashed(key: str) -> int:
        h = salt.copy()
        h.update(key.encode())
        return int(h.hexdigest(), 16)

    return np.argsort([hashed(k) for k in keys], kind="stable")


def planned_records(videos: list[dict]) -> tuple[list[str], np.ndarray]:
    """(keys, labels) of a split's records in generation order, from the build manifest."""
    keys, labels = [], []
    for video in sorted(videos, key=lambda v: v["video_id"]):
        if not video["records"]:
            continue
        with np.load(video["cache"]) as z:
            frame_index = z["frame_index"][video.get("stacks", slice(None))]
        keys += [record_key(video["video_id"], f) for f in frame_index]
        labels += [int(video["label"])] * len(frame_index)
    return keys, np.asarray(labels, np.int8)


def write_label_index(builder_dir: str, split: str, videos: list[dict], *, seed: int = 0) -> str:
    """Writes ``labels.<split>.npy`` (int8, record order) and returns its path."""
    source = SplitSource(builder_dir, split)
    keys, labels = planned_records(videos)
    order = _tfds_order(split, keys)
    if len(order) == len(source):
        rng = np.random.default_rng(seed)
        check = sorted({0, len(order) - 1, *rng.integers(0, len(order), CHECK_SAMPLE).tolist()})
        ok = all(
            record_key(r["video_id"], r["frame_index"]) == keys[order[i]]
            for i, r in zip(check, source.__getitems__(check), strict=True)
        )
    else:
        ok = False
    if ok:
        index = labels[order]
    else:
        logging.warning(
            "%s/%s: records are not in the order TFDS used to write them (a TFDS change?); "
            "reading every record's label instead",
            builder_dir,
            split,
        )
        index = read_labels(source).astype(np.int8)
    path = os.path.join(builder_dir, FILE.format(split=split))
    with atomic_open(path, "wb") as f:
        np.save(f, index)
    return path


def load_label_index(builder_dir: str, split: str, num_records: int) -> np.ndarray | None:
    """The split's labels from its index, or None where the build has none (older builds)."""
    path = os.path.join(builder_dir, FILE.format(split=split))
    if not os.path.exists(path):
        return None
    labels = np.load(path)
    if len(labels) != num_records:
        logging.warning("%s has %d labels for %d records: ignored", path, len(labels), num_records)
        return None
    return labels.astype(np.int64)
