"""Face stacks: dlib box + 68 landmarks on the key frame, one square crop for the stack.

The paper's residuals r = I^{t+1} - I^t only measure face motion if every frame
of a stack is cut with the same box, so the box comes from the key frame alone.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import cv2
import numpy as np

from data_prep.video import VideoError, decode_stacks

__all__ = [
    "VideoError",
    "assign_tracks",
    "crop_box",
    "crop_mask",
    "cut",
    "cut_frame",
    "detect_face",
    "detect_faces",
    "extract_stacks",
    "square_box",
]

# FF++ convention: the crop is 1.3x the detected face.
BOX_SCALE = 1.3
# dlib's HOG pyramid costs ~quadratic in pixels; faces in video are large, so
# detection runs on a copy whose longer side is at most this, then maps back.
DETECT_MAX_SIDE = 640
# A face too small for that scan (under ~240 px in a 1080p frame: most faces of
# FF++'s 480p-1080p videos) used to cost a whole-frame scan upsampled 2x, ~4x the
# pixels: ~124 ms per 1080p key frame on the CI VM (~32 of them in the 640 px
# scan that finds nothing). Faces barely move between key frames, so a key
# frame first looks near the face found TRACK_STRIDE key frames earlier (key
# frames 1..TRACK_STRIDE-1: key frame 0's): a square NEAR_SPAN x that face's
# side, scaled so that face is NEAR_FACE_PX wide (dlib's window is 80 px: faces
# 0.67-3x its size are found), ~10 ms. The upsampled whole-frame scan runs only
# when that fails too. A stride, not the previous key frame: TRACK_STRIDE chains
# of key frames run in parallel (predict's latency), and the result does not
# depend on how many threads ran them.
TRACK_STRIDE = 4
NEAR_SPAN = 3.0
NEAR_FACE_PX = 120
# dlib's HOG detector also fires, weakly, on face-like patterns, and such a false
# positive can be larger than the face: on the astronaut photo decoded from MJPEG
# it finds the face (score 1.43) and her name badge (0.03), and "the largest"
# was the badge. Its score is an SVM margin whose scale varies with the image
# (contrast, blur, compression, face size), so no fixed threshold suits every
# video; a floor relative to the best detection of the same scan is scale-free.
# A second real face scores within ~2x of the first (the same detector on the
# same image), a false positive far below. Detections under this fraction of a
# scan's best score are dropped before the largest face is taken.
MIN_SCORE_RATIO = 0.5
# Bump when a change alters which face or box extract_stacks returns: build
# caches are kept per version, so a resumed build never mixes two face finders.
# 1: whole-frame scans only; 2: small faces searched near the earlier face;
# 3: weak detections (under MIN_SCORE_RATIO x the scan's best) dropped.
FACES_VERSION = 3
# What extract_stacks(faces=...) keeps of a key frame: the largest face (training,
# data_prep, predict's default) or every face (predict --faces all).
FACE_MODES = ("largest", "all")
# Face tracks (``assign_tracks``): a face is the same person as a track when their
# centres lie closer than this x the larger of the two boxes' sides. Key frames of
# a 10 s clip at 32 a video are ~0.3 s apart, where a head moves well under its
# own width, while two people side by side sit at least ~1.5 face widths apart.
SAME_FACE_DISTANCE = 1.0

_PREDICTOR = None  # created once per process: dlib objects do not pickle.
# dlib's HOG detector keeps scratch buffers inside the object, so two threads
# calling one detector crash (segfault, seen with extract_stacks(workers>1)).
# Each call borrows a detector from this pool (made on demand, ~0.3 s each, then
# reused); the shape predictor is read-only when called and is shared.
_DETECTORS: queue.SimpleQueue = queue.SimpleQueue()
_PREDICTOR_LOCK = threading.Lock()


def _predictor():
    global _PREDICTOR
    with _PREDICTOR_LOCK:
        if _PREDICTOR is None:
            import dlib
            import face_recognition_models

            model = face_recognition_models.pose_predictor_model_location()
            _PREDICTOR = dlib.shape_predictor(model)
    return _PREDICTOR


@contextlib.contextmanager
def _detector():
    try:
        detector = _DETECTORS.get_nowait()
    except queue.Empty:
        import dlib

        detector = dlib.get_frontal_face_detector()
    try:
        yield detector
    finally:
        _DETECTORS.put(detector)


def load_models() -> None:
    """Loads dlib's predictor and one detector now (worker start-up), not on the first video."""
    _predictor()
    with _detector():
        pass


def detect_face(
    frame: np.ndarray, *, bgr: bool = False, near: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Largest frontal face in an RGB frame: (dlib box [l, t, r, b] float, landmarks [68, 2]).

    Largest among the confident detections of a scan (MIN_SCORE_RATIO x its best
    score), so a large weak false positive never wins over the face.
    Coordinates are in the frame's pixels (x, y). None if no face is found.
    ``bgr=True``: the frame is in OpenCV's BGR order (same result).
    ``near``: a face box [l, t, r, b] found in an earlier frame of the same video.
    When the DETECT_MAX_SIDE scan finds no face, the search looks around ``near``
    before scanning the whole frame upsampled (see TRACK_STRIDE); a face that
    scan finds is still preferred, so a large face is never passed over.
    """
    gray, small, scale = _grayscale(frame, bgr)
    with _detector() as detector:
        box = _largest(_confident(detector, small, 0), scale)
        if box is None and near is not None:
            box = _search_near(detector, gray, near)
        if box is None:
            # Upsampling once finds faces down to ~40 px at 4x the cost: the last resort.
            box = _largest(_confident(detector, small, 1), scale)
    if box is None:
        return None
    return box, _landmarks(gray, box)


def detect_faces(
    frame: np.ndarray, *, bgr: bool = False, near: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every frontal face in a frame, largest first: [(dlib box, landmarks [68, 2])].

    The DETECT_MAX_SIDE scan misses faces under ~80 px there (~240 px in a 1080p
    frame: most of DFDC's). ``detect_face`` finds its one face near the earlier
    one, but a second, smaller person must be found too, so the whole frame is
    also scanned upsampled 2x (faces down to ~40 px there; ~4x the cost of the
    first scan, on every key frame: what --faces all costs) and each face it finds
    that the first scan did not is added. The first scan's faces keep their boxes,
    so the first face is ``detect_face``'s whenever that scan finds one. With no
    face in either scan, the search near ``near`` gives at most one.
    No face is dropped for being smaller than the largest: a second person further
    from the camera is what this is for, and a background false positive, rarely
    found in many key frames, is left out of the video's verdict by predict's
    few-frames rule rather than by a size cut here. Detections scoring under
    MIN_SCORE_RATIO x the best of their scan are dropped, as in ``detect_face``.
    """
    gray, small, scale = _grayscale(frame, bgr)
    with _detector() as detector:
        boxes = _by_size(_confident(detector, small, 0), scale)
        for box in _by_size(_confident(detector, small, 1), scale):
            if not any(_same_face(box, other) for other in boxes):
                boxes.append(box)
        if not boxes and near is not None:
            box = _search_near(detector, gray, near)
            boxes = [] if box is None else [box]
    boxes.sort(key=lambda b: -_area(b))  # stable: the first scan's face first among equals
    return [(box, _landmarks(gray, box)) for box in boxes]


def _same_face(a: np.ndarray, b: np.ndarray) -> bool:
    """Two detections of one face: centres closer than half the larger side (two
    people's faces never overlap that much)."""
    return _centre_distance(a, b) < 0.5


def _centre_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between two boxes' centres, in units of the larger box's side."""
    side = max(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1])
    centre = (a[:2] + a[2:]) / 2 - (b[:2] + b[2:]) / 2
    return float(np.hypot(*centre)) / max(float(side), 1e-6)


def _grayscale(frame: np.ndarray, bgr: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """(gray frame, its copy for the DETECT_MAX_SIDE scan, that copy's scale)."""
    gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = (
        gray
        if scale == 1.0
        else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    )
    return gray, small, scale


def _landmarks(gray: np.ndarray, box: np.ndarray) -> np.ndarray:
    """dlib's 68 landmarks [68, 2] (x, y) of the face in ``box``."""
    import dlib

    full = dlib.rectangle(*(int(round(v)) for v in box))
    shape = _predictor()(gray, full)
    return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


def _confident(detector, image: np.ndarray, upsample: int) -> list:
    """dlib's detections in ``image`` scoring at least MIN_SCORE_RATIO x the best
    of them (dlib's order kept): weak false positives out, every real face in."""
    rects, scores, _ = detector.run(image, upsample, 0.0)
    if len(rects) == 0:
        return []
    floor = MIN_SCORE_RATIO * max(scores)
    return [r for r, score in zip(rects, scores, strict=True) if score >= floor]


def _largest(rects, scale: float, origin: tuple[int, int] = (0, 0)) -> np.ndarray | None:
    """The largest dlib rectangle as a float box in frame pixels (image: frame[origin:] x scale)."""
    if len(rects) == 0:
        return None
    return _box(max(rects, key=lambda r: r.width() * r.height()), scale, origin)


def _by_size(rects, scale: float) -> list[np.ndarray]:
    """All dlib rectangles as float boxes in frame pixels, largest first.

    A stable sort: of equal sizes dlib's first comes first, as ``max`` picks it in
    ``_largest``, so the first box is always ``detect_face``'s.
    """
    ordered = sorted(rects, key=lambda r: -(r.width() * r.height()))
    return [_box(r, scale) for r in ordered]


def _box(rect, scale: float, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    x, y = origin
    box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], np.float64)
    return box / scale + np.array([x, y, x, y], np.float64)


def _search_near(detector, gray: np.ndarray, near: np.ndarray) -> np.ndarray | None:
    """The largest face in a NEAR_SPAN x square around box ``near``, scanned at NEAR_FACE_PX."""
    left, top, right, bottom = (float(v) for v in near)
    side = max(right - left, bottom - top)
    if not side > 0:
        return None
    h, w = gray.shape
    half, cx, cy = NEAR_SPAN * side / 2, (left + right) / 2, (top + bottom) / 2
    x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
    x1, y1 = min(w, int(cx + half)), min(h, int(cy + half))
    if x1 - x0 < 8 or y1 - y0 < 8:  # the earlier face lies outside this frame
        return None
    s = NEAR_FACE_PX / side
    region = cv2.resize(
        gray[y0:y1, x0:x1], None, fx=s, fy=s,
        interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
    )  # fmt: skip
    return _largest(_confident(detector, region, 0), s, (x0, y0))


def square_box(face: np.ndarray, frame_hw: tuple[int, int], scale: float = BOX_SCALE) -> np.ndarray:
    """Square of `scale` x the face's longer side around its centre, inside the frame.

    Near an edge the square slides inwards (rather than being cut to a
    rectangle, which the resize would then stretch); it shrinks only if the
    frame itself is smaller. Returns int32 [x0, y0, x1, y1], exclusive end.
    """
    h, w = frame_hw
    left, top, right, bottom = face
    side = int(round(min(scale * max(right - left, bottom - top), h, w)))
    side = max(side, 1)
    x0 = int(round((left + right) / 2 - side / 2))
    y0 = int(round((top + bottom) / 2 - side / 2))
    x0 = min(max(x0, 0), w - side)
    y0 = min(max(y0, 0), h - side)
    return np.array([x0, y0, x0 + side, y0 + side], np.int32)


def crop_box(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Cuts `box` out of an image ([H, W] or [H, W, C]) and resizes to size x size (area)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return cv2.resize(image[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)


def crop_mask(mask: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Manipulated-region mask aligned with `crop_box`: uint8 [size, size] in {0, 1}.

    Area-resized then thresholded at half coverage, so a cell is marked when most
    of its source pixels were manipulated.
    """
    m = (np.asarray(mask) > 0).astype(np.float32)
    return (crop_box(m, box, size) >= 0.5).astype(np.uint8)


def cut(frames: list[np.ndarray], box: np.ndarray, size: int, *, bgr: bool = False) -> np.ndarray:
    """Stack of frames cut with one box: uint8 RGB [n+1, size, size, 3].

    ``bgr=True``: the frames are in OpenCV's BGR order and each crop is turned
    to RGB after the resize (exact: the area resize treats channels alike), on
    ~15x fewer pixels than a 1080p frame.
    """
    return np.stack([cut_frame(f, box, size, bgr=bgr) for f in frames])


def cut_frame(frame: np.ndarray, box: np.ndarray, size: int, *, bgr: bool = False) -> np.ndarray:
    """One frame of ``cut``: uint8 RGB [size, size, 3]."""
    crop = crop_box(frame, box, size)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB) if bgr else crop


def assign_tracks(boxes: list[list[np.ndarray]]) -> list[list[int]]:
    """Face tracks over a video: one id per face box, the same person keeping one id.

    ``boxes[k]``: key frame k's face boxes [l, t, r, b] (any order). Greedy, in
    key-frame order: the frame's faces, largest first, each take the free track
    (not yet taken in this frame) whose most recent box lies nearest, when their
    centres are closer than SAME_FACE_DISTANCE x the larger side; a face that
    matches none starts a new track. A track is never closed, so a face hidden
    for some key frames that comes back nearby keeps its id. Ids: 0 is the largest
    face of the first key frame with a face, new ones in order of appearance. Returns the ids in
    the shape of ``boxes``; a function of the boxes alone.
    """
    last: list[np.ndarray] = []  # each track's most recent box
    ids: list[list[int]] = []
    for frame_boxes in boxes:
        frame_boxes = [np.asarray(b, np.float64) for b in frame_boxes]
        frame_ids = [-1] * len(frame_boxes)
        taken: set[int] = set()
        for i in sorted(range(len(frame_boxes)), key=lambda i: -_area(frame_boxes[i])):
            track = _nearest_track(frame_boxes[i], last, taken)
            if track is None:
                track = len(last)
                last.append(frame_boxes[i])
            else:
                last[track] = frame_boxes[i]
            taken.add(track)
            frame_ids[i] = track
        ids.append(frame_ids)
    return ids


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))


def _nearest_track(box: np.ndarray, last: list[np.ndarray], taken: set[int]) -> int | None:
    """The free track whose last box is nearest ``box`` within SAME_FACE_DISTANCE, or None."""
    best, best_distance = None, SAME_FACE_DISTANCE
    for track, other in enumerate(last):
        if track in taken:
            continue
        distance = _centre_distance(box, other)
        if distance < best_distance:  # ties: the older track
            best, best_distance = track, distance
    return best


def extract_stacks(
    video_path: str,
    frames_per_video: int = 32,
    stack: int = 3,
    size: int = 398,
    *,
    workers: int = 1,
    faces: str = "largest",
) -> list[dict]:
    """Face crop stacks of a video (see docs/interfaces.md).

    Returns a list of {'frames' uint8 [stack+1, size, size, 3], 'frame_index' int,
    'box' int32 [4] (x0, y0, x1, y1 in the source frame), 'landmarks' float32
    [68, 2] (source-frame x, y of the key frame)}. Key frames without a face are
    skipped; raises VideoError if the video cannot be read or no key frame has a face.
    A face too small for the DETECT_MAX_SIDE scan is looked for near the face
    found TRACK_STRIDE key frames earlier before the whole frame is scanned at 2x.

    ``faces="largest"``: one stack per key frame, its largest face (training's).
    ``faces="all"``: one stack per face of each key frame (``detect_faces``), each
    frame cut once per face, in key-frame order and largest face first; each
    stack also has 'face' int, its track id (``assign_tracks``: the same person
    keeps one id over the video).

    Each frame is cut as soon as its key frame's face is known and then dropped
    (``_StackCutter``), so a video never holds more than a few decoded frames.
    workers > 1 spreads one video over threads: each key frame's face detection
    starts as soon as that frame is decoded (dlib and OpenCV release the GIL), so
    detection overlaps the sequential decode, and the crops run in parallel. The
    result is identical to workers=1. `data_prep.build` parallelises over videos
    instead and keeps workers=1; `predict` uses this to cut one video's latency.
    """
    if frames_per_video < 1 or stack < 0 or size < 8 or workers < 1:
        raise ValueError(
            f"frames_per_video={frames_per_video}, stack={stack}, size={size}, "
            f"workers={workers}: need frames_per_video >= 1, stack >= 0, size >= 8, workers >= 1"
        )
    if faces not in FACE_MODES:
        raise ValueError(f"faces={faces!r}: one of {', '.join(FACE_MODES)}")
    video_path = str(video_path)
    with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
        cutter = _StackCutter(pool.submit if pool is not None else _now, stack, size, faces)
        # Frames stay in OpenCV's BGR order: only the crops are converted (cut_frame).
        total = decode_stacks(video_path, frames_per_video, stack, cutter, rgb=False)
        stacks = cutter.stacks()
    if not stacks:
        raise VideoError(
            "no_face",
            f"{video_path}: dlib found no face in any key frame ({total} frames). Its HOG "
            "detector finds upright, roughly frontal faces of ~40 px or more: a video turned "
            "sideways without rotation metadata, profile views or a tiny face give this; "
            "rotate the video, or crop it around the face",
        )
    return stacks


def _now(fn, *args) -> Future:
    """Runs ``fn`` here and now, as a finished Future (the serial stand-in for pool.submit)."""
    done: Future = Future()
    done.set_result(fn(*args))
    return done


class _StackCutter:
    """A ``video.FrameSink`` that turns decoded frames into stacks as they arrive.

    A key frame starts its detection (``_KeyFrameTrack``); every frame of a stack
    (the key frame too) is cut by a task that waits for that detection, so the
    frame lives only until its faces are known. ``run(fn, *args) -> Future`` is
    ``pool.submit`` or ``_now``. With a FIFO pool a task waits only for tasks
    submitted before it, which have already started: no deadlock.
    """

    def __init__(self, run, stack: int, size: int, faces: str = "largest"):
        self._run, self._stack, self._size, self._faces = run, stack, size, faces

    def begin(self, keys: list[int]) -> None:
        self._track = _KeyFrameTrack(self._run, self._faces)
        self._crops: dict[int, dict[int, Future]] = {k: {} for k in keys}

    def frame(self, index: int, frame: np.ndarray) -> None:
        if index in self._crops:
            self._track.add(index, frame)
        for j in range(self._stack + 1):
            # Stacks may overlap in short videos; a key frame that did not convert has none.
            found = self._track.found.get(index - j)
            if found is not None:
                self._crops[index - j][j] = self._run(_cut_when_found, frame, found, self._size)

    def stacks(self) -> list[dict]:
        """The final pass's stacks, in key-frame order (then largest face first):
        those with a face and every frame."""
        found = {}  # key frame -> its faces, for key frames whose every frame converted
        for k, crops in self._crops.items():
            if len(crops) == self._stack + 1:
                found[k] = self._track.found[k].result()
        ids = assign_tracks([[box for box, _ in f] for f in found.values()])
        stacks = []
        for (k, key_faces), key_ids in zip(found.items(), ids, strict=True):
            cuts = [self._crops[k][j].result() for j in range(self._stack + 1)]
            for n, ((_, landmarks), face_id) in enumerate(zip(key_faces, key_ids, strict=True)):
                s = {
                    "frames": np.stack([cut[n][1] for cut in cuts]),
                    "frame_index": k,
                    "box": cuts[0][n][0],
                    "landmarks": landmarks,
                }
                if self._faces == "all":
                    s["face"] = face_id
                stacks.append(s)
        return stacks


def _cut_when_found(frame: np.ndarray, found: Future, size: int) -> list:
    """[(box, crop)] of a frame, one per face of its key frame, once that detection is done."""
    cuts = []
    for face, _ in found.result():
        box = square_box(face, frame.shape[:2])
        cuts.append((box, cut_frame(frame, box, size, bgr=True)))
    return cuts


class _KeyFrameTrack:
    """A video's key-frame detections in order; each searches near the face found
    TRACK_STRIDE key frames before it, or in key frame 0 (detect_face's ``near``).

    ``run(fn, *args) -> Future`` runs a detection: ``pool.submit`` to detect while
    decoding goes on (a task waits only for the task TRACK_STRIDE before it, which a
    FIFO pool has already started), or ``_now``. Either way the result is the same.
    ``found`` maps each key frame added so far to its detection: a list of
    (box, landmarks), largest first, empty without a face; with ``faces="largest"``
    at most one (``detect_face``), with "all" every one (``detect_faces``).
    """

    def __init__(self, run, faces: str = "largest"):
        self._run, self._faces = run, faces
        self._chain: list[Future] = []
        self.found: dict[int, Future] = {}

    def add(self, index: int, frame: np.ndarray) -> None:
        # Key frames 1..TRACK_STRIDE-1 start from key frame 0 (none before it).
        n = len(self._chain)
        earlier = (
            self._chain[n - TRACK_STRIDE] if n >= TRACK_STRIDE else self._chain[0] if n else None
        )
        self._chain.append(self._run(_detect_key_frame, frame, earlier, self._faces))
        self.found[index] = self._chain[-1]


def _detect_key_frame(frame: np.ndarray, earlier: Future | None, faces: str):
    found = earlier.result() if earlier is not None else []
    near = found[0][0] if found else None  # the earlier key frame's largest face
    if faces == "all":
        return detect_faces(frame, bgr=True, near=near)
    face = detect_face(frame, bgr=True, near=near)
    return [] if face is None else [face]
