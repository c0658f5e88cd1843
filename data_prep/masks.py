"""Manipulated-region masks of a fake's stacks, cut with the stacks' boxes.

Two sources: the synthetic set's ``<video>.masks.npz`` (key ``masks``, uint8
[T, H, W] in {0, 1}) and FF++'s mask videos
(``manipulated_sequences/<method>/masks/videos/<video>.mp4``, one level above
the compression: the same masks serve raw, c23 and c40), white where the
method changed the frame. Masks only score attention maps (defect capture in
evaluate), so a mask that cannot be used costs the mask, never the video.
"""

from __future__ import annotations

import cv2
import numpy as np

from data_prep import faces, video

# FF++'s mask videos are lossy H.264: white (~255) regions ring near their
# edges, so a pixel is "manipulated" above mid-grey.
MASK_VIDEO_LEVEL = 127


def _load_npz(path: str) -> np.ndarray:
    with np.load(path) as z:
        return z["masks"]


class _MaskCutter:
    """A ``video.FrameSink`` that cuts a mask video's key frames with the stacks' boxes."""

    def __init__(self, stacks: list[dict], size: int, hw):
        self._stacks, self._size, self._hw = stacks, size, tuple(hw)
        self.shape: tuple[int, int] | None = None
        self.cut: dict[int, np.ndarray] = {}

    def begin(self, keys: list[int]) -> None:
        del keys

    def frame(self, index: int, frame: np.ndarray) -> None:
        self.shape = frame.shape[:2]
        if tuple(self.shape) != self._hw:
            return  # reported after decoding; a box may lie outside a smaller frame
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        for i, s in enumerate(self._stacks):
            if s["frame_index"] == index:
                self.cut[i] = faces.crop_mask(gray > MASK_VIDEO_LEVEL, s["box"], self._size)


def _cut_video(mask_path: str, stacks: list[dict], size: int, hw) -> dict[int, np.ndarray] | str:
    """{stack: its key frame's mask crop} from a mask video, or the problem."""
    sink = _MaskCutter(stacks, size, hw)
    keys = sorted({s["frame_index"] for s in stacks})
    video.decode_keys(mask_path, keys, 0, sink, rgb=False)
    if sink.shape is not None and tuple(sink.shape) != tuple(hw):
        return f"has {sink.shape[1]}x{sink.shape[0]} frames"
    return sink.cut


def _cut_npz(mask_path: str, stacks: list[dict], size: int, hw) -> dict[int, np.ndarray] | str:
    masks = _load_npz(mask_path)
    if masks.ndim != 3 or tuple(masks.shape[1:]) != tuple(hw):
        return f"has shape {tuple(masks.shape)} (expected [T, {hw[0]}, {hw[1]}])"
    return {
        i: faces.crop_mask(masks[s["frame_index"]], s["box"], size)
        for i, s in enumerate(stacks)
        if s["frame_index"] < len(masks)
    }


def stack_masks(mask_path: str | None, video_path: str, stacks: list[dict], size: int):
    """(mask uint8 [N, size, size], has_mask bool [N], problem or None) of a video's stacks.

    A mask that cannot be read or does not have the video's frame size is
    dropped, not stretched or cropped out of place: a wrong mask would score
    attention maps against the wrong pixels, while the video's frames and label
    are still good, so the video is kept without a mask (has_mask False) and
    the problem is returned. A key frame past the mask's end has no mask.
    """
    mask_out = np.zeros((len(stacks), size, size), np.uint8)
    has_mask = np.zeros(len(stacks), bool)
    if not mask_path:
        return mask_out, has_mask, None
    hw = video.frame_hw(video_path)
    cut = _cut_npz if mask_path.endswith(".npz") else _cut_video
    try:
        got = cut(mask_path, stacks, size, hw)
    except Exception as e:  # noqa: BLE001 -- a broken mask loses the mask, not the video
        return mask_out, has_mask, f"mask {mask_path} unreadable ({type(e).__name__}: {e})"
    if isinstance(got, str):
        return (
            mask_out,
            has_mask,
            f"mask {mask_path} {got}, but the frames of {video_path} are {hw[0]}x{hw[1]}",
        )
    for i, m in got.items():
        mask_out[i], has_mask[i] = m, True
    return mask_out, has_mask, None
