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


def face_change(fake: np.ndarray, original: np.ndarray, landmarks, box) -> float:
    """Mean |fake - original| inside the face hull minus outside it (levels, 0-255).

    ``fake``, ``original``: uint8 [n, size, size, 3] crops cut with ``box``;
    ``landmarks``: the key frame's [68, 2] in the source frame. NaN when either
    region is empty (a face filling the whole crop leaves no surroundings).
    """
    size = fake.shape[1]
    inside = hull_mask(landmarks, box, size)
    outside = ~hull_mask(landmarks, box, size, grow=_SEAM)
    if not inside.any() or not outside.any():
        return float("nan")
    diff = np.abs(fake.astype(np.int16) - original.astype(np.int16)).mean(axis=(0, 3))
    return float(diff[inside].mean() - diff[outside].mean())


class OriginalMismatch(Exception):
    """The original cannot be compared with the fake (another frame size)."""


class _BoxCutter:
    """A ``video.FrameSink`` that cuts an original's frames with the fake's stack boxes."""

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
            if 0 <= j <= self._stack:
                self.crops[i][j] = faces.cut_frame(frame, s["box"], self._size, bgr=True)


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
    read, ``OriginalMismatch`` if its frames have another size.
    """
    sink = _BoxCutter(stacks, stack, size, frame_hw)
    keys = sorted({s["frame_index"] for s in stacks})
    video.decode_keys(original_path, keys, stack, sink, rgb=False)
    out = np.full(len(stacks), np.nan, np.float32)
    for i, (s, crops) in enumerate(zip(stacks, sink.crops, strict=True)):
        if len(crops) == stack + 1:
            original = np.stack([crops[j] for j in range(stack + 1)])
            out[i] = face_change(s["frames"], original, s["landmarks"], s["box"])
    return out
