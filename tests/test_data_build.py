"""build CLI: every failure kind lands in failures.jsonl, bad arguments fail before work."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from data_prep import build, leftovers


def _video(path, frames, fourcc="mp4v"):
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (w, h))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def _face_frames(n=12):
    face = skimage.data.astronaut()[20:240, 120:340]  # 220 px, face ~90 px: dlib finds it
    return [np.roll(face, i, axis=1) for i in range(n)]


@pytest.fixture(scope="module")
def faulty_tree(tmp_path_factory):
    """FF++ tree with one video per failure kind (reals 001-007) and two good videos."""
    root = tmp_path_factory.mktemp("ffpp")
    real = root / "original_sequences/youtube/c23/videos"
    fake = root / "manipulated_sequences/Deepfakes/c23/videos"
    _video(real / "000.mp4", _face_frames())
    good = (real / "000.mp4").read_bytes()
    (real / "001.mp4").write_bytes(b"")  # zero_bytes
    (real / "002.mp4").write_text("this is a text file, not a video\n")  # not_a_video
    (real / "003.mp4").write_bytes(good[: len(good) // 2])  # truncated (moov atom lost)
    _video(real / "004.mp4", _face_frames(2))  # too_short for a stack of 3
    _video(real / "005.mp4", [np.dstack([skimage.data.brick()[:200, :200]] * 3)] * 8)  # no_face
    _video(real / "006.mp4", [np.zeros((40, 40, 3), np.uint8)] * 8)  # bad_resolution
    (real / "007.mp4").mkdir()  # unreadable (a directory; root ignores chmod)
    frames = _face_frames()
    _video(fake / "000_001.mp4", frames)
    masks = np.zeros((len(frames), *frames[0].shape[:2]), np.uint8)
    masks[:, 100:160, 80:150] = 1
    np.savez_compressed(fake / "000_001.masks.npz", masks=masks)
    (root / "splits").mkdir()
    pairs = {
        "train": [["000", "001"], ["006", "007"]],
        "val": [["002", "003"]],
        "test": [["004", "005"]],
    }
    for name, p in pairs.items():
        (root / "splits" / f"{name}.json").write_text(json.dumps(p))
    return root


ARGS = [
    "--frames-per-video",
    "3",
    "--stack",
    "3",
    "--size",
    "32",
    "--workers",
    "1",
    "--no-progress",
]


def test_each_failure_kind_is_recorded_and_run_continues(faulty_tree, tmp_path, capsys):
    out = tmp_path / "out"
    rc = build.main(
        [
            "--dataset",
            "ffpp",
            "--root",
            str(faulty_tree),
            "--out",
            str(out),
            "--methods",
            "Deepfakes",
            *ARGS,
        ]
    )
    assert rc == 0
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    reasons = {f["video_id"].rsplit("/", 1)[1]: f["reason"] for f in failures}
    assert reasons == {
        "001": "zero_bytes",
        "002": "not_a_video",
        "003": "truncated",
        "004": "too_short",
        "005": "no_face",
        "006": "bad_resolution",
        "007": "unreadable",
        # Named by the train pairs [000, 001] and [006, 007], not on disk.
        "001_000": "missing_file",
        "006_007": "missing_file",
        "007_006": "missing_file",
    }
    assert all(f["message"] and f["path"] for f in failures)
    # Each message names the file and says what to do about it.
    said = {f["reason"]: f["message"] for f in failures}
    assert "download or copy it again" in said["truncated"] and "003.mp4" in said["truncated"]
    assert "move it out of the dataset folder" in said["not_a_video"]
    assert "005.mp4" in said["no_face"] and "rotate the video" in said["no_face"]
    summary = json.loads((out / "summary.json").read_text())["counts"]
    assert summary["train"]["records"] == 6 and summary["train"]["failures"] == {
        "bad_resolution": 1,
        "missing_file": 3,
        "unreadable": 1,
        "zero_bytes": 1,
    }
    assert summary["test"]["failures"] == {"no_face": 1, "too_short": 1}
    assert "failures by reason" in capsys.readouterr().err
    # Only train had records: the others are not written as splits.
    from data_prep.shards import open_split, read_info

    src = open_split(str(out), "train")
    assert len(src) == 6
    with pytest.raises(KeyError, match="'val' is not in"):
        open_split(str(out), "val")
    recs = [src[i] for i in range(len(src))]
    fake = [r for r in recs if r["label"] == 1]
    assert len(fake) == 3 and all(r["has_mask"] and r["mask"].any() for r in fake)
    assert all(not r["has_mask"] and not r["mask"].any() for r in recs if r["label"] == 0)
    assert read_info(str(out))["splits"]["train"]["by_label"]["fake"]["records"] == 3
    # Which bytes each split was built from: every source video by path and sha256,
    # a failed one too where it can be read (the directory 007 cannot).
    manifest = json.loads((out / "manifest.json").read_text())["splits"]
    entries = {e["video_id"].rsplit("/", 1)[1]: e for es in manifest.values() for e in es}
    assert set(entries) == {"000", "001", "002", "003", "004", "005", "006", "007", "000_001",
                            "001_000", "006_007", "007_006"}  # fmt: skip
    for name, e in entries.items():
        unread = name == "007" or reasons.get(name) == "missing_file"
        want = None if unread else hashlib.sha256(Path(e["path"]).read_bytes()).hexdigest()
        assert e["sha256"] == want, name
    assert entries["000_001"]["path"] == str(
        faulty_tree / "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4"
    )


def test_exit_nonzero_only_when_nothing_written(faulty_tree, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(faulty_tree, root)
    (root / "original_sequences/youtube/c23/videos/000.mp4").unlink()
    (root / "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4").write_bytes(b"")
    out = tmp_path / "out"
    rc = build.main(
        [
            "--dataset",
            "ffpp",
            "--root",
            str(root),
            "--out",
            str(out),
            "--methods",
            "Deepfakes",
            *ARGS,
        ]
    )
    assert rc == 1
    # 001-007 and 000_001 failed; 000 (deleted) and 001_000, 006_007, 007_006 missing.
    rows = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    assert sum(r["reason"] == "missing_file" for r in rows) == 4


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--root", "/nonexistent/ffpp"], "dataset root not found"),
        (["--methods", "Deepfakes,DeepFace"], "unknown method"),
        (["--splits", "/nonexistent/splits"], "train.json"),
        (["--compression", "c99"], "c99"),
    ],
)
def test_bad_arguments_fail_before_any_work(faulty_tree, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    argv = ["--dataset", "ffpp", "--root", str(faulty_tree), "--out", str(out), *ARGS, *extra]
    assert build.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing was started


def test_an_out_or_root_that_is_a_file_fails_before_any_work(
    faulty_tree, tmp_path, capsys, monkeypatch
):
    # Before: --out FILE raised FileExistsError (a traceback) after the dataset was
    # read, and --root FILE said "not found" of a path that is there.
    def no_read(*args, **kwargs):
        raise AssertionError("the dataset was read")

    file = tmp_path / "file"
    file.write_text("")
    base = ["--dataset", "ffpp", "--root", str(faulty_tree), *ARGS]
    with monkeypatch.context() as m:
        m.setattr(build, "read_dataset", no_read)
        assert build.main([*base, "--out", str(file)]) == 2
        err = capsys.readouterr().err
        assert (  # one line, no traceback, and what to do
            err == f"error: --out {str(file)!r} is a file, not a directory; choose another --out\n"
        )
        assert build.main([*base, "--out", str(file / "sub/out")]) == 2
        assert f"{str(file)!r} is a file, not a directory" in capsys.readouterr().err
    out = tmp_path / "out"
    assert build.main([*base, "--out", str(out), "--root", str(file)]) == 2
    err = capsys.readouterr().err
    assert f"error: dataset root is not a directory: {str(file)!r} is a file" in err
    assert not out.exists()


def test_summary_table_format():
    counts = {
        "train": {
            "videos": 3,
            "records": 20,
            "failed": 1,
            "failures": {"no_face": 1},
            "by_label": {
                "fake": {"videos": 2, "records": 16, "failed": 0},
                "real": {"videos": 1, "records": 4, "failed": 1},
            },
            "by_method": {},
        }
    }
    table = build.format_summary(counts).splitlines()
    assert table[0].split() == [
        "split",
        "label",
        "videos",
        "records",
        "failed",
        "failures",
        "by",
        "reason",
    ]
    assert table[2].split() == ["train", "fake", "2", "16", "0"]
    assert table[-1].split() == ["train", "all", "3", "20", "1", "no_face=1"]


def test_unexpected_error_is_reported_and_retried_on_rerun(faulty_tree, tmp_path, monkeypatch):
    from data_prep import faces

    real_extract = faces.extract_stacks
    calls = []

    def flaky(path, *args):
        calls.append(str(path))
        if str(path).endswith("000_001.mp4") and len(calls) < 20:
            raise MemoryError("simulated")
        return real_extract(path, *args)

    monkeypatch.setattr(faces, "extract_stacks", flaky)
    out = tmp_path / "out"
    argv = [
        "--dataset",
        "ffpp",
        "--root",
        str(faulty_tree),
        "--out",
        str(out),
        "--methods",
        "Deepfakes",
        *ARGS,
    ]
    assert build.main(argv) == 0
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    err = [f for f in failures if f["reason"] == "error"]
    assert (
        len(err) == 1
        and "MemoryError" in err[0]["message"]
        and err[0]["video_id"].endswith("000_001")
    )
    calls.extend(["pad"] * 20)  # the next attempt succeeds
    n_before = len(calls)
    assert build.main(argv) == 0
    assert calls[n_before:] == [
        str(faulty_tree / "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4"),
        # 'unreadable' is not cached either (a permission fix keeps the cache key).
        str(faulty_tree / "original_sequences/youtube/c23/videos/007.mp4"),
    ]
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert not [f for f in failures if f["reason"] == "error"]


def test_argument_spellings_and_bounds(capsys):
    base = ["--dataset", "synthetic", "--root", "r", "--out", "o"]
    assert build.parse_args([*base, "--frames_per_video", "5"]).frames_per_video == 5
    assert build.parse_args([*base, "--frames-per-video", "6"]).frames_per_video == 6
    with pytest.raises(SystemExit):
        build.parse_args([*base, "--size", "4"])
    assert "--size must be >= 8" in capsys.readouterr().err


def test_caches_of_another_face_finder_are_not_reused(faulty_tree, tmp_path, capsys):
    from data_prep import faces

    out = tmp_path / "out"
    argv = ["--dataset", "ffpp", "--root", str(faulty_tree), "--out", str(out),
            "--methods", "Deepfakes", *ARGS]  # fmt: skip
    assert build.main(argv) == 0
    current = out / "cache" / f"f3_n3_s32_faces{faces.FACES_VERSION}"
    assert build.cache_params(3, 3, 32) == current.name and current.is_dir()
    # Make it look like version 1's cache (no suffix), whose every video "had no face".
    old = out / "cache" / "f3_n3_s32"
    current.rename(old)
    for marker in old.glob("*.json"):
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "reason": "no_face"}))
    (out / "cache" / "f3_n3_s320_faces1").mkdir()  # other parameters: none of our business
    capsys.readouterr()
    assert build.main(argv) == 0
    err = capsys.readouterr().err
    assert f"note: {old} holds crops of the same videos from another face-finder version" in err
    assert "s320" not in err
    assert build.stale_caches(str(out), current.name) == [str(old)]
    summary = json.loads((out / "summary.json").read_text())["counts"]
    assert summary["train"]["records"] == 6  # extracted again, not read from the old cache


# ------------------------------------------------- one bad video never stops a run


@pytest.fixture(scope="module")
def three_fakes_tree(faulty_tree, tmp_path_factory):
    """Good FF++ tree: reals 000, 001 and fake 000_001 of three methods (masks fit).

    Its one pair [000, 001] also names the fakes 001_000, not there: each build
    of it records them as missing_file (_failures leaves those rows out)."""
    root = tmp_path_factory.mktemp("ffpp3")
    real = root / "original_sequences/youtube/c23/videos"
    real.mkdir(parents=True)
    good_real = faulty_tree / "original_sequences/youtube/c23/videos/000.mp4"
    for name in ("000", "001"):
        shutil.copy(good_real, real / f"{name}.mp4")
    fake = faulty_tree / "manipulated_sequences/Deepfakes/c23/videos/000_001"
    for method in ("Deepfakes", "Face2Face", "FaceSwap"):
        d = root / "manipulated_sequences" / method / "c23/videos"
        d.mkdir(parents=True)
        shutil.copy(fake.with_suffix(".mp4"), d / "000_001.mp4")
        shutil.copy(f"{fake}.masks.npz", d / "000_001.masks.npz")
    (root / "splits").mkdir()
    for split, pairs in {"train": [["000", "001"]], "val": [], "test": []}.items():
        (root / "splits" / f"{split}.json").write_text(json.dumps(pairs))
    return root


def _argv(root, out, *extra):
    return ["--dataset", "ffpp", "--root", str(root), "--out", str(out),
            "--methods", "Deepfakes,Face2Face,FaceSwap", *ARGS, *extra]  # fmt: skip


def _failures(out, missing=False):
    """failures.jsonl by '<method>/<stem>'; without three_fakes_tree's missing 001_000
    fakes unless `missing`."""
    rows = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    return {
        r["video_id"].split("/", 2)[2]: r for r in rows if missing or r["reason"] != "missing_file"
    }


def _records_by_video(out):
    from data_prep.shards import open_split

    src = open_split(str(out), "train")
    recs = [src[i] for i in range(len(src))]
    by = {}
    for r in recs:
        by.setdefault(r["video_id"].split("/", 2)[2], []).append(r)
    return by


def test_a_mask_of_another_size_is_dropped_not_stretched(three_fakes_tree, tmp_path, capsys):
    root = tmp_path / "ffpp"
    shutil.copytree(three_fakes_tree, root)
    mask = root / "manipulated_sequences/{}/c23/videos/000_001.masks.npz"
    masks = np.load(str(mask).format("FaceSwap"))["masks"]  # [12, 220, 220]: fits
    np.savez(str(mask).format("Deepfakes"), masks=masks[:, ::2, ::2])  # half size
    np.savez(str(mask).format("Face2Face"), masks=masks.repeat(2, 1).repeat(2, 2))  # double
    out = tmp_path / "out"
    assert build.main(_argv(root, out)) == 0
    failures = _failures(out)
    assert sorted(failures) == ["Deepfakes/000_001", "Face2Face/000_001"]
    for name, shape in (("Deepfakes", "(12, 110, 110)"), ("Face2Face", "(12, 440, 440)")):
        row = failures[f"{name}/000_001"]
        assert row["reason"] is None and row["warning"] == "bad_mask" and row["records"] == 3
        assert f"{str(mask).format(name)} has shape {shape}" in row["message"]
        assert "220x220" in row["message"] and "kept without a mask" in row["message"]
    by = _records_by_video(out)
    for name in ("Deepfakes", "Face2Face"):  # kept, without any mask
        assert len(by[f"{name}/000_001"]) == 3
        assert all(not r["has_mask"] and not r["mask"].any() for r in by[f"{name}/000_001"])
    assert all(r["has_mask"] and r["mask"].any() for r in by["FaceSwap/000_001"])
    counts = json.loads((out / "summary.json").read_text())["counts"]["train"]
    # Kept with a warning is not failed: only the three missing 001_000 fakes are.
    assert counts["failed"] == 3 and counts["failures"] == {"missing_file": 3}
    assert counts["warnings"] == {"bad_mask": 2}
    assert "kept with bad_mask=2" in capsys.readouterr().err


def test_ffpp_mask_videos_give_the_same_masks_as_arrays(three_fakes_tree, tmp_path, capsys):
    # FF++ ships masks as lossy videos (white = manipulated) one level above the
    # compression; the build cuts them like the synthetic set's arrays.
    root = tmp_path / "ffpp"
    shutil.copytree(three_fakes_tree, root)
    method_dir = root / "manipulated_sequences/{}"
    masks = np.load(method_dir.parent / "Face2Face/c23/videos/000_001.masks.npz")["masks"]
    white = [np.repeat(m[..., None] * 255, 3, axis=2) for m in masks]
    for name, frames in (("Deepfakes", white), ("FaceSwap", [f[::2, ::2] for f in white])):
        (method_dir.parent / name / "c23/videos/000_001.masks.npz").unlink()
        _video(method_dir.parent / name / "masks/videos/000_001.mp4", frames)
    out = tmp_path / "out"
    assert build.main(_argv(root, out)) == 0
    by = _records_by_video(out)
    from_video, from_array = (
        sorted(by[f"{m}/000_001"], key=lambda r: r["frame_index"])
        for m in ("Deepfakes", "Face2Face")
    )
    assert [r["frame_index"] for r in from_video] == [r["frame_index"] for r in from_array]
    for v, a in zip(from_video, from_array, strict=True):
        assert v["has_mask"] and a["has_mask"] and a["mask"].any()
        assert (v["mask"] != a["mask"]).mean() < 0.01  # the codec's ringing at the edges
    # A mask video of another size: dropped, the video kept.
    row = _failures(out)["FaceSwap/000_001"]
    assert row["warning"] == "bad_mask" and row["records"] == 3
    assert "has 110x110 frames" in row["message"] and "are 220x220" in row["message"]
    assert all(not r["has_mask"] for r in by["FaceSwap/000_001"])


def test_a_mask_video_smaller_than_the_frames_is_named_by_its_size(tmp_path):
    # Before: the key frames were cut before the size check, and a box lying
    # outside the smaller mask frame raised inside OpenCV ("mask ... unreadable
    # (error: ... !ssize.empty())") instead of saying which sizes differ.
    from data_prep.masks import stack_masks

    _video(tmp_path / "v.mp4", _face_frames(6))  # 220x220
    _video(tmp_path / "m.mp4", [np.full((40, 40, 3), 255, np.uint8)] * 6)
    stacks = [{"frame_index": 2, "box": np.array([100, 100, 200, 200], np.int32)}]
    mask, has_mask, problem = stack_masks(str(tmp_path / "m.mp4"), str(tmp_path / "v.mp4"),
                                          stacks, 32)  # fmt: skip
    assert problem and "has 40x40 frames" in problem and "are 220x220" in problem, problem
    assert not has_mask.any() and not mask.any()


def test_a_video_that_changes_during_the_build_fails_alone(three_fakes_tree, tmp_path, monkeypatch):
    # Before: its crops were cached under the old size's key, the manifest named
    # the new key's (absent) stacks, and writing the shards stopped the build.
    root = tmp_path / "ffpp"
    shutil.copytree(three_fakes_tree, root)
    changing = root / "manipulated_sequences/Face2Face/c23/videos/000_001.mp4"
    real = build.process_video

    def then_redownloaded(item, *args):
        status = real(item, *args)
        if item.path == str(changing):
            with open(changing, "ab") as f:
                f.write(b"\0" * 16)
        return status

    monkeypatch.setattr(build, "process_video", then_redownloaded)
    out = tmp_path / "out"
    assert build.main(_argv(root, out)) == 0
    row = _failures(out)["Face2Face/000_001"]
    assert row["reason"] == "error" and "changed on disk while the build ran" in row["message"]
    assert "next run tries it again" in row["message"]
    assert sorted(_records_by_video(out)) == [
        "Deepfakes/000_001", "FaceSwap/000_001", "real/000", "real/001"]  # fmt: skip
    monkeypatch.setattr(build, "process_video", real)
    assert build.main(_argv(root, out)) == 0  # the rerun cuts it as it is now
    assert "Face2Face/000_001" in _records_by_video(out)


def test_an_error_after_extraction_fails_only_that_video(three_fakes_tree, tmp_path, monkeypatch):
    real_open = build.atomic_open
    target = build.cache_paths(
        str(tmp_path / "out/cache" / build.cache_params(3, 3, 32)),
        build.VideoItem(
            path=str(three_fakes_tree / "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4"),
            label=1, dataset="ffpp", compression="c23", method="Deepfakes",
            video_id="ffpp/c23/Deepfakes/000_001", split="train",
            mask_path=str(three_fakes_tree / "manipulated_sequences/Deepfakes/c23/videos/"
                          "000_001.masks.npz"),
        ),
    )[0]  # fmt: skip

    def full_disk(path, mode="w", **kwargs):
        if path == target:
            raise OSError(28, "No space left on device")
        return real_open(path, mode, **kwargs)

    monkeypatch.setattr(build, "atomic_open", full_disk)
    out = tmp_path / "out"
    assert build.main(_argv(three_fakes_tree, out)) == 0
    failures = _failures(out)
    assert list(failures) == ["Deepfakes/000_001"]
    row = failures["Deepfakes/000_001"]
    assert row["reason"] == "error" and "No space left on device" in row["message"]
    assert row["path"] in row["message"] and "next run tries it again" in row["message"]
    assert sorted(_records_by_video(out)) == [
        "Face2Face/000_001", "FaceSwap/000_001", "real/000", "real/001"]  # fmt: skip
    assert not os.path.exists(target[: -len(".npz")] + ".json")  # retried on the next run


def test_videos_a_reader_leaves_out_are_counted_in_the_summary(
    three_fakes_tree, tmp_path, monkeypatch, capsys
):
    real_read = build.read_dataset

    def read(*args, **kwargs):  # as Celeb-DF's reader does for fakes across the val/train border
        items = real_read(*args, **kwargs)
        args[-1]["celebdf fakes"] = {"videos": 7, "why": "of 9 non-test fakes: ..."}
        return items

    monkeypatch.setattr(build, "read_dataset", read)
    out = tmp_path / "out"
    assert build.main(_argv(three_fakes_tree, out, "--methods", "FaceSwap")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["left_out"] == {
        "celebdf fakes": {"videos": 7, "why": "of 9 non-test fakes: ..."}
    }
    assert "left out on purpose: 7 celebdf fakes (of 9" in capsys.readouterr().err


def test_a_worker_that_dies_costs_only_its_video(three_fakes_tree, tmp_path, monkeypatch, capsys):
    import functools

    import _build_crash  # importable by the workers too (tests/ is on their sys.path)

    # Dies on Deepfakes/000_001 every time, with other videos in flight beside it.
    monkeypatch.setattr(
        build, "_init_worker", functools.partial(_build_crash.die_on, "Deepfakes/c23/videos")
    )
    out = tmp_path / "out"
    assert build.main(_argv(three_fakes_tree, out, "--workers", "2")) == 0
    failures = _failures(out)
    assert list(failures) == ["Deepfakes/000_001"]  # no innocent video blamed
    row = failures["Deepfakes/000_001"]
    assert row["reason"] == "worker_crashed" and row["records"] == 0
    assert row["path"] in row["message"] and "killed by SIGKILL" in row["message"]
    by = _records_by_video(out)
    assert sorted(by) == ["Face2Face/000_001", "FaceSwap/000_001", "real/000", "real/001"]
    assert all(len(v) == 3 for v in by.values())
    counts = json.loads((out / "summary.json").read_text())["counts"]["train"]
    assert counts["failed"] == 4 and counts["failures"] == {"missing_file": 3, "worker_crashed": 1}
    assert "missing_file=3, worker_crashed=1" in capsys.readouterr().err


def test_a_listed_video_not_on_disk_is_a_missing_file_failure(three_fakes_tree, tmp_path, capsys):
    # Before: the reader listed only the files present, so a partial download
    # built "successfully": one fewer video, no failures.jsonl row, nothing said.
    root = tmp_path / "ffpp"
    shutil.copytree(three_fakes_tree, root)
    real = root / "original_sequences/youtube/c23/videos/000.mp4"
    real.rename(tmp_path / "aside.mp4")
    out = tmp_path / "out"
    argv = _argv(root, out, "--methods", "FaceSwap")
    assert build.main(argv) == 0
    err = capsys.readouterr().err
    failures = _failures(out, missing=True)
    assert sorted(failures) == ["FaceSwap/001_000", "real/000"]
    row = failures["real/000"]
    assert row["reason"] == "missing_file" and row["records"] == 0 and row["label"] == 0
    assert row["path"] == str(real) and row["split"] == "train"
    assert f"{real} is not on disk, but {root / 'splits/train.json'} lists it" in row["message"]
    assert "download it and rerun" in row["message"]
    # Counted like any failure, per split, label and method, and said twice: before
    # the extraction and in the summary table.
    counts = json.loads((out / "summary.json").read_text())["counts"]["train"]
    assert counts["failures"] == {"missing_file": 2} and counts["videos"] == 4
    assert counts["by_label"]["real"] == {"videos": 2, "records": 3, "failed": 1}
    assert "warning: 2 listed videos are not on disk (a partial download?)" in err
    assert "missing_file=2" in err
    # Its original's absence costs a FF++ fake nothing (it is read without it).
    assert sorted(_records_by_video(out)) == ["FaceSwap/000_001", "real/001"]
    # Nothing is cached for it: once downloaded, the next run extracts it.
    (tmp_path / "aside.mp4").rename(real)
    assert build.main(argv) == 0
    assert sorted(_failures(out, missing=True)) == ["FaceSwap/001_000"]
    assert len(_records_by_video(out)["real/000"]) == 3


def test_a_broken_pools_worker_is_named_by_its_signal_after_shutdown():
    # The manager thread reaps the dead worker; reading its exit status from
    # here at the same time used to race it (the second reader records 255).
    import concurrent.futures as cf
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    import _build_crash

    ctx = multiprocessing.get_context("forkserver")
    for _ in range(3):
        pool = cf.ProcessPoolExecutor(1, mp_context=ctx)
        with pytest.raises(BrokenProcessPool):
            pool.submit(_build_crash.die_now).result()
        assert build._end_broken_pool(pool) == "killed by SIGKILL"
        assert pool._processes is None  # shut down: nothing left to reap


def test_a_crash_that_does_not_recur_blames_no_video(
    three_fakes_tree, tmp_path, monkeypatch, capsys
):
    import functools

    import _build_crash

    flag = tmp_path / "crashed-once"
    monkeypatch.setattr(
        build, "_init_worker",
        functools.partial(_build_crash.die_on, "Face2Face/c23/videos", str(flag)),
    )  # fmt: skip
    out = tmp_path / "out"
    assert build.main(_argv(three_fakes_tree, out, "--workers", "2")) == 0
    assert flag.exists()  # it did crash
    assert _failures(out) == {}
    assert len(_records_by_video(out)) == 5
    assert "none crashed" in capsys.readouterr().err


def _faceswap_built(tree, tmp_path):
    """A FaceSwap build in tmp_path/out: (its argv, OUT, its shards' version folder)."""
    out = tmp_path / "out"
    argv = _argv(tree, out, "--methods", "FaceSwap")
    assert build.main(argv) == 0
    return argv, out, out / "lda_faces" / "ffpp_n3_s32" / "1.0.0"


def test_a_rerun_removes_what_a_killed_run_left_and_nothing_else(three_fakes_tree, tmp_path):
    out = tmp_path / "out"
    argv = _argv(three_fakes_tree, out, "--methods", "FaceSwap")
    assert build.main(argv) == 0
    cache = out / "cache" / build.cache_params(3, 3, 32)
    config = out / "lda_faces" / "ffpp_n3_s32"
    # Killed in phase 1 (mid atomic_open: a dead writer of this host; before
    # data_prep.atomic_files, mkstemp's names) and in phase 2 (TFDS writing its temp dir).
    dead = f"tmp-{leftovers.HOST}-999999999-0123abcd"
    killed = [cache / f".000_001.npz.{dead}", out / f".manifest.json.{dead}",
              cache / ".tmp-k3j2h1.npz", out / ".tmp-9x8y7z.jsonl"]  # fmt: skip
    # A live writer's (another build on the same --out), another host's (a shared disk).
    alive = [cache / f".000_001.npz.tmp-{leftovers.HOST}-{os.getppid()}-0123abcd",
             cache / ".000_001.npz.tmp-elsewhere-999999999-0123abcd"]  # fmt: skip
    (config / "incomplete.AB12CD_1.0.0").mkdir()
    (config / "incomplete.AB12CD_1.0.0" / "lda_faces-train.array_record-00000-of-00001").touch()
    killed.append(config / "incomplete.AB12CD_1.0.0")
    keep = [cache / "notes.txt", *alive, config / "incomplete.AB12CD_2.0.0",
            config / "incomplete.x_1.0.0",
            out / "lda_faces" / "ffpp_n3_s64" / "incomplete.AB12CD_1.0.0"]  # fmt: skip
    for p in [*killed[:4], cache / "notes.txt", *alive]:
        p.write_bytes(b"x")
    for p in keep[3:]:
        p.mkdir(parents=True)
    assert build.main(argv) == 0
    assert [p for p in killed if p.exists()] == []
    assert all(p.exists() for p in keep)
    assert (config / "1.0.0" / "dataset_info.json").exists()


def test_shards_are_swapped_in_whole_and_a_failed_rewrite_keeps_the_old(
    three_fakes_tree, tmp_path, monkeypatch, capsys, exchange_works
):
    # The shards used to be deleted before the new ones were written: a damaged
    # cache entry, a full disk or a kill in the shard phase left no build at all.
    argv, out, data_dir = _faceswap_built(three_fakes_tree, tmp_path)

    def files():
        return {p.name: p.read_bytes() for p in sorted(data_dir.iterdir())}

    before = files()
    assert build.BUILD_ARGS in before and any(n.startswith("labels.") for n in before)
    # A killed run's staging folder (no such pid), and another host's (left alone).
    dead = data_dir.parent / f".tmp-shards-{leftovers.HOST}-999999999"
    (dead / "lda_faces").mkdir(parents=True)
    other_host = data_dir.parent / ".tmp-shards-elsewhere-999999999"
    other_host.mkdir()

    def fails(*a, **k):
        raise OSError(28, "No space left on device")

    from data_prep import record_index

    monkeypatch.setattr(record_index, "write_label_index", fails)  # after TFDS wrote shards
    with pytest.raises(OSError, match="No space left"):
        build.main(argv)
    assert files() == before  # the old build, whole
    staged = [p.name for p in data_dir.parent.iterdir() if p.name.startswith(".tmp-shards-")]
    assert staged == [other_host.name]

    from data_prep.builder import CacheError, LdaFaces

    def damaged(self, *a, **k):
        raise CacheError("cache entry of FaceSwap/000_003 is damaged")

    monkeypatch.undo()
    monkeypatch.setattr(LdaFaces, "build", damaged)
    capsys.readouterr()
    assert build.main(argv) == 1
    assert "cache entry of FaceSwap/000_003 is damaged" in capsys.readouterr().err
    assert files() == before
    monkeypatch.undo()
    assert build.main(argv) == 0  # and a run that succeeds replaces them
    assert files().keys() == before.keys()
    real_rename = os.rename

    def fails_second(src, dst):
        if dst == str(data_dir) and os.path.basename(src) != "replaced":  # the new build's
            raise OSError(18, "Invalid cross-device link")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", fails_second)
    if exchange_works:
        # Exchanged with the old shards in one step (atomic_files.swap_paths), not
        # renamed aside and in: a training run opening them never finds none.
        assert build.main(argv) == 0
        assert files() == before
    # Where the file system cannot exchange two folders, two renames: a second
    # that fails (EXDEV, say) puts the old shards back.
    monkeypatch.setattr(build, "swap_paths", lambda a, b: False)
    with pytest.raises(OSError, match="cross-device"):
        build.main(argv)
    monkeypatch.undo()
    assert files() == before


def test_a_run_killed_between_the_two_renames_leaves_the_old_shards_for_the_next(
    three_fakes_tree, tmp_path, monkeypatch
):
    # Where the file system cannot exchange two folders: killed after the old
    # shards went aside and before the new came in, no shards stand at all; the
    # next run's start puts the old ones back (it used to delete them with the
    # dead run's staging folder).
    argv, out, data_dir = _faceswap_built(three_fakes_tree, tmp_path)
    before = {p.name: p.read_bytes() for p in sorted(data_dir.iterdir())}

    class Killed(BaseException):
        """A kill -9: nothing after it runs, no clean-up either."""

    real_rename, renames = os.rename, []

    def killed_after_the_first(src, dst):  # the first of the swap's renames
        if renames:
            raise Killed
        if src == str(data_dir):
            renames.append(dst)
        return real_rename(src, dst)

    monkeypatch.setattr(build, "swap_paths", lambda a, b: False)
    monkeypatch.setattr(os, "rename", killed_after_the_first)
    real_rmtree = shutil.rmtree

    def rmtree(path, *a, **k):  # no clean-up of the staging folder (a kill runs none)
        if build._STAGING not in os.fspath(path):
            real_rmtree(path, *a, **k)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    with pytest.raises(Killed):
        build.main(argv)
    monkeypatch.undo()
    assert not data_dir.exists() and os.path.basename(renames[0]) == "replaced"
    build._staging_root(str(data_dir))  # what the next run does first
    assert {p.name: p.read_bytes() for p in sorted(data_dir.iterdir())} == before
    assert not [p for p in data_dir.parent.iterdir() if p.name.startswith(".tmp-shards-")][1:]


def test_workers_that_cannot_start_blame_no_video(three_fakes_tree, tmp_path, monkeypatch, capsys):
    import _build_crash

    monkeypatch.setattr(build, "_init_worker", _build_crash.fail_to_start)
    out = tmp_path / "out"
    assert build.main(_argv(three_fakes_tree, out, "--workers", "2")) == 1
    assert "error: worker processes die while starting" in capsys.readouterr().err
    assert not (out / "failures.jsonl").exists()  # no video was failed for it


def test_shards_of_other_settings_are_not_replaced_silently(three_fakes_tree, tmp_path, capsys):
    # --methods (or --compression, ...) is not in the TFDS config name
    # ffpp_n3_s32, so another such build would write into this one's folder.
    out = tmp_path / "out"
    assert build.main(_argv(three_fakes_tree, out)) == 0
    data_dir = out / "lda_faces" / "ffpp_n3_s32" / "1.0.0"
    recorded = json.loads((data_dir / build.BUILD_ARGS).read_text())
    assert recorded["methods"] == ["Deepfakes", "Face2Face", "FaceSwap"]  # as read, sorted
    assert recorded["root"] == str(three_fakes_tree)
    assert build.main(_argv(three_fakes_tree, out)) == 0  # the same build again: fine
    fewer = _argv(three_fakes_tree, out)
    fewer[fewer.index("--methods") + 1] = "Deepfakes"
    capsys.readouterr()
    assert build.main(fewer) == 2
    err = capsys.readouterr().err
    assert "--methods 'Deepfakes,Face2Face,FaceSwap' -> 'Deepfakes'" in err and "--replace" in err
    assert json.loads((data_dir / build.BUILD_ARGS).read_text()) == recorded  # untouched
    assert build.main([*fewer, "--replace"]) == 0
    assert json.loads((data_dir / build.BUILD_ARGS).read_text())["methods"] == ["Deepfakes"]
    # ...and the shards are the new build's, not the old ones left in place.
    assert sorted(_records_by_video(out)) == ["Deepfakes/000_001", "real/000", "real/001"]


def test_every_setting_that_changes_the_data_is_checked_before_replacing(
    three_fakes_tree, tmp_path, capsys
):
    argv, out, data_dir = _faceswap_built(three_fakes_tree, tmp_path)
    before = sorted(os.listdir(data_dir))
    splits = tmp_path / "splits"
    shutil.copytree(three_fakes_tree / "splits", splits)
    for flag, value in [
        ("--frames-per-video", "4"),
        ("--encoding", "zstd"),
        ("--splits", str(splits)),
        ("--root", os.path.relpath(three_fakes_tree)),  # the same root: no change
    ]:
        capsys.readouterr()
        rc = build.main([*argv, flag, value])
        err = capsys.readouterr().err
        if flag == "--root":
            assert rc == 0, err
        else:
            assert rc == 2 and f"{flag} " in err and "--replace" in err, (flag, err)
        assert sorted(os.listdir(data_dir)) == before
    # --compression names other videos (c40 has none here): checked the same way.
    a, b = build.parse_args(argv), build.parse_args([*argv, "--compression", "c40"])
    (data_dir / build.BUILD_ARGS).write_text(json.dumps(build.build_settings(a)))
    assert build.replaced_settings(str(data_dir), build.build_settings(b)) == [
        "--compression 'c23' -> 'c40'"
    ]


def test_a_changed_video_file_is_extracted_again(three_fakes_tree, tmp_path, monkeypatch):
    from data_prep import faces

    root = tmp_path / "ffpp"
    shutil.copytree(three_fakes_tree, root)
    out = tmp_path / "out"
    argv = _argv(root, out, "--methods", "FaceSwap")
    assert build.main(argv) == 0
    real_extract, calls = faces.extract_stacks, []

    def counted(path, *args):
        calls.append(os.path.basename(path))
        return real_extract(path, *args)

    monkeypatch.setattr(faces, "extract_stacks", counted)
    assert build.main(argv) == 0
    assert calls == []  # all cached
    # Another version of 001.mp4 at the same path (e.g. downloaded again, re-encoded).
    _video(root / "original_sequences/youtube/c23/videos/001.mp4", _face_frames(10)[::-1])
    assert build.main(argv) == 0
    assert calls == ["001.mp4"]
    frames = {r["frame_index"] for r in _records_by_video(out)["real/001"]}
    assert max(frames) + 3 < 10  # stacks of the 10-frame video, not the 12-frame one
    # A mask that appears later (FF++'s are a separate download): cut again, with it.
    mask = root / "manipulated_sequences/FaceSwap/c23/videos/000_001.masks.npz"
    mask.rename(tmp_path / "aside.npz")
    assert build.main(argv) == 0
    assert calls == ["001.mp4", "000_001.mp4"]
    assert not any(r["has_mask"] for r in _records_by_video(out)["FaceSwap/000_001"])
    (tmp_path / "aside.npz").rename(mask)
    assert build.main(argv) == 0
    assert calls == ["001.mp4", "000_001.mp4"]  # the first entry, with the mask, is reused
    assert all(r["has_mask"] for r in _records_by_video(out)["FaceSwap/000_001"])


# ------------------------------------------------- nothing computed is lost, no stale result


def test_a_cached_video_whose_stacks_are_gone_or_damaged_is_extracted_again(
    three_fakes_tree, tmp_path, monkeypatch, capsys
):
    # Before: the done marker alone said "cached"; the old shards were deleted and
    # TFDS then died on the missing .npz (FileNotFoundError), leaving no shards.
    from data_prep import faces

    out = tmp_path / "out"
    argv = _argv(three_fakes_tree, out, "--methods", "FaceSwap")
    assert build.main(argv) == 0
    before = {k: len(v) for k, v in _records_by_video(out).items()}
    assert before == {"FaceSwap/000_001": 3, "real/000": 3, "real/001": 3}
    cache = out / "cache" / build.cache_params(3, 3, 32)
    items = {it.video_id.split("/", 2)[2]: it for it in _items(three_fakes_tree, "FaceSwap")}
    gone = Path(build.cache_paths(str(cache), items["real/001"])[0])
    damaged = Path(build.cache_paths(str(cache), items["FaceSwap/000_001"])[0])
    gone.unlink()
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # a cut-off copy
    real_extract, calls = faces.extract_stacks, []

    def counted(path, *args):
        calls.append(os.path.basename(path))
        return real_extract(path, *args)

    monkeypatch.setattr(faces, "extract_stacks", counted)
    capsys.readouterr()
    assert build.main(argv) == 0
    err = capsys.readouterr().err
    assert sorted(calls) == ["000_001.mp4", "001.mp4"]  # those two only, extracted again
    assert f"warning: ffpp/c23/real/001: its stacks {gone} are missing; extracting it again" in err
    assert f"warning: ffpp/c23/FaceSwap/000_001: its stacks {damaged} cannot be read" in err
    assert {k: len(v) for k, v in _records_by_video(out).items()} == before

    # Damage the check cannot see (it reads the zip directory and frame_index only)
    # stops the shard writer with the video, the file and what to do; not a traceback.
    with np.load(damaged) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(damaged, **arrays)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the frames: their CRC fails on reading
    damaged.write_bytes(bytes(data))
    capsys.readouterr()
    assert build.main(argv) == 1
    err = capsys.readouterr().err
    marker = damaged.with_suffix(".json")
    assert f"error: ffpp/c23/FaceSwap/000_001: its cached stacks {damaged} cannot be read" in err
    assert f"delete {marker} and rerun the same command" in err
    marker.unlink()
    assert build.main(argv) == 0
    assert {k: len(v) for k, v in _records_by_video(out).items()} == before


def _items(root, methods):
    from data_prep.readers import read_dataset

    return read_dataset("ffpp", str(root), "c23", (methods,))


def test_cache_files_reach_the_disk_before_their_name_and_the_stacks_before_the_marker(
    three_fakes_tree, tmp_path, monkeypatch
):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    cache = tmp_path / "cache"
    cache.mkdir()
    item = _items(three_fakes_tree, "FaceSwap")[0]
    status = build.process_video(item, str(cache), 3, 3, 32)
    assert status["records"] == 3
    npz, marker = build.cache_paths(str(cache), item)
    renames = [e for e in events if e[0] == "rename"]
    assert [e[2] for e in renames] == [npz, marker]  # the stacks first: the marker means done
    for at, event in enumerate(events):
        if event[0] == "rename":
            # Each file's data is synced before it takes its name, the folder after it.
            assert events[at - 1] == ("fsync", event[1])
            assert events[at + 1] == ("fsync", str(cache))


def test_a_kill_while_writing_a_cache_entry_leaves_the_old_entry_whole(three_fakes_tree, tmp_path):
    # Cache entries go through data_prep.atomic_files: a kill -9 in the middle of
    # np.savez leaves the entry as it was (never half an .npz under its name) and
    # a hidden temp file of the dead writer, which the next run's start deletes.
    import subprocess
    import sys

    cache = tmp_path / "cache"
    cache.mkdir()
    item = _items(three_fakes_tree, "FaceSwap")[0]
    assert build.process_video(item, str(cache), 3, 3, 32)["records"] == 3
    npz, marker = build.cache_paths(str(cache), item)
    before = {p: Path(p).read_bytes() for p in (npz, marker)}
    code = (
        "import os, sys\n"
        "import numpy as np\n"
        "from data_prep import build\n"
        "from data_prep.readers import read_dataset\n"
        "def killed(f, **arrays):\n"
        "    f.write(b'PK half an npz'); f.flush(); os.kill(os.getpid(), 9)\n"
        "np.savez = killed\n"
        "item = read_dataset('ffpp', sys.argv[1], 'c23', ('FaceSwap',))[0]\n"
        "build.process_video(item, sys.argv[2], 3, 3, 32)\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", code, str(three_fakes_tree), str(cache)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.wait(timeout=300) == -9, writer.stderr.read()[-2000:]
    writer.stderr.close()
    assert {p: Path(p).read_bytes() for p in (npz, marker)} == before
    temps = [n for n in os.listdir(cache) if n.startswith(".")]
    assert len(temps) == 1, temps
    assert temps[0].startswith(f".{os.path.basename(npz)}.tmp-{leftovers.HOST}-{writer.pid}-")
    assert (cache / temps[0]).read_bytes() == b"PK half an npz"
    build._remove_stale_tmp(str(cache))  # what main does first
    assert sorted(os.listdir(cache)) == sorted(os.path.basename(p) for p in (npz, marker))


def test_an_unreadable_video_is_not_cached_so_a_rerun_tries_it_again(
    three_fakes_tree, tmp_path, monkeypatch
):
    # No read permission (simulated: the tests run as root, which ignores chmod).
    # The fix (chmod) leaves id, path and size -- the cache key -- as they were,
    # so a cached 'unreadable' outlived it: the video stayed failed forever.
    out = tmp_path / "out"
    argv = _argv(three_fakes_tree, out, "--methods", "FaceSwap")
    locked = str(three_fakes_tree / "original_sequences/youtube/c23/videos/001.mp4")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: p != locked and real_access(p, m))
    assert build.main(argv) == 0
    row = _failures(out)["real/001"]
    assert row["reason"] == "unreadable" and "check permissions" in row["message"]
    assert "not cached, so the next run tries it again" in row["message"]
    cache = out / "cache" / build.cache_params(3, 3, 32)
    item = next(it for it in _items(three_fakes_tree, "FaceSwap") if it.path == locked)
    assert not os.path.exists(build.cache_paths(str(cache), item)[1])
    monkeypatch.setattr(os, "access", real_access)  # the user fixed the permissions
    assert build.main(argv) == 0
    assert "real/001" not in _failures(out)
    assert len(_records_by_video(out)["real/001"]) == 3


def test_one_build_spelled_two_ways_is_not_refused_as_other_settings(
    three_fakes_tree, tmp_path, capsys
):
    # --splits ROOT/splits is the default; --methods in another order reads the same
    # videos and writes the same shards. Both were refused as "other settings".
    out = tmp_path / "out"
    assert build.main(_argv(three_fakes_tree, out)) == 0
    data_dir = out / "lda_faces" / "ffpp_n3_s32" / "1.0.0"
    recorded = json.loads((data_dir / build.BUILD_ARGS).read_text())
    assert recorded["methods"] == ["Deepfakes", "Face2Face", "FaceSwap"]
    assert recorded["splits"] == str(three_fakes_tree / "splits")
    again = _argv(three_fakes_tree, out, "--splits", str(three_fakes_tree / "splits"))
    again[again.index("--methods") + 1] = "FaceSwap,Deepfakes,Face2Face,FaceSwap"
    capsys.readouterr()
    assert build.main(again) == 0, capsys.readouterr().err

    def settings(*extra):
        base = ["--dataset", "ffpp", "--root", str(three_fakes_tree), "--out", "o", *ARGS]
        return build.build_settings(build.parse_args([*base, *extra]))

    # The default methods are the four of the paper, in any order and spelling.
    assert settings() == settings("--methods", "NeuralTextures,FaceSwap,Face2Face,Deepfakes")
    assert settings()["methods"] == ["Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"]
    assert settings() != settings("--methods", "Deepfakes")
    # DFDC and Celeb-DF read neither split files nor --compression.
    dfdc = ["--dataset", "dfdc", "--root", "r", "--out", "o"]
    assert build.build_settings(build.parse_args(dfdc)) == build.build_settings(
        build.parse_args([*dfdc, "--compression", "c40", "--splits", "s"])
    )
    # build_args.json of a build made before settings were resolved (--methods as typed,
    # splits null for the default) is the same build, not "other settings".
    old = {**recorded, "methods": "Deepfakes,FaceSwap,Face2Face", "splits": None}
    (data_dir / build.BUILD_ARGS).write_text(json.dumps(old))
    assert build.replaced_settings(str(data_dir), build.build_settings(
        build.parse_args(again)
    )) == []  # fmt: skip
    (data_dir / build.BUILD_ARGS).write_text(json.dumps({**old, "methods": ""}))
    assert build.replaced_settings(str(data_dir), settings()) == []
    assert build.replaced_settings(str(data_dir), settings("--methods", "Deepfakes")) == [
        "--methods 'Deepfakes,Face2Face,FaceSwap,NeuralTextures' -> 'Deepfakes'"
    ]


def test_per_method_counts_keep_a_methods_own_reals_apart_from_its_fakes():
    # DeepFakeDetection's reals carry its name (readers: its own originals), so its
    # by_method entry holds both classes: each entry is also counted per label.
    from data_prep.readers import VideoItem

    def item(vid, label, method):
        return VideoItem(f"/{vid}.mp4", label, "ffpp", "c23", method, vid, "test")

    items = [
        item("r0", 0, "real"),
        item("a0", 0, "DeepFakeDetection"),
        item("a1", 0, "DeepFakeDetection"),
        item("f0", 1, "DeepFakeDetection"),
        item("d0", 1, "Deepfakes"),
    ]
    status = {it.video_id: {"records": 2, "reason": None} for it in items}
    status["a1"] = {"records": 0, "reason": "no_face"}
    counts = build._counts(items, status)["test"]
    dfd = counts["by_method"]["DeepFakeDetection"]
    assert (dfd["videos"], dfd["records"], dfd["failed"]) == (3, 4, 1)
    assert dfd["by_label"] == {
        "real": {"videos": 2, "records": 2, "failed": 1},
        "fake": {"videos": 1, "records": 2, "failed": 0},
    }
    assert counts["by_method"]["real"]["by_label"] == {
        "real": {"videos": 1, "records": 2, "failed": 0}
    }
    assert counts["by_label"]["real"] == {"videos": 3, "records": 4, "failed": 1}
