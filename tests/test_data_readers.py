"""Dataset readers on tiny trees in the official formats (no video is opened here)."""

import json

import pytest

from data_prep.readers import DatasetError, read_celebdf, read_dataset, read_dfdc, read_ffpp


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def make_ffpp(root, comp="c23", methods=("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")):
    # Official format: each split JSON lists [target, source] pairs.
    splits = {
        "train": [["000", "003"], ["001", "002"]],
        "val": [["004", "005"]],
        "test": [["006", "007"]],
    }
    (root / "splits").mkdir(parents=True)
    for name, pairs in splits.items():
        (root / "splits" / f"{name}.json").write_text(json.dumps(pairs))
    for i in range(8):
        _touch(root / "original_sequences/youtube" / comp / "videos" / f"{i:03d}.mp4")
    for m in methods:
        for pairs in splits.values():
            for a, b in pairs:
                for t, s in ((a, b), (b, a)):
                    _touch(root / "manipulated_sequences" / m / comp / "videos" / f"{t}_{s}.mp4")
    return splits


def test_ffpp_splits_labels_and_unique_ids(tmp_path):
    make_ffpp(tmp_path)
    (tmp_path / "manipulated_sequences/Deepfakes/c23/videos/006_007.masks.npz").write_bytes(b"")
    items = read_dataset("ffpp", str(tmp_path), "c23")
    assert len(items) == 8 + 4 * 8
    ids = [i.video_id for i in items]
    assert len(set(ids)) == len(ids)  # 000_003 exists for four methods: four ids
    by_id = {i.video_id: i for i in items}
    assert by_id["ffpp/c23/real/004"].split == "val" and by_id["ffpp/c23/real/004"].label == 0
    # A fake belongs to the split of its pair, in either order.
    assert by_id["ffpp/c23/FaceSwap/003_000"].split == "train"
    assert by_id["ffpp/c23/Face2Face/007_006"].split == "test"
    assert by_id["ffpp/c23/Face2Face/007_006"].label == 1
    assert by_id["ffpp/c23/Deepfakes/006_007"].mask_path.endswith("006_007.masks.npz")
    assert by_id["ffpp/c23/Deepfakes/007_006"].mask_path is None
    counts = {s: sum(i.split == s for i in items) for s in ("train", "val", "test")}
    assert counts == {"train": 20, "val": 10, "test": 10}


def test_ffpp_method_subset_and_errors(tmp_path):
    make_ffpp(tmp_path, methods=("Deepfakes", "FaceSwap"))
    items = read_ffpp(str(tmp_path), "c23", ("FaceSwap",))
    assert {i.method for i in items} == {"real", "FaceSwap"}
    with pytest.raises(DatasetError, match="unknown method.*FaceSwop"):
        read_ffpp(str(tmp_path), "c23", ("FaceSwop",))
    with pytest.raises(DatasetError, match="Face2Face"):  # known but absent on disk
        read_ffpp(str(tmp_path), "c23", ("Face2Face",))
    with pytest.raises(DatasetError, match="c40"):
        read_ffpp(str(tmp_path), "c40", ("FaceSwap",))
    with pytest.raises(DatasetError, match="dataset root"):
        read_ffpp(str(tmp_path / "nope"), "c23")
    (tmp_path / "splits/val.json").unlink()
    with pytest.raises(DatasetError, match="val.json"):
        read_ffpp(str(tmp_path), "c23", ("FaceSwap",))


def test_ffpp_splits_dir_option_and_bad_json(tmp_path):
    make_ffpp(tmp_path / "root")
    (tmp_path / "root/splits").rename(tmp_path / "mysplits")
    assert read_ffpp(str(tmp_path / "root"), splits_dir=str(tmp_path / "mysplits"))
    (tmp_path / "mysplits/test.json").write_text('{"not": "pairs"}')
    with pytest.raises(DatasetError, match="test.json"):
        read_ffpp(str(tmp_path / "root"), splits_dir=str(tmp_path / "mysplits"))


def make_celebdf(root):
    files = {
        "Celeb-real": [f"id{i}_{j:04d}.mp4" for i in range(62) for j in range(2)],
        "Celeb-synthesis": [
            f"id{i}_id{(i + 1) % 62}_{j:04d}.mp4" for i in range(62) for j in range(2)
        ],
        "YouTube-real": [f"{k:05d}.mp4" for k in range(10)],
    }
    for folder, names in files.items():
        for n in names:
            _touch(root / folder / n)
    # Official list: 1 = REAL, 0 = FAKE (the opposite of our labels).
    test = [
        "1 Celeb-real/id0_0000.mp4",
        "1 YouTube-real/00003.mp4",
        "0 Celeb-synthesis/id5_id6_0001.mp4",
    ]
    (root / "List_of_testing_videos.txt").write_text("\n".join(test) + "\n")
    return files


def test_celebdf_inverted_labels_and_identity_val(tmp_path):
    make_celebdf(tmp_path)
    items = read_celebdf(str(tmp_path))
    by_id = {i.video_id: i for i in items}
    assert by_id["celebdf/Celeb-real/id0_0000"].split == "test"
    assert by_id["celebdf/Celeb-real/id0_0000"].label == 0  # listed as 1 = real
    assert by_id["celebdf/Celeb-synthesis/id5_id6_0001"].label == 1  # listed as 0 = fake
    assert by_id["celebdf/Celeb-synthesis/id5_id6_0001"].split == "test"
    assert sum(i.split == "test" for i in items) == 3
    # Val: non-empty, from training videos only, whole identities (target id for fakes).
    val_ids = {i.video_id.split("/")[-1].split("_")[0] for i in items if i.split == "val"}
    train_ids = {i.video_id.split("/")[-1].split("_")[0] for i in items if i.split == "train"}
    assert val_ids and not (val_ids & train_ids)
    assert read_celebdf(str(tmp_path)) == items  # deterministic


def test_celebdf_bad_list(tmp_path):
    make_celebdf(tmp_path)
    (tmp_path / "List_of_testing_videos.txt").write_text("real Celeb-real/id0_0000.mp4\n")
    with pytest.raises(DatasetError, match=r"List_of_testing_videos.txt:1"):
        read_celebdf(str(tmp_path))
    (tmp_path / "List_of_testing_videos.txt").unlink()
    with pytest.raises(DatasetError, match="test list missing"):
        read_celebdf(str(tmp_path))


def test_dfdc_metadata(tmp_path):
    for part, entries in {
        "dfdc_train_part_0": {
            "aaa.mp4": {"label": "REAL"},
            "bbb.mp4": {"label": "FAKE", "original": "aaa.mp4"},
        },
        "dfdc_test": {"ccc.mp4": {"label": "FAKE", "original": "x.mp4"}},
        "dfdc_train_part_1": {
            "aaa.mp4": {"label": "REAL", "split": "val"},
            "gone.mp4": {"label": "REAL"},
        },
    }.items():
        for name in entries:
            if name != "gone.mp4":
                _touch(tmp_path / part / name)
        (tmp_path / part / "metadata.json").write_text(json.dumps(entries))
    items = read_dfdc(str(tmp_path))
    got = {i.video_id: (i.label, i.split) for i in items}
    assert got == {
        "dfdc/dfdc_train_part_0/aaa": (0, "train"),
        "dfdc/dfdc_train_part_0/bbb": (1, "train"),
        "dfdc/dfdc_test/ccc": (1, "test"),
        "dfdc/dfdc_train_part_1/aaa": (0, "val"),  # same file name, other part: other id
    }
    (tmp_path / "dfdc_test/metadata.json").write_text(json.dumps({"ccc.mp4": {"label": "MAYBE"}}))
    with pytest.raises(DatasetError, match="dfdc_test.*metadata.json"):
        read_dfdc(str(tmp_path))


def test_dfdc_labels_csv_of_the_full_release(tmp_path):
    # The full release labels test/ and validation/ with labels.csv (1 = fake),
    # the train parts with metadata.json; both kinds in one root.
    for name in ("aaa.mp4", "bbb.mp4"):
        _touch(tmp_path / "test" / name)
    (tmp_path / "test/labels.csv").write_text("filename,label\naaa.mp4,1\nbbb.mp4,0\ngone.mp4,1\n")
    _touch(tmp_path / "validation" / "vvv.mp4")
    (tmp_path / "validation/labels.csv").write_text("filename,label\nvvv.mp4,1.0\n")
    _touch(tmp_path / "dfdc_train_part_0" / "aaa.mp4")
    (tmp_path / "dfdc_train_part_0/metadata.json").write_text(
        json.dumps({"aaa.mp4": {"label": "REAL"}})
    )
    got = {i.video_id: (i.label, i.split, i.method) for i in read_dataset("dfdc", str(tmp_path))}
    assert got == {
        "dfdc/test/aaa": (1, "test", "fake"),
        "dfdc/test/bbb": (0, "test", "real"),
        "dfdc/validation/vvv": (1, "val", "fake"),
        "dfdc/dfdc_train_part_0/aaa": (0, "train", "real"),
    }
    (tmp_path / "test/labels.csv").write_text("filename,label\naaa.mp4,1\nbbb.mp4,2\n")
    with pytest.raises(DatasetError, match=r"test/labels.csv:3: bad row"):
        read_dfdc(str(tmp_path))
    (tmp_path / "test/labels.csv").write_text("name,is_fake\naaa.mp4,1\n")
    with pytest.raises(DatasetError, match=r"test/labels.csv: header .* lacks 'filename'"):
        read_dfdc(str(tmp_path))


def test_dfdc_without_any_label_file_is_a_clear_error(tmp_path):
    _touch(tmp_path / "test" / "aaa.mp4")
    with pytest.raises(DatasetError, match="no metadata.json or labels.csv"):
        read_dfdc(str(tmp_path))
