"""A fake's face crops against its original's: was the face we cut the swapped one?

DFDC labels videos, not faces. Its metadata.json names each fake's original,
and a fake can show a face that is not swapped: in a video of two people only
one may be swapped, and the largest face, the one a build cuts, may be the real
person's; a swap can also fail or leave a face untouched. Trained as "fake",
such crops teach the model that real faces are fake. So a build cuts the
original with the fake's own boxes (the same frames: DFDC fakes keep their
original's frames and size) and measures the change of the face.

``face_change`` is how much more the face changed than its surroundings: the
mean absolute difference (0-255 levels, over RGB and the stack's frames)
inside the key frame's landmark hull, minus the same outside the hull, grown
a little, in the crop. A swap changes the face far more than the hair, neck
and background around it. Re-encoding changes both alike, and so does a
swapped second person or a global colour shift: these come out near 0 or
below. The default MIN_FACE_CHANGE was set between what re-encoding and what
a manipulation give: see data_prep/README.md ("DFDC fakes whose face was not
swapped") for the measurements.
"""

from __future__ import annotations

import cv2
import numpy as np

from data_prep import faces, video

# Gray levels: a stack of a fake is kept only if its face changed at least this
# much more than its surroundings (data_prep/README.md has the measurements).
MIN_FACE_CHANGE = 1.0
# The hull grows by this fraction of the crop side before "outside" starts: a
# swap is blended over a seam a little beyond the landmarks.
_SEAM = 0.04


def hull_mask(landmarks: np.ndarray, box: np.ndarray, size: int, grow: float = 0.0) -> np.ndarray:
    """bool [size, size]: the convex hull of a face's 68 landmarks (source-frame x, y)
    in the crop that ``faces.crop_box(frame, box, size)`` cuts, grown by ``grow`` x size."""
    x0, y0, x1, _ = (float(v) for v in box)
    pts = (np.asarray(landmarks, np.float64) - (x0, y0)) * (size / (x1 - x0))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
    px = int(round(grow * size))
    if px > 0:
        mask = cv2.dilate(mask, np.ones((2 * px + 1, 2 * px + 1), np.uint8))
    return mask.astype(bool)


def _masks(landmarks, box, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(inside, outside): the face hull and the crop outside it grown by the seam."""
    return (
        hull_mask(landmarks, box, size),
        ~hull_mask(landmarks, box, size, grow=_SEAM),
    )


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean |a - b| over channels (and frames, for stacks): float [size, size]."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=-1)
    return d.mean(axis=0) if d.ndim == 3 else d


def face_change(fake: np.ndarray, original: np.ndarray, landmarks, box) -> float:
    """Mean |fake - original| inside the face hull minus outside it (levels, 0-255).

    ``fake``, ``original``: uint8 [n, size, size, 3] crops cut with ``box``;
    ``landmarks``: the key frame's [68, 2] in the source frame. NaN when either
    region is empty (a face filling the whole crop leaves no surroundings).
    """
    inside, outside = _masks(landmarks, box, fake.shape[1])
    if not inside.any() or not outside.any():
        return float("nan")
    diff = _diff(fake, original)
    return float(diff[inside].mean() - diff[outside].mean())


class OriginalMismatch(Exception):
    """The original cannot be compared with the fake (another frame size, or its
    frames do not line up with the fake's)."""


class _BoxCutter:
    """A ``video.FrameSink`` that cuts an original's frames with the fake's stack
    boxes: each stack's frames and the frame before it (for ``_lined_up``)."""

    def __init__(self, stacks: list[dict], stack: int, size: int, frame_hw: tuple[int, int]):
        self._stacks, self._stack, self._size, self._hw = stacks, stack, size, tuple(frame_hw)

    def begin(self, keys: list[int]) -> None:
        del keys  # the fake's plan decides which frames are cut, not the original's
        self.crops: list[dict[int, np.ndarray]] = [{} for _ in self._stacks]

    def frame(self, index: int, frame: np.ndarray) -> None:
        if frame.shape[:2] != self._hw:
            raise OriginalMismatch(
                f"its frames are {frame.shape[1]}x{frame.shape[0]}, the fake's "
                f"{self._hw[1]}x{self._hw[0]}"
            )
        for i, s in enumerate(self._stacks):
            j = index - s["frame_index"]
            if -1 <= j <= max(self._stack, 1):
                self.crops[i][j] = faces.cut_frame(frame, s["box"], self._size, bgr=True)


def _lined_up(s: dict, crops: dict[int, np.ndarray]) -> bool | None:
    """Does the fake's key frame match the original's same frame at least as well
    as the frame before or after it, outside the face? None: cannot tell."""
    if not {-1, 0, 1} <= crops.keys():
        return None
    _, outside = _masks(s["landmarks"], s["box"], s["frames"].shape[1])
    if not outside.any():
        return None
    key = s["frames"][0]
    here, before, after = (_diff(key, crops[j])[outside].mean() for j in (0, -1, 1))
    return bool(here <= min(before, after))


def compare_with_original(
    original_path: str,
    stacks: list[dict],
    stack: int,
    size: int,
    frame_hw: tuple[int, int],
) -> np.ndarray:
    """float32 [len(stacks)]: each fake stack's ``face_change`` against the original.

    ``stacks``: ``faces.extract_stacks`` of the fake; ``frame_hw``: its frame
    (height, width). NaN for a stack whose frames the original lacks (a
    shorter original). Raises ``video.VideoError`` if the original cannot be
    read, ``OriginalMismatch`` if its frames have another size or do not line
    up with the fake's. An original one frame off differs from the fake by one
    frame's motion everywhere (2.6-13 levels outside the face in the
    measurements of data_prep/README.md, against at most 2.1 lined up), which
    buries how the face changed: copies shifted by one frame read -0.9 to 1.2,
    around the threshold. Lined up means the fake's key frame is nearest the
    original's same frame, not the one before or after, outside the face, in
    most stacks that can tell (a still scene cannot, and does not need to).
    """
    sink = _BoxCutter(stacks, stack, size, frame_hw)
    # From the frame before each key frame to the one after (for _lined_up) and
    # its stack's last.
    keys = sorted({max(s["frame_index"] - 1, 0) for s in stacks})
    video.decode_keys(original_path, keys, stack + 2, sink, rgb=False)
    verdicts = [
        v for s, c in zip(stacks, sink.crops, strict=True) if (v := _lined_up(s, c)) is not None
    ]
    if verdicts and sum(verdicts) < len(verdicts) / 2:
        raise OriginalMismatch(
            f"its frames do not line up with the fake's: in {len(verdicts) - sum(verdicts)} of "
            f"{len(verdicts)} key frames the original's frame before or after matches better "
            "(a cut or shifted copy?)"
        )
    out = np.full(len(stacks), np.nan, np.float32)
    for i, (s, crops) in enumerate(zip(stacks, sink.crops, strict=True)):
        if all(j in crops for j in range(stack + 1)):
            original = np.stack([crops[j] for j in range(stack + 1)])
            out[i] = face_change(s["frames"], original, s["landmarks"], s["box"])
    return out
