"""Dataset readers: a dataset tree on disk -> a list of labelled videos with splits.

Each reader checks the tree before any work starts and raises DatasetError
naming the missing path and what to do. Single videos that the dataset's own
lists name but that are not on disk are no such error: they are handed to the
build (MissingVideo), which records each as a failure. Video ids are unique across dataset,
compression and method ('ffpp/c23/Deepfakes/000_003'): FF++ reuses the file
name 000_003.mp4 for all four methods, and grouping frames by file name alone
merges four different fakes into one "video".
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import json
import logging
import os
import re

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
# Other manipulated_sequences/ folders of FF++ that may be selected explicitly.
FFPP_EXTRA_METHODS = ("FaceShifter", "DeepFakeDetection")
# Google/Jigsaw's DeepFakeDetection set, shipped inside FF++ but outside its split files.
DFD = "DeepFakeDetection"
# The synthetic set (data_prep.synthesize), one method per defect class of paper Sec. III.
SYNTHETIC_METHODS = ("Upsampling", "MismatchedColor", "AbnormalStructure", "TemporalJitter")
COMPRESSIONS = ("raw", "c23", "c40")
MASK_SUFFIX = ".masks.npz"

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """The dataset tree or the arguments cannot be used; raised before any work."""


@dataclasses.dataclass(frozen=True)
class VideoItem:
    path: str
    label: int  # 0 real, 1 fake
    dataset: str
    compression: str
    # The manipulation of a fake. A real video: the manipulation whose own
    # originals it is, where that manipulation has its own (DeepFakeDetection's
    # actors videos); else 'real' (FF++'s YouTube originals, shared by the
    # other methods; Celeb-DF's and DFDC's reals). ``label`` says real or fake.
    method: str
    video_id: str
    split: str
    mask_path: str | None = None  # the fake's masks, if present (_mask_for)
    # The video a fake was made from, where the dataset names it (DFDC's
    # metadata.json 'original') and it is on disk: data_prep.originals.
    original_path: str | None = None


@dataclasses.dataclass(frozen=True)
class MissingVideo:
    """A video the dataset's own lists name that is not on disk (a partial
    download): the build records it as a failure ('missing_file'), so that the
    shards it writes are never silently short of it."""

    item: VideoItem  # as the reader would have read it, at the path it should have
    listed_in: str  # the file that names it: FF++'s split JSON, Celeb-DF's test list


def _ffpp_id(dataset: str, compression: str, group: str, stem: str) -> str:
    """'ffpp/c23/Deepfakes/000_003' (group: 'real' or the method): one spelling for
    the videos read and the ones found missing, which a rerun must match by id."""
    return f"{dataset}/{compression}/{group}/{stem}"


def _need_dir(path: str, what: str) -> None:
    # A file where a folder belongs is no "not found": that would send the user
    # looking for a path that is there.
    if os.path.exists(path) and not os.path.isdir(path):
        raise DatasetError(f"{what} is not a directory: {path!r} is a file; check --root")
    if not os.path.isdir(path):
        raise DatasetError(f"{what} not found: {path!r}; check --root")


def _note_missing(
    missing: list[MissingVideo] | None, absent: list[MissingVideo], name: str
) -> None:
    """Hands listed-but-absent videos to the caller (``missing``: the build, which
    records each in failures.jsonl and its summary), or logs them if it takes none."""
    if missing is not None:
        missing.extend(absent)
    elif absent:
        log.warning(
            "%s: %d listed videos are not on disk, e.g. %s (listed in %s)",
            name, len(absent), absent[0].item.path, absent[0].listed_in,
        )  # fmt: skip


def _videos_in(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith((".mp4", ".avi", ".mkv")))


def _mask_for(video_path: str) -> str | None:
    """A fake's manipulated-region mask (data_prep.masks): <video>.masks.npz beside
    it (the synthetic set), else FF++'s mask video, one level above the
    compression: manipulated_sequences/<method>/masks/videos/<video>.mp4."""
    p = os.path.splitext(video_path)[0] + MASK_SUFFIX
    if os.path.isfile(p):
        return p
    method_dir = os.path.dirname(os.path.dirname(os.path.dirname(video_path)))
    p = os.path.join(method_dir, "masks", "videos", os.path.basename(video_path))
    return p if os.path.isfile(p) else None


def _stable_hash(key: str) -> int:
    # Not Python's salted hash(): the same splits on every machine and run.
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)


def _hold_out(
    fakes: collections.Counter, with_real: set[str], candidates: list[str], k: int
) -> frozenset[str]:
    """k of `candidates` to hold out as one split, chosen so that few fakes are lost.

    `fakes` counts fake videos by the frozenset of identities each one shows
    (the original's person and the face swapped in). Identity-disjoint splits
    can keep a fake only if all its identities are on one side, so a fake with
    one identity held out and one not is dropped. People are swapped with a
    few others only (Celeb-DF swaps within groups of look-alikes), so k
    identities drawn by hash drop most fakes touching them and keep few: on a
    simulated Celeb-DF (62 ids in 5 groups, ~5,100 fakes) 6 hashed ids kept
    50-75 fakes and dropped ~1,150; this choice kept 200-260 and dropped
    145-230. A set is grown from each candidate in turn, each step adding the
    identity sharing the most fakes with the set (then the one with fewest
    fakes, then hash order); the set dropping the fewest fakes (then keeping
    the most) wins, among those holding a fake and an identity with a real
    video. Deterministic for given files; < 0.1 s at Celeb-DF's size.
    """
    order = sorted(candidates, key=lambda i: (_stable_hash(i), i))
    if k <= 0 or k >= len(order):
        return frozenset(order[: max(k, 0)])
    rank = {c: n for n, c in enumerate(order)}
    shared: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    degree: collections.Counter = collections.Counter()
    for ids, n in fakes.items():
        for a in ids:
            degree[a] += n
            for b in ids - {a}:
                shared[a][b] += n
    best, best_score = frozenset(order[:k]), None
    for seed in order:
        held = {seed}
        while len(held) < k:
            held.add(
                min(
                    (c for c in order if c not in held),
                    key=lambda c: (-sum(shared[c][h] for h in held), degree[c], rank[c]),
                )
            )
        kept = sum(n for ids, n in fakes.items() if ids <= held)
        lost = sum(n for ids, n in fakes.items() if ids & held and not ids <= held)
        if kept and held & with_real and (best_score is None or (lost, -kept) < best_score):
            best, best_score = frozenset(held), (lost, -kept)
    return best


def _warn_if_one_class(name: str, items: list[VideoItem]) -> None:
    # A split of one class has no ROC AUC: checkpoints cannot be chosen on it.
    for split in sorted({i.split for i in items}):
        labels = {i.label for i in items if i.split == split}
        if len(labels) == 1:
            log.warning(
                "%s: split %r holds only %s videos; add videos or check the tree",
                name, split, "fake" if labels == {1} else "real",
            )  # fmt: skip


def _split_by_identity(ids: frozenset[str], held: dict[str, frozenset[str]]) -> str | None:
    """'train', a held-out split holding all of ids, or None if ids straddle splits."""
    for split, members in held.items():
        if ids <= members:
            return split
    return None if any(ids & members for members in held.values()) else "train"


# ---------------------------------------------------------------- FaceForensics++


def read_ffpp_splits(splits_dir: str) -> dict[frozenset, str]:
    """Official FF++ split JSONs: {frozenset({target, source}): split}."""
    if os.path.exists(splits_dir) and not os.path.isdir(splits_dir):
        raise DatasetError(
            f"--splits {splits_dir!r} is a file, not a directory; pass the folder holding "
            "train.json, val.json and test.json"
        )
    pairs = {}
    for split in ("train", "val", "test"):
        path = os.path.join(splits_dir, f"{split}.json")
        if not os.path.isfile(path):
            raise DatasetError(
                f"FF++ split file missing: {path!r}; download train/val/test.json from the "
                "FaceForensics++ repository (dataset/splits) into ROOT/splits or pass --splits DIR"
            )
        try:
            with open(path) as f:
                data = json.load(f)
            for a, b in data:
                pairs[frozenset((str(a), str(b)))] = split
        except (ValueError, TypeError) as e:
            raise DatasetError(f"{path!r} is not a list of [target, source] id pairs ({e})") from e
    return pairs


def resolve_methods(dataset: str, methods: tuple[str, ...] | None) -> tuple[str, ...]:
    """The methods a build of ``dataset`` reads: ``methods`` without repeats (first
    place kept), or the default (FF++: the paper's four; synthetic: its four) when
    none are named; () for datasets without methods (Celeb-DF, DFDC)."""
    if dataset not in ("ffpp", "synthetic"):
        return tuple(dict.fromkeys(methods or ()))
    default = SYNTHETIC_METHODS if dataset == "synthetic" else FFPP_METHODS
    # A method named twice would be read twice: the same videos under the same ids.
    return tuple(dict.fromkeys(methods)) if methods else default


def read_ffpp(
    root: str,
    compression: str = "c23",
    methods: tuple[str, ...] | None = None,
    splits_dir: str | None = None,
    dataset: str = "ffpp",
    left_out: dict | None = None,
    missing: list[MissingVideo] | None = None,
) -> list[VideoItem]:
    """FF++ layout; also the synthetic set's (dataset='synthetic').

    original_sequences/youtube/<comp>/videos/NNN.mp4 (real) and
    manipulated_sequences/<Method>/<comp>/videos/TTT_SSS.mp4 (fake). A real video
    takes the split of the pair holding its id, a fake the split of its pair.
    Videos outside every split are ignored (the official JSONs cover all 1000),
    but a selected method without any video, or without any in a split where
    another selected method has some, is a DatasetError. Videos the split files
    name but that are not on disk go to ``missing`` (_ffpp_missing), not to the
    list returned. DeepFakeDetection has its own reals and actor split: _read_dfd.
    """
    known = SYNTHETIC_METHODS if dataset == "synthetic" else FFPP_METHODS + FFPP_EXTRA_METHODS
    methods = resolve_methods(dataset, methods)
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise DatasetError(f"unknown method(s) {unknown} for {dataset}; known: {list(known)}")
    if compression not in COMPRESSIONS:
        raise DatasetError(f"--compression {compression!r}: choose one of {list(COMPRESSIONS)}")
    _need_dir(root, "dataset root")

    items = []
    found_reals: set[str] = set()  # real ids on disk
    found_pairs: dict[str, set[tuple[str, ...]]] = {}  # paired method -> (target, source) on disk
    paired = [m for m in methods if m != DFD]  # the methods FF++'s split files cover
    # Reals are the originals of the selected fakes: YouTube's for FF++'s
    # methods, the actors' for DeepFakeDetection. Mixing in the other source's
    # reals would let a detector tell real from fake by the kind of footage.
    if paired:
        splits_dir = splits_dir or os.path.join(root, "splits")
        pairs = read_ffpp_splits(splits_dir)
        split_of_id = {i: s for pair, s in pairs.items() for i in pair}
        real_dir = os.path.join(root, "original_sequences", "youtube", compression, "videos")
        _need_dir(real_dir, f"FF++ real videos for {compression}")
        for f in _videos_in(real_dir):
            vid = os.path.splitext(f)[0]
            if vid in split_of_id:
                found_reals.add(vid)
                items.append(
                    VideoItem(
                        os.path.join(real_dir, f), 0, dataset, compression, "real",
                        _ffpp_id(dataset, compression, "real", vid), split_of_id[vid],
                    )
                )  # fmt: skip
        if not items:
            raise DatasetError(
                f"no real video in {real_dir!r} is named after an id of the split files in "
                f"{splits_dir!r} (FF++ reals are NNN.mp4, e.g. 000.mp4); check --root, "
                "--compression and --splits"
            )
    found: dict[str, collections.Counter] = {}  # paired method -> its fakes per split
    for method in methods:
        fake_dir = os.path.join(root, "manipulated_sequences", method, compression, "videos")
        _need_dir(fake_dir, f"FF++ {method} videos for {compression}")
        if method == DFD:
            items += _read_dfd(root, compression, dataset, left_out)
            continue
        files, found[method] = _videos_in(fake_dir), collections.Counter()
        found_pairs[method] = set()
        for f in files:
            stem = os.path.splitext(f)[0]
            split = pairs.get(frozenset(stem.split("_")[:2]))
            if split is None:
                continue
            found_pairs[method].add(tuple(stem.split("_")[:2]))
            path = os.path.join(fake_dir, f)
            items.append(
                VideoItem(
                    path, 1, dataset, compression, method,
                    _ffpp_id(dataset, compression, method, stem), split, _mask_for(path),
                )
            )  # fmt: skip
            found[method][split] += 1
        # A selected method must never vanish silently: the build would train
        # on its reals alone and report success.
        if not found[method]:
            raise DatasetError(
                f"--methods {method}: none of the {len(files)} videos in {fake_dir!r} is named "
                f"after a [target, source] pair of the split files in {splits_dir!r} (FF++ "
                "fakes are TTT_SSS.mp4, e.g. 000_003.mp4); check --root, --compression and "
                f"--splits, or leave {method} out of --methods"
            )
    _check_every_split_has_each_method(found, root, compression, splits_dir)
    if paired:
        absent = _ffpp_missing(
            pairs, found_reals, found_pairs, found, root, compression, splits_dir, dataset
        )
        _note_missing(missing, absent, dataset)
    return items


def _ffpp_missing(
    pairs: dict[frozenset, str],
    found_reals: set[str],
    found_pairs: dict[str, set[tuple[str, ...]]],
    found: dict[str, collections.Counter],
    root: str,
    compression: str,
    splits_dir: str,
    dataset: str,
) -> list[MissingVideo]:
    """The videos the split files name that are not on disk, in the splits the tree holds.

    A pair [a, b] of a split names the reals a and b and, for each method, the
    fakes a_b and b_a. Listing only the files present dropped a partial
    download's missing videos without a word (990 of 1000 built as if complete).
    As in _check_every_split_has_each_method, a split where no selected method
    has a fake is a deliberate subset and its fakes are not expected; its reals
    are expected once any real of that split is there (one download holds all
    reals). A missing real only loses that real: FF++'s fakes are read without
    their originals (original_path is DFDC's).
    """
    fake_splits = {s for counts in found.values() for s, n in counts.items() if n}
    split_of_id = {i: s for pair, s in pairs.items() for i in pair}
    real_splits = fake_splits | {split_of_id[v] for v in found_reals}
    real_dir = os.path.join(root, "original_sequences", "youtube", compression, "videos")
    out = []
    for vid, split in sorted(split_of_id.items()):
        if split in real_splits and vid not in found_reals:
            item = VideoItem(
                os.path.join(real_dir, f"{vid}.mp4"), 0, dataset, compression, "real",
                _ffpp_id(dataset, compression, "real", vid), split,
            )  # fmt: skip
            out.append(MissingVideo(item, os.path.join(splits_dir, f"{split}.json")))
    for method, have in found_pairs.items():
        fake_dir = os.path.join(root, "manipulated_sequences", method, compression, "videos")
        for pair, split in sorted(pairs.items(), key=lambda kv: sorted(kv[0])):
            if split not in fake_splits:
                continue
            a, b = sorted(pair) if len(pair) == 2 else 2 * sorted(pair)
            for target, source in sorted({(a, b), (b, a)}):
                if (target, source) in have:
                    continue
                stem = f"{target}_{source}"
                item = VideoItem(
                    os.path.join(fake_dir, f"{stem}.mp4"), 1, dataset, compression, method,
                    _ffpp_id(dataset, compression, method, stem), split,
                )  # fmt: skip
                out.append(MissingVideo(item, os.path.join(splits_dir, f"{split}.json")))
    return out


def _check_every_split_has_each_method(
    found: dict[str, collections.Counter], root: str, compression: str, splits_dir: str | None
) -> None:
    """A selected method with no fake in a split where another selected method has
    some is a DatasetError: a partial download (e.g. NeuralTextures' test videos
    missing) would otherwise give a test split without that method, and its
    per-method score would be computed on the other splits' leftovers or not at
    all, with nothing said. A split where no method has fakes is left alone (a
    tree holding only some splits of every method is a deliberate subset)."""
    for split in ("train", "val", "test"):
        have = [m for m in found if found[m][split]]
        lacking = [m for m in found if not found[m][split]]
        if have and lacking:
            method = lacking[0]
            fake_dir = os.path.join(root, "manipulated_sequences", method, compression, "videos")
            raise DatasetError(
                f"--methods {method}: no video in {fake_dir!r} is named after a pair of the "
                f"{split} split ({os.path.join(splits_dir or '', split + '.json')!r}), while "
                f"{', '.join(have)} {'has' if len(have) == 1 else 'have'} "
                f"{sum(found[m][split] for m in have)} {split} fakes: a partial download? "
                f"Download the {split} videos of {method}, or leave {method} out of --methods"
            )


DFD_HELD_OUT_FRACTION = 0.14  # of the actors, for val and for test: FF++'s 720/140/140
_DFD_REAL_NAME = re.compile(r"(\d+)__.")  # 01__exit_phone_room.mp4
_DFD_FAKE_NAME = re.compile(r"(\d+)_(\d+)__.")  # 01_02__exit_phone_room__YVGY8LOK.mp4


def _note_left_out(left_out: dict | None, key: str, videos: int, why: str) -> None:
    """Records videos a reader leaves out on purpose (``left_out``: the caller's dict,
    written to the build's summary.json), so the counts are not only in a log."""
    if left_out is not None and videos:
        left_out[key] = {"videos": videos, "why": why}


def _read_dfd(
    root: str, compression: str, dataset: str, left_out: dict | None = None
) -> list[VideoItem]:
    """FF++'s DeepFakeDetection: fakes AA_BB__<scene>__<code>.mp4 (actor AA's video
    with actor BB's face), reals original_sequences/actors/<comp>/videos/AA__<scene>.mp4.

    FF++'s split files do not cover it, so val and test are each ~14 % of the
    actors (_hold_out: test first, then val from the rest), the rest train; a
    video goes to a split only if all its actors are in it, so no face is in
    two splits. Fakes of an actor pair that straddles splits are left out and
    logged. The actor split depends on the files present (same on every
    machine for the same tree; the same for c23 and c40 of a full download).
    """
    real_dir = os.path.join(root, "original_sequences", "actors", compression, "videos")
    fake_dir = os.path.join(root, "manipulated_sequences", DFD, compression, "videos")
    _need_dir(real_dir, f"{DFD} real (actors) videos for {compression}")
    videos = []  # (folder, file, label, actor ids)
    for folder, label, pattern, form in (
        (real_dir, 0, _DFD_REAL_NAME, "AA__<scene>.mp4"),
        (fake_dir, 1, _DFD_FAKE_NAME, "AA_BB__<scene>__<code>.mp4"),
    ):
        files = _videos_in(folder)
        if not files:
            raise DatasetError(
                f"--methods {DFD}: no video files (.mp4/.avi/.mkv) in {folder!r}; check --root "
                f"and --compression, or leave {DFD} out of --methods"
            )
        for f in files:
            m = pattern.match(f)
            if m is None:
                raise DatasetError(
                    f"{os.path.join(folder, f)!r} is not named like {DFD}'s {form} (its actor "
                    "ids split the set); move the file out of that folder"
                )
            videos.append((folder, f, label, frozenset(m.groups())))
    actors = sorted({a for v in videos for a in v[3]})
    k = max(1, round(DFD_HELD_OUT_FRACTION * len(actors)))
    with_real = {a for v in videos if v[2] == 0 for a in v[3]}
    fakes = collections.Counter(v[3] for v in videos if v[2] == 1)
    test = _hold_out(fakes, with_real, actors, k)
    rest = collections.Counter({ids: n for ids, n in fakes.items() if not ids & test})
    val = _hold_out(rest, with_real - test, [a for a in actors if a not in test], k)
    items, dropped = [], 0
    for folder, f, label, ids in videos:
        split = _split_by_identity(ids, {"test": test, "val": val})
        if split is None:
            dropped += 1
            continue
        stem = os.path.splitext(f)[0]
        path = os.path.join(folder, f)
        # The reals too carry DFD's name (label 0 says they are real): they are DFD's
        # own originals, not YouTube's, and per-method scores pair each method's
        # fakes with its originals (VideoItem.method). Ids stay unique: a real's
        # stem AA__<scene> never equals a fake's AA_BB__<scene>__<code>.
        items.append(
            VideoItem(
                path, label, dataset, compression, DFD,
                _ffpp_id(dataset, compression, DFD, stem), split,
                _mask_for(path) if label else None,
            )
        )  # fmt: skip
    if not any(i.label for i in items):
        raise DatasetError(
            f"--methods {DFD}: each of the {sum(fakes.values())} fakes in {fake_dir!r} pairs "
            f"actors of two different splits ({len(actors)} actors are too few to split by "
            f"actor); add the missing videos, or leave {DFD} out of --methods"
        )
    if dropped:
        log.warning(
            "%s: %d of %d fakes left out: they swap actors of two different splits "
            "(test actors %s, val actors %s)",
            DFD, dropped, sum(fakes.values()), sorted(test), sorted(val),
        )  # fmt: skip
    _note_left_out(
        left_out, f"{DFD} fakes", dropped,
        f"of {sum(fakes.values())}: they swap actors of two different splits",
    )  # fmt: skip
    _warn_if_one_class(DFD, items)
    return items


# ---------------------------------------------------------------- Celeb-DF v2

CELEBDF_FOLDERS = {
    "Celeb-real": (0, "real"),
    "YouTube-real": (0, "real"),
    "Celeb-synthesis": (1, "synthesis"),
}
CELEBDF_VAL_FRACTION = 0.1


_CELEBDF_NAME = {
    "Celeb-real": re.compile(r"(id\d+)_\d+$"),  # id0_0000
    "Celeb-synthesis": re.compile(r"(id\d+)_(id\d+)_\d+$"),  # id0_id16_0000
    "YouTube-real": re.compile(r"\d+$"),  # 00000
}


def _celebdf_identities(folder: str, stem: str, path: str) -> frozenset[str]:
    # A fake id0_id16_0000 is id0's video with id16's face swapped in: both
    # people are in it. A YouTube-real video has no celebrity id: it counts as
    # its own identity.
    m = _CELEBDF_NAME[folder].match(stem)
    if m is None:
        raise DatasetError(
            f"{path!r}: not a Celeb-DF v2 name ({folder}/{_CELEBDF_NAME[folder].pattern}); "
            "the identities in the name keep val apart from train, so move the file out"
        )
    return frozenset(m.groups()) if folder != "YouTube-real" else frozenset({f"yt{stem}"})


def _in_val(identity: str) -> bool:
    # YouTube-real videos share no face with any fake, so a hash alone picks them.
    return _stable_hash(identity) / 0xFFFFFFFF < CELEBDF_VAL_FRACTION


def read_celebdf(
    root: str,
    dataset: str = "celebdf",
    left_out: dict | None = None,
    missing: list[MissingVideo] | None = None,
) -> list[VideoItem]:
    """Celeb-DF v2: test from List_of_testing_videos.txt ('<label> <folder>/<file>', 1 = REAL).

    Val is carved from the non-test videos by identity, never from test, and
    shares no face with train: a video goes to val if all its identities are
    validation identities, to train if none is; a fake that swaps a validation
    identity with a training one is left out (logged with its count). The
    validation identities are ~10 % of the celebrity ids, chosen by _hold_out
    so that few fakes are left out, plus ~10 % of the YouTube-real videos by
    stable hash (each its own identity). Deterministic for a given tree.
    Test videos the list names but that are not on disk go to ``missing``.
    """
    _need_dir(root, "dataset root")
    test_list = os.path.join(root, "List_of_testing_videos.txt")
    if not os.path.isfile(test_list):
        raise DatasetError(f"Celeb-DF test list missing: {test_list!r}; check --root")
    test = {}
    with open(test_list) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                flag, rel = line.split()
                flag = int(flag)
                if flag not in (0, 1):
                    raise ValueError(flag)
            except ValueError as e:
                raise DatasetError(
                    f"{test_list}:{n}: expected '<1|0> <folder>/<file>.mp4', got {line.strip()!r}"
                ) from e
            # Celeb-DF's convention is inverted w.r.t. ours: 1 = real, 0 = fake.
            test[rel.replace("\\", "/")] = 1 - flag
    # Membership by id (folder/name without extension), as video ids are: a listed
    # x.mp4 present as x.avi or x.MP4 is the same test video, and must not train.
    test_ids = {os.path.splitext(rel)[0]: label for rel, label in test.items()}
    videos = []  # (folder, file, label, method, identities, 'test' or None)
    for folder, (label, method) in CELEBDF_FOLDERS.items():
        d = os.path.join(root, folder)
        _need_dir(d, f"Celeb-DF folder {folder}")
        for f in _videos_in(d):
            stem = os.path.splitext(f)[0]
            listed = test_ids.get(f"{folder}/{stem}")
            ids = _celebdf_identities(folder, stem, os.path.join(d, f))
            if listed is not None and listed != label:
                raise DatasetError(
                    f"{test_list}: {folder}/{f} is listed with the wrong label for its folder"
                )
            videos.append((folder, f, label, method, ids, None if listed is None else "test"))
    # The official test list is kept as it is (it shares identities with the
    # other videos: that is the benchmark's protocol); val is carved from the rest.
    pool = [v for v in videos if v[5] is None]
    celebs = sorted({i for v in pool for i in v[4] if not i.startswith("yt")})
    val = _hold_out(
        collections.Counter(v[4] for v in pool if v[2] == 1),
        {i for v in pool if v[2] == 0 for i in v[4]},
        celebs,
        max(1, round(CELEBDF_VAL_FRACTION * len(celebs))),
    ) | {i for v in pool for i in v[4] if i.startswith("yt") and _in_val(i)}
    items, dropped = [], 0
    for folder, f, label, method, ids, split in videos:
        split = split or _split_by_identity(ids, {"val": val})
        if split is None:
            dropped += 1
            continue
        stem = os.path.splitext(f)[0]
        items.append(
            VideoItem(
                os.path.join(root, folder, f), label, dataset, "orig",
                "real" if label == 0 else method, f"{dataset}/{folder}/{stem}", split,
            )
        )  # fmt: skip
    if dropped:
        log.warning(
            "celebdf: %d of %d non-test fakes left out: each swaps a validation identity "
            "with a training one (validation identities: %s)",
            dropped, sum(v[2] for v in pool), ", ".join(sorted(val & set(celebs))),
        )  # fmt: skip
    _note_left_out(
        left_out, "celebdf fakes", dropped,
        f"of {sum(v[2] for v in pool)} non-test fakes: each swaps a validation identity "
        "with a training one",
    )  # fmt: skip
    _warn_if_one_class("celebdf", items)
    # Test videos the list names but that are not on disk: failures of the build
    # ('missing_file', as FF++'s), not an error stopping it, so that a partial
    # download builds and says what it lacks. Compared by id: x.mp4 listed and
    # x.avi present is the same video (read_celebdf's ids have no extension).
    present = {i.video_id for i in items}
    absent = []
    for rel, label in sorted(test.items()):
        folder, _, name = rel.rpartition("/")
        vid = f"{dataset}/{folder}/{os.path.splitext(name)[0]}"
        if vid in present:
            continue
        method = CELEBDF_FOLDERS.get(folder, (label, "synthesis"))[1]
        item = VideoItem(
            os.path.join(root, *rel.split("/")), label, dataset, "orig",
            "real" if label == 0 else method, vid, "test",
        )  # fmt: skip
        absent.append(MissingVideo(item, test_list))
    _note_missing(missing, absent, dataset)
    return items


# ---------------------------------------------------------------- DFDC


def _dfdc_metadata_entries(meta: str) -> list[tuple[str, int, str | None, str | None]]:
    """metadata.json of the train parts: {file: {label: REAL|FAKE, original?, split?}}
    -> (file, label, split, original)."""
    expected = "expected {file: {label: REAL|FAKE, original?, split?}}"
    try:
        with open(meta) as f:
            entries = json.load(f)
        names = sorted(entries) if isinstance(entries, dict) else None
    except ValueError as e:  # JSONDecodeError, a bad UTF-8 byte
        raise DatasetError(f"{meta}: not JSON ({e}); {expected}") from e
    if names is None:
        raise DatasetError(f"{meta}: holds a {type(entries).__name__}; {expected}")
    out = []
    for name in names:
        # A part lists thousands of files: name the one that is wrong.
        e = entries[name]
        if not isinstance(e, dict) or "label" not in e:
            raise DatasetError(f"{meta}: entry {name!r} = {e!r} has no 'label'; {expected}")
        label = {"REAL": 0, "FAKE": 1}.get(str(e["label"]).upper())
        if label is None:
            raise DatasetError(
                f"{meta}: entry {name!r} has label {e['label']!r}, not REAL or FAKE; {expected}"
            )
        split = e.get("split")
        original = e.get("original") if label == 1 else None
        if original is not None and not isinstance(original, str):
            raise DatasetError(
                f"{meta}: entry {name!r}: 'original' {original!r} is not a file name"
            )
        out.append((name, label, {"validation": "val"}.get(split, split), original))
    return out


# labels.csv writes 0/1 (some copies 0.0/1.0 after a pandas round trip).
_CSV_LABELS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "REAL": 0, "FAKE": 1}


def _dfdc_labels_csv_entries(path: str) -> list[tuple[str, int, str | None, None]]:
    """labels.csv of the full release's test/ and validation/ folders: filename,label (1 = fake).

    REAL/FAKE words are accepted too. The file is small (4,000 rows for test),
    so every row is checked before any work starts.
    """
    out = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in reader.fieldnames or []]
        if "filename" not in fields or "label" not in fields:
            raise DatasetError(
                f"{path}: header {reader.fieldnames} lacks 'filename' and 'label' columns; "
                "DFDC's labels.csv starts with 'filename,label'"
            )
        for line, row in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            label = _CSV_LABELS.get(row["label"].upper())
            if label is None or not row["filename"]:
                raise DatasetError(
                    f"{path}:{line}: bad row {row}; expected filename,label with label 0 (real) "
                    "or 1 (fake)"
                )
            out.append((row["filename"], label, None, None))
    return out


def _dfdc_split(labels: str, name: str, folder_split: str, file_split: str | None) -> str:
    """A file's split from its folder's name and its metadata.json 'split', if any."""
    if file_split not in (None, "train", "val", "test"):
        raise DatasetError(
            f"{labels}: {name}: split {file_split!r} is not train/val/test (or validation); "
            "fix the entry or delete its 'split' key to use the folder's split"
        )
    # DFDC's own metadata.json says "split": "train" on every entry, also in a
    # part renamed to be held out: a test/val folder must win over that "train".
    if file_split in (None, "train", folder_split):
        return folder_split
    if folder_split == "train":
        return file_split  # a file moved out of a train part by its entry
    raise DatasetError(
        f"{labels}: {name}: 'split' {file_split!r} contradicts the split {folder_split!r} "
        "that the folder's name gives; delete the entry's 'split' or move the file to a "
        "folder of that split"
    )


# Words of a DFDC folder name that hold it out (the rest is train).
_DFDC_SPLIT_WORDS = {"test": "test", "val": "val", "validation": "val", "train": "train"}


def _dfdc_folder_split(labels: str) -> str:
    """The split a DFDC label file's folder names: 'test' or 'val' when a word of
    the folder's own name (split at anything but letters and digits) is test,
    val or validation ('test', 'dfdc_test', 'test_part_49', 'validation',
    'val_part_48'), else 'train' ('dfdc_train_part_0', 'interval_copies').

    The folder's own name only, as a whole word: its parents are where the user
    keeps the data ('/data/val_runs/dfdc/...'), and a substring test made
    'interval' a validation folder and left '--root .../test' (the path '.')
    in train. A held-out word wins over 'train' ('dfdc_train_part_49_test' is
    test: a renamed part); a name with both a test and a val word is an error.
    """
    name = os.path.basename(os.path.dirname(os.path.abspath(labels)))
    words = {_DFDC_SPLIT_WORDS.get(w) for w in re.split(r"[^a-z0-9]+", name.lower())}
    held = sorted(words & {"test", "val"})
    if len(held) > 1:
        raise DatasetError(
            f"{labels}: its folder's name {name!r} says both test and val; rename the folder "
            "so that its name holds one of test, val/validation (or neither: train)"
        )
    return held[0] if held else "train"


def read_dfdc(root: str, dataset: str = "dfdc") -> list[VideoItem]:
    """DFDC: every folder under root with a metadata.json or a labels.csv.

    metadata.json ({file: {label: REAL|FAKE, original, split?}}) labels the
    train parts; labels.csv (filename,label; 1 = fake, 0 = real) labels the
    full release's test/ and validation/ folders. A folder with both is read
    from metadata.json. The name of the folder holding the label file decides
    the split (_dfdc_folder_split): a word test -> test, val or validation ->
    val, else train (the public train parts are dfdc_train_part_NN; to hold
    one out, rename it, e.g. to val_part_49). A
    per-file 'split' in metadata.json ('train' | 'val' | 'test' |
    'validation') moves a file out of a train folder; it cannot move one into
    train (see _dfdc_split).
    """
    _need_dir(root, "dataset root")
    label_files = []
    for dp, _, files in os.walk(root):
        if "metadata.json" in files:
            label_files.append((os.path.join(dp, "metadata.json"), _dfdc_metadata_entries))
        elif "labels.csv" in files:
            label_files.append((os.path.join(dp, "labels.csv"), _dfdc_labels_csv_entries))
    if not label_files:
        raise DatasetError(
            f"no metadata.json or labels.csv under {root!r}; check --root (DFDC's train parts "
            "carry metadata.json, its test/ and validation/ folders labels.csv)"
        )
    items = []
    for labels, read_entries in sorted(label_files):
        folder = os.path.dirname(labels)
        rel_folder = os.path.relpath(folder, root).replace(os.sep, "/")
        # Ids relative to --root: a label file in --root itself gives dfdc/<stem>.
        prefix = dataset if rel_folder == "." else f"{dataset}/{rel_folder}"
        folder_split = _dfdc_folder_split(labels)
        for name, label, file_split, original in read_entries(labels):
            split = _dfdc_split(labels, name, folder_split, file_split)
            path = os.path.join(folder, name)
            if not os.path.exists(path):
                continue  # listed but not downloaded: not a failure of ours
            stem = os.path.splitext(name)[0]
            # A fake's original lies in the same part; one not downloaded leaves
            # the fake unchecked (data_prep.originals), not dropped.
            original_path = original and os.path.join(folder, original)
            if original_path and not os.path.isfile(original_path):
                original_path = None
            items.append(
                VideoItem(
                    path, label, dataset, "orig", "real" if label == 0 else "fake",
                    f"{prefix}/{stem}", split, original_path=original_path,
                )
            )  # fmt: skip
    return items


def _check_unique_ids(items: list[VideoItem], root: str) -> None:
    """A DatasetError naming the first id two items share, their paths and, for
    DFDC, the label file listing them: one id is one cache entry and one video in
    the metrics, so two files under one id would silently become one."""
    paths = collections.defaultdict(list)
    for it in items:
        paths[it.video_id].append(it.path)
    dup = next((i for i, p in sorted(paths.items()) if len(p) > 1), None)
    if dup is None:
        return
    where = "; ".join(repr(p) for p in paths[dup])
    listed = ""
    if dup.startswith("dfdc/"):  # one id, one folder: its label file, as read_dfdc picks it
        folder = os.path.dirname(paths[dup][0])
        for name in ("metadata.json", "labels.csv"):
            if os.path.isfile(os.path.join(folder, name)):
                listed = f", listed in {os.path.join(folder, name)!r}"
                break
    n = sum(len(p) > 1 for p in paths.values())
    raise DatasetError(
        f"{n} video id(s) in {root!r} name more than one video, e.g. {dup!r}: {where}{listed}. "
        "An id is the folder and the file name without its extension: remove the extra "
        "copy (or the repeated row of the label file), or rename one of the files"
    )


def read_dataset(
    dataset: str,
    root: str,
    compression: str = "c23",
    methods: tuple[str, ...] | None = None,
    splits_dir: str | None = None,
    left_out: dict | None = None,
    missing: list[MissingVideo] | None = None,
) -> list[VideoItem]:
    """All videos of a dataset, sorted by video_id; raises DatasetError on a bad tree.

    ``left_out``: a dict the readers fill with the videos they leave out on
    purpose ({what: {'videos': n, 'why': text}}): fakes that would tie a
    validation or test identity to training (Celeb-DF, DeepFakeDetection).
    ``missing``: a list the readers extend with the videos the dataset's own
    lists name but that are not on disk (MissingVideo: FF++'s and the synthetic
    set's split files, Celeb-DF's test list; DFDC's absent files stay ignored,
    as read_dfdc says), sorted by id; they are not returned.
    Without it, the readers only log them.
    """
    absent: list[MissingVideo] = []
    if dataset in ("ffpp", "synthetic"):
        items = read_ffpp(
            root, compression, methods, splits_dir, dataset=dataset, left_out=left_out,
            missing=absent,
        )  # fmt: skip
    elif dataset == "celebdf":
        items = read_celebdf(root, left_out=left_out, missing=absent)
    elif dataset == "dfdc":
        items = read_dfdc(root)
    else:
        raise DatasetError(f"--dataset {dataset!r}: choose ffpp, celebdf, dfdc or synthetic")
    if methods and dataset in ("celebdf", "dfdc"):
        raise DatasetError(f"--methods applies to ffpp/synthetic only, not {dataset}")
    _check_unique_ids(items, root)
    if not items:
        raise DatasetError(f"no videos found under {root!r} for {dataset}")
    _note_missing(missing, sorted(absent, key=lambda m: m.item.video_id), dataset)
    return sorted(items, key=lambda i: i.video_id)
