"""Video decoding and key-frame selection (OpenCV), with failures named.

Only the frames a stack needs are converted, and they are streamed to a
``FrameSink`` as they are decoded rather than collected: a FF++ video at 1080p
has ~500 frames (3 GB decoded), its 32 stacks of 4 frames are still 800 MB.
"""

from __future__ import annotations

import os
import struct
from typing import Protocol

import cv2
import numpy as np

# Frames smaller than this cannot hold a face dlib's HOG detector finds (its
# window is 80x80); larger than this is not a video anyone filmed.
MIN_SIDE = 64
MAX_SIDE = 8192
# A stream that decodes fewer frames than its header promises by more than this
# fraction is cut off (interrupted download / copy).
TRUNCATION_TOLERANCE = 0.1
# What to do about a truncated file: it is nearly always an interrupted
# download or copy; a file that plays elsewhere can be re-muxed.
_REFETCH = (
    "download or copy it again (an interrupted transfer?), or if it plays elsewhere, "
    "re-encode it (ffmpeg -i IN -c:v libx264 -crf 18 OUT.mp4)"
)
_REENCODE = "re-encode it (ffmpeg -i IN -c:v libx264 -crf 18 OUT.mp4)"

# Container signatures: a file that has one but will not open is a broken (truncated)
# video, or for MP4/MOV one without a video track or with a codec OpenCV lacks
# (``_unopenable``); a file that has none is not a video at all.
_ISO_BMFF_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
_MAGIC_PREFIXES = (b"RIFF", b"\x1a\x45\xdf\xa3", b"\x00\x00\x01\xba", b"FLV", b"OggS")


class VideoError(Exception):
    """A video that cannot give face stacks; `reason` is a stable key.

    Reasons: 'unreadable', 'zero_bytes', 'not_a_video', 'truncated', 'no_video'
    (a complete container without a video track: audio only, or 0 frames),
    'undecodable' (a video track none of whose frames decodes: a codec OpenCV's
    FFmpeg lacks, e.g. AV1, or corrupt data), 'bad_resolution', 'too_short', 'no_face'.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    def __reduce__(self):
        # Picklable across worker processes with both fields intact.
        return (type(self), (self.reason, self.message))


def _container(path: str) -> str | None:
    """'iso' (MP4/MOV), 'other' (another video container's signature) or None (no video)."""
    with open(path, "rb") as f:
        head = f.read(12)
    if head[4:8] in _ISO_BMFF_BOXES:
        return "iso"
    return "other" if head.startswith(_MAGIC_PREFIXES) else None


def _iso_bmff_tracks(path: str) -> list[bytes] | None:
    """Handler types ('vide', 'soun', ...) of an MP4/MOV file's tracks, or None when
    its top-level boxes are cut off or it has no 'moov' (its index) at all.

    Walks the top-level boxes (a few seeks, whatever the file's size) and
    reads only the 'moov' box, capped at 64 MB.
    """
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        pos, moov = 0, None
        while pos + 8 <= end:
            f.seek(pos)
            size, kind = struct.unpack(">I4s", f.read(8))
            header = 8
            if size == 1:
                if pos + 16 > end:
                    return None
                (size,) = struct.unpack(">Q", f.read(8))
                header = 16
            elif size == 0:  # the last box runs to the end of the file
                size = end - pos
            if size < header or pos + size > end:
                return None  # cut off inside this box
            if kind == b"moov":
                moov = (pos, min(size, 64 << 20))
            pos += size
        if moov is None:
            return None
        f.seek(moov[0])
        data = f.read(moov[1])
    handlers, i = [], data.find(b"hdlr")
    while 0 <= i <= len(data) - 16:
        # hdlr: version/flags (4), pre_defined (4), handler_type (4).
        handlers.append(data[i + 12 : i + 16])
        i = data.find(b"hdlr", i + 4)
    return handlers


def _unopenable(path: str) -> VideoError:
    """Why OpenCV cannot open a file (the error to raise), as precisely as its bytes tell."""
    container = _container(path)
    if container is None:
        return VideoError(
            "not_a_video",
            f"{path} is not a video OpenCV can decode; move it out of the dataset folder, "
            "or convert it (ffmpeg -i IN -c:v libx264 -crf 18 OUT.mp4)",
        )
    tracks = _iso_bmff_tracks(path) if container == "iso" else None
    if tracks is not None and b"vide" not in tracks:
        kinds = ", ".join(t.decode("ascii", "replace") for t in tracks if t != b"mdir") or "none"
        return VideoError(
            "no_video",
            f"{path} is a complete MP4/MOV file without a video track (tracks: {kinds}; "
            "audio only, or a recording of 0 frames): there is nothing to score, check "
            "where it came from",
        )
    if tracks is not None:
        return VideoError(
            "undecodable",
            f"{path} has a complete video track OpenCV cannot open (a codec its FFmpeg "
            f"lacks, or corrupt data); {_REENCODE}",
        )
    return VideoError(
        "truncated", f"{path} has a video header but OpenCV cannot open it; {_REFETCH}"
    )


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
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        # A name that is not UTF-8 (a lone surrogate from os.fsdecode) crashes
        # OpenCV's VideoCapture with a segfault, taking every other video with it.
        try:  # its bytes, as ls escapes them
            shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            shown = path.encode("utf-8", "backslashreplace").decode("utf-8")
        raise VideoError(
            "unreadable",
            f"{shown}: rename the file: its name is not UTF-8, which OpenCV cannot open",
        ) from None
    if not os.path.exists(path):
        if os.path.islink(path):
            raise VideoError(
                "unreadable",
                f"{path} is a broken symbolic link (to {os.readlink(path)}, which does not "
                "exist); fix or remove the link",
            )
        raise VideoError("unreadable", f"{path} does not exist")
    if os.path.isdir(path):
        raise VideoError("unreadable", f"{path} is a directory; pass the video files in it")
    if not os.access(path, os.R_OK):
        raise VideoError("unreadable", f"{path} is not a readable file (check permissions)")
    if os.path.getsize(path) == 0:
        raise VideoError("zero_bytes", f"{path} is empty (0 bytes); re-download it")
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        cap.release()
        raise _unopenable(path)
    return cap


def frame_hw(path: str) -> tuple[int, int]:
    """(height, width) of the frames OpenCV decodes (rotation applied, as faces saw them)."""
    cap = cv2.VideoCapture(path)
    try:
        ok, frame = cap.read()
        if ok:
            return frame.shape[:2]
        return int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    finally:
        cap.release()


def _fourcc(cap: cv2.VideoCapture) -> str:
    """The stream's codec tag as OpenCV reports it ('avc1', 'AV01', ...), '?' if none."""
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    tag = code.to_bytes(4, "little", signed=code < 0).decode("ascii", "replace").strip("\x00 ")
    return tag if tag.isprintable() and tag else "?"


class FrameSink(Protocol):
    """Receives a video's stack frames from ``decode_stacks`` as they are decoded."""

    def begin(self, keys: list[int]) -> None:
        """A decoding pass starts with these key frames; it replaces any earlier pass."""

    def frame(self, index: int, frame: np.ndarray) -> None:
        """Frame ``index`` of some stack, in decode order. The sink keeps it only as
        long as it needs it: a 1080p frame is 6 MB."""


def decode_stacks(path: str, frames_per_video: int, stack: int, sink: FrameSink, *,
                  rgb: bool = True) -> int:  # fmt: skip
    """Decodes the frames of every stack into ``sink`` and returns T, the frame count.

    Only frames that some stack needs are converted from FFmpeg's YUV (OpenCV's
    ``retrieve``), and none is kept here. Keeping them costs more than it
    seems: a fresh 6 MB array per 1080p frame page-faults in on first write,
    and retrieving 128 frames into live arrays took 6.6-7.6 ms each on the CI
    VM against 2.1-3.0 ms when the memory is reused (benchmarks/README.md,
    session 9); 128 live 1080p frames are also 800 MB.

    ``rgb=False`` keeps OpenCV's BGR order: converting every kept 1080p frame
    costs ~2 ms each, while a caller that only crops (``faces.extract_stacks``)
    converts the small crops instead.

    Decodes sequentially (seeking in mp4 is not frame-exact). If the stream is
    shorter (or longer) than its header says, which is common in the wild, the
    key frames are re-planned on the true length and decoded again: the sink
    sees a second ``begin`` and the final pass's plan is
    ``key_frame_indices(T, frames_per_video, stack)``.
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
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        keys = key_frame_indices(declared, frames_per_video, stack)
        total, last_ms = _decode(cap, keys, stack, sink, rgb)
        codec = _fourcc(cap)
    finally:
        cap.release()
    if total == 0:
        # OpenCV opened it and read its header, but no frame comes out: nearly always a
        # codec OpenCV's FFmpeg cannot decode (AV1 in opencv-python), not a cut-off file.
        raise VideoError(
            "undecodable",
            f"{path}: no frame decodes (codec '{codec}', {max(declared, 0)} frames declared): "
            f"OpenCV's FFmpeg may lack this codec, or the data is corrupt; {_REENCODE}, "
            "or download it again",
        )
    if declared > 0 and total < declared * (1 - TRUNCATION_TOLERANCE):
        # Matroska/WebM store no frame count: OpenCV estimates it as duration x nominal
        # fps, 2-3x too many for a variable-frame-rate stream (screen, WebRTC, OBS
        # recordings). So few frames only mean a cut-off file when they also stop
        # short of the declared duration (a cut-off Matroska file keeps its header's).
        declared_s = declared / fps if fps > 0 else 0.0
        played_s = last_ms / 1000 + 1 / fps if fps > 0 and last_ms > 0 else 0.0
        if not (declared_s > 0 and played_s >= declared_s * (1 - TRUNCATION_TOLERANCE)):
            seconds = f" ({played_s:.1f} s of {declared_s:.1f} s)" if played_s > 0 else ""
            raise VideoError(
                "truncated",
                f"{path}: decoded {total} of {declared} declared frames{seconds}; {_REFETCH}",
            )
    if total < stack + 1:
        raise VideoError(
            "too_short",
            f"{path}: {total} frame(s), one stack needs {stack + 1}; score a longer clip",
        )
    final = key_frame_indices(total, frames_per_video, stack)
    if final != keys:
        # The header miscounted: plan on the true length, decode again.
        cap = _open(path)
        try:
            _decode(cap, final, stack, sink, rgb)
        finally:
            cap.release()
    return total


def nominal_fps(path: str) -> float | None:
    """The frame rate the container declares, or None where it gives none (or the
    file does not open): for showing frame indices as times. A variable-frame-rate
    stream's is its nominal rate, so such times are approximate."""
    cap = cv2.VideoCapture(str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return fps if 0.0 < fps < 1000.0 else None


def decode_keys(path: str, keys: list[int], stack: int, sink: FrameSink, *,
                rgb: bool = True) -> int:  # fmt: skip
    """Like ``decode_stacks``, but with key frames planned by the caller (another
    video's plan: ``originals`` cuts a fake's original at the fake's frames).
    Returns the frames decoded; frames past the end are just not delivered."""
    cap = _open(path)
    try:
        total, _ = _decode(cap, keys, stack, sink, rgb)
        codec = _fourcc(cap)
    finally:
        cap.release()
    if total == 0:
        raise VideoError("undecodable", f"{path}: no frame decodes (codec '{codec}'); {_REENCODE}")
    return total


def _decode(
    cap: cv2.VideoCapture, keys: list[int], stack: int, sink: FrameSink, rgb: bool
) -> tuple[int, float]:
    """Frames decoded, and the last one's timestamp in ms (0 if the stream gives none)."""
    wanted = {k + j for k in keys for j in range(stack + 1)}
    sink.begin(keys)
    index, last_ms = 0, 0.0
    while cap.grab():
        last_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
        if index in wanted:
            ok, bgr = cap.retrieve()
            if ok:  # a frame that will not convert is left out; its stacks are dropped
                sink.frame(index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if rgb else bgr)
        index += 1
    return index, last_ms
