"""DFDC fakes against their originals: unchanged faces are measured as such and left out."""

import json
import os

import numpy as np
import pytest
import skimage.data
from test_data_build import _video

from data_prep import build, faces, originals
from data_prep.video import VideoError

# ------------------------------------------------------------------ face_change


def _ring_landmarks(centre=(50.0, 50.0), radius=20.0) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return np.stack([centre[0] + radius * np.cos(t), centre[1] + radius * np.sin(t)], 1)


def test_hull_mask_follows_the_landmarks_into_the_crop():
    # A 100 px box from (10, 20) cut to 50 px: landmarks at source (60, 70) +- 20
    # land at crop (25, 25) +- 10.
    lms = _ring_landmarks((60.0, 70.0), 20.0)
    mask = originals.hull_mask(lms, np.array([10, 20, 110, 120]), 50)
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (15, 35, 15, 35)
    grown = originals.hull_mask(lms, np.array([10, 20, 110, 120]), 50, grow=0.1)
    assert grown.sum() > mask.sum() and grown[mask].all()


def test_face_change_is_the_faces_change_beyond_its_surroundings():
    rng = np.random.default_rng(0)
    lms, box = _ring_landmarks(), np.array([0, 0, 100, 100])
    original = rng.integers(0, 256, (4, 100, 100, 3), dtype=np.uint8)
    inside = originals.hull_mask(lms, box, 100)
    assert originals.face_change(original, original, lms, box) == 0.0
    swapped = original.copy()
    swapped[:, inside] = np.clip(swapped[:, inside].astype(int) + 30, 0, 255)
    assert 20 < originals.face_change(swapped, original, lms, box) <= 30
    # Noise everywhere (another encode) or a change around the face only (a
    # second person swapped, nearby): not this face's swap.
    noisy = np.clip(original + rng.integers(-3, 4, original.shape), 0, 255).astype(np.uint8)
    assert abs(originals.face_change(noisy, original, lms, box)) < 0.3
    around = original.copy()
    around[:, ~inside] = 255 - around[:, ~inside]
    assert originals.face_change(around, original, lms, box) < -50
    # A face filling the whole crop leaves nothing to compare it with.
    full = originals.hull_mask(_ring_landmarks(radius=200.0), box, 100)
    assert full.all()
    assert np.isnan(originals.face_change(swapped, original, _ring_landmarks(radius=200.0), box))


# ------------------------------------------------------------------ on videos


def _frames(n=12, swapped=()):
    """The astronaut's face moving right 1 px a frame; frames in `swapped` get
    their inner face replaced (mirrored and recoloured, as a swap would)."""
    face = skimage.data.astronaut()[20:240, 120:340]
    _, lms = faces.detect_face(face)
    hull = originals.hull_mask(lms, np.array([0, 0, 220, 220]), 220)
    other = np.clip(face[:, ::-1].astype(int) + (25, -15, 10), 0, 255).astype(np.uint8)
    out = []
    for i in range(n):
        f = np.where(hull[..., None], other, face) if i in swapped else face
        out.append(np.roll(f, i, axis=1))
    return out


@pytest.fixture(scope="module")
def dfdc_tree(tmp_path_factory):
    """A DFDC train part: a real, its fakes (swapped; unchanged, i.e. re-encoded;
    swapped in the first 8 of 12 frames only), and a fake whose original is absent."""
    root = tmp_path_factory.mktemp("dfdc")
    part = root / "dfdc_train_part_0"
    _video(part / "real.mp4", _frames())
    _video(part / "swapped.mp4", _frames(swapped=range(12)))
    # Intra-only MJPG: mp4v codes a frame as a change from the one before, so the
    # swap of frame 7 would leak into frame 8 (by ~1.5 levels here).
    _video(part / "unchanged.avi", _frames(), fourcc="MJPG")
    _video(part / "partly.avi", _frames(swapped=range(8)), fourcc="MJPG")
    _video(part / "orphan.mp4", _frames(swapped=range(12)))
    # A fake whose named original starts a frame later (a cut copy): not comparable.
    _video(part / "cut.avi", _frames(13)[1:], fourcc="MJPG")
    _video(part / "late.avi", _frames(12), fourcc="MJPG")
    meta = {
        "real.mp4": {"label": "REAL", "original": None, "split": "train"},
        "swapped.mp4": {"label": "FAKE", "original": "real.mp4", "split": "train"},
        "unchanged.avi": {"label": "FAKE", "original": "real.mp4", "split": "train"},
        "partly.avi": {"label": "FAKE", "original": "real.mp4", "split": "train"},
        "orphan.mp4": {"label": "FAKE", "original": "not_downloaded.mp4", "split": "train"},
        "cut.avi": {"label": "REAL", "split": "train"},
        "late.avi": {"label": "FAKE", "original": "cut.avi", "split": "train"},
    }
    (part / "metadata.json").write_text(json.dumps(meta))
    return root


def _changes(fake, original, size=64):
    stacks = faces.extract_stacks(str(fake), 3, 3, size)
    return originals.compare_with_original(str(original), stacks, 3, size, (220, 220))


def test_a_swapped_face_is_told_from_a_reencoded_copy(dfdc_tree):
    part = dfdc_tree / "dfdc_train_part_0"
    swapped = _changes(part / "swapped.mp4", part / "real.mp4")
    unchanged = _changes(part / "unchanged.avi", part / "real.mp4")
    partly = _changes(part / "partly.avi", part / "real.mp4")
    assert len(swapped) == len(unchanged) == len(partly) == 3
    assert swapped.min() > 5 * originals.MIN_FACE_CHANGE
    assert np.abs(unchanged).max() < originals.MIN_FACE_CHANGE / 2
    # Stacks of frames 0-3 and 4-7 swapped, 8-11 not.
    assert (partly[:2] > 5 * originals.MIN_FACE_CHANGE).all()
    assert abs(partly[2]) < originals.MIN_FACE_CHANGE / 2


def test_an_original_that_cannot_be_compared_is_a_clear_error(dfdc_tree, tmp_path):
    part = dfdc_tree / "dfdc_train_part_0"
    smaller = tmp_path / "smaller.mp4"
    _video(smaller, [f[:200, :200] for f in _frames()])
    with pytest.raises(originals.OriginalMismatch, match="200x200, the fake's 220x220"):
        _changes(part / "swapped.mp4", smaller)
    with pytest.raises(VideoError, match="does not exist"):
        _changes(part / "swapped.mp4", tmp_path / "absent.mp4")
    # One frame off (a cut copy): the motion of a frame would bury the face's change.
    ahead = tmp_path / "ahead.avi"
    frames = _frames(13)
    _video(ahead, frames[1:], fourcc="MJPG")
    with pytest.raises(originals.OriginalMismatch, match="do not line up.* in 2 of 2 key"):
        _changes(part / "unchanged.avi", ahead)
    _video(ahead, frames[:12], fourcc="MJPG")  # the same frames lined up: fine
    assert np.abs(_changes(part / "unchanged.avi", ahead)).max() < originals.MIN_FACE_CHANGE / 2
    # A shorter original: stacks whose frames it lacks cannot be compared (NaN).
    short = tmp_path / "short.mp4"
    _video(short, _frames(6))
    got = _changes(part / "swapped.mp4", short)
    assert got[0] > originals.MIN_FACE_CHANGE and np.isnan(got[1:]).all()


# ------------------------------------------------------------------ in a build

ARGS = ["--dataset", "dfdc", "--frames-per-video", "3", "--stack", "3", "--size", "64",
        "--workers", "1", "--no-progress"]  # fmt: skip


def _records_by_video(out):
    """{video file: its records' key frames}, checking every record's label."""
    from data_prep.shards import open_split

    src = open_split(str(out), "train", ("video_id", "label", "frame_index"))
    got = {}
    for i in range(len(src)):
        rec = src[i]
        name = rec["video_id"].rsplit("/", 1)[1]
        got.setdefault(name, []).append(int(rec["frame_index"]))
        assert rec["label"] == (name not in ("real", "cut"))
    return {k: sorted(v) for k, v in got.items()}


ALL = [0, 4, 8]


def test_a_dfdc_build_leaves_out_fakes_whose_face_did_not_change(
    dfdc_tree, tmp_path, monkeypatch, capsys, caplog
):
    out = tmp_path / "out"
    argv = [*ARGS, "--root", str(dfdc_tree), "--out", str(out)]
    assert build.main(argv) == 0
    err = capsys.readouterr().err
    # The label index is planned from the stacks written, not those cached:
    # otherwise its check fails and it falls back to reading every record.
    assert "not in the order TFDS used" not in caplog.text
    assert _records_by_video(out) == {
        "real": ALL, "swapped": ALL, "partly": [0, 4], "orphan": ALL, "cut": ALL,
        "late": ALL}  # fmt: skip
    failures = {
        r["video_id"].rsplit("/", 1)[1]: r
        for r in map(json.loads, (out / "failures.jsonl").read_text().splitlines())
    }
    assert failures["unchanged"]["reason"] == "unchanged_face"
    assert "real.mp4" in failures["unchanged"]["message"]
    assert failures["partly"]["warning"] == "unchanged_stacks"
    assert "in 1 of 3 stacks" in failures["partly"]["message"]
    assert failures["late"]["warning"] == "original_unusable"
    assert "do not line up" in failures["late"]["message"] and failures["late"]["records"] == 3
    check = json.loads((out / "summary.json").read_text())["original_check"]
    assert {k: v for k, v in check.items() if k != "face_change_percentiles"} == {
        "min_face_change": originals.MIN_FACE_CHANGE,
        "fakes": 5,
        "fakes_compared": 3,
        "fakes_unchecked": 2,  # orphan: its original is not on disk; late: one frame off
        "stacks_compared": 9,
        "stacks_left_out": 4,
        "videos_left_out": 1,
    }
    assert "left out 4 of 9 stacks (1 whole videos)" in err
    # Another threshold only changes which cached stacks are written: no video is
    # cut again. 'off' keeps every stack (a changed setting: --replace).
    calls = []
    monkeypatch.setattr(faces, "extract_stacks", lambda *a, **k: calls.append(a) or [])
    assert build.main(argv + ["--min-face-change", "off"]) == 2
    assert "--min-face-change 1.0 -> None" in capsys.readouterr().err
    assert build.main(argv + ["--min-face-change", "100", "--replace"]) == 0
    assert _records_by_video(out) == {"real": ALL, "orphan": ALL, "cut": ALL, "late": ALL}
    assert calls == []
    monkeypatch.undo()
    assert build.main(argv + ["--min-face-change", "off", "--replace"]) == 0
    assert _records_by_video(out) == {
        n: ALL for n in ("real", "swapped", "unchanged", "partly", "orphan", "cut", "late")
    }  # fmt: skip
    assert json.loads((out / "summary.json").read_text())["original_check"] == {}


def test_min_face_change_takes_levels_or_off(capsys):
    base = ["--dataset", "dfdc", "--root", "r", "--out", "o"]
    assert build.parse_args(base).min_face_change == originals.MIN_FACE_CHANGE
    assert build.parse_args([*base, "--min-face-change", "2.5"]).min_face_change == 2.5
    assert build.parse_args([*base, "--min-face-change", "OFF"]).min_face_change is None
    with pytest.raises(SystemExit):
        build.parse_args([*base, "--min-face-change", "lots"])
    assert "'lots' is not a number of levels" in capsys.readouterr().err


def test_a_fake_is_compared_again_when_its_original_changes(tmp_path):
    fake, original = tmp_path / "fake.mp4", tmp_path / "real.mp4"
    fake.write_bytes(b"fake")
    original.write_bytes(b"real")
    item = build.VideoItem(str(fake), 1, "dfdc", "orig", "fake", "dfdc/p/fake", "train",
                           original_path=str(original))  # fmt: skip
    checked = build.cache_paths(str(tmp_path), item)
    assert build.cache_paths(str(tmp_path), item) == checked
    without = build.dataclasses.replace(item, original_path=None)
    unchecked = build.cache_paths(str(tmp_path), without)
    assert unchecked != checked  # the check is off ('off', or no original): another result
    original.write_bytes(b"real, downloaded again")
    assert build.cache_paths(str(tmp_path), item) not in (checked, unchecked)


def test_a_fake_whose_original_cannot_be_read_now_is_compared_on_the_next_run(
    dfdc_tree, tmp_path, monkeypatch
):
    # An original without read permission (simulated: root ignores chmod) left the
    # fake cached as "unchecked" for good: the fix leaves the fake's cache key as it was.
    from data_prep.readers import read_dataset

    item = next(i for i in read_dataset("dfdc", str(dfdc_tree)) if i.path.endswith("swapped.mp4"))
    cache = tmp_path / "cache"
    cache.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: p != item.original_path and real_access(p, m))
    status = build.process_video(item, str(cache), 3, 3, 64)
    assert status["warning"] == "original_unusable" and status["records"] == 3
    assert "not cached, so the next run tries it again" in status["message"]
    assert "retry" not in status
    marker = build.cache_paths(str(cache), item)[1]
    assert not os.path.exists(marker)
    monkeypatch.setattr(os, "access", real_access)  # the permissions were fixed
    status = build.process_video(item, str(cache), 3, 3, 64)
    assert status["warning"] is None and len(status["face_change"]) == 3
    assert os.path.exists(marker)
