"""Real-world inputs to ``predict``: each video gets a score or a row saying why not.

Video-level checks run ``data_prep.video`` on tiny files written here (PyAV, the
test extra, writes what OpenCV cannot: variable frame rate, AV1, audio only).
Run-level checks replace the model and the face finder with stand-ins, so no
training run and no dlib are needed.
"""

import fractions
import hashlib
import json
import os
from pathlib import Path

import av  # the test extra (ldattn_jax[bench]): writes what OpenCV cannot
import cv2
import numpy as np
import pytest
from test_thresholds import _val_doc as val_doc

from data_prep import faces, video
from data_prep.video import VideoError
from ldattn_jax import predict


class _Drop:
    def begin(self, keys):
        pass

    def frame(self, index, frame):
        pass


def _write(path, n, *, fmt=None, codec="ffv1", pts_ms=None, size=64):
    """An n-frame size x size video; ``pts_ms``: each frame's time (variable frame rate)."""
    container = av.open(str(path), "w", format=fmt)
    stream = container.add_stream(codec, rate=25)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    ms = fractions.Fraction(1, 1000)
    if pts_ms is not None:
        stream.time_base = stream.codec_context.time_base = ms
    for i in range(n):
        frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 9 * i % 256, np.uint8), "rgb24")
        if pts_ms is not None:
            frame.pts, frame.time_base = pts_ms[i], ms
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return str(path)


def _reason(path, frames_per_video=4, stack=3):
    try:
        video.decode_stacks(str(path), frames_per_video, stack, _Drop())
    except VideoError as e:
        return e.reason, e.message
    return None, None


def test_variable_frame_rate_matroska_is_whole_and_a_cut_one_is_still_truncated(tmp_path):
    # Matroska/WebM hold no frame count: OpenCV guesses duration x nominal fps, here
    # 40 for 8 frames (a screen recording's pause). That is not a cut-off file.
    pts = [0, 10, 20, 30, 40, 540, 1040, 1540]
    vfr = _write(tmp_path / "screen recording.mkv", 8, fmt="matroska", pts_ms=pts)
    assert cv2.VideoCapture(vfr).get(cv2.CAP_PROP_FRAME_COUNT) > 8 / 0.9  # the premise
    assert video.decode_stacks(vfr, 4, 3, _Drop()) == 8
    # A Matroska file cut in half keeps its header's duration: still truncated.
    _write(tmp_path / "whole.mkv", 40, fmt="matroska")
    data = (tmp_path / "whole.mkv").read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    reason, message = _reason(cut)
    assert reason == "truncated" and "cut.mkv" in message and "download or copy it again" in message


def test_files_opencv_cannot_open_say_why(tmp_path):
    _write(tmp_path / "good.mp4", 8, fmt="mp4", codec="mpeg4")
    data = (tmp_path / "good.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # the index (moov) is lost
    (tmp_path / "notes.mp4").write_text("hello")
    # An MP4 of 0 frames (a recording stopped at once) and an audio-only one:
    # complete files, so "download it again" would be wrong advice.
    writer = cv2.VideoWriter(str(tmp_path / "empty_recording.mp4"),
                             cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 64))  # fmt: skip
    writer.release()
    audio = av.open(str(tmp_path / "voice.mp4"), "w")
    stream = audio.add_stream("aac", rate=16000)
    for i in range(4):
        samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
        samples.sample_rate, samples.pts = 16000, i * 1024
        for packet in stream.encode(samples):
            audio.mux(packet)
    for packet in stream.encode():
        audio.mux(packet)
    audio.close()
    said = {
        name: _reason(tmp_path / name)
        for name in ("cut.mp4", "notes.mp4", "empty_recording.mp4", "voice.mp4")
    }
    assert said["cut.mp4"][0] == "truncated" and "download or copy" in said["cut.mp4"][1]
    assert said["notes.mp4"][0] == "not_a_video"
    for name in ("empty_recording.mp4", "voice.mp4"):
        reason, message = said[name]
        assert reason == "no_video" and name in message and "without a video track" in message
        assert "download" not in message
    assert "soun" in said["voice.mp4"][1]


def test_a_codec_opencv_cannot_decode_is_named_not_called_truncated(tmp_path):
    if "libsvtav1" not in av.codecs_available:
        pytest.skip("this PyAV has no AV1 encoder")
    path = _write(tmp_path / "youtube.mp4", 6, fmt="mp4", codec="libsvtav1")
    cap = cv2.VideoCapture(path)
    if cap.isOpened() and cap.grab():
        pytest.skip("this OpenCV decodes AV1")
    reason, message = _reason(path)
    assert reason == "undecodable" and "'AV01'" in message and "re-encode" in message


def test_paths_that_are_not_files_say_what_they_are(tmp_path):
    os.symlink(tmp_path / "gone.mp4", tmp_path / "link.mp4")
    reason, message = _reason(tmp_path / "link.mp4")
    assert reason == "unreadable" and "broken symbolic link" in message and "gone.mp4" in message
    (tmp_path / "clips").mkdir()
    reason, message = _reason(tmp_path / "clips")
    assert reason == "unreadable" and "is a directory" in message
    assert "permissions" not in message
    reason, message = _reason(_write(tmp_path / "blink.mkv", 3))
    assert reason == "too_short" and "3 frame(s), one stack needs 4" in message
    assert "longer clip" in message


# --- predict with a stand-in model and face finder ------------------------------------------


class _Model:
    """Predictor stand-in: P(fake) = mean pixel / 255 of each stack's first frame."""

    batch_size = 4
    fail_on = None

    def __init__(self, model, config, batch_size=None):
        pass

    def __call__(self, frames):
        if _Model.fail_on is not None and frames[0, 0, 0, 0, 0] == _Model.fail_on:
            raise RuntimeError("device fell over")
        maps = {"spatial": np.ones((len(frames), 2, 3, 3), np.float32)}
        return frames[:, 0].mean(axis=(1, 2, 3)) / 255.0, maps


def _stacks(path, frames_per_video, stack, size, workers):
    """extract_stacks stand-in: the file holds '<number of stacks> <pixel value>'."""
    with open(path) as f:
        n, value = (int(v) for v in f.read().split())
    return [
        {
            "frames": np.full((stack + 1, size, size, 3), value, np.uint8),
            "frame_index": 3 * k,
            "box": np.array([0, 0, 8, 8], np.int32),
            "landmarks": np.zeros((68, 2), np.float32),
        }
        for k in range(n)
    ]


_REAL_EXTRACT_STACKS = faces.extract_stacks  # before any test replaces it


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    from ldattn_jax import checkpointing

    workdir = tmp_path / "run"
    workdir.mkdir()
    config = {"model": {"name": "lda_st", "image_size": 8, "stack": 3, "dtype": "float32"}}
    (workdir / "config.json").write_text(json.dumps(config))
    for step in (7, 8):  # the state files predict fingerprints (the model is a stand-in)
        state = workdir / "checkpoints" / str(step) / "state"
        state.mkdir(parents=True)
        (state / "weights").write_bytes(bytes([step]) * 64)
    monkeypatch.setattr(checkpointing, "restore_for_inference", lambda c, w, which: (None, 7))
    monkeypatch.setattr(predict, "Predictor", _Model)
    monkeypatch.setattr(
        faces,
        "extract_stacks",
        lambda p, frames_per_video, stack, size, workers, faces: _stacks(
            p, frames_per_video, stack, size, workers
        ),
    )
    monkeypatch.setattr(_Model, "fail_on", None)
    return workdir


def _clip(path, stacks, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{stacks} {value}")
    return str(path)


def _run(workdir, out, *args):
    rc = predict.main(["--workdir", str(workdir), "--out", str(out), *map(str, args)])
    return rc, json.loads((out / "predictions.json").read_text())


def test_a_directory_stands_for_its_videos_and_a_repeat_is_scored_once(fake_run, tmp_path, capsys):
    folder = tmp_path / "case 17"
    a = _clip(folder / "a.mp4", 10)
    b = _clip(folder / "sub" / "B.MOV", 10, 200)
    _clip(folder / "._a.mp4", 10)  # macOS resource fork: not a video
    (folder / "notes.txt").write_text("suspect: b")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "readme.md").write_text("-")
    rc, rep = _run(fake_run, tmp_path / "out", folder, a, tmp_path / "nothing")
    assert rc == 0
    rows = rep["videos"]
    assert [r["video"] for r in rows] == [a, b, str(tmp_path / "nothing")]
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]
    assert rows[2]["reason"] == "no_video" and "no video file" in rows[2]["message"]
    skipped = {os.path.basename(s["path"]): s["why"] for s in rep["skipped"]}
    assert set(skipped) == {"._a.mp4", "notes.txt", "a.mp4", "readme.md"}
    assert "more than once" in skipped["a.mp4"]
    assert "skipped" in capsys.readouterr().err


def test_a_score_from_few_frames_is_flagged(fake_run, tmp_path, capsys):
    short = _clip(tmp_path / "short.mp4", 1)
    long = _clip(tmp_path / "long.mp4", predict.FEW_FRAMES)
    rc, rep = _run(fake_run, tmp_path / "out", short, long)
    assert rc == 0
    by = {r["video"]: r for r in rep["videos"]}
    assert by[short]["few_frames"] and by[short]["frames_scored"] == 1
    assert not by[long]["few_frames"] and by[long]["frames_scored"] == predict.FEW_FRAMES
    assert rep["few_frames_below"] == predict.FEW_FRAMES
    table = capsys.readouterr().out.splitlines()
    assert "few frames" in next(line for line in table if line.startswith(short))
    assert "few frames" not in next(line for line in table if line.startswith(long))
    # Asking for fewer key frames than FEW_FRAMES: all of them is not "few".
    rc, rep = _run(fake_run, tmp_path / "out2", "--frames_per_video", "2",
                   _clip(tmp_path / "two.mp4", 2), short)  # fmt: skip
    assert [r["few_frames"] for r in rep["videos"]] == [False, True]


def test_a_failure_while_scoring_or_drawing_stays_with_its_video(fake_run, tmp_path, monkeypatch):
    from ldattn_jax import figures

    ok = _clip(tmp_path / "ok.mp4", 3, 100)
    bad = _clip(tmp_path / "bad.mp4", 3, 66)
    monkeypatch.setattr(_Model, "fail_on", 66)
    rc, rep = _run(fake_run, tmp_path / "out", bad, ok)
    assert rc == 0 and [r["status"] for r in rep["videos"]] == ["error", "ok"]
    failed = rep["videos"][0]
    assert failed["reason"] == "failed" and "device fell over" in failed["message"]

    def no_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(figures, "attention_overlay", no_disk)
    rc, rep = _run(fake_run, tmp_path / "out2", "--heatmaps", ok)
    (row,) = rep["videos"]
    assert rc == 0 and row["status"] == "ok" and row["fake_probability"] == pytest.approx(100 / 255)
    assert "No space left" in row["heatmaps_error"]


def test_a_run_that_cannot_start_says_why_in_one_line(fake_run, tmp_path, monkeypatch, capsys):
    clip = _clip(tmp_path / "v.mp4", 3)
    assert predict.main(["--workdir", str(tmp_path / "nowhere"), clip]) == 2
    assert "has no config.json" in capsys.readouterr().err
    (tmp_path / "taken").write_text("")
    assert predict.main(["--workdir", str(fake_run), "--out", str(tmp_path / "taken"), clip]) == 2
    assert "is a file; pass a directory" in capsys.readouterr().err
    # The real restore: a workdir with a config but no checkpoints.
    monkeypatch.undo()
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((fake_run / "config.json").read_text())
    assert predict.main(["--workdir", str(bare), "--out", str(tmp_path / "o"), clip]) == 2
    err = capsys.readouterr().err
    assert "checkpoints does not exist" in err and "Traceback" not in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model": {"na')  # cut short
    assert predict.main(["--workdir", str(broken), "--out", str(tmp_path / "o"), clip]) == 2
    err = capsys.readouterr().err
    assert f"{broken / 'config.json'}: unreadable" in err and "Traceback" not in err
    for flag, value in (
        ("--frames_per_video", "0"),
        ("--workers", "-1"),
        ("--batch_size", "x"),
        ("--threshold", "-0.1"),
    ):
        with pytest.raises(SystemExit):
            predict.main(["--workdir", str(fake_run), flag, value, clip])
        assert f"argument {flag}" in capsys.readouterr().err


def test_a_config_naming_no_model_or_a_damaged_checkpoint_is_one_line(
    fake_run, tmp_path, monkeypatch, capsys
):
    from ldattn_jax import checkpointing

    clip = _clip(tmp_path / "v.mp4", 3)

    class CheckpointDamaged(ValueError):  # as checkpointing raises for a damaged step
        pass

    def damaged(config, workdir, which):
        raise CheckpointDamaged("checkpoint 7 is damaged:\n  state/weights: truncated")

    monkeypatch.setattr(checkpointing, "restore_for_inference", damaged)
    assert predict.main(["--workdir", str(fake_run), "--out", str(tmp_path / "o"), clip]) == 2
    err = capsys.readouterr().err
    assert err == (
        "predict: error: CheckpointDamaged: checkpoint 7 is damaged: state/weights: truncated\n"
    )
    # The real restore builds the model config.json names: a hand-edited name.
    monkeypatch.undo()
    edited = tmp_path / "edited"
    (edited / "checkpoints" / "1" / "state").mkdir(parents=True)
    config = json.loads((fake_run / "config.json").read_text())
    config["model"]["name"] = "lda_stt"
    (edited / "config.json").write_text(json.dumps(config))
    assert predict.main(["--workdir", str(edited), "--out", str(tmp_path / "o"), clip]) == 2
    err = capsys.readouterr().err
    assert err.startswith("predict: error: ValueError: config.model.name='lda_stt' is not a model")
    assert len(err.splitlines()) == 1 and "Traceback" not in err


class _Killed(BaseException):
    """What a SIGKILL / Ctrl-C looks like from inside: nothing catches it."""


def test_a_run_that_dies_loses_only_the_video_in_hand(fake_run, tmp_path, monkeypatch, capsys):
    clips = [_clip(tmp_path / f"{name}.mp4", 3, value) for name, value in
             (("a", 40), ("b", 80), ("c", 120))]  # fmt: skip
    extracted = []

    def extract(p, frames_per_video, stack, size, workers, faces):
        if os.path.basename(p) == "c.mp4" and not extracted.count("allow c"):
            raise _Killed
        extracted.append(os.path.basename(p))
        return _stacks(p, frames_per_video, stack, size, workers)

    monkeypatch.setattr(faces, "extract_stacks", extract)
    out = tmp_path / "out"
    with pytest.raises(_Killed):
        predict.main(["--workdir", str(fake_run), "--out", str(out), *clips])
    assert not (out / "predictions.json").exists()  # the report is written at the end...
    journal = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [os.path.basename(r["entry"]["video"]) for r in journal] == ["a.mp4", "b.mp4"]
    with open(out / "predictions.jsonl", "a") as f:
        f.write('{"key": "cut off mid-line')  # ...and a kill can land inside a write

    extracted[:] = ["allow c"]
    rc, rep = _run(fake_run, out, *clips)
    assert rc == 0 and extracted == ["allow c", "c.mp4"]  # a and b came from the journal
    assert [r["reused"] for r in rep["videos"]] == [True, True, False] and rep["reused"] == 2
    assert [r["fake_probability"] for r in rep["videos"]] == pytest.approx([40 / 255, 80 / 255,
                                                                            120 / 255])  # fmt: skip
    assert "reused 2 video score(s)" in capsys.readouterr().err
    # The journal matches the file, not the text of its path.
    monkeypatch.chdir(tmp_path)
    rc, rep = _run(fake_run, out, "./a.mp4")
    assert rep["videos"][0]["reused"] and rep["videos"][0]["video"] == "./a.mp4"

    # A changed file, other key frames, or --rescore: scored again.
    _clip(tmp_path / "b.mp4", 3, 250)
    extracted[:] = ["allow c"]
    rc, rep = _run(fake_run, out, *clips)
    assert extracted == ["allow c", "b.mp4"] and rep["videos"][1]["fake_probability"] == 250 / 255
    extracted[:] = ["allow c"]
    _run(fake_run, out, "--frames_per_video", "5", *clips)
    assert extracted == ["allow c", "a.mp4", "b.mp4", "c.mp4"]
    extracted[:] = ["allow c"]
    _run(fake_run, out, "--rescore", *clips)
    assert extracted == ["allow c", "a.mp4", "b.mp4", "c.mp4"]


def _per_stack(values: dict):
    """extract_stacks stand-in giving the stacks of a video the pixel values ``values[name]``."""

    def extract(p, frames_per_video, stack, size, workers, faces):
        return [
            {
                "frames": np.full((stack + 1, size, size, 3), v, np.uint8),
                "frame_index": 3 * k,
                "box": np.array([0, 0, 8, 8], np.int32),
                "landmarks": np.zeros((68, 2), np.float32),
            }
            for k, v in enumerate(values[os.path.basename(p)])
        ]

    return extract


def test_a_videos_score_is_the_mean_of_its_frames_and_the_verdict_is_above_threshold(
    fake_run, tmp_path, monkeypatch
):
    # The fake model's P(fake) of a stack is its pixel value / 255.
    values = {"mixed.mp4": [100, 100, 200], "low.mp4": [120, 110, 125], "high.mp4": [140, 90, 200]}
    monkeypatch.setattr(faces, "extract_stacks", _per_stack(values))
    clips = [_clip(tmp_path / name, 3) for name in values]
    rc, rep = _run(fake_run, tmp_path / "out", *clips)
    assert rc == 0
    by = {os.path.basename(r["video"]): r for r in rep["videos"]}
    for name, v in values.items():
        frames = [f["fake_probability"] for f in by[name]["frames"]]
        assert frames == pytest.approx([x / 255 for x in v])
        # The mean, as evaluation scores a video (not the median, not the max).
        assert by[name]["fake_probability"] == pytest.approx(sum(v) / len(v) / 255)
    # mean 0.523 (median 0.39): fake; mean 0.464 (max 0.49): real; mean 0.562: fake.
    assert [by[n]["verdict"] for n in values] == ["fake", "real", "fake"]
    assert rep["threshold"] == 0.5
    # A threshold chosen on val (--threshold); the journal's scores serve it as well.
    rc, rep = _run(fake_run, tmp_path / "out", "--threshold", "0.54", *clips)
    assert rc == 0 and rep["threshold"] == 0.54 and rep["threshold_source"] == "given"
    assert [r["verdict"] for r in rep["videos"]] == ["real", "real", "fake"]


def _val_result(workdir, step):
    """test_thresholds' val document for step ``step`` (threshold 0.45, no
    calibration): its path and content, to rewrite."""
    val = workdir / val_doc(workdir, f"synthetic_val_{step}", step=step, eer=0.45)
    return val, json.loads(val.read_text())


def test_threshold_val_reads_this_checkpoints_val_evaluation(
    fake_run, tmp_path, monkeypatch, capsys
):
    values = {"mixed.mp4": [100, 100, 200], "low.mp4": [120, 110, 125]}
    monkeypatch.setattr(faces, "extract_stacks", _per_stack(values))
    clips = [_clip(tmp_path / name, 3) for name in values]
    # The fake run restores step 7; a val result of step 6 is not its.
    val, doc = _val_result(fake_run, step=6)
    rc = predict.main(["--workdir", str(fake_run), "--threshold", "val", *clips])
    err = capsys.readouterr().err
    assert rc == 2 and "no val evaluation of checkpoint step 7" in err and "Traceback" not in err
    assert "--split val --checkpoint 7" in err
    doc["checkpoint"]["step"] = 7
    val = fake_run / "eval" / "synthetic_val_7" / "metrics.json"
    val.parent.mkdir()
    val.write_text(json.dumps(doc))
    rc, rep = _run(fake_run, tmp_path / "out", "--threshold", "val", *clips)
    assert rc == 0 and rep["threshold"] == 0.45
    assert rep["threshold_source"] == os.path.join("eval", "synthetic_val_7", "metrics.json")
    # mean 0.523 and 0.464: both above 0.45.
    assert [r["verdict"] for r in rep["videos"]] == ["fake", "fake"]
    assert "verdicts at threshold 0.45 (--threshold val: " in capsys.readouterr().out
    # Two val results of the step that disagree (one of an older build): refused, one line.
    other = fake_run / "eval" / "synthetic_val_7_t0.3" / "metrics.json"
    other.parent.mkdir()
    other.write_text(json.dumps({**doc, "video": {"eer_threshold": 0.2}}))
    rc = predict.main(["--workdir", str(fake_run), "--threshold", "val", *clips])
    err = capsys.readouterr().err
    assert rc == 2 and "disagree" in err and "Traceback" not in err


def test_calibration_val_adds_the_even_odds_probability_of_val_s_map(
    fake_run, tmp_path, monkeypatch, capsys
):
    from scipy.special import expit, logit

    from ldattn_jax import calibration

    values = {"pair.mp4": {0: [60] * 8, 1: [40, 240] * 4}, "alone.mp4": {0: [200] * 8}}
    monkeypatch.setattr(faces, "extract_stacks", _people(values, []))
    clips = [_clip(tmp_path / name, 1) for name in values]
    # Scored first without it: the journal's scores get the map on the rerun too.
    rc, rep = _run(fake_run, tmp_path / "out", "--faces", "all", *clips)
    assert rc == 0 and rep["calibration"] is None
    assert "calibrated_probability" not in rep["videos"][0]
    assert "at even odds" not in capsys.readouterr().out
    # An older val result without a calibration is named, with the command to rerun.
    val, doc = _val_result(fake_run, step=7)
    rc = predict.main(["--workdir", str(fake_run), "--calibration", "val", *clips])
    err = capsys.readouterr().err
    assert rc == 2 and "--calibration val: " in err and "KeyError" in err
    assert "--split val --checkpoint 7" in err and "Traceback" not in err

    fit = {"method": calibration.METHOD, "a": 2.0, "b": -1.0, "counts": {"real": 2, "fake": 3}}
    val.write_text(json.dumps({**doc, "calibration": {"fit": fit, "applied": None}}))
    rc, rep = _run(fake_run, tmp_path / "out", "--faces", "all", "--calibration", "val", *clips)
    assert rc == 0 and rep["reused"] == 2
    assert rep["calibration"] == {
        "method": calibration.METHOD,
        "a": 2.0,
        "b": -1.0,
        "counts": {"real": 2, "fake": 3},
        "source": os.path.join("eval", "synthetic_val_7", "metrics.json"),
    }

    def even(p):
        return float(expit(2.0 * logit(p) - 1.0))

    pair, alone = rep["videos"]
    for row in (pair, *pair["faces"], alone):
        assert row["calibrated_probability"] == pytest.approx(even(row["fake_probability"]))
    # The video's is its most suspicious face's; the verdict stays the raw score's.
    assert pair["calibrated_probability"] == pytest.approx(even(140 / 255))
    assert pair["verdict"] == "fake" and even(140 / 255) < 0.5
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert out[0].split("  ")[-3:] == [
        "P(fake), uncalibrated",
        "calibrated, at even odds",
        "verdict",
    ]
    row = next(line for line in out if line.startswith(clips[0])).split()
    assert row[-3:] == [f"{140 / 255:.4f}", f"{even(140 / 255):.4f}", "fake"]
    # Val's map was fitted on largest-face scores, not on a maximum over faces: said.
    assert "fitted on largest-face scores" in captured.err
    face1 = next(line for line in out if line.startswith("  face 1")).split()
    assert face1[-6:-4] == [f"{140 / 255:.4f}", f"{even(140 / 255):.4f}"]
    (note,) = [line for line in out if line.startswith("at even odds: P(fake) if fakes")]
    assert "(fitted on 2 real + 3 fake videos)" in note
    assert note.endswith(f"The verdicts' threshold is {even(0.5):.4f} at even odds")
    _run(fake_run, tmp_path / "out", "--calibration", "val", *clips)  # largest face: no note
    assert "largest-face" not in capsys.readouterr().err
    # A map whose slope is not positive says nothing, and predict says so.
    val.write_text(json.dumps({**doc, "calibration": {"fit": {**fit, "a": -0.5}, "applied": None}}))
    rc, _ = _run(fake_run, tmp_path / "out", "--calibration", "val", *clips)
    assert rc == 0 and "slope a = -0.5 is not positive" in capsys.readouterr().err


def test_a_directory_is_expanded_in_sorted_order_and_a_path_given_twice_is_scored_once(
    fake_run, tmp_path, monkeypatch
):
    folder = tmp_path / "case"
    # Created out of order: the walk's own order is the file system's, not sorted.
    for rel in ("z/b.mp4", "c.mp4", "z/a.mp4", "a.mp4", "m/x.mp4", "b.mp4"):
        _clip(folder / rel, 2)
    monkeypatch.chdir(tmp_path)
    # The same file as a relative path, then as an absolute one: one row.
    rc, rep = _run(fake_run, tmp_path / "out", "case", "./case/c.mp4", str(folder / "a.mp4"))
    assert rc == 0
    rows = [os.path.relpath(r["video"], "case") for r in rep["videos"]]
    assert rows == ["a.mp4", "b.mp4", "c.mp4", "m/x.mp4", "z/a.mp4", "z/b.mp4"]
    assert sorted(os.path.basename(s["path"]) for s in rep["skipped"]) == ["a.mp4", "c.mp4"]
    assert all("more than once" in s["why"] for s in rep["skipped"])


def test_faces_are_cut_at_the_training_shards_size_then_resized_as_training_did(
    fake_run, tmp_path, monkeypatch
):
    # A run trained at image_size 8 on shards cut at 16 px saw 16-px crops resized
    # to 8 (training's rule). Cut straight at 8, predict gave the model other pixels.
    from ldattn_jax import provenance
    from ldattn_jax.evaluate import fit_frames

    asked, seen = [], []
    rng = np.random.default_rng(0)
    crop16 = rng.integers(0, 256, (4, 16, 16, 3), np.uint8)

    def extract(p, frames_per_video, stack, size, workers, faces):
        asked.append(size)
        frames = crop16 if size == 16 else np.zeros((stack + 1, size, size, 3), np.uint8)
        return [{"frames": frames, "frame_index": 0, "box": np.array([0, 0, 8, 8], np.int32),
                 "landmarks": np.zeros((68, 2), np.float32)}]  # fmt: skip

    def model_call(self, frames):
        seen.append(np.array(frames))
        return frames[:, 0].mean(axis=(1, 2, 3)) / 255.0, {}

    monkeypatch.setattr(faces, "extract_stacks", extract)
    monkeypatch.setattr(_Model, "__call__", model_call)
    clip = _clip(tmp_path / "a.mp4", 1)
    line = {"start_step": 0, "data": {"dir": "/shards", "crop_size": 16}}
    (fake_run / provenance.TRAINING_LOG).write_text(json.dumps(line) + "\n")
    rc, rep = _run(fake_run, tmp_path / "out", clip)
    assert rc == 0 and asked == [16] and rep["crop_size"] == 16
    np.testing.assert_array_equal(seen[0][0], fit_frames(crop16, 4, 8))
    # A run that recorded no crop size (or cut at image_size) is cut at image_size,
    # and its journal line is not the other's.
    (fake_run / provenance.TRAINING_LOG).write_text("")
    rc, rep = _run(fake_run, tmp_path / "out", clip)
    assert rc == 0 and asked == [16, 8] and not rep["videos"][0]["reused"]
    assert rep["crop_size"] == 8


def test_linked_folders_are_looked_in_and_hidden_ones_are_listed_as_skipped(tmp_path):
    # Before: os.walk did not follow a linked folder and dropped hidden ones,
    # both without a word: 2 of 3 videos vanished and `skipped` was empty.
    from ldattn_jax.predict import expand_videos

    evidence, case = tmp_path / "evidence", tmp_path / "case"
    for path in (evidence / "a.mp4", case / "b.mp4", case / ".exports" / "c.mp4"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    (case / "linked").symlink_to(evidence, target_is_directory=True)
    (case / "loop").symlink_to(case, target_is_directory=True)  # must not walk forever
    items, skipped = expand_videos([str(case), str(evidence / "a.mp4")])
    assert items == [(str(case / "b.mp4"), None), (str(case / "linked" / "a.mp4"), None)]
    why = {os.path.relpath(s["path"], tmp_path): s["why"] for s in skipped}
    assert why == {
        "case/.exports": "a hidden folder: not looked in; pass it to score its videos",
        "case/loop": "a link to a folder already looked in",
        "evidence/a.mp4": "given more than once; scored once",  # the same file, linked
    }
    assert expand_videos([str(case / ".exports")])[0] == [(str(case / ".exports/c.mp4"), None)]


def test_the_journal_serves_the_latest_score_and_only_for_the_same_checkpoint_and_config(
    fake_run, tmp_path, monkeypatch
):
    from ldattn_jax import checkpointing

    values = {"a.mp4": [40, 40]}
    monkeypatch.setattr(faces, "extract_stacks", _per_stack(values))
    clip = _clip(tmp_path / "a.mp4", 2)
    out = tmp_path / "out"
    assert _run(fake_run, out, clip)[1]["videos"][0]["fake_probability"] == pytest.approx(40 / 255)
    values["a.mp4"] = [90, 90]  # say, a fixed face finder: --rescore journals a new score
    rc, rep = _run(fake_run, out, "--rescore", clip)
    assert not rep["videos"][0]["reused"]
    rc, rep = _run(fake_run, out, clip)  # the same file: the latest line of it wins
    row = rep["videos"][0]
    assert row["reused"] and row["fake_probability"] == pytest.approx(90 / 255)

    values["a.mp4"] = [200, 200]
    # Another checkpoint of the run (a later best): scored again.
    monkeypatch.setattr(checkpointing, "restore_for_inference", lambda c, w, which: (None, 8))
    row = _run(fake_run, out, clip)[1]["videos"][0]
    assert not row["reused"] and row["fake_probability"] == pytest.approx(200 / 255)
    # The same step of a run trained with another config: scored again.
    values["a.mp4"] = [10, 10]
    config = json.loads((fake_run / "config.json").read_text())
    config["train"] = {"learning_rate": 0.5}
    (fake_run / "config.json").write_text(json.dumps(config))
    row = _run(fake_run, out, clip)[1]["videos"][0]
    assert not row["reused"] and row["fake_probability"] == pytest.approx(10 / 255)
    assert _run(fake_run, out, clip)[1]["videos"][0]["reused"]


def test_a_video_that_failed_is_not_journaled_and_is_tried_again(fake_run, tmp_path, monkeypatch):
    ok = _clip(tmp_path / "ok.mp4", 2, 100)
    bad = _clip(tmp_path / "bad.mp4", 2, 66)
    (tmp_path / "gone.mp4").write_text("")  # no stacks: a VideoError of its own
    calls = []

    def extract(p, frames_per_video, stack, size, workers, faces):
        calls.append(os.path.basename(p))
        if p.endswith("gone.mp4"):
            raise VideoError("no_face", f"{p}: no face found")
        return _stacks(p, frames_per_video, stack, size, workers)

    monkeypatch.setattr(faces, "extract_stacks", extract)
    monkeypatch.setattr(_Model, "fail_on", 66)
    out = tmp_path / "out"
    rc, rep = _run(fake_run, out, bad, ok, str(tmp_path / "gone.mp4"))
    assert [r["status"] for r in rep["videos"]] == ["error", "ok", "error"]
    journal = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [os.path.basename(r["entry"]["video"]) for r in journal] == ["ok.mp4"]
    monkeypatch.setattr(_Model, "fail_on", None)  # the device is back
    calls.clear()
    rc, rep = _run(fake_run, out, bad, ok, str(tmp_path / "gone.mp4"))
    assert calls == ["bad.mp4", "gone.mp4"]
    assert [r["status"] for r in rep["videos"]] == ["ok", "ok", "error"]
    assert [r["reused"] for r in rep["videos"][:2]] == [False, True]


def test_a_file_replaced_in_place_is_scored_again_by_size_or_by_time(fake_run, tmp_path):
    clip = tmp_path / "a.mp4"
    _clip(clip, 2, 40)
    out = tmp_path / "out"
    _run(fake_run, out, clip)
    first = os.stat(clip).st_mtime_ns
    # Another file of the same size (a re-encode to a fixed size, a copy over it).
    _clip(clip, 2, 90)
    os.utime(clip, ns=(first + 10**9, first + 10**9))
    row = _run(fake_run, out, clip)[1]["videos"][0]
    assert not row["reused"] and row["fake_probability"] == pytest.approx(90 / 255)
    # Another size with the journaled time (a copy that keeps times, `cp -p`).
    _clip(clip, 2, 200)
    os.utime(clip, ns=(first, first))
    row = _run(fake_run, out, clip)[1]["videos"][0]
    assert not row["reused"] and row["fake_probability"] == pytest.approx(200 / 255)
    assert _run(fake_run, out, clip)[1]["videos"][0]["reused"]
    # Other bytes under the very stamp the journal holds (same size, time put back):
    # its content decides.
    stamp = os.stat(clip).st_mtime_ns
    _clip(clip, 2, 170)
    os.utime(clip, ns=(stamp, stamp))
    row = _run(fake_run, out, clip)[1]["videos"][0]
    assert not row["reused"] and row["fake_probability"] == pytest.approx(170 / 255)
    assert row["sha256"] == hashlib.sha256(b"2 170").hexdigest()


def test_a_checkpoint_retrained_at_the_same_step_is_scored_again(fake_run, tmp_path):
    clip = _clip(tmp_path / "a.mp4", 2, 40)
    out = tmp_path / "out"
    first = _run(fake_run, out, clip)[1]
    assert _run(fake_run, out, clip)[1]["videos"][0]["reused"]
    # The workdir trained again from scratch: step 7 again, other weights.
    (fake_run / "checkpoints" / "7" / "state" / "weights").write_bytes(b"\x01" * 64)
    rc, rep = _run(fake_run, out, clip)
    assert not rep["videos"][0]["reused"]
    assert rep["checkpoint"]["step"] == first["checkpoint"]["step"] == 7
    assert rep["checkpoint"]["state_sha256"] != first["checkpoint"]["state_sha256"]


def test_each_row_names_the_bytes_it_scored_and_the_report_its_model_and_software(
    fake_run, tmp_path
):
    import jax

    from ldattn_jax.provenance import tree_sha256

    clip = _clip(tmp_path / "a.mp4", 2, 40)
    (tmp_path / "bad.mp4").write_text("")  # no stacks: an error row
    out = tmp_path / "out"
    rc, rep = _run(fake_run, out, clip, tmp_path / "bad.mp4")
    ok, bad = rep["videos"]
    assert ok["sha256"] == hashlib.sha256(b"2 40").hexdigest() and ok["size_bytes"] == 4
    assert bad["status"] == "error" and "sha256" not in bad  # nothing was scored
    state = fake_run / "checkpoints" / "7" / "state"
    assert rep["checkpoint"] == {"step": 7, "which": "best", "state_sha256": tree_sha256(state)}
    prov = rep["provenance"]
    assert prov["command"] == [
        "python", "-m", "ldattn_jax.predict", "--workdir", str(fake_run), "--out", str(out),
        clip, str(tmp_path / "bad.mp4"),
    ]  # fmt: skip
    assert prov["packages"]["jax"] == jax.__version__
    assert prov["devices"]["count"] == jax.device_count()
    assert prov["started_utc"] <= prov["finished_utc"]
    # A reused row keeps the fingerprint of the bytes it was scored from.
    again = _run(fake_run, out, clip)[1]["videos"][0]
    assert again["reused"] and again["sha256"] == ok["sha256"]


def test_a_missing_or_unreadable_file_gets_the_decoders_reason_not_a_bare_oserror(
    fake_run, tmp_path, monkeypatch
):
    monkeypatch.setattr(faces, "extract_stacks", _REAL_EXTRACT_STACKS)
    gone = tmp_path / "gone.mp4"
    link = tmp_path / "link.mp4"
    link.symlink_to(tmp_path / "nowhere.mp4")
    rc, rep = _run(fake_run, tmp_path / "out", gone, link)
    missing, broken = rep["videos"]
    assert rc == 1 and missing["reason"] == broken["reason"] == "unreadable"
    assert missing["message"] == f"{gone} does not exist"
    assert "broken symbolic link" in broken["message"] and "Errno" not in broken["message"]


def test_the_run_ends_with_a_page_for_reading_and_a_failed_page_costs_no_score(
    fake_run, tmp_path, monkeypatch, capsys
):
    from ldattn_jax import case_report

    clip = _clip(tmp_path / "a.mp4", 2, 40)
    out = tmp_path / "out"
    rc, rep = _run(fake_run, out, clip)
    page = (out / "report.html").read_text()
    assert rc == 0 and page == case_report.render(rep, str(out))  # what the command rewrites
    assert (
        rep["videos"][0]["sha256"] in page
        and f"report for reading: {out}" in capsys.readouterr().out
    )

    def broken(report, out_dir):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(case_report, "render", broken)
    rc, rep = _run(fake_run, out, "--rescore", clip)
    assert rc == 0 and rep["videos"][0]["status"] == "ok"  # the scores stand
    err = capsys.readouterr().err
    assert "report.html not written (OSError" in err and "python -m ldattn_jax.case_report" in err


def test_a_full_disk_stops_in_one_line_and_the_rerun_reuses_what_was_journaled(
    fake_run, tmp_path, monkeypatch, capsys
):
    # Before: an OSError in the journal or the report write ended predict with a
    # traceback (or as "cannot start"), not saying where the scores were.
    from ldattn_jax.predict_journal import Journal

    clips = [_clip(tmp_path / f"{n}.mp4", 2, 40) for n in "abc"]
    out = tmp_path / "out"
    record = Journal.record

    def full_after_two(self, video, entry, settings):
        if video.endswith("c.mp4"):
            raise OSError(28, "No space left on device")
        return record(self, video, entry, settings)

    monkeypatch.setattr(Journal, "record", full_after_two)
    rc = predict.main(["--workdir", str(fake_run), "--out", str(out), *clips])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert f"journaling the score of {clips[2]} failed (No space left on device)" in err
    assert f"the scores already made are in {out / 'predictions.jsonl'}" in err
    monkeypatch.setattr(Journal, "record", record)
    rc, rep = _run(fake_run, out, *clips)
    assert rc == 0 and [r["reused"] for r in rep["videos"]] == [True, True, False]

    def full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(predict.json_out, "atomic_write", full)
    rc = predict.main(["--workdir", str(fake_run), "--out", str(out), *clips])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert f"writing {out / 'predictions.json'} failed (No space left on device)" in err


def test_heatmaps_asked_for_are_drawn_when_the_journal_has_none(fake_run, tmp_path):
    clip = _clip(tmp_path / "a.mp4", 2, 40)
    out = tmp_path / "out"
    row = _run(fake_run, out, clip)[1]["videos"][0]
    assert "heatmaps" not in row
    row = _run(fake_run, out, "--heatmaps", clip)[1]["videos"][0]  # journaled without them
    assert not row["reused"] and row["heatmaps"] and all(map(os.path.isfile, row["heatmaps"]))
    row = _run(fake_run, out, "--heatmaps", clip)[1]["videos"][0]
    assert row["reused"] and all(map(os.path.isfile, row["heatmaps"]))
    os.remove(row["heatmaps"][0])  # the figures deleted since: drawn again
    row = _run(fake_run, out, "--heatmaps", clip)[1]["videos"][0]
    assert not row["reused"] and all(map(os.path.isfile, row["heatmaps"]))


# --- --faces all: every person scored -------------------------------------------------------


def _people(values: dict, calls: list):
    """extract_stacks stand-in: ``values[name][face]`` are the pixel values of that face's
    stacks (key frame 3k for the k-th); face 0 is the larger one, all the default keeps."""

    def extract(p, frames_per_video, stack, size, workers, faces):
        name = os.path.basename(p)
        calls.append((name, faces))
        stacks = []
        for face, pixels in values[name].items():
            if faces == "largest" and face != 0:
                continue
            for k, v in enumerate(pixels):
                s = {
                    "frames": np.full((stack + 1, size, size, 3), v, np.uint8),
                    "frame_index": 3 * k,
                    "box": np.array([100 * face, 0, 100 * face + 8, 8], np.int32),
                    "landmarks": np.zeros((68, 2), np.float32),
                }
                if faces == "all":
                    s["face"] = face
                stacks.append(s)
        return sorted(stacks, key=lambda s: s["frame_index"])  # key-frame order, as extracted

    return extract


def test_faces_all_scores_each_person_and_the_video_as_its_most_suspicious_one(
    fake_run, tmp_path, monkeypatch, capsys
):
    few = predict.FEW_FRAMES
    values = {
        # The larger face is real, the smaller one fake: only --faces all sees it.
        "pair.mp4": {0: [60] * few, 1: [40, 240] * (few // 2)},
        # A fake-looking face in 2 key frames (a passer-by) does not decide the video...
        "passer.mp4": {0: [100] * few, 1: [250, 250]},
        # ...unless no face was seen in enough key frames: then the highest, flagged.
        "blink.mp4": {0: [100, 100], 1: [150, 150, 150]},
        "alone.mp4": {0: [30] * few},
    }
    calls = []
    monkeypatch.setattr(faces, "extract_stacks", _people(values, calls))
    clips = [_clip(tmp_path / name, 1) for name in values]
    rc, rep = _run(fake_run, tmp_path / "out", "--faces", "all", *clips)
    assert rc == 0 and rep["faces"] == "all"
    assert calls == [(name, "all") for name in values]
    by = {os.path.basename(r["video"]): r for r in rep["videos"]}

    pair = by["pair.mp4"]
    assert [f["face"] for f in pair["faces"]] == [0, 1]
    zero, one = pair["faces"]
    assert zero["fake_probability"] == pytest.approx(60 / 255) and zero["verdict"] == "real"
    assert one["fake_probability"] == pytest.approx(140 / 255) and one["verdict"] == "fake"
    assert one["frames_scored"] == few and not one["few_frames"]
    assert one["frame_indices"] == [3 * k for k in range(few)]
    assert one["fake_probabilities"] == pytest.approx([40 / 255, 240 / 255] * (few // 2))
    assert one["box"] == [100, 0, 108, 8]
    # The video is the fake face's (the mean of its stacks), not the mean of all stacks.
    assert pair["face"] == 1 and pair["verdict"] == "fake" and pair["frames_scored"] == few
    assert pair["fake_probability"] == pytest.approx(140 / 255)
    assert sorted({f["face"] for f in pair["frames"]}) == [0, 1] and len(pair["frames"]) == 2 * few

    passer = by["passer.mp4"]
    assert passer["faces"][1]["few_frames"] and passer["faces"][1]["verdict"] == "fake"
    assert passer["face"] == 0 and passer["verdict"] == "real" and not passer["few_frames"]
    assert passer["fake_probability"] == pytest.approx(100 / 255)
    blink = by["blink.mp4"]
    assert blink["face"] == 1 and blink["few_frames"] and blink["frames_scored"] == 3
    assert blink["fake_probability"] == pytest.approx(150 / 255)
    alone = by["alone.mp4"]
    assert [f["face"] for f in alone["faces"]] == [0] and alone["face"] == 0

    table = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(table) if line.startswith(clips[0]))
    assert f"{140 / 255:.4f}" in table[at] and "fake" in table[at]
    assert table[at + 1].startswith("  face 0") and f"{60 / 255:.4f}" in table[at + 1]
    assert table[at + 2].startswith("  face 1") and "video's score" in table[at + 2]
    alone_at = next(i for i, line in enumerate(table) if line.startswith(clips[3]))
    assert not table[alone_at + 1].startswith("  face")  # one face: no face lines


def test_the_journal_never_serves_largest_face_scores_for_all_faces_or_back(
    fake_run, tmp_path, monkeypatch
):
    few = predict.FEW_FRAMES
    values = {"pair.mp4": {0: [60] * few, 1: [200] * few}}
    calls = []
    monkeypatch.setattr(faces, "extract_stacks", _people(values, calls))
    clip = _clip(tmp_path / "pair.mp4", 1)
    out = tmp_path / "out"
    rc, rep = _run(fake_run, out, clip)  # the default: today's report, no face fields
    (row,) = rep["videos"]
    assert "faces" not in rep and "faces" not in row and "face" not in row
    assert "face" not in row["frames"][0]
    assert row["fake_probability"] == pytest.approx(60 / 255) and row["verdict"] == "real"
    rc, rep = _run(fake_run, out, "--faces", "all", clip)
    (row,) = rep["videos"]
    assert not row["reused"] and calls == [("pair.mp4", "largest"), ("pair.mp4", "all")]
    assert row["fake_probability"] == pytest.approx(200 / 255) and len(row["faces"]) == 2
    # Each mode's latest line serves that mode only.
    row = _run(fake_run, out, "--faces", "all", clip)[1]["videos"][0]
    assert row["reused"] and row["face"] == 1 and row["verdict"] == "fake"
    assert [f["verdict"] for f in row["faces"]] == ["real", "fake"]
    row = _run(fake_run, out, clip)[1]["videos"][0]
    assert row["reused"] and "faces" not in row
    assert row["fake_probability"] == pytest.approx(60 / 255)
    assert len(calls) == 2
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    # Lines of the default mode are keyed as before the option (earlier journals still serve).
    assert ["faces" in line["settings"] for line in lines] == [False, True]
    assert lines[1]["settings"]["faces"] == "all" and lines[0]["key"] != lines[1]["key"]
    # The journaled row's own score is already the video's (its fake face's), not the
    # mean over both people's stacks.
    assert lines[1]["entry"]["fake_probability"] == pytest.approx(200 / 255)
    assert lines[1]["entry"]["face"] == 1 and lines[1]["entry"]["frames_scored"] == few


def test_heatmaps_of_every_face(fake_run, tmp_path, monkeypatch):
    few = predict.FEW_FRAMES
    values = {"pair.mp4": {0: [60] * few, 1: [40] * 3 + [200] + [40] * (few - 4)}}
    monkeypatch.setattr(faces, "extract_stacks", _people(values, []))
    clip = _clip(tmp_path / "pair.mp4", 1)
    row = _run(fake_run, tmp_path / "out", "--faces", "all", "--heatmaps", clip)[1]["videos"][0]
    # <file name>_<hash of its path>_<run key>_<sha256[:8] of the file>_<face and frame>.png
    parts = [os.path.basename(p).split("_", 4) for p in row["heatmaps"]]
    assert {p[3] for p in parts} == {row["sha256"][:8]}
    # Each face's first frame and its most suspicious one (face 0: the first again).
    assert sorted(p[4] for p in parts) == ["face0_f0.png", "face1_f0.png", "face1_f9.png"]
    assert all(map(os.path.isfile, row["heatmaps"]))
    # The file replaced at the same path: scored afresh, drawn under new names, and
    # the earlier run's figures (its kept report links them) left as they were.
    before = {p: Path(p).read_bytes() for p in row["heatmaps"]}
    _clip(tmp_path / "pair.mp4", 2)
    again = _run(fake_run, tmp_path / "out", "--faces", "all", "--heatmaps", clip)[1]
    assert again["videos"][0]["sha256"] != row["sha256"]
    assert not set(again["videos"][0]["heatmaps"]) & set(before)
    assert all(Path(p).read_bytes() == b for p, b in before.items())


def test_a_timeline_per_video_shows_each_faces_key_frames_and_survives_a_failed_figure(
    fake_run, tmp_path, monkeypatch, capsys
):
    from ldattn_jax import figures

    few = predict.FEW_FRAMES
    values = {
        "pair.mp4": {0: [60] * few, 1: [40] * 3 + [200] + [40] * (few - 4)},
        "alone.mp4": {0: [30, 220, 30]},
    }
    monkeypatch.setattr(faces, "extract_stacks", _people(values, []))
    clips = [_clip(tmp_path / name, 1) for name in values]
    drawn = {}
    real_draw = figures.score_timeline

    def spy(lines, threshold, path, title="", fps=None):
        drawn[os.path.basename(title.split(":")[0])] = (lines, threshold)
        assert fps is None  # these clips are stand-ins, not videos: frame indices
        return real_draw(lines, threshold, path, title, fps)

    monkeypatch.setattr(figures, "score_timeline", spy)
    out = tmp_path / "out"
    rc, rep = _run(fake_run, out, "--faces", "all", "--timeline", "--threshold", "0.6", *clips)
    assert rc == 0
    pair, alone = rep["videos"]
    for row in (pair, alone):
        assert os.path.isfile(row["timeline"])
        assert os.path.dirname(row["timeline"]) == str(out / "timelines")
    assert pair["timeline"] != alone["timeline"]
    lines, threshold = drawn["pair.mp4"]
    assert threshold == 0.6 and list(lines) == ["face 0", "face 1"]
    assert lines["face 1"][0] == [3 * k for k in range(few)]
    assert lines["face 1"][1] == pytest.approx([v / 255 for v in values["pair.mp4"][1]])
    # One face: one line of the video's key frames.
    assert list(drawn["alone.mp4"][0]) == ["key frames"]
    assert drawn["alone.mp4"][0]["key frames"] == (
        [0, 3, 6],
        pytest.approx([30 / 255, 220 / 255, 30 / 255]),
    )

    # Reused from the journal: drawn again. A figure that fails costs no score.
    def broken(*a, **k):
        raise RuntimeError("no ink")

    monkeypatch.setattr(figures, "score_timeline", broken)
    capsys.readouterr()
    rc, rep = _run(fake_run, out, "--faces", "all", "--timeline", *clips)
    assert rc == 0 and rep["reused"] == 2
    assert all(r["timeline_error"] == "RuntimeError: no ink" for r in rep["videos"])
    assert "timeline" not in rep["videos"][0] and rep["videos"][0]["status"] == "ok"
    assert "(no timeline: RuntimeError: no ink)" in capsys.readouterr().out
    # Without the flag, none.
    rc, rep = _run(fake_run, out, *clips)
    assert "timeline" not in rep["videos"][0] and "timeline_error" not in rep["videos"][0]


def test_the_frame_rate_a_video_declares_puts_its_timeline_in_seconds(tmp_path, monkeypatch):
    from ldattn_jax import figures

    clip = _write(tmp_path / "c.mkv", 10)  # 25 fps
    assert video.nominal_fps(clip) == 25.0
    for bad in (tmp_path / "none.mp4", tmp_path / "text.mp4"):
        if bad.name == "text.mp4":
            bad.write_text("hello")
        assert video.nominal_fps(str(bad)) is None
    axes = []
    real_save = figures._save

    def keep_axis(fig, path):
        axes.append(fig.axes[0])
        return real_save(fig, path)

    monkeypatch.setattr(figures, "_save", keep_axis)
    figures.score_timeline({"key frames": ([0, 50], [0.2, 0.9])}, 0.5, tmp_path / "t.png", fps=25.0)
    figures.score_timeline({"key frames": ([0, 50], [0.2, 0.9])}, 0.5, tmp_path / "f.png")
    seconds, frames = axes
    assert list(seconds.lines[0].get_xdata()) == [0.0, 2.0]
    assert seconds.get_xlabel() == "time (s; frame / 25 fps)"
    assert list(frames.lines[0].get_xdata()) == [0, 50] and frames.get_xlabel() == "frame"


# --- review fixes: names, folders, heatmaps, journal keys, interrupts ------------------------


def test_a_name_that_is_not_utf8_is_a_row_of_its_own_not_a_crash(
    fake_run, tmp_path, monkeypatch, capsys
):
    # b"caf\xe9" (Latin-1, as old Windows or camera cards write it): Python sees it as
    # 'caf\udce9'. OpenCV's VideoCapture segfaults on such a name, which would end
    # the whole run; a UTF-8 page or terminal cannot print it either.
    folder = tmp_path / "case"
    good = _clip(folder / "a.mp4", 2, 40)
    bad = os.path.join(str(folder), os.fsdecode(b"caf\xe9.mkv"))
    with open(bad, "w") as f:
        f.write("2 90")
    with open(os.path.join(str(folder), os.fsdecode(b"notes\xff.txt")), "w") as f:
        f.write("-")
    opened = []

    def extract(p, frames_per_video, stack, size, workers, faces):
        opened.append(p)
        return _stacks(p, frames_per_video, stack, size, workers)

    monkeypatch.setattr(faces, "extract_stacks", extract)
    out = tmp_path / "out"
    rc, rep = _run(fake_run, out, "--heatmaps", "--timeline", folder)
    assert rc == 0 and opened == [good]  # never handed to the decoder; the others scored
    ok, row = rep["videos"]
    assert ok["status"] == "ok" and row["status"] == "error" and row["reason"] == "unreadable"
    shown = str(folder / "caf\\xe9.mkv")  # its bytes, as ls escapes them
    assert row["video"] == shown
    why = "rename the file: its name is not UTF-8, which OpenCV cannot open"
    assert row["message"] == f"{shown}: {why}"
    assert (out / "report.html").is_file() and not (out / "report.html.tmp").exists()
    assert shown in (out / "report.html").read_text(encoding="utf-8")
    captured = capsys.readouterr()
    assert shown in captured.out and "notes\\xff.txt" in captured.err
    # Given by its own path, with the same result.
    rc, rep = _run(fake_run, tmp_path / "out2", bad)
    assert rc == 1 and rep["videos"][0]["message"].startswith(shown)
    # The decoder refuses such a name too (data_prep.build reads through it), and a
    # figure's name hashes the path's bytes.
    reason, message = _reason(bad)
    assert reason == "unreadable" and "not UTF-8" in message
    assert predict._figure_tag(bad).startswith("caf_.mkv_")


def test_a_folder_that_cannot_be_listed_is_named_not_passed_over(fake_run, tmp_path, monkeypatch):
    # Tests run as root, whom chmod does not stop: the listing error is made here.
    case = tmp_path / "case"
    a, z = _clip(case / "a.mp4", 2), _clip(case / "z.mp4", 2)
    _clip(case / "locked" / "b.mp4", 2)
    _clip(tmp_path / "shut" / "c.mp4", 2)
    real_scandir = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path)) in ("locked", "shut"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    rc, rep = _run(fake_run, tmp_path / "out", case, tmp_path / "shut")
    assert rc == 0
    rows = [(r["video"], r["status"], r.get("reason")) for r in rep["videos"]]
    assert rows == [
        (a, "ok", None),
        (z, "ok", None),
        (str(case / "locked"), "error", "unreadable"),
        # A top folder that cannot be listed says so, not "no video file in it".
        (str(tmp_path / "shut"), "error", "unreadable"),
    ]
    for row in rep["videos"][2:]:
        assert "cannot list this folder (Permission denied)" in row["message"]
        assert "not looked for" in row["message"]


def test_a_reused_score_is_shown_with_its_own_checkpoints_heatmaps(fake_run, tmp_path, monkeypatch):
    from ldattn_jax import checkpointing, figures

    monkeypatch.setattr(
        checkpointing,
        "restore_for_inference",
        lambda c, w, which: (None, 7 if which == "best" else int(which)),
    )
    drawing = {}

    def overlay(frame, maps, path, title="", each_map=False):  # what drew it, as its bytes
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(f"checkpoint {drawing['step']}")
        return path

    monkeypatch.setattr(figures, "attention_overlay", overlay)
    clip = _clip(tmp_path / "a.mp4", 2, 40)
    out = tmp_path / "out"
    rows = {}
    for step in (7, 8, 7):
        drawing["step"] = step
        rows.setdefault(step, []).append(
            _run(fake_run, out, "--heatmaps", "--checkpoint", step, clip)[1]["videos"][0]
        )
    first, again = rows[7]
    assert not first["reused"] and again["reused"] and again["heatmaps"] == first["heatmaps"]
    assert set(first["heatmaps"]).isdisjoint(rows[8][0]["heatmaps"])
    for path in again["heatmaps"]:
        with open(path) as f:
            assert f.read() == "checkpoint 7"  # not step 8's, drawn over it in between


def test_a_model_without_maps_says_so_and_its_scores_are_reused(
    fake_run, tmp_path, monkeypatch, capsys
):
    class NoMaps(_Model):  # xception: no attention modules
        def __call__(self, frames):
            return super().__call__(frames)[0], {}

    monkeypatch.setattr(predict, "Predictor", NoMaps)
    config = json.loads((fake_run / "config.json").read_text())
    config["model"]["name"] = "xception"
    (fake_run / "config.json").write_text(json.dumps(config))
    calls = []
    monkeypatch.setattr(
        faces,
        "extract_stacks",
        lambda p, frames_per_video, stack, size, workers, faces: (
            calls.append(p) or _stacks(p, frames_per_video, stack, size, workers)
        ),
    )
    clip = _clip(tmp_path / "a.mp4", 2, 40)
    out = tmp_path / "out"
    row = _run(fake_run, out, "--heatmaps", clip)[1]["videos"][0]
    assert row["heatmaps_error"] == "the model has no attention maps (xception)"
    assert "heatmaps" not in row
    assert "(no heatmaps: the model has no attention maps (xception))" in capsys.readouterr().out
    row = _run(fake_run, out, "--heatmaps", clip)[1]["videos"][0]
    assert row["reused"] and len(calls) == 1 and row["heatmaps_error"].startswith("the model")


def test_a_journal_of_another_face_finder_or_model_code_is_scored_again(
    fake_run, tmp_path, monkeypatch
):
    from ldattn_jax.models import lda

    clip = _clip(tmp_path / "a.mp4", 2, 40)
    out = tmp_path / "out"
    _run(fake_run, out, clip)
    assert _run(fake_run, out, clip)[1]["videos"][0]["reused"]
    # Another face finder may crop another face of the same file.
    monkeypatch.setattr(faces, "FACES_VERSION", faces.FACES_VERSION + 1)
    assert not _run(fake_run, out, clip)[1]["videos"][0]["reused"]
    assert _run(fake_run, out, clip)[1]["videos"][0]["reused"]
    # Model code that gives the same weights other outputs.
    monkeypatch.setattr(lda, "MODEL_VERSION", lda.MODEL_VERSION + 1)
    assert not _run(fake_run, out, clip)[1]["videos"][0]["reused"]
    line = json.loads((out / "predictions.jsonl").read_text().splitlines()[-1])
    assert line["settings"]["faces_version"] == faces.FACES_VERSION
    assert line["settings"]["model_version"] == lda.MODEL_VERSION


def test_an_out_folder_that_cannot_be_written_stops_the_run_before_any_work(
    fake_run, tmp_path, monkeypatch, capsys
):
    from ldattn_jax import checkpointing

    restored = []
    monkeypatch.setattr(
        checkpointing, "restore_for_inference", lambda c, w, which: restored.append(1) or (None, 7)
    )
    clip = _clip(tmp_path / "a.mp4", 2)
    (tmp_path / "file").write_text("")
    real_makedirs = os.makedirs

    def makedirs(path, *a, **k):  # root ignores permissions: the refusal is made here
        if "locked" in os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_makedirs(path, *a, **k)

    monkeypatch.setattr(os, "makedirs", makedirs)
    for out in (tmp_path / "file" / "out", tmp_path / "locked"):
        assert predict.main(["--workdir", str(fake_run), "--out", str(out), clip]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"predict: error: --out {out}: cannot write there (")
        assert "pass a folder you can write to" in err and len(err.splitlines()) == 1
    assert restored == []


def test_ctrl_c_while_a_video_is_extracted_does_not_extract_the_next(
    fake_run, tmp_path, monkeypatch
):
    import signal
    import threading
    import time

    started, ended, release = [], threading.Event(), threading.Event()
    queued = threading.Event()  # b.mp4 submitted behind a.mp4
    main_thread = threading.main_thread().ident

    class Lookahead(predict.ThreadPoolExecutor):
        def submit(self, *a, **k):
            future = super().submit(*a, **k)
            self.submitted = getattr(self, "submitted", 0) + 1
            if self.submitted == 2:
                queued.set()
            return future

    def slow(p, frames_per_video, stack, size, workers, faces):
        started.append(os.path.basename(p))
        if len(started) == 1:  # Ctrl-C while predict waits for a.mp4, b.mp4 queued
            assert queued.wait(60)
            signal.pthread_kill(main_thread, signal.SIGINT)
        release.wait(30)  # an extraction that lasts until the test lets it end
        ended.set()
        return _stacks(p, frames_per_video, stack, size, workers)

    monkeypatch.setattr(faces, "extract_stacks", slow)
    monkeypatch.setattr(predict, "ThreadPoolExecutor", Lookahead)
    clips = [_clip(tmp_path / f"{n}.mp4", 2) for n in "abc"]
    with pytest.raises(KeyboardInterrupt):
        predict.main(["--workdir", str(fake_run), "--out", str(tmp_path / "out"), *clips])
    # Raised while a.mp4 was still being extracted, not after it: no clock involved.
    assert not ended.is_set() and queued.is_set()
    release.set()
    assert ended.wait(5)
    time.sleep(0.5)  # time for the look-ahead to start b.mp4, were it still queued
    assert started == ["a.mp4"]


def test_names_in_the_table_cannot_split_a_row_or_restyle_the_terminal(fake_run, tmp_path, capsys):
    clips = [_clip(tmp_path / name, 2) for name in ("two\nlines.mp4", "red\x1b[31m.mp4")]
    rc, rep = _run(fake_run, tmp_path / "out", *clips)
    assert rc == 0 and [r["video"] for r in rep["videos"]] == clips  # the JSON keeps them
    out = capsys.readouterr().out
    assert "\x1b" not in out and not any(line.startswith("lines.mp4") for line in out.splitlines())
    assert "two\\nlines.mp4" in out and "red\\x1b[31m.mp4" in out
    table = predict.format_table(
        {"calibration": None, "videos": [{"video": "x\ty.mp4", "status": "error",
                                          "reason": "unreadable", "message": "x\ty.mp4\rgone"}]}
    )  # fmt: skip
    assert table.splitlines()[1].startswith("x\\ty.mp4") and "x\\ty.mp4\\rgone" in table


def test_a_unicode_file_name_keeps_its_letters_in_figure_names(fake_run, tmp_path):
    from ldattn_jax.eval_names import safe

    assert safe("видео.mp4") == "видео.mp4" and safe("ビデオ 1.mp4") == "ビデオ_1.mp4"
    assert safe(".mp4") == "mp4" and safe("._a.mp4") == "_a.mp4"  # never a hidden file
    assert len(safe("日本" * 100).encode()) <= 80  # bytes: the file system's limit
    assert safe("a b/c:d.mp4") == "a_b_c_d.mp4"
    clip = _clip(tmp_path / "видео.mp4", 2)
    row = _run(fake_run, tmp_path / "out", "--timeline", clip)[1]["videos"][0]
    assert os.path.basename(row["timeline"]).startswith("видео.mp4_")


# --- what a rerun into the same OUT leaves of the earlier one ------------------------------


def test_a_run_that_dies_while_writing_its_report_leaves_the_earlier_one_whole(
    fake_run, tmp_path, monkeypatch
):
    clips = [_clip(tmp_path / f"{n}.mp4", 3, v) for n, v in (("a", 40), ("b", 200))]
    out = tmp_path / "out"
    rc, first = _run(fake_run, out, *clips)
    page = (out / "report.html").read_text()
    real = predict.to_jsonable

    def dies_in_the_dump(obj):
        doc = real(obj)
        if isinstance(doc, dict) and "provenance" in doc:
            doc["provenance"]["last"] = object()  # the last key: most of it is written first
        return doc

    def killed(self, o):  # what json does with a value it cannot write
        raise _Killed

    monkeypatch.setattr(json.JSONEncoder, "default", killed)
    monkeypatch.setattr(predict, "to_jsonable", dies_in_the_dump)
    with pytest.raises(_Killed):
        predict.main(
            ["--workdir", str(fake_run), "--out", str(out), "--threshold", "0.1", clips[0]]
        )
    # predictions.json is the earlier run's, whole, beside its own page; nothing half-written.
    assert json.loads((out / "predictions.json").read_text()) == first
    assert (out / "report.html").read_text() == page
    assert sorted(os.listdir(out)) == ["predictions.json", "predictions.jsonl", "report.html"]


def test_a_rerun_never_redraws_a_timeline_an_earlier_report_shows(fake_run, tmp_path):
    clip = _clip(tmp_path / "a.mp4", 3, 140)
    out = tmp_path / "out"
    line = _run(fake_run, out, "--timeline", clip)[1]["videos"][0]["timeline"]
    with open(line, "rb") as f:
        drawn = f.read()
    # The same run key (journal reuse), another threshold: another verdict and line.
    row = _run(fake_run, out, "--timeline", "--threshold", "0.7", clip)[1]["videos"][0]
    assert row["reused"] and row["verdict"] == "real" and row["timeline"] != line
    with open(line, "rb") as f:
        assert f.read() == drawn and os.path.isfile(row["timeline"])
    # <file name>_<hash of its path>_<run key>_<what is drawn>.png; the same figure: one file.
    key = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])["key"]
    assert os.path.basename(line).split("_")[2] == key[:8]
    assert _run(fake_run, out, "--timeline", clip)[1]["videos"][0]["timeline"] == line
    assert not [n for n in os.listdir(out / "timelines") if n.startswith(".")]  # no temp left


def test_a_rerun_keeps_the_earlier_case_report_and_says_where(fake_run, tmp_path, capsys):
    import re
    import urllib.parse

    from ldattn_jax import case_report

    clips = [_clip(tmp_path / f"{n}.mp4", 3, v) for n, v in (("a", 40), ("b", 200))]
    out = tmp_path / "out"
    rc, first = _run(fake_run, out, "--timeline", *clips)
    page = (out / "report.html").read_text()
    assert "earlier_report" not in first and "kept as" not in capsys.readouterr().err
    rc, second = _run(fake_run, out, "--timeline", "--threshold", "0.1", clips[0])
    err = capsys.readouterr().err
    (kept,) = [n for n in os.listdir(out) if n.startswith("predictions-")]
    stamp = kept[len("predictions-") : -len(".json")]
    started = first["provenance"]["started_utc"]
    assert stamp == started[:19].replace(":", "-") + "Z"
    assert second["earlier_report"] == kept and len(second["videos"]) == 1
    assert json.loads((out / kept).read_text()) == first
    assert (out / f"report-{stamp}.html").read_text() == page
    assert f"held the case report of an earlier run (2 video(s), started {started})" in err
    assert f"kept as {kept} and report-{stamp}.html (its figures stay linked)" in err
    # The kept page still shows its own run's figures.
    links = {urllib.parse.unquote(s) for s in re.findall(r'src="([^"]+)"', page)}
    assert links == {os.path.relpath(r["timeline"], out) for r in first["videos"]}
    assert all((out / link).is_file() for link in links)
    # case_report on the kept file rewrites its own page, not the newest run's.
    newest = (out / "report.html").read_text()
    assert case_report.main([str(out / kept)]) == 0
    assert (out / f"report-{stamp}.html").read_text() == page
    assert (out / "report.html").read_text() == newest
    # A third run (started within the same second, maybe): each earlier report kept apart.
    rc, third = _run(fake_run, out, clips[1])
    kept_all = sorted(n for n in os.listdir(out) if n.startswith("predictions-"))
    assert len(kept_all) == 2 and third["earlier_report"] in kept_all
    assert json.loads((out / third["earlier_report"]).read_text()) == second
    # A damaged predictions.json (an older predict killed mid-write) is kept too.
    (out / "predictions.json").write_text('{"videos": [')
    capsys.readouterr()
    _run(fake_run, out, clips[1])
    assert "held a damaged predictions.json (not valid JSON): kept as" in capsys.readouterr().err
    assert len([n for n in os.listdir(out) if n.startswith("predictions-")]) == 3


def test_the_table_says_the_score_is_uncalibrated_and_how_the_threshold_was_chosen(
    fake_run, tmp_path, capsys
):
    clip = _clip(tmp_path / "a.mp4", 3, 140)
    _run(fake_run, tmp_path / "out", clip)
    out = capsys.readouterr().out
    assert out.splitlines()[0].split("  ")[-2:] == ["P(fake), uncalibrated", "verdict"]
    assert (
        "verdicts at threshold 0.5 (the default, not chosen on val: pass --threshold val for "
        "this checkpoint's val EER threshold, or --threshold P)"
    ) in out.splitlines()
    _run(fake_run, tmp_path / "out", "--threshold", "0.5", clip)  # given: said so
    out = capsys.readouterr().out
    assert "verdicts at threshold 0.5 (--threshold)" in out and "the default" not in out


def test_a_file_that_changes_while_it_is_read_is_a_row_of_its_own(fake_run, tmp_path, monkeypatch):
    still = _clip(tmp_path / "still.mp4", 3, 40)
    growing = _clip(tmp_path / "copying.mp4", 3, 200)

    def extract(p, frames_per_video, stack, size, workers, faces):
        stacks = _stacks(p, frames_per_video, stack, size, workers)
        if p == growing:  # the copy goes on while the decoder reads
            with open(p, "a") as f:
                f.write(" more")
        return stacks

    monkeypatch.setattr(faces, "extract_stacks", extract)
    out = tmp_path / "out"
    rc, rep = _run(fake_run, out, growing, still)
    bad, ok = rep["videos"]
    assert rc == 0 and ok["status"] == "ok" and bad["status"] == "error"
    assert bad["reason"] == "changed_while_read" and "sha256" not in bad
    assert bad["message"].startswith(f"{growing}: the file changed while it was read (before: 5")
    assert "still being copied" in bad["message"] and "score it again" in bad["message"]
    journal = (out / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["entry"]["video"] for line in journal] == [still]
