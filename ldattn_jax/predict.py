"""Score raw videos with a trained run.

Run:
  python -m ldattn_jax.predict --workdir runs/ffpp video1.mp4 video2.avi [--out DIR] [--heatmaps]
      [--faces largest|all]

Same face pipeline as data_prep (evenly spaced key frames, each with its
next n frames cut with one box), the model on all devices, then a table
(video, frames scored, P(fake) uncalibrated, verdict) on stdout and
``OUT/predictions.json`` with per-frame scores. A video that cannot be read
or has no face gets its own line with the reason; the others are still
scored. Each scored video is journaled to ``OUT/predictions.jsonl`` at once, and a
rerun reuses what an earlier run with the same settings scored
(``predict_journal``; ``--rescore`` does not). A directory stands for the video
files under it. Exit status is 1 if
no video could be scored, 2 if the run itself cannot start (no trained
workdir, an ``--out`` that is a file or cannot be written).

``--calibration val`` adds each video's fake probability at even odds, through
the Platt map fitted on the run's val videos (`ldattn_jax.calibration`).
``--timeline`` draws each video's P(fake) per key frame along the video.
Every run ends with ``OUT/report.html``, the report as one page to read
(``ldattn_jax.case_report``).

``--faces largest`` (the default, as in training) scores the largest face of
each key frame. ``--faces all`` scores every face: faces are linked over the
key frames into tracks (``data_prep.faces.assign_tracks``, one id per person),
each face gets its own score (the mean over its stacks) and verdict, and the
video's score is its most suspicious face's, among faces seen in enough key
frames (``FEW_FRAMES``): a video is fake if any person in it is.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from data_prep import cli
from data_prep import faces as faces_lib
from data_prep.faces import FACE_MODES
from ldattn_jax import calibration as calibration_lib
from ldattn_jax import case_report, eval_names, json_out, provenance, thresholds
from ldattn_jax.evaluate import (
    OutputDirError,
    Predictor,
    _parse_checkpoint,
    add_dtype_argument,
    fit_frames,
    load_run_config,
    local_workdir,
    positive_int,
    with_compute_dtype,
    writable_dir,
)
from ldattn_jax.metrics import to_jsonable
from ldattn_jax.predict_journal import Journal, run_key

# A video scored from fewer key frames than this (or than --frames_per_video, if
# that is smaller) is flagged ``few_frames``: its score rests on a handful of
# stacks (a clip of a second or less, or a face found in few key frames), where
# evaluation's figures come from 8 (demo) to 32 key frames a video.
FEW_FRAMES = 8
# What a directory given as VIDEO expands to (case-insensitive); anything else in
# it is listed as skipped, not tried.
VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts",
    ".m2ts", ".flv", ".wmv", ".3gp", ".3g2", ".ogv", ".mxf", ".vob",
)  # fmt: skip
# The run's case report in OUT; an earlier run's is kept as predictions-<its start>.json.
PREDICTIONS = "predictions.json"
# heatmaps_error of a model without attention maps (xception): nothing to draw, and
# nothing missing that would make a journaled score worth computing again.
NO_MAPS = "the model has no attention maps"


def shown(path: str) -> str:
    """``path`` as text every output can carry. A file name that is not valid UTF-8
    reaches Python as a str with lone surrogates (b'caf\\xe9' -> 'caf\\udce9'), which
    a UTF-8 page, terminal or log cannot encode at all; its bytes are shown as
    ``\\xe9`` instead (the name as ``ls`` escapes it)."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        try:
            raw = os.fsencode(path)
        except UnicodeEncodeError:  # a surrogate no file-system name decodes to
            return path.encode("utf-8", "backslashreplace").decode("utf-8")
        return raw.decode("utf-8", "backslashreplace")


def _not_utf8(path: str) -> tuple[str, str] | None:
    """The error of a path whose name is not UTF-8 (None for any other): OpenCV's
    VideoCapture crashes the process on such a name (a segfault, not an error), so
    it must never be opened, and no other video of the run may be lost to it."""
    try:
        path.encode("utf-8")
        return None
    except UnicodeEncodeError:
        return (
            "unreadable",
            f"{shown(path)}: rename the file: its name is not UTF-8, which OpenCV cannot open",
        )


def expand_videos(paths: list[str]) -> tuple[list[tuple[str, tuple[str, str] | None]], list[dict]]:
    """The videos to score, in order: ``([(path, error or None)], skipped)``.

    A directory stands for its video files (``VIDEO_EXTENSIONS``), recursively and
    sorted, through linked folders too (each real folder once); its other files,
    hidden ones (macOS's ``._clip.mp4`` are not videos) and hidden folders
    (``.git``, ``.Trash``) are skipped and listed, and one without any video gets
    an error of its own.
    Any other path is kept as given (a file that is not a video gets its own
    error row when read). A path given again (same absolute path, also through a
    directory) is scored once. ``skipped``: ``{"path", "why"}`` for each left out.

    A folder that cannot be listed (permissions, an I/O error) gets an
    ``unreadable`` row naming it: its videos were not looked for, and a run
    must not pass over them in silence. A path whose name is not UTF-8 gets an
    ``unreadable`` row too (`_not_utf8`), and is named by `shown`.
    """
    items, skipped, seen = [], [], set()

    def add(path: str, error=None) -> None:
        key = os.path.realpath(path)  # one file reached through a link too
        if key in seen:
            skipped.append({"path": shown(path), "why": "given more than once; scored once"})
            return
        seen.add(key)
        error = error or _not_utf8(path)
        # A path that is not opened is kept only as its printable name.
        items.append((path if error is None else shown(path), error))

    def unlistable(e: OSError) -> None:  # os.walk's onerror: it would drop the folder
        folder = shown(e.filename if isinstance(e.filename, str) else str(e.filename))
        why = e.strerror or str(e)
        message = (
            f"{folder}: cannot list this folder ({why}); the videos in it were not looked "
            "for: fix its permissions, or pass its videos themselves"
        )
        found.append((folder, ("unreadable", message)))

    for path in paths:
        if not os.path.isdir(path):
            add(path)
            continue
        found = []  # (path, error or None), in the walk's (sorted) order
        walked = set()  # real folders: a link back up must not loop
        for root, dirs, files in os.walk(path, onerror=unlistable, followlinks=True):
            real = os.path.realpath(root)
            if real in walked:
                skipped.append({"path": shown(root), "why": "a link to a folder already looked in"})
                dirs[:] = []
                continue
            walked.add(real)
            for d in sorted(d for d in dirs if d.startswith(".")):
                why = "a hidden folder: not looked in; pass it to score its videos"
                skipped.append({"path": shown(os.path.join(root, d)), "why": why})
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                full = os.path.join(root, name)
                if name.startswith(".") or not name.lower().endswith(VIDEO_EXTENSIONS):
                    skipped.append({"path": shown(full), "why": "not a video file name"})
                else:
                    found.append((full, None))
        if not found:
            add(path, ("no_video", f"{shown(path)} is a directory with no video file in it "
                       f"(looked for {', '.join(VIDEO_EXTENSIONS)}, recursively); pass the "
                       "videos themselves"))  # fmt: skip
        for full, error in found:
            add(full, error)
    return items, skipped


def score_stacks(predictor: Predictor, stacks: list[dict]) -> tuple[np.ndarray, dict]:
    """P(fake) [N] and maps {module: [N, m, g, g]} for a video's stacks, in batches."""
    probs, maps = [], []
    for i in range(0, len(stacks), predictor.batch_size):
        frames = np.stack([s["frames"] for s in stacks[i : i + predictor.batch_size]])
        p, m = predictor(frames)
        probs.append(p)
        maps.append(m)
    return np.concatenate(probs), {k: np.concatenate([m[k] for m in maps]) for k in maps[0]}


def predict_videos(
    config,
    workdir: str,
    videos: list[str],
    *,
    out_dir: str | None = None,
    checkpoint: str | int = "best",
    frames_per_video: int = 32,
    heatmaps: bool = False,
    threshold: float | str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    dtype: str | None = None,
    reuse: bool = True,
    faces: str = "largest",
    calibration: str | None = None,
    timeline: bool = False,
    command: list[str] | None = None,
) -> dict:
    """Scores each video; returns (and writes to OUT/predictions.json) the report.

    Each scored video is journaled to OUT/predictions.jsonl at once; with
    ``reuse``, a video that an earlier run into OUT scored with the same
    settings is taken from there, not scored again (`predict_journal`).

    Face extraction is CPU work (decode + dlib): each video is spread over
    `workers` threads (default: all cores), and the next video is extracted
    while the model scores the current one. ``dtype`` overrides the compute
    dtype the run was trained in (`evaluate.with_compute_dtype`).

    ``faces="all"`` scores every face of each key frame (the module docstring);
    each row then has ``faces`` (per face) and its score is one face's.

    ``calibration="val"`` adds to each video (and face) ``calibrated_probability``:
    its score through the Platt map at even odds that the val evaluation of
    this checkpoint fitted (`ldattn_jax.calibration`). The verdict stays the
    raw score's against ``threshold``.

    ``timeline`` draws each scored video's P(fake) per key frame along the
    video (per face with ``faces="all"``) to OUT/timelines/ (``timeline``).

    Each scored video's row has the ``sha256`` and ``size_bytes`` of the file
    as it was read (one whose size or mtime changed between before the decode
    and after the hash is a ``changed_while_read`` row); the report names the
    checkpoint's state files (``checkpoint.state_sha256``) and, in
    ``provenance``, the code, library versions, devices and ``command`` (None:
    this process's command line).

    predictions.json is written atomically; an earlier run's in OUT is first
    kept as ``predictions-<its start>.json`` with its page (`_keep_earlier`).
    """
    from data_prep.faces import VideoError, extract_stacks
    from ldattn_jax import figures
    from ldattn_jax.checkpointing import restore_for_inference, state_files_sha256
    from ldattn_jax.metrics import config_hash
    from ldattn_jax.models.lda import MODEL_VERSION

    started = provenance.utc_now()

    if frames_per_video < 1 or (workers is not None and workers < 1):
        raise ValueError(
            f"frames_per_video={frames_per_video}, workers={workers}: both must be >= 1"
        )
    if faces not in FACE_MODES:
        raise ValueError(f"faces={faces!r}: one of {', '.join(FACE_MODES)}")
    # Absolute: the figure paths in predictions.json must not depend on this cwd.
    out_dir = os.path.abspath(out_dir or os.path.join(workdir, "predict"))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(f"--out {out_dir} is a file; pass a directory (it is created)")
    # Before the checkpoint is restored and any video decoded: scores that cannot be
    # journaled would be lost with the run.
    writable_dir(out_dir, "--out")
    config = with_compute_dtype(config, dtype)
    model, step = restore_for_inference(config, workdir, checkpoint)
    # "val": the EER threshold of this very checkpoint's val evaluation (thresholds).
    threshold, threshold_source = thresholds.resolve(threshold, config, workdir, step)
    calibrated = thresholds.resolve_calibration(calibration, config, workdir, step)
    predictor = Predictor(model, config, batch_size)
    size, stack = int(config.model.image_size), int(config.model.stack)
    # Faces cut as training saw them: at the shards' crop size, then resized to
    # the model's by training's rule (evaluate.fit_frames), for a run trained at
    # another image_size than its shards were cut at (a Table XI resolution from
    # 398-px shards). Cut straight at image_size, 118-px shards seen at 398 gave
    # the model sharper detail than it was trained on (21% of pixels off by > 4).
    crop = provenance.training_crop_size(workdir, step) or size
    state_sha256 = state_files_sha256(workdir, step)
    settings = {
        "workdir": os.path.abspath(workdir),
        "checkpoint_step": int(step),
        # A workdir retrained from scratch reuses step numbers: the weights decide.
        "checkpoint_state_sha256": state_sha256,
        "config_sha256": config_hash(config),
        "compute_dtype": str(config.model.dtype),
        "frames_per_video": int(frames_per_video),
        # The code that turns the same file and weights into a score: another face
        # finder may crop another face, another model code may combine the maps
        # otherwise. A journal of older code is scored again once.
        "faces_version": int(faces_lib.FACES_VERSION),
        "model_version": int(MODEL_VERSION),
    }
    # Largest-face and all-face scores must never stand in for each other. Only
    # "all" adds the key, so journals written before the option stay reusable.
    by_face = faces == "all"
    if by_face:
        settings["faces"] = faces
    if crop != size:  # only then, so journals of runs cut at image_size stay reusable
        settings["crop_size"] = crop
    journal = Journal(out_dir, run_key(**settings), reuse=reuse)
    # Heatmap files are named by the run key too: a file of the same video drawn by
    # another checkpoint (or dtype, key frames...) into this OUT must not be shown
    # beside this run's score, nor be overwritten under a score of an earlier run.
    key8 = journal.key[:8]
    workers = workers or os.cpu_count() or 1

    def extract(video):
        before = _stat_or_none(video)
        stacks = extract_stacks(
            video,
            frames_per_video=frames_per_video,
            stack=stack,
            size=crop,
            workers=workers,
            faces=faces,
        )
        if crop != size:
            for s in stacks:
                s["frames"] = fit_frames(s["frames"], len(s["frames"]), size)
        # The bytes just decoded (from the page cache now): what the score is
        # evidence about. After the decode, so that a missing or unreadable file
        # gets the decoder's reason, not a bare OSError.
        sha256 = provenance.file_sha256(video)
        # Decoded and hashed as one state of the file: one that changed meanwhile (a
        # file still being copied or written) was judged on bytes the hash is not of.
        after = _stat_or_none(video)
        if before != after:
            raise VideoError("changed_while_read", _changed_message(video, before, after))
        return {"sha256": sha256, "size_bytes": after[0]}, stacks

    items, skipped = expand_videos(list(videos))
    few = min(FEW_FRAMES, frames_per_video)
    cal_map = calibrated[0] if calibrated else None

    def decide(entry: dict, *, reused: bool) -> dict:
        row = _verdict(entry, threshold, few, heatmaps, reused=reused, calibration=cal_map)
        if timeline:  # drawn from the scores, so a reused video gets one too
            _draw_timeline(row, threshold, out_dir, key8)
        return row

    reused = {}
    for i, (video, error) in enumerate(items):
        earlier = journal.earlier(video) if error is None else None
        if earlier is not None and (not heatmaps or _heatmaps_ready(earlier, key8)):
            reused[i] = earlier
    jobs = [i for i, (_, error) in enumerate(items) if error is None and i not in reused]
    futures = {}
    results = []
    # One video of look-ahead: its decode + detection overlap the model on this one
    # (holds at most two videos' frames in memory).
    lookahead = ThreadPoolExecutor(1)

    def submit(n: int) -> None:
        if n < len(jobs):
            futures[jobs[n]] = lookahead.submit(extract, items[jobs[n]][0])

    try:
        submit(0)
        submitted = 1
        for i, (video, error) in enumerate(items):
            entry = {"video": video, "status": "error", "reason": None, "message": None}
            if error is not None:
                entry.update(reason=error[0], message=error[1])
                results.append(entry)
                continue
            if i in reused:
                # The path as given this time (the journal matched the file, not the text).
                row = {**reused[i], "video": video}
                results.append(decide(row, reused=True))
                continue
            submit(submitted)
            submitted += 1
            try:
                read, stacks = futures.pop(i).result()
                probs, maps = score_stacks(predictor, stacks)
            except VideoError as e:
                entry.update(reason=e.reason, message=e.message)
            except OSError as e:  # missing file, permission: the reader may not wrap these
                entry.update(reason="unreadable", message=f"{video}: {e}")
            except Exception as e:  # noqa: BLE001 -- one odd file must not stop a batch of thousands
                entry.update(reason="failed", message=f"{video}: {type(e).__name__}: {e}")
            if entry["reason"] is not None:
                results.append(entry)
                continue
            if not np.all(np.isfinite(probs)):
                # NaN > threshold is False: it would read as a confident "real".
                entry.update(
                    reason="nonfinite_score",
                    message=f"{video}: the model gave non-finite scores for "
                    f"{int(np.sum(~np.isfinite(probs)))} of {len(probs)} frames (compute dtype "
                    f"{config.model.dtype}); the checkpoint or this video's input is broken",
                )
                results.append(entry)
                continue
            frames = [
                {"frame_index": int(s["frame_index"]), "box": s["box"], "fake_probability": p}
                for s, p in zip(stacks, probs.tolist(), strict=True)
            ]
            entry.update(
                status="ok",
                **read,
                frames_scored=len(stacks),
                fake_probability=float(probs.mean()),  # the same video score as evaluation
                frames=frames,
            )
            if by_face:
                for f, s in zip(frames, stacks, strict=True):
                    f["face"] = int(s["face"])
                entry["faces"] = _face_scores(frames)
                entry.update(_video_face(entry["faces"], few))
            if heatmaps and not maps:
                # xception: the row says why it has none, and the journal may serve it.
                entry["heatmaps_error"] = f"{NO_MAPS} ({config.model.name})"
            elif heatmaps:
                # The file's hash too: a file replaced at this path since an
                # earlier run is scored afresh, and must not redraw the heatmaps
                # that run's kept report shows.
                tag = f"{_figure_tag(video)}_{key8}_{read['sha256'][:8]}"
                try:
                    entry["heatmaps"] = [
                        figures.attention_overlay(
                            stacks[i]["frames"][0],
                            {k: v[i] for k, v in maps.items()},
                            os.path.join(out_dir, "heatmaps", f"{tag}{name}.png"),
                            title=f"{os.path.basename(video)}{title}: P(fake) = {probs[i]:.3f}",
                            each_map=True,
                        )
                        for i, name, title in _heatmap_picks(stacks, probs, by_face)
                    ]
                except Exception as e:  # noqa: BLE001 -- a figure must not cost the video its score
                    entry["heatmaps_error"] = f"{type(e).__name__}: {e}"
            entry = to_jsonable(entry)
            try:
                journal.record(video, entry, settings)
            except OSError as e:  # a full disk: stop, keeping what is journaled
                raise _out_failed(f"journaling the score of {shown(video)}", journal.path, e) from e
            results.append(decide(entry, reused=False))
    finally:
        # Ctrl-C (or any error) while a video is extracted: the look-ahead video
        # queued behind it is dropped rather than extracted too, and the interrupt
        # does not wait here (wait=False); the extraction in progress cannot be
        # stopped, so it still ends in the background.
        lookahead.shutdown(wait=False, cancel_futures=True)
        journal.close()
    if reused:
        print(
            f"reused {len(reused)} video score(s) from {journal.path} (same files, checkpoint, "
            f"dtype{', --faces all' if by_face else ''} and frames_per_video; --rescore scores "
            "them again)",
            file=sys.stderr,
        )
    report = to_jsonable(
        {
            **({"faces": faces} if by_face else {}),
            "workdir": workdir,
            "model": str(config.model.name),
            "checkpoint": {
                "step": int(step),
                "which": str(checkpoint),
                "state_sha256": state_sha256,
            },
            "compute_dtype": str(config.model.dtype),
            "threshold": threshold,
            "threshold_source": threshold_source,
            "calibration": {**calibrated[0], "source": calibrated[1]} if calibrated else None,
            "frames_per_video": frames_per_video,
            # The side faces were cut at before the model's resize (the training
            # shards' --size; image_size where training recorded none).
            "crop_size": crop,
            "few_frames_below": few,
            "reused": len(reused),
            "journal": journal.path,
            "videos": results,
            "skipped": skipped,
            "provenance": provenance.provenance(
                started, command, provenance.training_sessions(workdir, step)
            ),
        }
    )
    report["json"] = os.path.join(out_dir, PREDICTIONS)
    # Checked before anything in OUT moves: a report that cannot be written as JSON
    # leaves the earlier one in place.
    json.dumps(report, allow_nan=False)
    try:
        kept = _keep_earlier(out_dir)
        if kept is not None:
            report["earlier_report"] = os.path.basename(kept["json"])
            print(_kept_line(kept, out_dir), file=sys.stderr)
        # Whole or not at all: a kill or a full disk never leaves half a case report.
        text = json.dumps(report, indent=2, allow_nan=False) + "\n"
        json_out.atomic_write(report["json"], text)
    except OSError as e:
        raise _out_failed("writing", report["json"], e, journal.path) from e
    try:  # the scores are on disk: a page that fails to render must not cost them
        report["html"] = case_report.write(report, out_dir)
    except Exception as e:  # noqa: BLE001
        report["html"] = None
        print(f"warning: {case_report.REPORT} not written ({type(e).__name__}: {e}); "
              f"python -m ldattn_jax.case_report {report['json']} tries again",
              file=sys.stderr)  # fmt: skip
    return report


def _out_failed(what: str, path: str, error: OSError, journal_path: str | None = None):
    """OutputDirError for a write into --out that failed mid-run (a full disk):
    what is already journaled is safe, and the same command reuses it."""
    journal_path = journal_path or path
    return OutputDirError(
        f"{what} {'' if journal_path == path else path + ' '}failed "
        f"({error.strerror or error}); the scores already made are in {journal_path}: "
        "free space (or fix --out), then rerun the same command, which reuses them "
        "instead of scoring those videos again"
    )


def _kept_name(started, path: str) -> str:
    """An earlier report's time for its kept name: its run's start (UTC), or, for a
    file without one (damaged, or older), when it was written."""
    try:
        when = datetime.datetime.fromisoformat(started).astimezone(datetime.UTC)
    except (TypeError, ValueError):
        when = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.UTC)
    return when.strftime("%Y-%m-%dT%H-%M-%SZ")  # no ':', which some file systems refuse


def _keep_earlier(out_dir: str) -> dict | None:
    """Moves an earlier run's OUT/predictions.json and report.html aside, to
    ``predictions-<its start>.json`` and ``report-<its start>.html``, before this
    run writes its own: a rerun into OUT must not replace a case report in
    silence. Their figures stay where the kept page links them (OUT/heatmaps,
    OUT/timelines: names no later run redraws). None when there was none; else
    {"json", "html" (None if it had no page), "videos", "started", "damaged"}."""
    path = os.path.join(out_dir, PREDICTIONS)
    if not os.path.isfile(path):
        return None
    videos = started = None
    damaged = False
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        videos = len(doc["videos"])
        started = (doc.get("provenance") or {}).get("started_utc")
    except ValueError:  # cut short by an older predict that was killed
        damaged = True
    except (KeyError, TypeError, AttributeError):
        pass
    stamp = _kept_name(started, path)
    for n in itertools.count(1):
        tag = stamp if n == 1 else f"{stamp}-{n}"
        kept_json = os.path.join(out_dir, f"predictions-{tag}.json")
        kept_html = os.path.join(out_dir, case_report.page_name(kept_json))
        if not os.path.lexists(kept_json) and not os.path.lexists(kept_html):
            break
    page = os.path.join(out_dir, case_report.REPORT)
    has_page = os.path.isfile(page)
    # The page first: no moment where report.html stands beside no JSON of its run.
    if has_page:
        os.replace(page, kept_html)
    os.replace(path, kept_json)
    return {
        "json": kept_json,
        "html": kept_html if has_page else None,
        "videos": videos,
        "started": started,
        "damaged": damaged,
    }


def _kept_line(kept: dict, out_dir: str) -> str:
    """The line that says an earlier case report in OUT was kept, and where."""
    if kept["damaged"]:
        what = "a damaged predictions.json (not valid JSON)"
    else:
        n = "?" if kept["videos"] is None else kept["videos"]
        what = f"the case report of an earlier run ({n} video(s), started {kept['started']})"
    if kept["html"] is None:
        where = f"{os.path.basename(kept['json'])} (only the JSON: it had no report.html)"
    else:
        where = (
            f"{os.path.basename(kept['json'])} and {os.path.basename(kept['html'])} (its "
            "figures stay linked)"
        )
    return printable(f"{out_dir} held {what}: kept as {where}")


def _face_scores(frames: list[dict]) -> list[dict]:
    """Each face's (track's) share of a video's scored frames, by face id."""
    by_face: dict[int, list[dict]] = {}
    for f in frames:
        by_face.setdefault(f["face"], []).append(f)
    faces = []
    for face, own in sorted(by_face.items()):
        probs = [f["fake_probability"] for f in own]
        faces.append(
            {
                "face": face,
                "frames_scored": len(own),
                "fake_probability": float(np.mean(probs)),  # as a video's score
                "frame_indices": [f["frame_index"] for f in own],
                "fake_probabilities": probs,
                # Where to look for this person: the box of its middle key frame in time.
                "box": own[len(own) // 2]["box"],
            }
        )
    return faces


def _video_face(faces: list[dict], few: int) -> dict:
    """The video's score fields from the face that speaks for it: the most suspicious
    face among those scored from at least ``few`` stacks (a fake person makes the
    video fake), or of all faces when none has that many (then flagged few_frames).
    A face seen in a few key frames only (someone passing by, a false detection)
    does not outvote the people on screen all along."""
    enough = [f for f in faces if f["frames_scored"] >= few]
    face = max(enough or faces, key=lambda f: f["fake_probability"])  # ties: the lower id
    return {
        "face": face["face"],
        "frames_scored": face["frames_scored"],
        "fake_probability": face["fake_probability"],
    }


def _heatmap_picks(stacks: list[dict], probs: np.ndarray, by_face: bool):
    """(stack index, file-name suffix, title suffix) of each overlay: the most
    suspicious stack and the first one, of the video or, with ``by_face``, of each face."""
    groups: dict = {}
    for i, s in enumerate(stacks):
        groups.setdefault(s["face"] if by_face else None, []).append(i)
    for face, own in sorted(groups.items(), key=lambda g: -1 if g[0] is None else g[0]):
        for i in sorted({own[int(np.argmax(probs[own]))], own[0]}):
            k = stacks[i]["frame_index"]
            if face is None:
                yield i, f"_f{k}", f" frame {k}"
            else:
                yield i, f"_face{face}_f{k}", f" face {face} frame {k}"


def _stat_or_none(path: str) -> tuple[int, int] | None:
    """(bytes, mtime ns) of ``path``, None if it cannot be stat'ed (the decoder says why)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _changed_message(video: str, before, after) -> str:
    def state(s):
        return "unreadable" if s is None else f"{s[0]} bytes, modified at {s[1]} ns"

    return (
        f"{shown(video)}: the file changed while it was read (before: {state(before)}; after: "
        f"{state(after)}): a file still being copied or written; score it again once it is "
        "complete"
    )


def _figure_tag(video: str) -> str:
    """A video's figures' file-name stem: FF++'s fakes of four methods share file
    names (000_003.mp4), so the hash of the path keeps their figures apart. Of the
    path's bytes: a name that is not UTF-8 has no UTF-8 encoding to hash."""
    digest = hashlib.sha1(os.fsencode(os.path.abspath(video))).hexdigest()[:8]
    return f"{eval_names.safe(os.path.basename(video))}_{digest}"


def _draw_timeline(row: dict, threshold: float, out_dir: str, key8: str) -> None:
    """OUT/timelines/<tag>_<run key>_<drawing>.png for a scored row: its key frames'
    P(fake) in frame order (in seconds at the container's frame rate), one line per
    face when it has two or more; sets ``timeline`` (or ``timeline_error``: a figure
    must not cost the video its score).

    ``<drawing>`` hashes what the figure shows (scores, threshold, verdict, frame
    rate): a rerun into OUT at another threshold, or of the file changed since,
    draws a new file and never redraws one that an earlier run's report shows.
    """
    from data_prep.video import nominal_fps
    from ldattn_jax import figures

    if row["status"] != "ok":
        return
    if len(row.get("faces", ())) >= 2:
        lines = {
            f"face {f['face']}": (f["frame_indices"], f["fake_probabilities"]) for f in row["faces"]
        }
    else:
        frames = row["frames"]
        lines = {"key frames": ([f["frame_index"] for f in frames],
                                [f["fake_probability"] for f in frames])}  # fmt: skip
    title = (
        f"{os.path.basename(row['video'])}: P(fake) {row['fake_probability']:.3f} (mean), "
        f"{row['verdict']}"
    )
    try:
        fps = nominal_fps(row["video"])
        drawing = json.dumps([lines, float(threshold), title, fps], default=str).encode()
        name = f"{_figure_tag(row['video'])}_{key8}_{hashlib.sha1(drawing).hexdigest()[:8]}.png"
        # figures saves through json_out.atomic_open: never half a figure.
        row["timeline"] = figures.score_timeline(
            lines, threshold, os.path.join(out_dir, "timelines", name), title=title, fps=fps
        )
    except Exception as e:  # noqa: BLE001 -- as for heatmaps
        row["timeline_error"] = f"{type(e).__name__}: {e}"


def _heatmaps_ready(entry: dict, key8: str) -> bool:
    """Whether a journaled row's heatmaps can be shown with its score: all its files
    are there and were drawn under this run key (file names carry it), or the
    model has no maps to draw."""
    if str(entry.get("heatmaps_error", "")).startswith(NO_MAPS):
        return True
    paths = entry.get("heatmaps")
    return bool(paths) and all(
        f"_{key8}_" in os.path.basename(p) and os.path.exists(p) for p in paths
    )


def _verdict(
    entry: dict,
    threshold: float,
    few: int,
    heatmaps: bool,
    *,
    reused: bool,
    calibration: dict | None = None,
) -> dict:
    """A scored video's row as this run reports it: the verdict at this threshold,
    the few-frames flag at this --frames_per_video, heatmap fields only if asked,
    the even-odds probability under this ``calibration`` map if one is given."""

    def even_odds(p: float) -> dict:
        if calibration is None:
            return {}
        return {"calibrated_probability": float(calibration_lib.apply(calibration, [p])[0])}

    row = dict(entry)
    if not heatmaps:
        row.pop("heatmaps", None)
        row.pop("heatmaps_error", None)
    if "faces" in row:  # --faces all: each face's verdict, the video's from one face
        row["faces"] = [
            {
                **f,
                "verdict": "fake" if f["fake_probability"] > threshold else "real",
                "few_frames": f["frames_scored"] < few,
                **even_odds(f["fake_probability"]),
            }
            for f in row["faces"]
        ]
        row.update(_video_face(row["faces"], few))
    row["verdict"] = "fake" if row["fake_probability"] > threshold else "real"
    row["few_frames"] = row["frames_scored"] < few
    row.update(even_odds(row["fake_probability"]))
    row["reused"] = reused
    return row


def printable(text: str) -> str:
    """``text`` with each character a terminal would not print as itself (newline,
    tab, ESC, other controls, a lone surrogate of a name that is not UTF-8)
    written as its escape, as repr() writes it (\\n, \\x1b, \\udce9)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def format_table(report: dict) -> str:
    """One line per video (and, with --faces all, per face of a video of two or
    more); with --calibration val a column of the even-odds probability."""
    calibrated = report.get("calibration") is not None
    # The model's own score is not a calibrated probability (docs/evaluation.md):
    # the header says so; the calibrated one is the even-odds column.
    head = ("video", "frames scored", "P(fake), uncalibrated")
    rows = [(*head, *(("calibrated, at even odds",) if calibrated else ()), "verdict")]

    def line(name: str, entry: dict, verdict: str) -> tuple[str, ...]:
        # Enough digits that the score reads on its verdict's side of the threshold.
        probs = [eval_names.score_text(entry["fake_probability"], report.get("threshold"))]
        if calibrated:
            probs.append(f"{entry['calibrated_probability']:.4f}")
        return (name, str(entry["frames_scored"]), *probs, verdict)

    for r in report["videos"]:
        if r["status"] == "ok":
            verdict = r["verdict"]
            if r.get("few_frames"):
                verdict += " (few frames: weak evidence)"
            if r.get("heatmaps_error"):
                verdict += f" (no heatmaps: {r['heatmaps_error']})"
            if r.get("timeline_error"):
                verdict += f" (no timeline: {r['timeline_error']})"
            rows.append(line(r["video"], r, verdict))
            if len(r.get("faces", ())) >= 2:
                rows.extend(line(*face) for face in _face_rows(r))
        else:
            dashes = ("-",) * (len(rows[0]) - 3)
            rows.append((r["video"], "0", *dashes, f"not scored ({r['reason']}): {r['message']}"))
    # Names come from whoever made the files: a newline or an escape sequence in one
    # would split a row or restyle the terminal, so each cell shows them escaped.
    rows = [tuple(map(printable, row)) for row in rows]
    # The verdict, last, is not padded: it may be long (an error message).
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    )


def verdicts_line(report: dict) -> str:
    """The line under the table that says which threshold made the verdicts and
    how it was chosen; at the default, that it was not chosen on val."""
    if report["threshold_source"] == thresholds.DEFAULT_SOURCE:
        return (
            f"verdicts at threshold {eval_names.threshold_text(report['threshold'])} (the "
            "default, not chosen on val: pass --threshold val for this checkpoint's val EER "
            "threshold, or --threshold P)"
        )
    return f"verdicts at {thresholds.describe(report['threshold'], report['threshold_source'])}"


def _face_rows(row: dict) -> list[tuple[str, dict, str]]:
    """(name, face entry, verdict) of the table's indented line per face of a
    video scored with --faces all."""
    rows = []
    for f in row["faces"]:
        verdict = f["verdict"]
        if f["face"] == row["face"]:
            verdict += " (the video's score)"
        if f["few_frames"]:
            verdict += " (few frames: weak evidence)"
        name = f"  face {f['face']} (around {', '.join(str(int(v)) for v in f['box'])})"
        rows.append((name, f, verdict))
    return rows


def main(argv=None) -> int:
    p = cli.ArgumentParser(
        prog="python -m ldattn_jax.predict", description="Score videos as real or fake."
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files, or directories of them")
    p.add_argument("--workdir", required=True, help="training workdir (config.json, checkpoints/)")
    p.add_argument("--out", default=None, help="output dir; default WORKDIR/predict")
    p.add_argument("--checkpoint", default="best", type=_parse_checkpoint)
    p.add_argument("--frames_per_video", type=positive_int, default=32)
    p.add_argument("--heatmaps", action="store_true", help="write attention overlays (PNG)")
    p.add_argument(
        "--timeline",
        action="store_true",
        help="draw each video's P(fake) per key frame along the video (PNG): where the "
        "evidence lies",
    )
    p.add_argument("--batch_size", type=positive_int, default=None)
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="threads for decode + dlib (default: all cores)",
    )
    p.add_argument(
        "--rescore",
        action="store_true",
        help="score every video again, even those OUT/predictions.jsonl holds from an earlier "
        "run with the same settings",
    )
    p.add_argument(
        "--faces",
        choices=FACE_MODES,
        default="largest",
        help="largest: the largest face of each key frame, as in training; all: every face, "
        "each scored on its own, the video's score is its most suspicious face's",
    )
    add_dtype_argument(p)
    thresholds.add_threshold_argument(p)
    thresholds.add_calibration_argument(p, "add each video's calibrated fake probability")
    args = p.parse_args(argv)
    args.workdir = local_workdir(p, args.workdir)
    from ldattn_jax.checkpointing import CheckpointMismatchError
    from ldattn_jax.config_utils import ConfigError

    if not os.path.isfile(os.path.join(args.workdir, "config.json")):
        print(f"predict: error: {args.workdir} has no config.json: pass as --workdir the "
              "directory a training run wrote (python -m ldattn_jax.train --workdir)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        config = load_run_config(args.workdir)
        report = predict_videos(
            config,
            args.workdir,
            args.videos,
            out_dir=args.out,
            checkpoint=args.checkpoint,
            frames_per_video=args.frames_per_video,
            heatmaps=args.heatmaps,
            timeline=args.timeline,
            batch_size=args.batch_size,
            workers=args.workers,
            dtype=args.dtype,
            reuse=not args.rescore,
            faces=args.faces,
            threshold=args.threshold,
            calibration=args.calibration,
            command=[*p.prog.split(), *(sys.argv[1:] if argv is None else argv)],
        )
    except (
        FileNotFoundError, NotADirectoryError, FileExistsError, thresholds.ThresholdError,
        ConfigError, CheckpointMismatchError, OutputDirError,
    ) as e:  # fmt: skip
        # The run cannot start (no checkpoint, --out a file or not writable, no val
        # result for --threshold val, a broken config.json): one line, not a traceback.
        print(f"predict: error: {cli.one_line(e)}", file=sys.stderr)
        return 2
    except ValueError as e:
        # Anything else refused as a value: a config.json naming no model (a hand
        # edit), a damaged checkpoint (checkpointing.CheckpointDamaged). One line
        # all the same, but with the type: unlike the errors above, a ValueError
        # of ours may also be a bug, and the type is what tells the two apart.
        print(f"predict: error: {type(e).__name__}: {cli.one_line(e)}", file=sys.stderr)
        return 2
    for s in report["skipped"]:
        print(printable(f"skipped {s['path']}: {s['why']}"), file=sys.stderr)
    print(format_table(report))
    print(verdicts_line(report))
    cal = report["calibration"]
    if cal is not None:
        counts = cal.get("counts")
        fitted = (
            f" (fitted on {counts['real']} real + {counts['fake']} fake videos)" if counts else ""
        )
        # The verdict compares the raw score with the threshold; on the even-odds
        # scale that threshold sits elsewhere than 0.5 (an EER threshold balances
        # error rates, not odds), so say where.
        at = float(calibration_lib.apply(cal, [report["threshold"]])[0])
        print(
            "at even odds: P(fake) if fakes and reals were equally likely a priori, through "
            f"the calibration of {cal['source']}{fitted}; for prior odds O (fakes per real), "
            f"multiply its odds p / (1 - p) by O. The verdicts' threshold is {at:.4f} at even odds"
        )
        if cal["a"] <= 0:
            print(
                f"warning: that map's slope a = {cal['a']:.4g} is not positive: on val a higher "
                "score was not more likely fake, so the even-odds probabilities say nothing",
                file=sys.stderr,
            )
    if args.faces == "all" and (
        report["threshold_source"] != thresholds.DEFAULT_SOURCE or cal is not None
    ):
        # Val's threshold and calibration were fitted on largest-face video scores;
        # the most suspicious of several faces is a maximum, higher for any real video
        # of two or more people, so their verdicts err towards "fake" more than val says.
        print(
            "note: with --faces all a video's score is its most suspicious face's; val's "
            "threshold and calibration were fitted on largest-face scores, so a real video "
            "of several people is called fake more often than val's error rate says: read "
            "each face's own score beside it",
            file=sys.stderr,
        )
    print(f"per-frame scores: {report['json']}")
    if report["html"]:
        print(f"report for reading: {report['html']}")
    scored = sum(r["status"] == "ok" for r in report["videos"])
    if not scored:
        print("no video could be scored", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
