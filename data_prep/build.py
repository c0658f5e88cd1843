"""Videos -> face crop stacks -> ArrayRecord shards (TFDS), resumable.

    python -m data_prep.build --dataset {ffpp,celebdf,dfdc,synthetic} --root DIR --out DIR \
        [--compression c23|c40|raw] [--methods Deepfakes,Face2Face,FaceSwap,NeuralTextures] \
        [--frames-per-video 32] [--stack 3] [--size 398] [--workers N] [--encoding snappy]

Two phases:
 1. faces (parallel over videos): each finished video leaves one file in
    OUT/cache/<params>/ (npz of its stacks, plus a small json "done" marker,
    each written atomically), so a killed run, rerun with the same arguments,
    skips what is done. A failed video is also "done": its reason is cached.
 2. shards (one process): the TFDS builder reads the cache in a fixed order and
    writes OUT/lda_faces/<config>/1.0.0 -- byte-identical for the same cache.
Failures go to OUT/failures.jsonl and the summary (OUT/summary.json); the exit
status is non-zero only if no record was written (or the arguments are wrong).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from data_prep import encoding as enc
from data_prep.readers import DatasetError, VideoItem, read_dataset

# ------------------------------------------------------------------ per video


def _atomic_write(path: str, write) -> None:
    """write(tmp_path) then rename: a reader never sees a half-written file."""
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def cache_params(frames_per_video: int, stack: int, size: int) -> str:
    """The cache folder of one build's parameters, face-finder version included."""
    from data_prep.faces import FACES_VERSION

    return f"f{frames_per_video}_n{stack}_s{size}_faces{FACES_VERSION}"


def stale_caches(out: str, params: str) -> list[str]:
    """OUT/cache folders of the same parameters made by another face-finder version
    (version 1 had no suffix)."""
    base = params.rsplit("_faces", 1)[0]
    root = os.path.join(out, "cache")
    names = os.listdir(root) if os.path.isdir(root) else []
    return sorted(
        os.path.join(root, n)
        for n in names
        if n != params and (n == base or n.startswith(base + "_faces"))
    )


def cache_paths(cache_dir: str, item: VideoItem) -> tuple[str, str]:
    """(stacks .npz, done-marker .json) of a video.

    Keyed by video id, absolute path and file size, so pointing --out's cache at
    another copy or version of a dataset does not reuse stale faces.
    """
    try:
        size = os.path.getsize(item.path)
    except OSError:
        size = -1
    ident = f"{item.video_id}|{os.path.abspath(item.path)}|{size}"
    key = hashlib.sha1(ident.encode()).hexdigest()[:20]
    return os.path.join(cache_dir, key + ".npz"), os.path.join(cache_dir, key + ".json")


def _load_masks(path: str):
    with np.load(path) as z:
        return z["masks"]


def process_video(
    item: VideoItem, cache_dir: str, frames_per_video: int, stack: int, size: int
) -> dict:
    """Extracts one video's stacks into the cache; returns its (small) status dict."""
    from data_prep.faces import VideoError, crop_mask, extract_stacks

    npz_path, json_path = cache_paths(cache_dir, item)
    status = {"video_id": item.video_id, "records": 0, "reason": None, "message": None}
    try:
        stacks = extract_stacks(item.path, frames_per_video, stack, size)
    except VideoError as e:
        status.update(reason=e.reason, message=e.message)
    except Exception as e:  # noqa: BLE001 -- one bad video must never stop the run
        # Not a property of the video (maybe memory, a full disk): report it, but
        # leave no marker so that a rerun tries again.
        status.update(reason="error", message=f"{item.path}: {type(e).__name__}: {e}")
        return status
    else:
        masks = None
        if item.mask_path:
            try:
                masks = _load_masks(item.mask_path)
            except Exception as e:  # noqa: BLE001 -- a broken mask loses the mask, not the video
                status["message"] = f"mask {item.mask_path} unreadable ({e}); stored without mask"
        mask_out = np.zeros((len(stacks), size, size), np.uint8)
        has_mask = np.zeros(len(stacks), bool)
        for i, s in enumerate(stacks):
            if masks is not None and s["frame_index"] < len(masks):
                mask_out[i] = crop_mask(masks[s["frame_index"]], s["box"], size)
                has_mask[i] = True
        arrays = {
            "frames": np.stack([s["frames"] for s in stacks]),
            "frame_index": np.array([s["frame_index"] for s in stacks], np.int32),
            "box": np.stack([s["box"] for s in stacks]).astype(np.int32),
            "landmarks": np.stack([s["landmarks"] for s in stacks]).astype(np.float32),
            "mask": mask_out,
            "has_mask": has_mask,
        }
        _atomic_write(npz_path, lambda p: np.savez(p, **arrays))
        status["records"] = len(stacks)
    # The json marker comes last: its presence means "this video is done".
    _atomic_write(json_path, lambda p: _write_json(p, status))
    return status


def _write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, sort_keys=True, indent=1)


def _write_jsonl(path: str, rows) -> None:
    with open(path, "w") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def _init_worker() -> None:
    import cv2

    from data_prep import faces

    # N worker processes on N cores: OpenCV's own threads would oversubscribe.
    cv2.setNumThreads(1)
    faces.load_models()  # load dlib once per process, not per video


# ------------------------------------------------------------------ CLI


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m data_prep.build",
        description="Videos -> dlib face crop stacks -> ArrayRecord shards (TFDS).",
    )
    p.add_argument("--dataset", required=True, choices=["ffpp", "celebdf", "dfdc", "synthetic"])
    p.add_argument("--root", required=True, help="dataset root directory")
    p.add_argument("--out", required=True, help="output directory (shards, cache, failures)")
    p.add_argument("--compression", default="c23", help="FF++ quality: raw | c23 | c40")
    p.add_argument("--methods", default="", help="comma-separated FF++ methods (default: the four)")
    p.add_argument("--splits", default=None, help="FF++ split JSON dir (default ROOT/splits)")
    # The underscore spelling is accepted too (ldattn_jax/demo.py uses it).
    p.add_argument("--frames-per-video", "--frames_per_video", type=int, default=32)
    p.add_argument("--stack", type=int, default=3, help="n: frames after the key frame")
    p.add_argument("--size", type=int, default=398, help="crop side in pixels")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--encoding", default=enc.DEFAULT_ENCODING, choices=sorted(enc.ENCODINGS))
    p.add_argument(
        "--shards", type=int, default=64, help="shards per split (fewer if fewer records)"
    )
    p.add_argument("--no-progress", "--no_progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    for name, lo in (
        ("frames_per_video", 1),
        ("stack", 0),
        ("size", 8),
        ("workers", 1),
        ("shards", 1),
    ):
        if getattr(a, name) < lo:
            p.error(f"--{name.replace('_', '-')} must be >= {lo}, got {getattr(a, name)}")
    return a


def _run_faces(todo, cache_dir, a, progress: bool) -> list[dict]:
    from tqdm import tqdm

    args = (cache_dir, a.frames_per_video, a.stack, a.size)
    bar = tqdm(total=len(todo), unit="video", disable=not progress, smoothing=0.1)
    faces = fails = 0
    results = []

    def done(status):
        nonlocal faces, fails
        results.append(status)
        faces += status["records"]
        fails += status["reason"] is not None
        bar.set_postfix(faces=faces, failed=fails, refresh=False)
        bar.update(1)

    if a.workers == 1:
        _init_worker()
        for item in todo:
            done(process_video(item, *args))
    else:
        # forkserver: dlib/OpenCV state must not be forked from a threaded parent.
        ctx = multiprocessing.get_context("forkserver")
        with cf.ProcessPoolExecutor(a.workers, mp_context=ctx, initializer=_init_worker) as pool:
            futures = [pool.submit(process_video, item, *args) for item in todo]
            for f in cf.as_completed(futures):
                done(f.result())
    bar.close()
    return results


def _counts(items: list[VideoItem], status: dict[str, dict]) -> dict:
    """{split: {'videos', 'records', 'failed', 'by_label', 'by_method', 'failures'}}."""

    def empty():
        return {"videos": 0, "records": 0, "failed": 0}

    out = {}
    for it in items:
        s = status[it.video_id]
        sp = out.setdefault(
            it.split,
            {**empty(), "by_label": {}, "by_method": {}, "failures": collections.Counter()},
        )
        for bucket in (
            sp,
            sp["by_label"].setdefault("fake" if it.label else "real", empty()),
            sp["by_method"].setdefault(it.method, empty()),
        ):
            bucket["videos"] += 1
            bucket["records"] += s["records"]
            bucket["failed"] += s["reason"] is not None
        if s["reason"]:
            sp["failures"][s["reason"]] += 1
    for sp in out.values():
        sp["failures"] = dict(sorted(sp["failures"].items()))
    return dict(sorted(out.items()))


def format_summary(counts: dict) -> str:
    rows = [("split", "label", "videos", "records", "failed", "failures by reason")]
    for split, sp in counts.items():
        for label, c in sorted(sp["by_label"].items()):
            rows.append((split, label, c["videos"], c["records"], c["failed"], ""))
        reasons = ", ".join(f"{k}={v}" for k, v in sp["failures"].items()) or "-"
        rows.append((split, "all", sp["videos"], sp["records"], sp["failed"], reasons))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    t0 = time.time()
    methods = tuple(m.strip() for m in a.methods.split(",") if m.strip()) or None
    try:
        items = read_dataset(a.dataset, a.root, a.compression, methods, a.splits)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import absl.logging
    import tensorflow_datasets as tfds

    from data_prep.builder import LdaFaces, LdaFacesConfig, config_name
    from data_prep.record_index import write_label_index

    absl.logging.set_verbosity(absl.logging.ERROR)  # TFDS's "custom data configuration" noise
    if a.no_progress:
        tfds.disable_progress_bar()

    os.makedirs(a.out, exist_ok=True)
    params = cache_params(a.frames_per_video, a.stack, a.size)
    cache_dir = os.path.join(a.out, "cache", params)
    os.makedirs(cache_dir, exist_ok=True)
    for stale in stale_caches(a.out, params):
        print(
            f"note: {stale} holds crops of the same videos from another face-finder version "
            f"(data_prep.faces.FACES_VERSION); they are not reused, so the shards come from one "
            f"finder. Delete that folder to free its space.",
            file=sys.stderr,
        )

    todo = [it for it in items if not os.path.exists(cache_paths(cache_dir, it)[1])]
    print(
        f"{a.dataset}: {len(items)} videos ({len(items) - len(todo)} cached), "
        f"{a.workers} worker(s) -> {a.out}",
        file=sys.stderr,
    )
    status = {s["video_id"]: s for s in _run_faces(todo, cache_dir, a, not a.no_progress)}
    for it in items:
        json_path = cache_paths(cache_dir, it)[1]
        if os.path.exists(json_path):
            with open(json_path) as f:
                status[it.video_id] = json.load(f)
    failures = [
        {
            **{k: v for k, v in dataclasses.asdict(it).items() if k != "mask_path"},
            **status[it.video_id],
        }
        for it in items
        if status[it.video_id]["reason"]
    ]
    _atomic_write(os.path.join(a.out, "failures.jsonl"), lambda p: _write_jsonl(p, failures))
    counts = _counts(items, status)
    splits = collections.defaultdict(list)
    for it in items:
        splits[it.split].append(
            {
                "video_id": it.video_id,
                "label": it.label,
                "dataset": it.dataset,
                "compression": it.compression,
                "method": it.method,
                "records": status[it.video_id]["records"],
                "cache": os.path.abspath(cache_paths(cache_dir, it)[0]),
            }
        )
    manifest_path = os.path.join(a.out, "manifest.json")
    _atomic_write(manifest_path, lambda p: _write_json(p, {"splits": splits, "counts": counts}))
    _atomic_write(
        os.path.join(a.out, "summary.json"),
        lambda p: _write_json(p, {"args": vars(a), "counts": counts}),
    )
    total = sum(sp["records"] for sp in counts.values())
    print(format_summary(counts), file=sys.stderr)
    if total == 0:
        print(f"error: no record written; see {a.out}/failures.jsonl", file=sys.stderr)
        return 1

    config = LdaFacesConfig(
        name=config_name(a.dataset, a.stack, a.size),
        stack=a.stack,
        size=a.size,
        encoding=a.encoding,
        dataset=a.dataset,
    )
    builder = LdaFaces(data_dir=a.out, config=config, manifest=manifest_path)
    # The cache is the source of truth: always rewrite the shards from it.
    shutil.rmtree(builder.data_dir, ignore_errors=True)
    builder = LdaFaces(data_dir=a.out, config=config, manifest=manifest_path)
    builder.build(a.shards)
    # Labels in record order, so training starts without decoding every record.
    for split, videos in splits.items():
        if any(v["records"] for v in videos):
            write_label_index(str(builder.data_dir), split, videos)
    print(
        f"wrote {total} records to {builder.data_dir} in {time.time() - t0:.0f} s "
        f"({len(failures)} failed videos: {a.out}/failures.jsonl)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
