"""Dataset readers on tiny trees in the official formats (no video is opened here)."""

import json
import logging
import random
import re

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
    # FF++'s own masks: videos one level above the compression, for raw/c23/c40 alike.
    _touch(tmp_path / "manipulated_sequences/FaceSwap/masks/videos/003_000.mp4")
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
    assert by_id["ffpp/c23/FaceSwap/003_000"].mask_path == str(
        tmp_path / "manipulated_sequences/FaceSwap/masks/videos/003_000.mp4"
    )
    assert by_id["ffpp/c23/FaceSwap/000_003"].mask_path is None
    assert all(by_id[i].mask_path is None for i in by_id if "/real/" in i)
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


def test_ffpp_selected_method_without_any_video_in_a_split_is_an_error(tmp_path):
    # Before: the method's fakes were skipped one by one and the build went on
    # with reals only. Now the error names the method, the folder and the fix.
    make_ffpp(tmp_path, methods=("Deepfakes", "FaceShifter"))
    fs = tmp_path / "manipulated_sequences/FaceShifter/c23/videos"
    for f in fs.iterdir():
        f.rename(fs / f"x{f.name}")  # no longer an FF++ pair name
    with pytest.raises(
        DatasetError,
        match=r"--methods FaceShifter: none of the 8 videos in .*"
        r"FaceShifter/c23/videos.*leave FaceShifter out of --methods",
    ):
        read_ffpp(str(tmp_path), "c23", ("Deepfakes", "FaceShifter"))
    for f in fs.iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match=r"none of the 0 videos in .*FaceShifter"):
        read_ffpp(str(tmp_path), "c23", ("FaceShifter",))
    assert {i.method for i in read_ffpp(str(tmp_path), "c23", ("Deepfakes",))} == {
        "real",
        "Deepfakes",
    }


def test_ffpp_a_method_missing_from_one_split_is_an_error(tmp_path):
    # A partial download: NeuralTextures' test fakes are missing. Before, the build
    # went on with a test split without NeuralTextures and said nothing.
    make_ffpp(tmp_path)
    nt = tmp_path / "manipulated_sequences/NeuralTextures/c23/videos"
    for name in ("006_007.mp4", "007_006.mp4"):
        (nt / name).unlink()
    with pytest.raises(
        DatasetError,
        match=r"--methods NeuralTextures: no video in '.*NeuralTextures/c23/videos' is named "
        r"after a pair of the test split \('.*splits/test.json'\), while Deepfakes, Face2Face, "
        r"FaceSwap have 6 test fakes.*leave NeuralTextures out of --methods",
    ):
        read_dataset("ffpp", str(tmp_path), "c23")
    # Named alone, or without it, the tree is fine.
    assert {i.split for i in read_ffpp(str(tmp_path), "c23", ("Deepfakes",))} == {
        "train", "val", "test",
    }  # fmt: skip
    # A split that no selected method has (a deliberate subset of every method) is no error.
    for m in ("Deepfakes", "Face2Face", "FaceSwap"):
        for name in ("006_007.mp4", "007_006.mp4"):
            (tmp_path / "manipulated_sequences" / m / "c23/videos" / name).unlink()
    items = read_dataset("ffpp", str(tmp_path), "c23")
    assert {i.method for i in items if i.split == "test"} == {"real"}


def test_ffpp_listed_videos_not_on_disk_are_handed_to_the_build(tmp_path, caplog):
    # Before: only the files present were listed, so a partial download (990 of
    # 1000 videos) built as if complete, with nothing said anywhere.
    make_ffpp(tmp_path)
    (tmp_path / "manipulated_sequences/FaceSwap/c23/videos/003_000.mp4").unlink()
    (tmp_path / "original_sequences/youtube/c23/videos/004.mp4").unlink()
    missing = []
    items = read_dataset("ffpp", str(tmp_path), "c23", missing=missing)
    assert len(items) == 8 + 4 * 8 - 2  # as before: the files present
    got = {m.item.video_id: m for m in missing}
    assert sorted(got) == ["ffpp/c23/FaceSwap/003_000", "ffpp/c23/real/004"]
    fake, real = got["ffpp/c23/FaceSwap/003_000"].item, got["ffpp/c23/real/004"].item
    assert (fake.label, fake.method, fake.split) == (1, "FaceSwap", "train")
    assert fake.path == str(tmp_path / "manipulated_sequences/FaceSwap/c23/videos/003_000.mp4")
    assert (real.label, real.method, real.split) == (0, "real", "val")
    assert got["ffpp/c23/real/004"].listed_in == str(tmp_path / "splits/val.json")
    # The fakes of a missing real are read as usual: FF++'s fakes need no original.
    assert {"ffpp/c23/Deepfakes/004_005", "ffpp/c23/Deepfakes/005_004"} <= {
        i.video_id for i in items
    }
    # A caller that does not collect them gets a warning naming one.
    with caplog.at_level(logging.WARNING, logger="data_prep.readers"):
        assert read_dataset("ffpp", str(tmp_path), "c23") == items
    assert "ffpp: 2 listed videos are not on disk, e.g. " in caplog.text
    # Only selected methods are expected.
    missing = []
    read_dataset("ffpp", str(tmp_path), "c23", ("Deepfakes",), missing=missing)
    assert [m.item.video_id for m in missing] == ["ffpp/c23/real/004"]


def test_ffpp_a_split_the_tree_leaves_out_is_not_missing(tmp_path):
    # A tree holding some splits of every method is a deliberate subset
    # (_check_every_split_has_each_method): its other splits' videos are not missing.
    make_ffpp(tmp_path)
    for f in (tmp_path / "manipulated_sequences").glob("*/c23/videos/00[67]_*.mp4"):
        f.unlink()
    missing = []
    read_dataset("ffpp", str(tmp_path), "c23", missing=missing)
    assert missing == []  # test's reals are there, no method has test fakes
    # Its reals are expected once one of them is there (one download holds all reals).
    (tmp_path / "original_sequences/youtube/c23/videos/006.mp4").unlink()
    read_dataset("ffpp", str(tmp_path), "c23", missing=missing)
    assert [m.item.video_id for m in missing] == ["ffpp/c23/real/006"]
    (tmp_path / "original_sequences/youtube/c23/videos/007.mp4").unlink()
    missing = []
    read_dataset("ffpp", str(tmp_path), "c23", missing=missing)
    assert missing == []  # nothing of test at all


def test_celebdf_listed_test_videos_not_on_disk_are_handed_to_the_build(tmp_path):
    # Before: one absent test video stopped the whole build (an error without a
    # fix); now it is a missing_file failure of the build, as for FF++.
    make_celebdf(tmp_path)
    (tmp_path / "Celeb-synthesis/id5_id6_0001.mp4").unlink()
    missing = []
    items = read_dataset("celebdf", str(tmp_path), missing=missing)
    assert sum(i.split == "test" for i in items) == 2
    [m] = missing
    assert m.item.video_id == "celebdf/Celeb-synthesis/id5_id6_0001"
    assert (m.item.label, m.item.method, m.item.split) == (1, "synthesis", "test")
    assert m.item.path == str(tmp_path / "Celeb-synthesis/id5_id6_0001.mp4")
    assert m.listed_in == str(tmp_path / "List_of_testing_videos.txt")


def test_a_file_where_a_folder_belongs_is_named_as_such(tmp_path):
    # Before: "dataset root not found", sending the user looking for a path that is there.
    make_ffpp(tmp_path / "root")
    (tmp_path / "file").write_text("")
    for read in (
        lambda: read_dataset("ffpp", str(tmp_path / "file")),
        lambda: read_dataset("celebdf", str(tmp_path / "file")),
        lambda: read_dataset("dfdc", str(tmp_path / "file")),
    ):
        with pytest.raises(DatasetError, match=r"dataset root is not a directory: .*file' is a"):
            read()
    with pytest.raises(DatasetError, match=r"--splits '.*file' is a file, not a directory"):
        read_dataset("ffpp", str(tmp_path / "root"), splits_dir=str(tmp_path / "file"))


def test_methods_named_twice_are_read_once_and_a_duplicate_id_is_named(tmp_path):
    make_ffpp(tmp_path, methods=("Deepfakes",))
    once = read_dataset("ffpp", str(tmp_path), "c23", ("Deepfakes",))
    assert read_dataset("ffpp", str(tmp_path), "c23", ("Deepfakes", "Deepfakes")) == once
    # Two files with one id: 000_003.mp4 and 000_003.avi in one folder.
    fakes = tmp_path / "manipulated_sequences/Deepfakes/c23/videos"
    _touch(fakes / "000_003.avi")
    with pytest.raises(DatasetError) as e:
        read_dataset("ffpp", str(tmp_path), "c23", ("Deepfakes",))
    assert "'ffpp/c23/Deepfakes/000_003'" in str(e.value)
    assert str(fakes / "000_003.avi") in str(e.value) and str(fakes / "000_003.mp4") in str(e.value)
    # DFDC: a row repeated in labels.csv names the label file too.
    _touch(tmp_path / "dfdc/test/aaa.mp4")
    (tmp_path / "dfdc/test/labels.csv").write_text("filename,label\naaa.mp4,1\naaa.mp4,1\n")
    with pytest.raises(DatasetError) as e:
        read_dataset("dfdc", str(tmp_path / "dfdc"))
    assert "'dfdc/test/aaa'" in str(e.value)
    assert f"listed in {str(tmp_path / 'dfdc/test/labels.csv')!r}" in str(e.value)


def make_dfd(root, actors=14, scenes=3, seed=0):
    """FF++'s DeepFakeDetection in its release layout; returns the file names.

    Like the real set (28 actors, 363 reals, 3068 fakes), each actor's scene is
    faked with several other actors' faces.
    """
    rng = random.Random(seed)
    ids = [f"{a:02d}" for a in range(1, actors + 1)]
    reals = [f"{a}__scene_{s}.mp4" for a in ids for s in range(scenes)]
    fakes = [
        f"{a}_{b}__scene_{s}__{rng.randrange(16**8):08X}.mp4"
        for a in ids
        for s in range(scenes)
        for b in rng.sample([b for b in ids if b != a], 4)
    ]
    for n in reals:
        _touch(root / "original_sequences/actors/c23/videos" / n)
    for n in fakes:
        _touch(root / "manipulated_sequences/DeepFakeDetection/c23/videos" / n)
    return reals, fakes


def _dfd_actors(item):
    return set(re.match(r"(\d+)(?:_(\d+))?__", item.video_id.split("/")[-1]).groups()) - {None}


def test_dfd_is_read_with_its_own_reals_and_an_actor_disjoint_split(tmp_path, caplog):
    # Before: every DFD fake was skipped (its names are no FF++ pair), its reals
    # never read, and the "DFD" build held FF++'s YouTube reals only.
    make_ffpp(tmp_path, methods=("Deepfakes",))
    reals, fakes = make_dfd(tmp_path)
    with caplog.at_level(logging.WARNING, logger="data_prep.readers"):
        items = read_dataset("ffpp", str(tmp_path), "c23", ("DeepFakeDetection",))
    # Only the actors' reals: YouTube's would be a real-vs-fake shortcut here.
    assert {i.method for i in items} == {"DeepFakeDetection"}
    assert sum(i.label == 0 for i in items) == len(reals)
    assert all("/actors/" in i.path for i in items if i.label == 0)
    actors = {
        s: set().union(*(_dfd_actors(i) for i in items if i.split == s))
        for s in ("train", "val", "test")
    }
    assert not (
        actors["train"] & actors["val"]
        or actors["train"] & actors["test"]
        or actors["val"] & actors["test"]
    )
    assert [len(actors[s]) for s in ("val", "test")] == [2, 2]  # 14 % of 14 actors each
    for s in ("train", "val", "test"):  # both classes everywhere: AUC works on each split
        assert {i.label for i in items if i.split == s} == {0, 1}, s
    dropped = len(fakes) - sum(i.label for i in items)
    assert 0 < dropped < len(fakes) / 2
    assert f"{dropped} of {len(fakes)} fakes left out" in caplog.text
    left_out = {}  # ...and told to the build, for its summary.json
    assert (
        read_dataset("ffpp", str(tmp_path), "c23", ("DeepFakeDetection",), None, left_out) == items
    )
    assert left_out == {
        "DeepFakeDetection fakes": {
            "videos": dropped,
            "why": f"of {len(fakes)}: they swap actors of two different splits",
        }
    }
    # With an FF++ method, YouTube's reals come back for it, split officially.
    both = read_dataset("ffpp", str(tmp_path), "c23", ("Deepfakes", "DeepFakeDetection"))
    assert sum(i.label == 0 for i in both) == len(reals) + 8
    assert {i.video_id: i.split for i in both}.items() >= {
        i.video_id: i.split for i in items
    }.items()


def test_dfd_reals_carry_dfd_as_their_method_and_youtube_reals_stay_real(tmp_path):
    # Per-method metrics pair a method's fakes with its originals: DFD's reals are
    # the actors' videos, not YouTube's, so they must not both be "real".
    make_ffpp(tmp_path, methods=("Deepfakes",))
    reals, _ = make_dfd(tmp_path)
    items = read_dataset("ffpp", str(tmp_path), "c23", ("Deepfakes", "DeepFakeDetection"))
    actors = [i for i in items if "/actors/" in i.path]
    youtube = [i for i in items if "/youtube/" in i.path]
    assert len(actors) == len(reals) and len(youtube) == 8
    assert {(i.label, i.method) for i in actors} == {(0, "DeepFakeDetection")}
    assert {(i.label, i.method) for i in youtube} == {(0, "real")}
    assert {i.method for i in items if i.label == 1} == {"Deepfakes", "DeepFakeDetection"}
    # Ids: the method, then the file's stem; a real's (AA__scene) is never a fake's.
    assert {i.video_id for i in actors} == {f"ffpp/c23/DeepFakeDetection/{n[:-4]}" for n in reals}
    assert len({i.video_id for i in items}) == len(items)


def test_dfd_errors_name_the_folder_and_file(tmp_path):
    reals, fakes = make_dfd(tmp_path)
    stray = tmp_path / "manipulated_sequences/DeepFakeDetection/c23/videos/clip.mp4"
    _touch(stray)
    with pytest.raises(
        DatasetError,
        match=r"clip.mp4.*not named like DeepFakeDetection's "
        r"AA_BB__<scene>__<code>.mp4",
    ):
        read_ffpp(str(tmp_path), "c23", ("DeepFakeDetection",))
    stray.unlink()
    for n in reals:
        (tmp_path / "original_sequences/actors/c23/videos" / n).unlink()
    with pytest.raises(
        DatasetError,
        match=r"DeepFakeDetection: no video files .* in "
        r".*original_sequences/actors/c23/videos",
    ):
        read_ffpp(str(tmp_path), "c23", ("DeepFakeDetection",))
    (tmp_path / "original_sequences/actors/c23/videos").rmdir()
    with pytest.raises(DatasetError, match=r"DeepFakeDetection real \(actors\) videos for c23"):
        read_ffpp(str(tmp_path), "c23", ("DeepFakeDetection",))


def test_dfd_with_too_few_actors_is_an_error_not_an_all_real_build(tmp_path):
    # The audit's tree: 3 actors, both fakes pair actors of two splits.
    _touch(tmp_path / "original_sequences/actors/c23/videos/01__outside_talking.mp4")
    for n in ("01_02__outside_talking__YVGY8LOK.mp4", "01_03__hugging_happy__ISF9SP4G.mp4"):
        _touch(tmp_path / "manipulated_sequences/DeepFakeDetection/c23/videos" / n)
    with pytest.raises(
        DatasetError,
        match=r"each of the 2 fakes in .*DeepFakeDetection/c23/"
        r"videos.* pairs actors of two different splits",
    ):
        read_dataset("ffpp", str(tmp_path), "c23", ("DeepFakeDetection",))


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


def test_celebdf_test_video_on_disk_under_another_extension_stays_in_test(tmp_path):
    # Before: membership was looked up with the listed extension, so a listed
    # .mp4 present as .avi (re-encoded) or .MP4 went to train/val -- test data
    # leaked into training -- and was not reported missing either.
    make_celebdf(tmp_path)
    (tmp_path / "Celeb-real/id0_0000.mp4").rename(tmp_path / "Celeb-real/id0_0000.avi")
    (tmp_path / "YouTube-real/00003.mp4").rename(tmp_path / "YouTube-real/00003.MP4")
    missing = []
    items = read_dataset("celebdf", str(tmp_path), missing=missing)
    by_id = {i.video_id: i for i in items}
    assert by_id["celebdf/Celeb-real/id0_0000"].split == "test"
    assert by_id["celebdf/Celeb-real/id0_0000"].path.endswith("id0_0000.avi")
    assert by_id["celebdf/YouTube-real/00003"].split == "test"
    assert sum(i.split == "test" for i in items) == 3 and not missing


def test_celebdf_inverted_labels_and_identity_val(tmp_path):
    make_celebdf(tmp_path)
    items = read_celebdf(str(tmp_path))
    by_id = {i.video_id: i for i in items}
    assert by_id["celebdf/Celeb-real/id0_0000"].split == "test"
    assert by_id["celebdf/Celeb-real/id0_0000"].label == 0  # listed as 1 = real
    assert by_id["celebdf/Celeb-synthesis/id5_id6_0001"].label == 1  # listed as 0 = fake
    assert by_id["celebdf/Celeb-synthesis/id5_id6_0001"].split == "test"
    assert sum(i.split == "test" for i in items) == 3
    # Val: non-empty, from training videos only, no identity shared with train.
    val_ids, train_ids = _celebdf_ids(items, "val"), _celebdf_ids(items, "train")
    assert val_ids and not (val_ids & train_ids)
    assert read_celebdf(str(tmp_path)) == items  # deterministic


def _celebdf_ids(items, split):
    # Every person in a video: id0_id16_0000 shows id0 and id16's face.
    return {
        p
        for i in items
        if i.split == split
        for p in re.findall(r"id\d+", i.video_id.split("/")[-1])
    }


# Celeb-DF v2 swaps faces within groups of look-alikes (its test list shows
# e.g. id7 and id10-id13 swapped only with each other), ~9 fakes per real video.
CELEBDF_GROUPS = (
    [0, 1, 2, 3, 4, 5, 6, 8, 9, 14, 15, 16, 17, 18],
    [7, 10, 11, 12, 13],
    list(range(19, 39)),
    list(range(39, 49)),
    list(range(49, 62)),
)


def make_celebdf_realistic(root, videos=3, seed=0):
    rng = random.Random(seed)
    names = {"Celeb-real": [], "Celeb-synthesis": [], "YouTube-real": []}
    for group in CELEBDF_GROUPS:
        for a in group:
            for k in range(videos):
                names["Celeb-real"].append(f"id{a}_{k:04d}.mp4")
                for b in rng.sample([b for b in group if b != a], min(len(group) - 1, 8)):
                    names["Celeb-synthesis"].append(f"id{a}_id{b}_{k:04d}.mp4")
    names["YouTube-real"] = [f"{k:05d}.mp4" for k in range(40)]
    for folder, files in names.items():
        for n in files:
            _touch(root / folder / n)
    test = [
        "1 Celeb-real/id0_0000.mp4",
        "1 YouTube-real/00003.mp4",
        "0 Celeb-synthesis/id20_id21_0001.mp4",
        "0 Celeb-synthesis/id7_id10_0000.mp4",
    ]
    (root / "List_of_testing_videos.txt").write_text("\n".join(test) + "\n")
    return names


def test_celebdf_val_shares_no_face_with_train_on_a_realistic_tree(tmp_path, caplog):
    # Before: a fake idA_idB went to val by idA alone, so idB's face (in
    # train's real videos) was in val too.
    names = make_celebdf_realistic(tmp_path)
    with caplog.at_level(logging.WARNING, logger="data_prep.readers"):
        items = read_celebdf(str(tmp_path))
    val_ids, train_ids = _celebdf_ids(items, "val"), _celebdf_ids(items, "train")
    assert len(val_ids) == 6 and not (val_ids & train_ids)  # 10 % of 62 celebrities
    assert {i.label for i in items if i.split == "val"} == {0, 1}
    assert sum(i.label for i in items if i.split == "val") >= 50
    assert any(i.split == "val" for i in items if "YouTube-real" in i.video_id)
    # The official test list is kept whole, even where it shares val identities.
    assert sorted(i.video_id for i in items if i.split == "test") == [
        "celebdf/Celeb-real/id0_0000",
        "celebdf/Celeb-synthesis/id20_id21_0001",
        "celebdf/Celeb-synthesis/id7_id10_0000",
        "celebdf/YouTube-real/00003",
    ]
    # Fakes across the val/train border are left out, few of them, and said so.
    dropped = len(names["Celeb-synthesis"]) - sum(i.label for i in items)
    assert 0 < dropped < 0.1 * len(names["Celeb-synthesis"])
    assert f"celebdf: {dropped} of {len(names['Celeb-synthesis']) - 2} non-test fakes left out" in (
        caplog.text
    )
    assert sum(i.label == 0 for i in items) == len(names["Celeb-real"]) + 40
    left_out = {}
    assert read_dataset("celebdf", str(tmp_path), left_out=left_out) == sorted(
        items, key=lambda i: i.video_id
    )  # deterministic
    assert left_out["celebdf fakes"]["videos"] == dropped


def test_celebdf_bad_file_name_is_named(tmp_path):
    make_celebdf(tmp_path)
    _touch(tmp_path / "Celeb-synthesis" / "id3_0000.mp4")
    with pytest.raises(DatasetError, match=r"Celeb-synthesis/id3_0000.mp4.*not a Celeb-DF v2 name"):
        read_celebdf(str(tmp_path))


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
    # A fake's original is kept where it is on disk (data_prep.originals compares
    # them); one not downloaded (x.mp4) leaves the fake without, as do reals.
    originals = {i.video_id: i.original_path for i in items}
    assert originals == {
        "dfdc/dfdc_train_part_0/aaa": None,
        "dfdc/dfdc_train_part_0/bbb": str(tmp_path / "dfdc_train_part_0/aaa.mp4"),
        "dfdc/dfdc_test/ccc": None,
        "dfdc/dfdc_train_part_1/aaa": None,
    }
    # A part lists thousands of files: the message names the entry and what is wrong.
    for bad, what in [
        ({"ok.mp4": {"label": "REAL"}, "ccc.mp4": {"label": "MAYBE"}}, "label 'MAYBE', not REAL"),
        ({"ccc.mp4": {"lable": "FAKE"}}, "has no 'label'"),
        ({"ccc.mp4": "FAKE"}, "has no 'label'"),
        ({"ccc.mp4": {"label": "FAKE", "original": 7}}, "'original' 7 is not a file name"),
    ]:
        (tmp_path / "dfdc_test/metadata.json").write_text(json.dumps(bad))
        with pytest.raises(DatasetError, match="dfdc_test.*metadata.json") as e:
            read_dfdc(str(tmp_path))
        assert "entry 'ccc.mp4'" in str(e.value) and what in str(e.value), str(e.value)
    for bad, what in [("[1, 2]", "holds a list"), ("{oops", "not JSON")]:
        (tmp_path / "dfdc_test/metadata.json").write_text(bad)
        with pytest.raises(DatasetError, match=what):
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


def test_dfdc_renamed_held_out_part_leaves_train(tmp_path):
    # DFDC's own metadata.json says "split": "train" on every entry; before,
    # that beat the folder name, so a part renamed to be held out stayed train.
    for part in ("dfdc_train_part_0", "val_part_48", "test_part_49"):
        meta = {}
        for k, lab in (("a.mp4", "REAL"), ("b.mp4", "FAKE")):
            _touch(tmp_path / part / k)
            meta[k] = {
                "label": lab,
                "split": "train",
                "original": None if lab == "REAL" else "a.mp4",
            }
        (tmp_path / part / "metadata.json").write_text(json.dumps(meta))
    got = {i.video_id: i.split for i in read_dfdc(str(tmp_path))}
    assert got == {
        "dfdc/dfdc_train_part_0/a": "train",
        "dfdc/dfdc_train_part_0/b": "train",
        "dfdc/val_part_48/a": "val",
        "dfdc/val_part_48/b": "val",
        "dfdc/test_part_49/a": "test",
        "dfdc/test_part_49/b": "test",
    }
    # A per-file split that contradicts a held-out folder is an error, not a guess.
    meta = json.loads((tmp_path / "test_part_49/metadata.json").read_text())
    meta["b.mp4"]["split"] = "validation"
    (tmp_path / "test_part_49/metadata.json").write_text(json.dumps(meta))
    with pytest.raises(
        DatasetError,
        match=r"test_part_49/metadata.json: b.mp4: 'split' 'val' "
        r"contradicts the split 'test'",
    ):
        read_dfdc(str(tmp_path))
    meta["b.mp4"]["split"] = "holdout"
    (tmp_path / "test_part_49/metadata.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=r"b.mp4: split 'holdout' is not train/val/test"):
        read_dfdc(str(tmp_path))


def test_dfdc_labels_csv_label_words_and_pandas_floats(tmp_path):
    # labels.csv may say REAL/FAKE (any case) or 0.0/1.0 instead of 0/1; 1 = FAKE = fake.
    rows = {"a.mp4": "FAKE", "b.mp4": "real", "c.mp4": "Fake", "d.mp4": "0.0", "e.mp4": "1.0"}
    for name in rows:
        _touch(tmp_path / "test" / name)
    text = "filename,label\n" + "".join(f"{n},{v}\n" for n, v in rows.items())
    (tmp_path / "test/labels.csv").write_text(text)
    got = {i.video_id: (i.label, i.method) for i in read_dfdc(str(tmp_path))}
    assert got == {
        "dfdc/test/a": (1, "fake"),
        "dfdc/test/b": (0, "real"),
        "dfdc/test/c": (1, "fake"),
        "dfdc/test/d": (0, "real"),
        "dfdc/test/e": (1, "fake"),
    }


def test_dfdc_split_is_the_label_folders_own_name_as_a_whole_word(tmp_path):
    # --root at the folder holding labels.csv: before, the relative path '.' gave
    # split train and ids 'dfdc/./aaa'.
    t = tmp_path / "dfdc/test"
    for name in ("aaa.mp4", "bbb.mp4"):
        _touch(t / name)
    (t / "labels.csv").write_text("filename,label\naaa.mp4,1\nbbb.mp4,0\n")
    got = {i.video_id: (i.split, i.label) for i in read_dataset("dfdc", str(t))}
    assert got == {"dfdc/aaa": ("test", 1), "dfdc/bbb": ("test", 0)}
    # A parent's name says nothing ('interval' contains 'val'), nor does a parent
    # named like a split: only the label file's own folder, by whole words.
    for folder in ("interval_copies/dfdc_train_part_0", "val_runs/part_1", "validation"):
        _touch(tmp_path / "dfdc" / folder / "c.mp4")
        (tmp_path / "dfdc" / folder / "metadata.json").write_text(
            json.dumps({"c.mp4": {"label": "REAL", "split": "train"}})
        )
    got = {i.video_id: i.split for i in read_dataset("dfdc", str(tmp_path / "dfdc"))}
    assert got == {
        "dfdc/test/aaa": "test",
        "dfdc/test/bbb": "test",
        "dfdc/interval_copies/dfdc_train_part_0/c": "train",
        "dfdc/val_runs/part_1/c": "train",
        "dfdc/validation/c": "val",
    }
    (tmp_path / "dfdc/validation").rename(tmp_path / "dfdc/test_val")
    with pytest.raises(DatasetError, match=r"test_val/metadata.json: its folder's name .* both"):
        read_dataset("dfdc", str(tmp_path / "dfdc"))
