"""Faces: dlib on a real photo, key-frame planning, one box per stack, mask alignment,
threaded extraction equal to serial."""

import weakref

import cv2
import numpy as np
import pytest
import skimage.data

from data_prep import faces, video
from data_prep.video import VideoError, key_frame_indices


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


def test_detects_face_and_landmarks_on_real_photo(astronaut):
    box, lms = faces.detect_face(astronaut)
    left, top, right, bottom = box
    # Eileen Collins' face sits around x 180-265, y 80-170 in the 512x512 photo.
    assert 150 < left < 210 and 240 < right < 300 and 50 < top < 110 and 140 < bottom < 200
    assert lms.shape == (68, 2) and lms.dtype == np.float32
    # Landmarks lie on the face, in anatomical order: eyes above nose tip above mouth,
    # the left eye (36-41) left of the right eye (42-47).
    assert np.all((lms[:, 0] > left - 30) & (lms[:, 0] < right + 30))
    eyes_y = lms[36:48, 1].mean()
    assert eyes_y < lms[33, 1] < lms[48:68, 1].mean()
    assert lms[36:42, 0].mean() < lms[42:48, 0].mean()


def test_bgr_frames_give_the_same_face(astronaut):
    # extract_stacks keeps OpenCV's BGR frames and converts only the crops.
    bgr = np.ascontiguousarray(astronaut[..., ::-1])
    (box, lms), (box_bgr, lms_bgr) = faces.detect_face(astronaut), faces.detect_face(bgr, bgr=True)
    np.testing.assert_array_equal(box, box_bgr)
    np.testing.assert_array_equal(lms, lms_bgr)
    box = faces.square_box(box, astronaut.shape[:2])
    np.testing.assert_array_equal(
        faces.cut([bgr, bgr], box, 40, bgr=True), faces.cut([astronaut, astronaut], box, 40)
    )


def test_no_face_in_texture():
    assert faces.detect_face(np.dstack([skimage.data.brick()] * 3)) is None


def test_a_large_weak_false_positive_is_not_taken_for_the_face(tmp_path, astronaut):
    # The astronaut decoded from an MJPEG clip: dlib finds her face (score ~1.4) and
    # her name badge (~0.03), and the badge is the larger box. Taking the largest
    # detection cut the badge in 12 of 30 stacks of the reviewer's clip.
    import dlib

    path = tmp_path / "astronaut.avi"
    _write_video(path, [np.roll(astronaut, i, axis=1) for i in range(8)], "MJPG")
    cap = cv2.VideoCapture(str(path))
    frame = cap.read()[1]
    cap.release()
    rects, scores, _ = dlib.get_frontal_face_detector().run(
        cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), 0, 0.0
    )
    badge = max(range(len(rects)), key=lambda k: rects[k].area())
    assert rects[badge].top() > 250 and scores[badge] < 0.2 < max(scores)  # the trap is there

    box, _ = faces.detect_face(frame, bgr=True)
    assert 50 < box[1] < 110 and box[3] < 200  # the face (y 80-170), not the badge below
    # Every stack of the clip, and the search near an earlier face, cut the face too.
    stacks = faces.extract_stacks(path, frames_per_video=8, stack=1, size=32)
    assert len(stacks) == 7 and all(s["box"][3] < 250 for s in stacks)
    assert faces.detect_faces(frame, bgr=True)[0][0][3] < 200
    assert faces.FACES_VERSION >= 3  # caches of the badge-picking finder are not reused


def test_detection_on_large_frame_maps_box_back(astronaut):
    # A 1536x1536 frame is detected on a 640 px copy; the box must come back in full pixels.
    big = cv2.resize(astronaut, (1536, 1536), interpolation=cv2.INTER_CUBIC)
    box_small, _ = faces.detect_face(astronaut)
    box_big, lms_big = faces.detect_face(big)
    np.testing.assert_allclose(box_big / 3, box_small, atol=12)
    assert lms_big[:, 0].max() > 512  # landmarks in full-resolution coordinates


@pytest.mark.parametrize(
    "frames,k,n", [(100, 32, 3), (32, 32, 3), (10, 8, 3), (4, 5, 3), (300, 7, 0)]
)
def test_key_frames_even_deterministic_and_in_range(frames, k, n):
    idx = key_frame_indices(frames, k, n)
    assert idx == key_frame_indices(frames, k, n)
    assert idx == sorted(set(idx)) and len(idx) <= k
    assert idx[0] == 0 and idx[-1] + n <= frames - 1  # a full stack fits after every key frame
    if frames - n >= k:  # enough room: exactly k, spread over the whole video
        assert len(idx) == k and idx[-1] >= (k - 1) * frames // k - n


def test_key_frame_near_end_shifts_earlier():
    # 10 frames, 5 keys, stack 3: floor(i*10/5) = 0,2,4,6,8 -> 8 and 6 need frames up to 11/9,
    # so 8 shifts to 6 (= T-1-n) and merges; nothing is dropped below that.
    assert key_frame_indices(10, 5, 3) == [0, 2, 4, 6]
    assert key_frame_indices(3, 4, 3) == []


def test_square_box_stays_square_inside_frame():
    for face in ([0, 0, 50, 60], [600, 400, 640, 480], [100, 100, 180, 200], [-20, -10, 500, 470]):
        box = faces.square_box(np.array(face, float), (480, 640))
        x0, y0, x1, y1 = box
        assert x1 - x0 == y1 - y0 and x0 >= 0 and y0 >= 0 and x1 <= 640 and y1 <= 480
    # Away from the edges: 1.3x the longer side, centred.
    x0, y0, x1, y1 = faces.square_box(np.array([200.0, 200, 300, 280]), (480, 640))
    assert x1 - x0 == 130 and abs((x0 + x1) / 2 - 250) <= 1 and abs((y0 + y1) / 2 - 240) <= 1


@pytest.mark.parametrize(
    ("face", "frame_hw", "want"),
    [
        # Expected boxes by hand: side = round(1.3 x the longer side), centred on the
        # face, then slid (never shrunk) to lie inside the frame; shrunk only to the
        # frame's shorter side. Faces chosen so no centre lands on .5 (no rounding tie).
        # Top-left corner: side round(1.3 * 60) = 78, centre (25, 30) -> slides to (0, 0).
        ([0, 0, 50, 60], (480, 640), [0, 0, 78, 78]),
        # Bottom-right corner: side 1.3 * 80 = 104, centre (620, 440) -> x0 = 640 - 104,
        # y0 = 480 - 104.
        ([600, 400, 640, 480], (480, 640), [536, 376, 640, 480]),
        # Right edge only: side 78, centre (610, 230): x0 = 640 - 78 = 562 (not 571);
        # vertically untouched, 230 - 39 = 191.
        ([590, 200, 630, 260], (480, 640), [562, 191, 640, 269]),
        # A frame narrower than 1.3x the face: side 130 -> the frame's height 100, centre
        # (60, 50) -> x0 = 10 fits, y0 = 0.
        ([10, 10, 110, 90], (100, 120), [10, 0, 110, 100]),
        # Bigger than the whole frame: the shorter side (480), slid from y0 = -10 to 0.
        ([-20, -10, 500, 470], (480, 640), [0, 0, 480, 480]),
        # Wide, shallow frame, face at its right end: side 78, centre (275, 50) ->
        # x0 = 300 - 78 = 222 (not 236), y0 = 50 - 39 = 11.
        ([250, 20, 300, 80], (100, 300), [222, 11, 300, 89]),
    ],
)
def test_square_box_slides_inwards_at_an_edge_and_shrinks_only_to_the_frame(face, frame_hw, want):
    box = faces.square_box(np.array(face, float), frame_hw)
    assert box.dtype == np.int32
    np.testing.assert_array_equal(box, want)
    h, w = frame_hw
    x0, y0, x1, y1 = box
    if x1 - x0 < min(h, w):  # not shrunk to the frame: the whole face is in the crop
        assert x0 <= face[0] and y0 <= face[1] and x1 >= face[2] and y1 >= face[3]


def test_crop_mask_aligns_with_crop():
    img = np.zeros((200, 300, 3), np.uint8)
    mask = np.zeros((200, 300), np.uint8)
    img[60:100, 120:160] = 255
    mask[60:100, 120:160] = 1
    box = np.array([100, 40, 200, 140])
    crop = faces.crop_box(img, box, 50)
    m = faces.crop_mask(mask, box, 50)
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
    np.testing.assert_array_equal(m, (crop[..., 0] >= 128).astype(np.uint8))


def _write_video(path, frames, fourcc="FFV1"):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def test_extract_stacks_one_box_per_stack(tmp_path, astronaut):
    # The face drifts right 3 px per frame; a stack must still be cut with its key frame's box.
    base = cv2.resize(astronaut, (320, 320), interpolation=cv2.INTER_AREA)
    frames = [np.roll(base, 3 * i, axis=1) for i in range(20)]
    path = tmp_path / "drift.mp4"
    _write_video(path, frames)  # FFV1: lossless, so decoded frames equal `frames`
    stacks = faces.extract_stacks(path, frames_per_video=4, stack=3, size=48)
    assert [s["frame_index"] for s in stacks] == key_frame_indices(20, 4, 3) == [0, 5, 10, 15]
    for s in stacks:
        k, box = s["frame_index"], s["box"]
        assert s["frames"].shape == (4, 48, 48, 3) and s["frames"].dtype == np.uint8
        assert box.dtype == np.int32 and box[2] - box[0] == box[3] - box[1]
        for j in range(4):
            np.testing.assert_array_equal(s["frames"][j], faces.crop_box(frames[k + j], box, 48))
        # The box follows the face from key frame to key frame (3 px/frame).
        assert abs((box[0] + box[2]) / 2 - (s["landmarks"][:, 0].mean())) < 20
    centres = [(s["box"][0] + s["box"][2]) / 2 for s in stacks]
    assert np.all(np.diff(centres) > 8)
    # Residuals inside one stack show the motion, not box jitter: frame j is frame 0 shifted 3j px.
    s = stacks[1]
    shifted = faces.crop_box(np.roll(frames[5], 3, axis=1), s["box"], 48)
    np.testing.assert_array_equal(s["frames"][1], shifted)


def test_extract_stacks_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="frames_per_video"):
        faces.extract_stacks(tmp_path / "x.mp4", frames_per_video=0)
    with pytest.raises(VideoError) as e:
        faces.extract_stacks(tmp_path / "missing.mp4")
    assert e.value.reason == "unreadable" and "missing.mp4" in str(e.value)


def test_extract_stacks_threaded_equals_serial(tmp_path, astronaut):
    # workers > 1 overlaps detection with decoding; the stacks must not change, also
    # when some key frames have no face (skipped in both) and in the same order.
    base = cv2.resize(astronaut, (320, 320), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    noface = rng.integers(0, 255, base.shape, np.uint8)
    frames = [noface if 5 <= i < 15 else np.roll(base, 2 * i, axis=1) for i in range(40)]
    path = tmp_path / "mixed.mp4"
    _write_video(path, frames)
    serial = faces.extract_stacks(path, frames_per_video=8, stack=3, size=40)
    threaded = faces.extract_stacks(path, frames_per_video=8, stack=3, size=40, workers=3)
    assert [s["frame_index"] for s in serial] == [0, 15, 20, 25, 30, 35]  # 5, 10: no face
    assert [s["frame_index"] for s in threaded] == [s["frame_index"] for s in serial]
    for a, b in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(a["frames"], b["frames"])
        np.testing.assert_array_equal(a["box"], b["box"])
        np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
    with pytest.raises(ValueError, match="workers"):
        faces.extract_stacks(path, workers=0)


class _Record:
    """A FrameSink that records what decode_stacks hands it."""

    def __init__(self):
        self.passes, self.frames = [], {}

    def begin(self, keys):
        self.passes.append(list(keys))
        self.frames = {}

    def frame(self, index, frame):
        assert index not in self.frames and all(i < index for i in self.frames)  # decode order
        self.frames[index] = frame


def test_decode_stacks_streams_each_stack_frame_once_in_order(tmp_path, astronaut):
    frames = [np.roll(astronaut[::4, ::4], i, axis=1) for i in range(20)]
    path = tmp_path / "v.mp4"
    _write_video(path, frames)
    sink = _Record()
    assert video.decode_stacks(str(path), 4, 2, sink) == 20
    keys = key_frame_indices(20, 4, 2)
    assert sink.passes == [keys]  # the header's count was right: one pass
    assert sorted(sink.frames) == sorted({k + j for k in keys for j in range(3)})
    for i, f in sink.frames.items():
        np.testing.assert_array_equal(f, frames[i])  # FFV1 is lossless; RGB by default
    bgr = _Record()
    assert video.decode_stacks(str(path), 4, 2, bgr, rgb=False) == 20  # OpenCV's BGR order
    assert bgr.frames.keys() == sink.frames.keys()
    for i, f in bgr.frames.items():
        np.testing.assert_array_equal(f[..., ::-1], frames[i])


class _Capture:
    """cv2.VideoCapture whose header claims ``declared`` frames and whose frame
    ``broken`` will not convert (retrieve fails)."""

    def __init__(self, cap, declared=None, broken=None):
        self._cap, self._declared, self._broken, self._index = cap, declared, broken, -1

    def get(self, prop):
        if prop == cv2.CAP_PROP_FRAME_COUNT and self._declared is not None:
            return float(self._declared)
        return self._cap.get(prop)

    def grab(self):
        self._index += 1
        return self._cap.grab()

    def retrieve(self):
        return (False, None) if self._index == self._broken else self._cap.retrieve()

    def release(self):
        self._cap.release()


def _drifting_face(tmp_path, astronaut, n: int):
    """An n-frame lossless video of the astronaut's face drifting right 1 px per frame."""
    base = cv2.resize(astronaut, (320, 320), interpolation=cv2.INTER_AREA)
    path = tmp_path / "drift.mp4"
    _write_video(path, [np.roll(base, i, axis=1) for i in range(n)])
    return path


def _patch_capture(monkeypatch, **kw):
    real_open = video._open
    monkeypatch.setattr(video, "_open", lambda path: _Capture(real_open(path), **kw))


@pytest.mark.parametrize("declared", [22, 0])  # over-counted; unknown (some containers)
def test_a_miscounted_header_is_decoded_again_on_the_true_plan(
    tmp_path, astronaut, monkeypatch, declared
):
    path = _drifting_face(tmp_path, astronaut, 20)
    right = faces.extract_stacks(path, frames_per_video=5, stack=3, size=32)
    _patch_capture(monkeypatch, declared=declared)
    sink = _Record()
    assert video.decode_stacks(str(path), 5, 3, sink) == 20
    assert len(sink.passes) == 2
    assert sink.passes[0] == key_frame_indices(declared, 5, 3) != sink.passes[1]
    assert sink.passes[1] == key_frame_indices(20, 5, 3)
    for threads in (1, 3):
        again = faces.extract_stacks(path, frames_per_video=5, stack=3, size=32, workers=threads)
        assert [s["frame_index"] for s in again] == [s["frame_index"] for s in right]
        for a, b in zip(right, again, strict=True):
            np.testing.assert_array_equal(a["frames"], b["frames"])
            np.testing.assert_array_equal(a["box"], b["box"])


@pytest.mark.parametrize("broken", [7, 5])  # in key frame 5's stack; key frame 5 itself
def test_a_frame_that_will_not_convert_drops_only_its_stack(
    tmp_path, astronaut, monkeypatch, broken
):
    path = _drifting_face(tmp_path, astronaut, 20)
    whole = faces.extract_stacks(path, frames_per_video=4, stack=3, size=32)
    assert [s["frame_index"] for s in whole] == [0, 5, 10, 15]
    _patch_capture(monkeypatch, broken=broken)
    for threads in (1, 3):
        left = faces.extract_stacks(path, frames_per_video=4, stack=3, size=32, workers=threads)
        assert [s["frame_index"] for s in left] == [0, 10, 15]
        for s in left:
            np.testing.assert_array_equal(s["frames"], whole[s["frame_index"] // 5]["frames"])


def test_extract_stacks_keeps_no_decoded_frame_once_it_is_cut(tmp_path, astronaut, monkeypatch):
    # A 1080p video's 128 stack frames are 800 MB, and fresh memory for each made
    # OpenCV's retrieve 2-3x slower: each frame must be freed once it is cut.
    path = _drifting_face(tmp_path, astronaut, 24)
    alive_at_each_frame, handed = [], []
    real_decode = faces.decode_stacks

    class Watch:
        def __init__(self, sink):
            self.sink = sink

        def begin(self, keys):
            self.sink.begin(keys)

        def frame(self, index, frame):
            alive_at_each_frame.append(sum(ref() is not None for ref in handed))
            handed.append(weakref.ref(frame))
            self.sink.frame(index, frame)

    def watched(path, n, stack, sink, **kw):
        return real_decode(path, n, stack, Watch(sink), **kw)

    monkeypatch.setattr(faces, "decode_stacks", watched)
    stacks = faces.extract_stacks(path, frames_per_video=6, stack=3, size=32)
    assert len(stacks) == 6 and len(handed) == 24
    # Serial: each frame is cut (its key frame's face is known) before the next arrives.
    assert alive_at_each_frame == [0] * 24


# --------------------------------------------------------------- small faces: search near


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture
def scans(monkeypatch):
    """Records every dlib detector call as (image height, image width, upsample)."""
    import contextlib
    import threading

    import dlib

    calls = []
    local = threading.local()  # one dlib detector per thread, as faces._detector lends them

    @contextlib.contextmanager
    def spying():
        if not hasattr(local, "real"):
            local.real = dlib.get_frontal_face_detector()
        real = local.real

        class Detector:  # faces calls run(), which gives the scores too
            def run(self, image, upsample, threshold):
                calls.append((*image.shape[:2], upsample))
                return real.run(image, upsample, threshold)

        yield Detector()

    monkeypatch.setattr(faces, "_detector", spying)
    return calls


def _small_face_frame(astronaut, x: int, hw=(720, 1280)) -> np.ndarray:
    """The astronaut at 360 px (face ~60 px) on a grey 720p frame: too small for the
    DETECT_MAX_SIDE scan (~30 px there), found by the 2x scan and near its box."""
    frame = np.full((*hw, 3), 70, np.uint8)
    frame[200:560, x : x + 360] = cv2.resize(astronaut, (360, 360), interpolation=cv2.INTER_AREA)
    return frame


def test_small_face_is_found_near_an_earlier_face_without_the_upsampled_scan(astronaut, scans):
    frame = _small_face_frame(astronaut, 400)
    box, lms = faces.detect_face(frame)
    assert [c[2] for c in scans] == [0, 1]  # the 640 px scan fails, the 2x scan finds it
    assert 40 < box[2] - box[0] < 100

    # The face moved 30 px since the earlier frame whose box is `box`.
    moved = _small_face_frame(astronaut, 430)
    reference, reference_lms = faces.detect_face(moved)
    scans.clear()
    near, near_lms = faces.detect_face(moved, near=box)
    assert [c[2] for c in scans] == [0, 0], "found near the earlier face, no 2x scan"
    h, w, _ = scans[1]  # NEAR_SPAN x the earlier side, scaled to put that side at NEAR_FACE_PX
    assert abs(w - faces.NEAR_SPAN * faces.NEAR_FACE_PX) <= 2 and h == w
    # The same face as the whole-frame scan finds (the box in frame pixels, 30 px on).
    assert (
        _iou(near, reference) > 0.6
        and abs((near[0] + near[2]) / 2 - (box[0] + box[2]) / 2 - 30) < 8
    )
    assert np.abs(near_lms - reference_lms).mean() < 4

    # An earlier face where there is none now: the 2x scan still runs and finds it.
    scans.clear()
    wrong = np.array([1000.0, 20, 1060, 80])
    found, _ = faces.detect_face(moved, near=wrong)
    assert [c[2] for c in scans] == [0, 0, 1]
    np.testing.assert_array_equal(found, reference)
    # A box outside the frame is ignored, not an error.
    scans.clear()
    found, _ = faces.detect_face(moved, near=np.array([5000.0, 5000, 5060, 5060]))
    assert [c[2] for c in scans] == [0, 1]
    np.testing.assert_array_equal(found, reference)


def test_a_face_the_640_scan_sees_wins_over_the_earlier_one(astronaut, scans):
    # A large face needs no help: `near` (elsewhere) is not even looked at.
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_AREA)
    box, _ = faces.detect_face(big)
    scans.clear()
    found, _ = faces.detect_face(big, near=np.array([10.0, 10, 60, 60]))
    assert [c[2] for c in scans] == [0]
    np.testing.assert_array_equal(found, box)


def test_extract_stacks_tracks_small_faces_the_same_threaded_or_not(tmp_path, astronaut, scans):
    frames = [
        cv2.cvtColor(_small_face_frame(astronaut, 300 + 4 * i), cv2.COLOR_BGR2RGB)
        for i in range(24)
    ]
    path = tmp_path / "small_face_720p.mkv"
    _write_video(path, frames)
    serial = faces.extract_stacks(path, frames_per_video=12, stack=1, size=32)
    upsampled = [c for c in scans if c[2] == 1]
    # Only key frame 0 has no earlier face to search near.
    assert len(serial) == 12 and len(upsampled) == 1
    scans.clear()
    threaded = faces.extract_stacks(path, frames_per_video=12, stack=1, size=32, workers=3)
    assert len([c for c in scans if c[2] == 1]) == 1
    for a, b in zip(serial, threaded, strict=True):
        assert a["frame_index"] == b["frame_index"]
        np.testing.assert_array_equal(a["box"], b["box"])
        np.testing.assert_array_equal(a["landmarks"], b["landmarks"])
        np.testing.assert_array_equal(a["frames"], b["frames"])
    # Each tracked box sits on the face the whole-frame scan finds in that key frame.
    for s in serial:
        reference, _ = faces.detect_face(frames[s["frame_index"]])
        assert _iou(faces.square_box(reference, (720, 1280)), s["box"]) > 0.6


# ------------------------------------------------------------- every face: tracks, --faces all


def _b(cx: float, cy: float, side: float) -> np.ndarray:
    """A square face box of ``side`` centred at (cx, cy)."""
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def test_tracks_keep_their_ids_when_the_larger_face_changes():
    # A (left) starts larger; from key frame 2 B (right) is larger and listed first.
    boxes = [
        [_b(100, 100, 90), _b(400, 100, 60)],
        [_b(105, 100, 80), _b(395, 100, 70)],
        [_b(390, 100, 90), _b(110, 100, 60)],
        [_b(112, 102, 55), _b(385, 100, 95)],
    ]
    assert faces.assign_tracks(boxes) == [[0, 1], [0, 1], [1, 0], [0, 1]]


def test_a_face_that_is_hidden_for_a_while_keeps_its_id_and_a_new_one_gets_a_new_id():
    boxes = [
        [_b(100, 100, 80), _b(400, 100, 70)],
        [_b(104, 100, 80)],  # the second person looks away for two key frames
        [_b(108, 100, 80)],
        [_b(112, 100, 80), _b(420, 110, 72)],  # back, 20 px on: the same person
        [_b(116, 100, 80), _b(424, 110, 72), _b(700, 300, 75)],  # someone else walks in
        [],  # no face at all in this key frame
        [_b(702, 296, 75), _b(120, 100, 80)],
    ]
    assert faces.assign_tracks(boxes) == [[0, 1], [0], [0], [0, 1], [0, 1, 2], [], [2, 0]]


def test_track_ids_go_in_order_of_appearance_and_a_face_far_from_every_track_is_new():
    # No face in the first key frame; the first seen largest face is track 0.
    boxes = [[], [_b(300, 100, 50), _b(100, 100, 90)], [_b(100, 100, 90), _b(300 + 60, 100, 50)]]
    # 60 px is more than the 50 px face's side: another person, not the same one.
    assert faces.assign_tracks(boxes) == [[], [1, 0], [0, 2]]
    # A face walking across is followed from its most recent box, not its first one.
    walk = [[_b(100 + 60 * k, 100, 80), _b(900, 100, 80)] for k in range(6)]
    assert faces.assign_tracks(walk) == [[0, 1]] * 6
    # Two faces never share a track within a key frame, even both next to it; the
    # larger one is matched first (listed second here), the other starts a track.
    assert faces.assign_tracks([[_b(100, 100, 80)], [_b(95, 100, 70), _b(110, 100, 80)]]) == [
        [0],
        [1, 0],
    ]


def _two_heads(astronaut, i: int, n: int) -> np.ndarray:
    """Frame i of n: the astronaut's head twice, the left shrinking from 260 to 210 px and
    the right growing from 210 to 260 (the larger face changes at frame 15), drifting apart."""
    head = astronaut[30:250, 110:330]
    left, right = round(260 - 50 * i / (n - 1)), round(210 + 50 * i / (n - 1))
    frame = np.full((300, 640, 3), 90, np.uint8)
    frame[20 : 20 + left, 20 + i : 20 + i + left] = cv2.resize(
        head, (left, left), interpolation=cv2.INTER_AREA
    )
    frame[20 : 20 + right, 620 - right - i : 620 - i] = cv2.resize(
        head, (right, right), interpolation=cv2.INTER_AREA
    )
    return frame


def test_extract_stacks_all_faces_gives_two_stable_tracks_threaded_or_not(tmp_path, astronaut):
    frames = [_two_heads(astronaut, i, 24) for i in range(24)]
    path = tmp_path / "two_people.mkv"
    _write_video(path, frames)
    keys = key_frame_indices(24, 6, 2)
    assert keys == [0, 4, 8, 12, 16, 20]
    stacks = faces.extract_stacks(path, frames_per_video=6, stack=2, size=32, faces="all")
    assert [s["frame_index"] for s in stacks] == [k for k in keys for _ in range(2)]
    # Track 0 is the left person (the larger one in key frame 0) all along, track 1 the
    # right one, also after the right face became the larger one (listed first).
    assert [s["face"] for s in stacks] == [0, 1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0]
    for s in stacks:
        box, k = s["box"], s["frame_index"]
        centre = (box[0] + box[2]) / 2
        assert centre < 320 if s["face"] == 0 else centre > 320
        assert s["frames"].shape == (3, 32, 32, 3)
        for j in range(3):  # each frame is cut with its own face's key-frame box
            np.testing.assert_array_equal(s["frames"][j], faces.crop_box(frames[k + j], box, 32))
        assert np.all((s["landmarks"][:, 0] > box[0]) & (s["landmarks"][:, 0] < box[2]))
    # Two different boxes in each key frame, one per face.
    for a, b in zip(stacks[::2], stacks[1::2], strict=True):
        assert a["frame_index"] == b["frame_index"] and abs(a["box"][0] - b["box"][0]) > 200

    threaded = faces.extract_stacks(
        path, frames_per_video=6, stack=2, size=32, faces="all", workers=3
    )
    assert len(threaded) == len(stacks)
    for a, b in zip(stacks, threaded, strict=True):
        assert (a["frame_index"], a["face"]) == (b["frame_index"], b["face"])
        np.testing.assert_array_equal(a["frames"], b["frames"])
        np.testing.assert_array_equal(a["box"], b["box"])
        np.testing.assert_array_equal(a["landmarks"], b["landmarks"])

    # The default keeps today's largest face of each key frame (the left one, then
    # the right), with no face id: the same stacks as the largest face of "all".
    largest = faces.extract_stacks(path, frames_per_video=6, stack=2, size=32)
    assert [s["frame_index"] for s in largest] == keys and "face" not in largest[0]
    for s, first in zip(largest, stacks[::2], strict=True):
        reference, reference_lms = faces.detect_face(frames[s["frame_index"]])
        np.testing.assert_array_equal(s["box"], faces.square_box(reference, (300, 640)))
        np.testing.assert_array_equal(s["landmarks"], reference_lms)
        np.testing.assert_array_equal(s["frames"], first["frames"])
        np.testing.assert_array_equal(s["box"], first["box"])
    assert [(s["box"][0] + s["box"][2]) / 2 < 320 for s in largest] == [True] * 4 + [False] * 2
    with pytest.raises(ValueError, match="faces"):
        faces.extract_stacks(path, faces="both")


def test_detect_faces_lists_every_face_largest_first_and_falls_back_to_the_small_face_search(
    astronaut, scans
):
    frame = _two_heads(astronaut, 23, 24)  # the right face is the larger one
    found = faces.detect_faces(frame)
    assert len(found) == 2 and [c[2] for c in scans] == [0, 1]  # both faces in both scans
    (big, big_lms), (small, _) = found
    assert big[2] - big[0] > small[2] - small[0] and big[0] > small[0]
    largest, largest_lms = faces.detect_face(frame)
    np.testing.assert_array_equal(big, largest)
    np.testing.assert_array_equal(big_lms, largest_lms)
    # A face too small for the 640 px scan: the default mode's search finds it.
    tiny = _small_face_frame(astronaut, 400)
    scans.clear()
    ((box, _),) = faces.detect_faces(tiny)
    assert [c[2] for c in scans] == [0, 1]
    np.testing.assert_array_equal(box, faces.detect_face(tiny)[0])
    assert faces.detect_faces(np.dstack([skimage.data.brick()] * 3)) == []


def test_detect_faces_finds_a_second_face_too_small_for_the_first_scan(astronaut, scans):
    # A large face (found by the 640 px scan) and a ~60 px one (only the 2x scan sees
    # it) in a 720p frame: DFDC's 1080p two-person videos are mostly like this.
    head = astronaut[30:250, 110:330]
    frame = _small_face_frame(astronaut, 820)
    frame[60:660, 40:640] = cv2.resize(head, (600, 600), interpolation=cv2.INTER_AREA)
    found = faces.detect_faces(frame)
    assert [c[2] for c in scans] == [0, 1] and len(found) == 2
    (big, _), (small, small_lms) = found
    assert big[2] < 640 < 820 < small[0] and 40 < small[2] - small[0] < 100
    assert np.all((small_lms[:, 0] > small[0] - 10) & (small_lms[:, 0] < small[2] + 10))
    np.testing.assert_array_equal(big, faces.detect_face(frame)[0])  # the first scan's box
