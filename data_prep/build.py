"""Videos -> face crop stacks -> ArrayRecord shards (TFDS), resumable.

    python -m data_prep.build --dataset {ffpp,celebdf,dfdc,synthetic} --root DIR --out DIR \
        [--compression c23|c40|raw] [--methods Deepfakes,Face2Face,FaceSwap,NeuralTextures] \
        [--frames-per-video 32] [--stack 3] [--size 398] [--workers N] [--encoding snappy]

Two phases:
 1. faces (parallel over videos): each finished video leaves one file in
    OUT/cache/<params>/ (npz of its stacks, plus a small json "done" marker,
    each written atomically), so a killed run, rerun with the same arguments,
    skips what is done (a marker whose stacks are missing or damaged is not:
    cache_entry_problem). A failed video is also "done": its reason is cached
    (except 'error' and 'worker_crashed', which a rerun may not meet, and
    'unreadable', which a fix outside the file ends: UNCACHED_REASONS). A worker
    process that dies (segfault, OOM kill) costs only the video it was on.
 2. shards (one process): the TFDS builder reads the cache in a fixed order and
    writes OUT/lda_faces/<config>/1.0.0 -- byte-identical for the same cache.
Failures (and videos kept without their mask; and videos the dataset's lists
name that are not on disk, 'missing_file') go to OUT/failures.jsonl and the
summary (OUT/summary.json); the exit status is non-zero only if no record was
written (or the arguments are wrong, or worker processes cannot start).
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
import re
import shutil
import signal
import sys
import time
import zipfile
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from data_prep import cli, leftovers
from data_prep import encoding as enc
from data_prep.atomic_files import atomic_open, fsync_dir, remove_dead_temps, swap_paths
from data_prep.fingerprint import file_sha256
from data_prep.originals import MIN_FACE_CHANGE
from data_prep.readers import DatasetError, MissingVideo, VideoItem, read_dataset

# ------------------------------------------------------------------ per video


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


# The temp files of cache entries, markers and manifests written before
# data_prep.atomic_files: mkstemp's '.tmp-' + 8 letters/digits + the file's suffix.
_OLD_TEMP = re.compile(r"\.tmp-[a-z0-9_]+\.(npz|json|jsonl)")


def _remove_stale_tmp(directory: str) -> None:
    """Deletes the temp files that killed writes left in ``directory`` (a whole
    video's stacks each; nothing reads them): atomic_open's of dead writers of
    this host (and of an earlier process with this one's pid: this run has
    written nothing yet), and those of builds from before it (all of them, as
    then)."""
    remove_dead_temps(directory, own=True)
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if _OLD_TEMP.fullmatch(name) and os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)


# <config folder>/.tmp-shards-<host>-<pid>: where a run writes its shards before
# they are swapped in, beside the real (symlinks resolved) version folder, so
# the rename never crosses file systems (OUT/lda_faces may link to another
# disk). Neither metrics.builder_dirs (it skips '.tmp-' folders) nor
# find_builder_dir (it globs one level higher) looks into it.
_STAGING = ".tmp-shards-"
_REPLACED = "replaced"  # in a staging folder: the old shards, between two renames


def _staging_root(final: str) -> str:
    """A new, empty staging folder for this run beside ``final``'s real path;
    those of dead runs of this host are deleted (other hosts' are left alone:
    a shared file system). A run killed between `_swap_in_shards`' two renames
    (where the file system cannot exchange) left the old shards in its
    staging folder's ``replaced`` and none at ``final``: they are put back."""
    final = os.path.realpath(final)
    parent = os.path.dirname(final)
    os.makedirs(parent, exist_ok=True)
    pattern = re.compile(rf"{re.escape(_STAGING)}{re.escape(leftovers.HOST)}-(\d+)")
    for name in sorted(os.listdir(parent)):
        m = pattern.fullmatch(name)
        if m and leftovers.gone(int(m[1]), own=True):
            aside = os.path.join(parent, name, _REPLACED)
            if os.path.isdir(aside) and not os.path.lexists(final):
                os.rename(aside, final)
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    path = os.path.join(parent, f"{_STAGING}{leftovers.tag()}")
    os.makedirs(path)
    return path


def _swap_in_shards(built: str, final: str, staging: str) -> None:
    """Moves the whole builder folder ``built`` to ``final``: exchanged with the
    old shards in one atomic step where the file system can (`swap_paths`: a
    training run opening them meanwhile finds the old or the new, never none);
    else the old shards are renamed aside (into ``staging``) and the new ones
    renamed in, and should the second rename fail or be interrupted the old
    shards are put back (killed outright in between, the next run's
    `_staging_root` puts them back). The old ones are deleted with the
    staging folder."""
    final = os.path.realpath(final)
    if os.path.lexists(final) and swap_paths(built, final):
        fsync_dir(os.path.dirname(final))
        return  # `built` now holds the old shards
    aside = os.path.join(staging, _REPLACED)  # where `_staging_root` looks for it
    had_old = os.path.lexists(final)
    if had_old:
        os.rename(final, aside)
    try:
        os.rename(built, final)
    except BaseException:
        if had_old and not os.path.lexists(final):
            os.rename(aside, final)
        raise
    fsync_dir(os.path.dirname(final))


def incomplete_shard_dirs(data_dir: str) -> list[str]:
    """TFDS's temp folders for `data_dir` (OUT/lda_faces/<config>/<version>) left by a
    killed run: 'incomplete.<6 letters/digits>_<version>' beside it, nothing else.

    TFDS writes a whole build there and renames it at the end; a kill in between
    leaves it (as big as the build), and TFDS never removes it.
    """
    from tensorflow_datasets.core import constants

    parent, version = os.path.split(os.path.normpath(data_dir))
    pattern = re.compile(
        rf"{re.escape(constants.INCOMPLETE_PREFIX)}[A-Z0-9]{{6}}_{re.escape(version)}"
    )
    names = os.listdir(parent) if os.path.isdir(parent) else []
    return sorted(
        os.path.join(parent, n)
        for n in names
        if pattern.fullmatch(n)
        and os.path.isdir(os.path.join(parent, n))
        and not os.path.islink(os.path.join(parent, n))
    )


# What shards are made of beyond their TFDS config name <dataset>_n<stack>_s<size>:
# builds that differ only here share that name, and so its folder under OUT.
BUILD_KEYS = ("dataset", "root", "compression", "methods", "splits", "frames_per_video", "encoding")
BUILD_ARGS = "build_args.json"  # beside the shards: which settings made them


def build_settings(a: argparse.Namespace) -> dict:
    settings = {k: getattr(a, k) for k in BUILD_KEYS}
    # Only DFDC names originals: other datasets' builds stay comparable with
    # build_args.json written before this setting existed.
    if a.dataset == "dfdc":
        settings["min_face_change"] = a.min_face_change
    return resolved_settings(settings)


def parse_methods(text: str) -> tuple[str, ...] | None:
    """--methods 'A,B' -> ('A', 'B'); None when empty (the dataset's default)."""
    return tuple(m.strip() for m in text.split(",") if m.strip()) or None


def resolved_settings(settings: dict) -> dict:
    """Build settings as the data depends on them, so that two spellings of one
    build compare equal: the root and split folder absolute, --splits's default
    (ROOT/splits) written out, the methods read (default filled in, repeats
    dropped) and sorted: the output does not depend on their order (items are
    sorted by id, and TFDS orders records by a hash of their key). Settings a
    dataset ignores are None (--splits and --compression for Celeb-DF and DFDC).

    Also takes build_args.json of builds made before the settings were resolved
    (methods as the raw --methods string, splits None for the default), so such
    a build is not refused as "other settings" for its spelling alone.
    """
    from data_prep.readers import DFD, resolve_methods

    s = dict(settings)
    dataset, root = s.get("dataset"), s.get("root")
    s["root"] = root and os.path.abspath(root)
    methods = s.get("methods")
    if isinstance(methods, str):
        methods = parse_methods(methods)
    s["methods"] = sorted(resolve_methods(dataset, methods and tuple(methods)))
    if dataset in ("ffpp", "synthetic"):
        # DeepFakeDetection alone reads no split file (it is split by actor).
        uses_splits = any(m != DFD for m in s["methods"])
        splits = s.get("splits") or (root and os.path.join(root, "splits"))
        s["splits"] = os.path.abspath(splits) if uses_splits and splits else None
    else:
        s["splits"] = s["compression"] = None
    return s


def replaced_settings(data_dir: str, settings: dict) -> list[str]:
    """How the build in `data_dir` was made otherwise than `settings` asks ([] if the
    same, or if nothing there records it: shards from before build_args.json)."""
    path = os.path.join(data_dir, BUILD_ARGS)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        old = resolved_settings(json.load(f))
    settings = resolved_settings(settings)
    return [
        f"--{k.replace('_', '-')} {_shown(old.get(k))} -> {_shown(v)}"
        for k, v in settings.items()
        if old.get(k) != v
    ]


def _shown(value) -> str:
    # Methods as --methods spells them.
    return repr(",".join(value)) if isinstance(value, list) else repr(value)


def _file_key(path: str) -> str:
    try:
        size = os.path.getsize(path)
    except OSError:
        size = -1
    return f"{os.path.abspath(path)}|{size}"


# Video failures that are not cached, so that a rerun tries the video again.
# 'unreadable' is a missing file, a directory, a broken link or no read
# permission: fixed outside the file (chmod, mounting the drive, restoring the
# link), which leaves the cache key (id, path, size) as it was, so a cached
# failure would outlive its fix. Checking again costs a stat. ('error' and
# 'worker_crashed' are not cached either: _error_status.)
UNCACHED_REASONS = ("unreadable",)
_NOT_CACHED = "not cached, so the next run tries it again"
# What every cached .npz holds (process_video); checked before a build trusts it.
NPZ_KEYS = ("frames", "frame_index", "box", "landmarks", "mask", "has_mask")


def cache_paths(cache_dir: str, item: VideoItem) -> tuple[str, str]:
    """(stacks .npz, done-marker .json) of a video.

    Keyed by video id, absolute path and file size, so pointing --out's cache at
    another copy or version of a dataset does not reuse stale faces; and so by
    its mask's and its original's (data_prep.originals), where it has them.
    """
    ident = f"{item.video_id}|{_file_key(item.path)}"
    # A mask downloaded later, or a fake compared with its original, is not the
    # same result as the cache entry made without it.
    if item.mask_path:
        ident += f"|mask={_file_key(item.mask_path)}"
    if item.original_path:
        ident += f"|original={_file_key(item.original_path)}"
    key = hashlib.sha1(ident.encode()).hexdigest()[:20]
    return os.path.join(cache_dir, key + ".npz"), os.path.join(cache_dir, key + ".json")


def process_video(
    item: VideoItem, cache_dir: str, frames_per_video: int, stack: int, size: int
) -> dict:
    """Extracts one video's stacks into the cache; returns its (small) status dict.

    Never raises for one video's sake: a build of thousands must not stop on one.
    """
    from data_prep.faces import VideoError, extract_stacks
    from data_prep.masks import stack_masks

    npz_path, json_path = cache_paths(cache_dir, item)
    status = {
        "video_id": item.video_id,
        "records": 0,
        "reason": None,
        "warning": None,
        "message": None,
    }
    try:
        try:
            stacks = extract_stacks(item.path, frames_per_video, stack, size)
        except VideoError as e:
            if e.reason in UNCACHED_REASONS:
                return {**status, "reason": e.reason, "message": f"{e.message}; {_NOT_CACHED}"}
            status.update(reason=e.reason, message=e.message)
        else:
            mask, has_mask, problem = stack_masks(item.mask_path, item.path, stacks, size)
            if problem:
                status.update(
                    warning="bad_mask",
                    message=f"{problem}; the video is kept without a mask (has_mask False). "
                    f"Fix or remove the mask file, then delete {json_path} and rerun to redo it",
                )
            if item.original_path:
                status.update(_compare_with_original(item, stacks, stack, size))
            arrays = {
                "frames": np.stack([s["frames"] for s in stacks]),
                "frame_index": np.array([s["frame_index"] for s in stacks], np.int32),
                "box": np.stack([s["box"] for s in stacks]).astype(np.int32),
                "landmarks": np.stack([s["landmarks"] for s in stacks]).astype(np.float32),
                "mask": mask,
                "has_mask": has_mask,
            }
            with atomic_open(npz_path, "wb", remove_dead=False) as f:
                np.savez(f, **arrays)
            status["records"] = len(stacks)
        # Which bytes these crops (or this failure) came from; read after the
        # decode, from the page cache. The cache key is path + size: this names the content.
        try:
            status["sha256"] = file_sha256(item.path)
        except OSError:
            status["sha256"] = None  # unreadable: its reason says so
        if status.pop("retry", False):
            return status  # no marker: the next run extracts it again
        # The json marker comes last: its presence means "this video is done".
        _write_json(json_path, status)
    except Exception as e:  # noqa: BLE001 -- one bad video must never stop the run
        # Not a property of the video (maybe memory, a full disk): report it, but
        # leave no marker so that a rerun tries again.
        return _error_status(item, "error", f"{type(e).__name__}: {e}")
    return status


def _compare_with_original(item: VideoItem, stacks: list[dict], stack: int, size: int) -> dict:
    """Status fields of a fake compared with its original: 'face_change' (one
    value per stack, None where not comparable), or a warning if the original
    cannot be used (the fake is then kept unchecked, as without an original)."""
    from data_prep.faces import VideoError
    from data_prep.originals import OriginalMismatch, compare_with_original
    from data_prep.video import frame_hw

    try:
        change = compare_with_original(item.original_path, stacks, stack, size, frame_hw(item.path))
    except (VideoError, OriginalMismatch) as e:
        out = {
            "warning": "original_unusable",
            "message": f"its original {item.original_path} cannot be compared with it ({e}); "
            "the fake is kept unchecked",
        }
        if isinstance(e, VideoError) and e.reason in UNCACHED_REASONS:
            # An original that cannot be read now (permissions, an unmounted drive)
            # may be readable on the next run, as for a video of its own: a cached
            # "unchecked" would outlive the fix (the fake's cache key is unchanged).
            out.update(message=f"{out['message']}; {_NOT_CACHED}", retry=True)
        return out
    return {"face_change": [None if np.isnan(c) else round(float(c), 3) for c in change]}


def kept_stacks(status: dict, min_face_change: float | None) -> list[int] | None:
    """Indices of a fake's stacks to write: those whose face changed at least
    `min_face_change` levels from the original (data_prep.originals), or could
    not be compared. None: all (no comparison, or the check is off)."""
    change = status.get("face_change")
    if change is None or min_face_change is None:
        return None
    return [i for i, c in enumerate(change) if c is None or c >= min_face_change]


def checked_status(status: dict, min_face_change: float | None, original: str | None) -> dict:
    """A cached status with its unchanged stacks left out: fewer records, and a
    video none of whose stacks changed fails as 'unchanged_face'."""
    keep = kept_stacks(status, min_face_change)
    if keep is None or len(keep) == status["records"]:
        return status
    dropped = status["records"] - len(keep)
    why = (
        f"the face changed by less than --min-face-change {min_face_change:g} levels from "
        f"its original {original} (the largest face is not the swapped one, or the swap "
        "left it unchanged), so training would learn a real face as fake"
    )
    if not keep:
        return {
            **status,
            "records": 0,
            "reason": "unchanged_face",
            "message": f"in all {dropped} stacks {why}; left out",
        }
    return {
        **status,
        "records": len(keep),
        "warning": "unchanged_stacks",
        "message": f"in {dropped} of {status['records']} stacks {why}; those are left out",
    }


def _error_status(item: VideoItem, reason: str, what: str) -> dict:
    """Status of a video that failed for a reason a rerun may not meet (not cached)."""
    return {
        "video_id": item.video_id,
        "records": 0,
        "reason": reason,
        "warning": None,
        "message": f"{item.path}: {what}; {_NOT_CACHED}",
    }


def cache_entry_problem(npz_path: str, json_path: str) -> str | None:
    """Why a video's cache entry (its "done" marker) cannot be used, or None.

    The shards are rewritten from the cache after the old ones are deleted, so an
    entry whose stacks are gone (deleted by hand, a disk cleaned up) or damaged
    (a copy cut short, a crash before the data reached the disk) must be found
    before that, not by TFDS halfway through writing. Opens each .npz's zip
    directory and its small frame_index array only: milliseconds, whatever the
    stacks' size. (A flipped bit inside the frames is found when the shards are
    written: LdaFaces names the file then.)
    """
    try:
        with open(json_path) as f:
            records = int(json.load(f)["records"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its marker {json_path} cannot be read ({type(e).__name__}: {e})"
    if records == 0:
        return None  # a failed video: it has no stacks
    try:
        with np.load(npz_path) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                return f"its stacks {npz_path} lack {missing}"
            cached = len(z["frame_index"])
    except FileNotFoundError:
        return f"its stacks {npz_path} are missing"
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        return f"its stacks {npz_path} cannot be read ({type(e).__name__}: {e})"
    if cached != records:
        return f"its stacks {npz_path} hold {cached} stacks, its marker says {records}"
    return None


# Every file of a build is written whole or not at all (atomic_open), into
# folders whose dead writers' temp files main deletes at its start
# (_remove_stale_tmp; the shards' staging folder is new): not again at each
# write, which lists the folder, for each of a cache's thousands of files.


def _write_json(path: str, obj) -> None:
    """``obj`` as JSON (ASCII, keys sorted)."""
    with atomic_open(path, "w", remove_dead=False) as f:
        json.dump(obj, f, sort_keys=True, indent=1)


def _write_jsonl(path: str, rows) -> None:
    """One JSON line per row."""
    with atomic_open(path, "w", remove_dead=False) as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def _init_worker() -> None:
    import cv2

    from data_prep import faces

    # N worker processes on N cores: OpenCV's own threads would oversubscribe.
    cv2.setNumThreads(1)
    faces.load_models()  # load dlib once per process, not per video


# ------------------------------------------------------------------ CLI


def _face_change_arg(text: str) -> float | None:
    if text.strip().lower() == "off":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of levels (e.g. {MIN_FACE_CHANGE:g}) or 'off'"
        ) from None


def parse_args(argv=None) -> argparse.Namespace:
    p = cli.ArgumentParser(
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
    p.add_argument("--frames-per-video", type=int, default=32)
    p.add_argument("--stack", type=int, default=3, help="n: frames after the key frame")
    p.add_argument("--size", type=int, default=398, help="crop side in pixels")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--encoding", default=enc.DEFAULT_ENCODING, choices=sorted(enc.ENCODINGS))
    p.add_argument(
        "--shards", type=int, default=64, help="shards per split (fewer if fewer records)"
    )
    p.add_argument(
        "--min-face-change",
        type=_face_change_arg,
        default=MIN_FACE_CHANGE,
        metavar="LEVELS|off",
        help="DFDC: leave out a fake's stacks whose face changed by less than this (0-255 "
        f"levels) from the original its metadata.json names (default {MIN_FACE_CHANGE:g}; "
        "'off' keeps every stack and does not decode the originals)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace shards of the same dataset/stack/size built with other settings",
    )
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
        # In this process: nothing to isolate, but a crash in native code (dlib,
        # FFmpeg) ends the run here; --workers 2 or more records it instead.
        _init_worker()
        for item in todo:
            done(process_video(item, *args))
    else:
        _run_pool(todo, args, a.workers, done)
    bar.close()
    return results


class WorkerStartError(RuntimeError):
    """Worker processes cannot start (the initializer fails): no video is to blame."""


def _worker_ready() -> bool:
    return True


def _run_pool(todo, args, workers: int, done) -> None:
    """process_video over `todo` in `workers` processes, surviving processes that die.

    A worker killed by a segfault in dlib/FFmpeg or by the OOM killer breaks the
    whole pool: every unfinished future fails with BrokenProcessPool and nothing
    says which video did it. So only a few videos are submitted at a time, those
    unfinished when the pool broke are rerun one by one in a one-worker pool
    (``_isolate``: a crash there names its video, innocent ones just finish), and
    a fresh pool goes on with the rest. What finished before is in the cache.
    """
    # forkserver: dlib/OpenCV state must not be forked from a threaded parent.
    ctx = multiprocessing.get_context("forkserver")
    pending = collections.deque(todo)
    while pending:
        in_flight: dict[cf.Future, VideoItem] = {}
        broken = False
        with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
            while (pending or in_flight) and not broken:
                # workers + 1: every worker busy and one queued, and few suspects.
                while pending and len(in_flight) <= workers:
                    item = pending.popleft()
                    in_flight[pool.submit(process_video, item, *args)] = item
                finished, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                for f in finished:
                    try:
                        status = f.result()
                    except BrokenProcessPool:
                        broken = True
                        continue  # stays in flight: a suspect
                    except Exception as e:  # noqa: BLE001 -- e.g. a result that does not unpickle
                        status = _error_status(in_flight[f], "error", f"{type(e).__name__}: {e}")
                    del in_flight[f]
                    done(status)
        if broken:
            suspects = []
            for f, item in in_flight.items():
                if f.exception() is None:  # finished just before the pool broke
                    done(f.result())
                else:
                    suspects.append(item)
            _isolate(suspects, args, ctx, done)


def _isolate(suspects: list[VideoItem], args, ctx, done) -> None:
    """Reruns the videos in flight when a worker died, each alone in a one-worker pool.

    Only a crash with one video in the process blames that video
    ('worker_crashed', not cached: an OOM kill may not recur). A suspect that
    finishes is not blamed, even if none crashes again (then the crash came from
    running in parallel, e.g. memory, and is only noted).
    """
    cache_dir = args[0]
    crashed = 0
    pool = None
    try:
        for item in suspects:
            marker = cache_paths(cache_dir, item)[1]
            if os.path.exists(marker):  # it finished, but its result died with the pool
                with open(marker) as f:
                    done(json.load(f))
                continue
            if pool is None:
                pool = cf.ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker)
                try:
                    pool.submit(_worker_ready).result()
                except BrokenProcessPool:
                    raise WorkerStartError(
                        "worker processes die while starting (loading the face models in "
                        "data_prep.build._init_worker; its error is printed above): fix that, "
                        "then rerun with the same arguments (finished videos are cached)"
                    ) from None
            try:
                status = pool.submit(process_video, item, *args).result()
            except BrokenProcessPool:
                crashed += 1
                how = _end_broken_pool(pool)
                pool = None
                status = _error_status(
                    item,
                    "worker_crashed",
                    f"the worker process died ({how}) while processing this video alone: a "
                    "crash in native code (dlib, OpenCV/FFmpeg; try re-encoding the video) or the "
                    "out-of-memory killer (see `dmesg`; try fewer --workers)",
                )
            except Exception as e:  # noqa: BLE001
                status = _error_status(item, "error", f"{type(e).__name__}: {e}")
            done(status)
    finally:
        if pool is not None:
            pool.shutdown()
    if not crashed:
        print(
            f"note: a worker process died with {len(suspects)} video(s) in flight; each was "
            "rerun alone and none crashed (memory pressure from parallel workers? see `dmesg`)",
            file=sys.stderr,
        )


def _end_broken_pool(pool: cf.ProcessPoolExecutor) -> str:
    """Shuts a broken pool down and says how its dead worker ended, e.g. 'killed by
    SIGKILL'; best effort (reads the private ``_processes``)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    # The pool's manager thread reaps its workers after the break. Joining them here
    # as well would race it: a forkserver child's exit status is one message on a
    # pipe, and the thread that reads second records 255. So let the manager thread
    # finish (shutdown waits for it), then read what it collected.
    pool.shutdown(wait=True)
    codes = [p.exitcode for p in procs]
    for code in codes:
        if code is not None and code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
    for code in codes:
        if code:
            return f"exit status {code}"
    return "no exit status known"


def _counts(items: list[VideoItem], status: dict[str, dict]) -> dict:
    """{split: {'videos', 'records', 'failed', 'by_label', 'by_method', 'failures', 'warnings'}};
    each by_method entry has 'videos', 'records', 'failed' and its own 'by_label'."""

    def empty():
        return {"videos": 0, "records": 0, "failed": 0}

    out = {}
    for it in items:
        s = status[it.video_id]
        sp = out.setdefault(
            it.split,
            {
                **empty(),
                "by_label": {},
                "by_method": {},
                "failures": collections.Counter(),
                "warnings": collections.Counter(),
            },
        )
        label = "fake" if it.label else "real"
        # Per method also per label: a method's own originals (DeepFakeDetection's
        # reals) share its name with its fakes (readers.VideoItem.method).
        method = sp["by_method"].setdefault(it.method, {**empty(), "by_label": {}})
        for bucket in (
            sp,
            sp["by_label"].setdefault(label, empty()),
            method,
            method["by_label"].setdefault(label, empty()),
        ):
            bucket["videos"] += 1
            bucket["records"] += s["records"]
            bucket["failed"] += s["reason"] is not None
        if s["reason"]:
            sp["failures"][s["reason"]] += 1
        if s.get("warning"):  # markers cached before warnings existed have none
            sp["warnings"][s["warning"]] += 1
    for sp in out.values():
        sp["failures"] = dict(sorted(sp["failures"].items()))
        sp["warnings"] = dict(sorted(sp["warnings"].items()))
    return dict(sorted(out.items()))


_PERCENTILES = (1, 5, 25, 50, 75, 95, 99)


def original_check(items: list[VideoItem], status: dict[str, dict], min_face_change) -> dict:
    """What comparing fakes with their originals did ({} if no fake names one, or
    --min-face-change is off):
    fakes compared or not, stacks and videos left out, and the face change's
    percentiles, so a user can see where --min-face-change cuts their data."""
    fakes = [it for it in items if it.label == 1]
    named = [it for it in fakes if it.original_path]
    if not named:
        return {}
    changes = [
        c for it in named for c in status[it.video_id].get("face_change") or [] if c is not None
    ]
    compared = [it for it in named if status[it.video_id].get("face_change") is not None]
    out = {
        "min_face_change": min_face_change,
        "fakes": len(fakes),
        "fakes_compared": len(compared),
        "fakes_unchecked": len(fakes) - len(compared),
        "stacks_compared": len(changes),
        "stacks_left_out": sum(
            len(status[it.video_id]["face_change"]) - status[it.video_id]["records"]
            for it in compared
        ),
        "videos_left_out": sum(
            status[it.video_id]["reason"] == "unchanged_face" for it in compared
        ),
    }
    if changes:
        q = np.percentile(changes, _PERCENTILES)
        out["face_change_percentiles"] = {
            f"p{p}": round(float(v), 3) for p, v in zip(_PERCENTILES, q, strict=True)
        }
    return out


def format_original_check(check: dict) -> str:
    p = check.get("face_change_percentiles", {})
    spread = ", ".join(f"{k} {v:g}" for k, v in p.items()) or "none compared"
    return (
        f"fakes vs their originals: {check['fakes_compared']} of {check['fakes']} fakes compared; "
        f"left out {check['stacks_left_out']} of {check['stacks_compared']} stacks "
        f"({check['videos_left_out']} whole videos) whose face changed by less than "
        f"{check['min_face_change']:g} levels; face change {spread}"
    )


def format_summary(counts: dict) -> str:
    rows = [("split", "label", "videos", "records", "failed", "failures by reason")]
    for split, sp in counts.items():
        for label, c in sorted(sp["by_label"].items()):
            rows.append((split, label, c["videos"], c["records"], c["failed"], ""))
        # Kept videos with a problem (e.g. a dropped mask) are not failed, but shown.
        reasons = ", ".join(
            [f"{k}={v}" for k, v in sp["failures"].items()]
            + [f"kept with {k}={v}" for k, v in sp.get("warnings", {}).items()]
        )
        reasons = reasons or "-"
        rows.append((split, "all", sp["videos"], sp["records"], sp["failed"], reasons))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def out_problem(out: str) -> str | None:
    """Why --out cannot be the build's folder, or None. Checked before any work:
    os.makedirs met a file there only after the dataset was read, as a traceback."""
    path = os.path.abspath(out)
    # The nearest part of the path that exists: it must be a folder we may write in.
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "" if existing == path else f": {existing!r}"
        return f"--out {out!r}{where} is a file, not a directory; choose another --out"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"--out {out!r}: {existing!r} is not writable; choose another --out"
    return None


def _missing_status(m: MissingVideo) -> dict:
    """A listed video that is not on disk: failed as 'missing_file', never cached
    (nothing is extracted), so a run after its download extracts it."""
    return {
        "video_id": m.item.video_id,
        "records": 0,
        "reason": "missing_file",
        "warning": None,
        "message": f"{m.item.path} is not on disk, but {m.listed_in} lists it (a partial "
        "download?); download it and rerun the same command: finished videos are cached",
        "sha256": None,
    }


def main(argv=None) -> int:
    a = parse_args(argv)
    t0 = time.time()
    problem = out_problem(a.out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    methods = parse_methods(a.methods)
    left_out: dict = {}  # videos the reader leaves out on purpose, for summary.json
    missing: list[MissingVideo] = []  # listed but not on disk: failed as 'missing_file'
    try:
        items = read_dataset(
            a.dataset, a.root, a.compression, methods, a.splits, left_out, missing=missing
        )
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Counted and listed like any failed video (per split, label and method), so a
    # partial download shows in the summary and failures.jsonl, not only in a log.
    absent = {m.item.video_id: _missing_status(m) for m in missing}
    items = sorted(items + [m.item for m in missing], key=lambda i: i.video_id)
    if a.min_face_change is None:  # no check: originals are not even decoded
        items = [dataclasses.replace(it, original_path=None) for it in items]

    import absl.logging
    import tensorflow_datasets as tfds

    from data_prep.builder import NAME, VERSION, CacheError, LdaFaces, LdaFacesConfig, config_name
    from data_prep.record_index import write_label_index

    # Another --compression, --methods, ... writes to the same folder as this
    # build's shards: replacing them silently would swap a run's data.
    data_dir = os.path.join(a.out, NAME, config_name(a.dataset, a.stack, a.size), VERSION)
    changed = replaced_settings(data_dir, build_settings(a))
    if changed and not a.replace:
        print(
            f"error: {data_dir} holds shards built with other settings ({'; '.join(changed)}); "
            "this build would replace them. Use another --out, or pass --replace.",
            file=sys.stderr,
        )
        return 2

    absl.logging.set_verbosity(absl.logging.ERROR)  # TFDS's "custom data configuration" noise
    if a.no_progress:
        tfds.disable_progress_bar()

    os.makedirs(a.out, exist_ok=True)
    params = cache_params(a.frames_per_video, a.stack, a.size)
    cache_dir = os.path.join(a.out, "cache", params)
    os.makedirs(cache_dir, exist_ok=True)
    # A run killed mid-write leaves atomic_open's temp files (a whole video's
    # stacks each); nothing reads them, so they are only lost space.
    for d in (a.out, cache_dir):
        _remove_stale_tmp(d)
    for stale in stale_caches(a.out, params):
        print(
            f"note: {stale} holds crops of the same videos from another face-finder version "
            f"(data_prep.faces.FACES_VERSION); they are not reused, so the shards come from one "
            f"finder. Delete that folder to free its space.",
            file=sys.stderr,
        )

    # A done marker whose stacks are missing or damaged would make the shard
    # writer fail after the old shards are gone: such a video is not done.
    present = [it for it in items if it.video_id not in absent]
    for it in present:
        npz_path, json_path = cache_paths(cache_dir, it)
        problem = os.path.exists(json_path) and cache_entry_problem(npz_path, json_path)
        if problem:
            print(f"warning: {it.video_id}: {problem}; extracting it again", file=sys.stderr)
            os.remove(json_path)
    todo = [it for it in present if not os.path.exists(cache_paths(cache_dir, it)[1])]
    if missing:
        # Said before the (long) extraction, not only in the summary at its end.
        print(
            f"warning: {len(missing)} listed videos are not on disk (a partial download?), "
            f"e.g. {missing[0].item.path} (listed in {missing[0].listed_in}); each is "
            f"recorded as missing_file in {a.out}/failures.jsonl",
            file=sys.stderr,
        )
    print(
        f"{a.dataset}: {len(items)} videos ({len(present) - len(todo)} cached, "
        f"{len(missing)} missing), {a.workers} worker(s) -> {a.out}",
        file=sys.stderr,
    )
    try:
        results = _run_faces(todo, cache_dir, a, not a.no_progress)
    except WorkerStartError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    status = {s["video_id"]: s for s in results}
    status.update(absent)
    for it in present:
        json_path = cache_paths(cache_dir, it)[1]
        if os.path.exists(json_path):
            with open(json_path) as f:
                status[it.video_id] = json.load(f)
        elif status[it.video_id]["records"]:
            # Crops cached under a key (path + size) the file no longer has: it
            # changed on disk during the build (a re-download). The shards could
            # not find its stacks, and which bytes were cut is unknown.
            status[it.video_id] = _error_status(
                it, "error", "the file changed on disk while the build ran (its size is not "
                "the one its crops were cached under)",
            )  # fmt: skip
        status[it.video_id] = checked_status(
            status[it.video_id], a.min_face_change, it.original_path
        )
    failures = [
        {
            **{k: v for k, v in dataclasses.asdict(it).items() if k != "mask_path"},
            **status[it.video_id],
        }
        for it in items
        if status[it.video_id]["reason"] or status[it.video_id].get("warning")
    ]
    _write_jsonl(os.path.join(a.out, "failures.jsonl"), failures)
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
                "path": os.path.abspath(it.path),
                # null for a video cached before hashes were recorded
                "sha256": status[it.video_id].get("sha256"),
                "cache": os.path.abspath(cache_paths(cache_dir, it)[0]),
            }
        )
        keep = kept_stacks(status[it.video_id], a.min_face_change)
        if keep is not None:
            splits[it.split][-1]["stacks"] = keep  # which of the cached stacks to write
    manifest_path = os.path.join(a.out, "manifest.json")
    _write_json(manifest_path, {"splits": splits, "counts": counts})
    check = original_check(items, status, a.min_face_change)
    _write_json(
        os.path.join(a.out, "summary.json"),
        {"args": vars(a), "counts": counts, "left_out": left_out, "original_check": check},
    )
    total = sum(sp["records"] for sp in counts.values())
    failed = sum(sp["failed"] for sp in counts.values())
    print(format_summary(counts), file=sys.stderr)
    for what, note in left_out.items():
        print(f"left out on purpose: {note['videos']} {what} ({note['why']})", file=sys.stderr)
    if check:
        print(format_original_check(check), file=sys.stderr)
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
    final = str(LdaFaces(data_dir=a.out, config=config, manifest=manifest_path).data_dir)
    for stale in incomplete_shard_dirs(final):
        print(f"note: removing {stale}, shards of a killed earlier run", file=sys.stderr)
        shutil.rmtree(stale, ignore_errors=True)
    # The cache is the source of truth: the shards are always rewritten from it,
    # into a hidden folder beside them, and swapped in once whole (label index and
    # build_args.json included). Deleted first, as they were, a damaged cache
    # entry, a full disk or a kill left no shards at all, and a training reading
    # them failed meanwhile.
    staging = _staging_root(final)
    builder = LdaFaces(data_dir=staging, config=config, manifest=manifest_path)
    try:
        builder.build(a.shards)
        # Labels in record order, so training starts without decoding every record.
        for split, videos in splits.items():
            if any(v["records"] for v in videos):
                write_label_index(str(builder.data_dir), split, videos)
        _write_json(os.path.join(str(builder.data_dir), BUILD_ARGS), build_settings(a))
        _swap_in_shards(str(builder.data_dir), final, staging)
    except CacheError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(
        f"wrote {total} records to {final} in {time.time() - t0:.0f} s "
        f"({failed} failed videos, {len(failures) - failed} kept with a warning: "
        f"{a.out}/failures.jsonl)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
