"""The videos a detector gets most wrong, with the frame that shows it (paper V-E, Fig. 9).

The paper sorts its failures into abnormal inputs (an incomplete face, an
excessive head angle) and abnormal attention (maps that weigh the frontier
over the face); both show only on the frames themselves. Evaluation streams a
split once, so this keeps, per group (the real videos; the fakes of each
manipulation method, as the paper's Tables III/IV split them, so that the
hardest method cannot hide the failures of the others), the ``k`` videos whose
most wrong frame is the most wrong at the decision threshold: a real frame
scored above it (the higher, the worse) or a fake one at or below it (the
lower, the worse). One frame per video, so that one bad video cannot fill
every slot; frames on the right side of the threshold are never kept.

Memory is bounded by ``k`` frames per group, whatever the split's size.
"""

from __future__ import annotations


def group_of(label: int, method: str) -> str:
    """``real``, or ``fake_<method>``: what a failure is ranked among."""
    return "real" if int(label) == 0 else f"fake_{method}"


class FailureCases:
    """Per group, the ``k`` most wrong videos seen so far, each by its most wrong frame."""

    def __init__(self, k: int, threshold: float):
        if k < 0:
            raise ValueError(f"failure cases: k={k} must be >= 0")
        self.k = k
        self.threshold = float(threshold)
        # group -> video_id -> (wrongness, case); a case is what `add` built.
        self._kept: dict[str, dict[str, tuple[float, object]]] = {}

    def wrongness(self, label: int, prob: float) -> float | None:
        """How far on the wrong side of the threshold; None when the call is right.

        ACC calls fake what is strictly above the threshold, so a fake frame
        exactly at it is wrong (wrongness 0) and a real one there is right.
        """
        if label == 1:
            return self.threshold - prob if prob <= self.threshold else None
        return prob - self.threshold if prob > self.threshold else None

    def add(self, group: str, video_id: str, label: int, prob: float, make_case) -> None:
        """Considers one frame. ``make_case()`` builds what to keep (frames, maps,
        ...) and is only called when the frame is kept, so frames that are
        right, or less wrong than the ones kept, cost nothing."""
        if not self.k:
            return
        w = self.wrongness(int(label), float(prob))
        if w is None:
            return
        kept = self._kept.setdefault(group, {})
        if video_id in kept:
            if w <= kept[video_id][0]:
                return
        elif len(kept) >= self.k:
            # The least wrong kept video; on a tie, the later id by name goes
            # first, so the result does not depend on the order frames come in.
            least = min(kept, key=lambda v: (kept[v][0], _reversed(v)))
            if (w, _reversed(video_id)) <= (kept[least][0], _reversed(least)):
                return
            del kept[least]
        kept[video_id] = (w, make_case())

    def cases(self) -> list[tuple[str, int, object]]:
        """(group, rank, case) by group name, then rank 0 (the most wrong) on;
        ties by video id."""
        out = []
        for group in sorted(self._kept):
            kept = self._kept[group]
            ranked = sorted(kept, key=lambda v: (-kept[v][0], v))
            out.extend((group, rank, kept[v][1]) for rank, v in enumerate(ranked))
        return out


def _reversed(video_id: str) -> tuple[int, ...]:
    """A key that sorts ids in reverse order of name (a smaller id ranks higher)."""
    return tuple(-ord(ch) for ch in video_id) + (1,)
