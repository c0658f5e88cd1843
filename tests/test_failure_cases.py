"""Failure cases (paper V-E): per class, the videos most wrong at the threshold."""

import numpy as np
import pytest

from ldattn_jax.evaluate import non_negative_int
from ldattn_jax.failure_cases import FailureCases


def expected_failures(video_ids, labels, probs, k, threshold):
    """Per class, the ids FailureCases must keep, worked out on whole arrays: each
    video's most wrong frame (real: P(fake) above the threshold; fake: at or
    below it), most wrong first, ties by id; at most k."""
    out = {}
    for label, cls in enumerate(("real", "fake")):
        worst = {}
        for v, lab, p in zip(video_ids, labels, probs, strict=True):
            if lab != label:
                continue
            w = p - threshold if label == 0 else threshold - p
            wrong = p > threshold if label == 0 else p <= threshold
            if wrong and w > worst.get(v, (-np.inf,))[0]:
                worst[v] = (w, p)
        out[cls] = [(v, worst[v][1]) for v in sorted(worst, key=lambda v: (-worst[v][0], v))[:k]]
    return out


def _stream(order, video_ids, labels, probs, k, threshold):
    cases = FailureCases(k, threshold)
    for i in order:
        cases.add(video_ids[i], labels[i], probs[i], lambda i=i: {"i": int(i)})
    got = {"real": [], "fake": []}
    for cls, _, case in cases.cases():
        got[cls].append((video_ids[case["i"]], probs[case["i"]]))
    return got


def test_streaming_keeps_what_the_whole_split_says_in_any_order():
    rng = np.random.default_rng(0)
    n = 600
    video = rng.integers(0, 80, n)
    video_ids = [f"v{j:03d}" for j in video]
    labels = rng.integers(0, 2, 80)[video]  # one label per video
    probs = rng.random(n)
    for threshold in (0.3, 0.5):
        want = expected_failures(video_ids, labels, probs, 5, threshold)
        assert len(want["real"]) == len(want["fake"]) == 5
        for seed in range(3):
            order = np.random.default_rng(seed).permutation(n)
            assert _stream(order, video_ids, labels, probs, 5, threshold) == want


def test_one_video_fills_one_slot_and_ties_go_by_id():
    ids = ["b", "b", "b", "a", "c"]
    labels = [0, 0, 0, 0, 0]
    probs = [0.9, 0.95, 0.8, 0.7, 0.7]
    got = _stream(range(5), ids, labels, probs, 2, 0.5)
    assert got["real"] == [("b", 0.95), ("a", 0.7)]  # a and c tie: a first
    assert _stream([4, 3, 2, 1, 0], ids, labels, probs, 2, 0.5) == got
    # One slot, a tie: a wins whichever comes first.
    for order in ([3, 4], [4, 3]):
        assert _stream(order, ids, labels, probs, 1, 0.5)["real"] == [("a", 0.7)]


def test_right_calls_are_never_kept_and_the_boundary_is_acc_s():
    # ACC calls fake what is strictly above the threshold.
    ids, labels = ["r", "f"], [0, 1]
    at = _stream(range(2), ids, labels, [0.5, 0.5], 4, 0.5)
    assert at == {"real": [], "fake": [("f", 0.5)]}
    right = _stream(range(2), ids, labels, [0.2, 0.9], 4, 0.5)
    assert right == {"real": [], "fake": []}
    assert _stream(range(2), ids, labels, [0.9, 0.1], 0, 0.5) == {"real": [], "fake": []}


def test_a_case_is_built_only_when_kept():
    built = []
    cases = FailureCases(1, 0.5)
    for vid, p in [("a", 0.6), ("b", 0.55), ("c", 0.9), ("d", 0.1)]:
        cases.add(vid, 0, p, lambda vid=vid: built.append(vid) or vid)
    assert built == ["a", "c"]  # b is less wrong than a; d is right
    assert [case for _, _, case in cases.cases()] == ["c"]
    with pytest.raises(ValueError, match="k=-1"):
        FailureCases(-1, 0.5)


def test_the_flag_takes_zero_but_not_a_negative():
    assert non_negative_int("0") == 0 and non_negative_int("7") == 7
    for bad in ("-1", "x", "1.5"):
        with pytest.raises(Exception, match="whole number >= 0"):
            non_negative_int(bad)
