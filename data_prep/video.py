"""Video decoding and key-frame selection (OpenCV), with failures named.

Only the frames a stack needs are kept: a FF++ video at 1080p has ~500 frames
(3 GB decoded), a key frame plus its next n frames times 32 is a few hundred MB.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import cv2
import numpy as np

# Frames smaller than this cannot hold a face dlib's HOG detector finds (its
# window is 80x80); larger than this is not a video anyone filmed.
MIN_SIDE = 64
MAX_SIDE = 8192
# A stream that decodes fewer frames than its header promises by more than this
# fraction is cut off (interrupted download / copy).
TRUNCATION_TOLERANCE = 0.1

# Container signatures: a file that has one but will not decode is a broken
# (truncated) video, a file that has none is not a video at all.
_ISO_BMFF_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
_MAGIC_PREFIXES = (b"RIFF", b"\x1a\x45\xdf\xa3", b"\x00\x00\x01\xba", b"FLV", b"OggS")


class VideoError(Exception):
    """A video that cannot give face stacks; `reason` is a stable key.

    Reasons: 'unreadable', 'zero_bytes', 'not_a_video', 'truncated',
    'bad_resolution', 'too_short', 'no_face'.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    def __reduce__(self):
        # Picklable across worker processes with both fields intact.
        return (type(self), (self.reason, self.message))


def _looks_like_video(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return head[4:8] in _ISO_BMFF_BOXES or head.startswith(_MAGIC_PREFIXES)


def key_frame_indices(num_frames: int, frames_per_video: int, stack: int) -> list[int]:
    """Evenly spaced key frames over the whole video, each with `stack` frames after it.

    Key frame i sits at floor(i * T / K); one too close to the end shifts
    earlier (to T-1-stack) rather than being dropped, and duplicates that
    shifting creates collapse to one (a short video gives fewer, not repeated,
    stacks). Deterministic: a function of (T, K, stack) only.
    """
    if num_frames < stack + 1:
        return []
    last_start = num_frames - 1 - stack
    starts = {min(i * num_frames // frames_per_video, last_start) for i in range(frames_per_video)}
    return sorted(starts)


def _open(path: str) -> cv2.VideoCapture:
    if not os.path.exists(path):
        raise VideoError("unreadable", f"{path} does not exist")
    if not os.access(path, os.R_OK) or os.path.isdir(path):
        raise VideoError("unreadable", f"{path} is not a readable file (check permissions)")
    if os.path.getsize(path) == 0:
        raise VideoError("zero_bytes", f"{path} is empty (0 bytes); re-download it")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        if _looks_like_video(path):
            raise VideoError("truncated", f"{path} has a video header but OpenCV cannot open it")
        raise VideoError("not_a_video", f"{path} is not a video OpenCV can decode")
    return cap


def read_frames(
    path: str,
    frames_per_video: int,
    stack: int,
    on_key_frame: Callable[[int, np.ndarray], None] | None = None,
    *,
    rgb: bool = True,
) -> tuple[dict[int, np.ndarray], int]:
    """Decodes the frames of every stack: ({frame index: RGB uint8 [H, W, 3]}, T).

    ``rgb=False`` keeps OpenCV's BGR order: converting every kept 1080p frame
    costs ~2 ms each (about a third of the decode on 2 cores), while a caller
    that only crops (``faces.extract_stacks``) converts the small crops instead.

    Decodes sequentially (seeking in mp4 is not frame-exact) and keeps only the
    needed frames. If the stream is slightly shorter than its header says (common
    in the wild), the key frames are re-planned on the true length.

    `on_key_frame(index, frame)` is called as each planned key frame is decoded,
    so face detection can start while decoding goes on (`extract_stacks` with
    workers > 1). After a re-plan it is called again for the new plan's key
    frames; callers look up the final plan with `key_frame_indices(T, ...)`.
    """
    cap = _open(path)
    try:
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
            raise VideoError(
                "bad_resolution",
                f"{path} is {width}x{height}; sides must lie in [{MIN_SIDE}, {MAX_SIDE}]",
            )
        keys = set(key_frame_indices(declared, frames_per_video, stack))
        wanted = _wanted(declared, frames_per_video, stack)
        frames, total = _decode(cap, wanted, keys, on_key_frame, rgb)
    finally:
        cap.release()
    if total == 0:
        raise VideoError("truncated", f"{path}: no frame decodes (declared {declared})")
    if declared > 0 and total < declared * (1 - TRUNCATION_TOLERANCE):
        raise VideoError("truncated", f"{path}: decoded {total} of {declared} declared frames")
    if total < stack + 1:
        raise VideoError("too_short", f"{path}: {total} frames, a stack needs {stack + 1}")
    needed = _wanted(total, frames_per_video, stack)
    if not needed.issubset(frames):
        # Header over-counted: plan on the true length, decode again.
        cap = _open(path)
        keys = set(key_frame_indices(total, frames_per_video, stack))
        try:
            frames, _ = _decode(cap, needed, keys, on_key_frame, rgb)
        finally:
            cap.release()
    return {i: frames[i] for i in sorted(needed)}, total


def _wanted(num_frames: int, frames_per_video: int, stack: int) -> set[int]:
    return {
        k + j
        for k in key_frame_indices(num_frames, frames_per_video, stack)
        for j in range(stack + 1)
    }


def _decode(
    cap: cv2.VideoCapture,
    wanted: set[int],
    keys: set[int] = frozenset(),
    on_key_frame=None,
    rgb: bool = True,
) -> tuple[dict[int, np.ndarray], int]:
    frames: dict[int, np.ndarray] = {}
    index = 0
    while cap.grab():
        if index in wanted:
            ok, bgr = cap.retrieve()
            if ok:
                frames[index] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if rgb else bgr
                if on_key_frame is not None and index in keys:
                    on_key_frame(index, frames[index])
        index += 1
    return frames, index
