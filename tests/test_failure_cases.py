"""Failure cases (paper V-E): per class, the videos most wrong at the threshold."""

import numpy as np
import pytest

from ldattn_jax.evaluate import non_negative_int
from ldattn_jax.failure_cases import FailureCases, group_of


def expected_failures(video_ids, labels, probs, k, threshold, methods=None):
    """Per group (real; fake_<method>), the (id, score) FailureCases must keep, worked
    out on whole arrays: each video's most wrong frame (real: P(fake) above the
    threshold; fake: at or below it), most wrong first, ties by id; at most k."""
    methods = methods if methods is not None else ["m"] * len(video_ids)
    worst = {}
    for v, lab, p, m in zip(video_ids, labels, probs, methods, strict=True):
        w = p - threshold if lab == 0 else threshold - p
        wrong = p > threshold if lab == 0 else p <= threshold
        group = worst.setdefault(group_of(lab, m), {})
        if wrong and w > group.get(v, (-np.inf,))[0]:
            group[v] = (w, p)
    return {
        g: [(v, kept[v][1]) for v in sorted(kept, key=lambda v: (-kept[v][0], v))[:k]]
        for g, kept in sorted(worst.items())
        if kept
    }


def _stream(order, video_ids, labels, probs, k, threshold, methods=None):
    methods = methods if methods is not None else ["m"] * len(video_ids)
    cases = FailureCases(k, threshold)
    for i in order:
        group = group_of(labels[i], methods[i])
        cases.add(group, video_ids[i], labels[i], probs[i], lambda i=i: int(i))
    got = {}
    for group, rank, i in cases.cases():
        assert rank == len(got.setdefault(group, []))
        got[group].append((video_ids[i], probs[i]))
    return got


def test_streaming_keeps_what_the_whole_split_says_in_any_order():
    rng = np.random.default_rng(0)
    n = 900
    video = rng.integers(0, 120, n)
    video_ids = [f"v{j:03d}" for j in video]
    labels = rng.integers(0, 2, 120)[video]  # one label and method per video
    methods = np.array(["Deepfakes", "NeuralTextures", "FaceSwap"])[rng.integers(0, 3, 120)][video]
    probs = rng.random(n)
    for threshold in (0.3, 0.5):
        want = expected_failures(video_ids, labels, probs, 5, threshold, methods)
        assert sorted(want) == ["fake_Deepfakes", "fake_FaceSwap", "fake_NeuralTextures", "real"]
        assert all(len(kept) == 5 for kept in want.values())
        for seed in range(3):
            order = np.random.default_rng(seed).permutation(n)
            assert _stream(order, video_ids, labels, probs, 5, threshold, methods) == want


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
    assert _stream(range(2), ids, labels, [0.5, 0.5], 4, 0.5) == {"fake_m": [("f", 0.5)]}
    assert _stream(range(2), ids, labels, [0.2, 0.9], 4, 0.5) == {}
    assert _stream(range(2), ids, labels, [0.9, 0.1], 0, 0.5) == {}


def test_each_method_has_its_own_slots():
    # The hardest method (NT, all far below) cannot crowd out the others' failures.
    ids = ["nt1", "nt2", "nt3", "df1"]
    methods = ["NeuralTextures"] * 3 + ["Deepfakes"]
    got = _stream(range(4), ids, [1, 1, 1, 1], [0.01, 0.02, 0.03, 0.4], 2, 0.5, methods)
    assert got == {
        "fake_Deepfakes": [("df1", 0.4)],
        "fake_NeuralTextures": [("nt1", 0.01), ("nt2", 0.02)],
    }


def test_a_case_is_built_only_when_kept():
    built = []
    cases = FailureCases(1, 0.5)
    for vid, p in [("a", 0.6), ("b", 0.55), ("c", 0.9), ("d", 0.1)]:
        cases.add("real", vid, 0, p, lambda vid=vid: built.append(vid) or vid)
    assert built == ["a", "c"]  # b is less wrong than a; d is right
    assert cases.cases() == [("real", 0, "c")]
    with pytest.raises(ValueError, match="k=-1"):
        FailureCases(-1, 0.5)


def test_the_flag_takes_zero_but_not_a_negative():
    assert non_negative_int("0") == 0 and non_negative_int("7") == 7
    for bad in ("-1", "x", "1.5"):
        with pytest.raises(Exception, match="whole number >= 0"):
            non_negative_int(bad)
