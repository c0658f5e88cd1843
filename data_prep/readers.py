"""Dataset readers: a dataset tree on disk -> a list of labelled videos with splits.

Each reader checks the tree before any work starts and raises DatasetError
naming the missing path and what to do. Video ids are unique across dataset,
compression and method ('ffpp/c23/Deepfakes/000_003'): FF++ reuses the file
name 000_003.mp4 for all four methods, and grouping frames by file name alone
merges four different fakes into one "video".
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
# Other manipulated_sequences/ folders of FF++ that may be selected explicitly.
FFPP_EXTRA_METHODS = ("FaceShifter", "DeepFakeDetection")
# The synthetic set (data_prep.synthesize), one method per defect class of paper Sec. III.
SYNTHETIC_METHODS = ("Upsampling", "MismatchedColor", "AbnormalStructure", "TemporalJitter")
COMPRESSIONS = ("raw", "c23", "c40")
MASK_SUFFIX = ".masks.npz"


class DatasetError(ValueError):
    """The dataset tree or the arguments cannot be used; raised before any work."""


@dataclasses.dataclass(frozen=True)
class VideoItem:
    path: str
    label: int  # 0 real, 1 fake
    dataset: str
    compression: str
    method: str  # 'real' for pristine videos
    video_id: str
    split: str
    mask_path: str | None = None  # <video>.masks.npz beside a fake, if present


def _need_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise DatasetError(f"{what} not found: {path!r}; check --root")


def _videos_in(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith((".mp4", ".avi", ".mkv")))


def _mask_for(video_path: str) -> str | None:
    p = os.path.splitext(video_path)[0] + MASK_SUFFIX
    return p if os.path.isfile(p) else None


# ---------------------------------------------------------------- FaceForensics++


def read_ffpp_splits(splits_dir: str) -> dict[frozenset, str]:
    """Official FF++ split JSONs: {frozenset({target, source}): split}."""
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


def read_ffpp(
    root: str,
    compression: str = "c23",
    methods: tuple[str, ...] | None = None,
    splits_dir: str | None = None,
    dataset: str = "ffpp",
) -> list[VideoItem]:
    """FF++ layout; also the synthetic set's (dataset='synthetic').

    original_sequences/youtube/<comp>/videos/NNN.mp4 (real) and
    manipulated_sequences/<Method>/<comp>/videos/TTT_SSS.mp4 (fake). A real video
    takes the split of the pair holding its id, a fake the split of its pair.
    Videos outside every split are ignored (the official JSONs cover all 1000).
    """
    known = SYNTHETIC_METHODS if dataset == "synthetic" else FFPP_METHODS + FFPP_EXTRA_METHODS
    default = SYNTHETIC_METHODS if dataset == "synthetic" else FFPP_METHODS
    methods = tuple(methods) if methods else default
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise DatasetError(f"unknown method(s) {unknown} for {dataset}; known: {list(known)}")
    if compression not in COMPRESSIONS:
        raise DatasetError(f"--compression {compression!r}: choose one of {list(COMPRESSIONS)}")
    _need_dir(root, "dataset root")
    pairs = read_ffpp_splits(splits_dir or os.path.join(root, "splits"))
    split_of_id = {i: s for pair, s in pairs.items() for i in pair}

    items = []
    real_dir = os.path.join(root, "original_sequences", "youtube", compression, "videos")
    _need_dir(real_dir, f"FF++ real videos for {compression}")
    for f in _videos_in(real_dir):
        vid = os.path.splitext(f)[0]
        if vid in split_of_id:
            items.append(
                VideoItem(
                    os.path.join(real_dir, f), 0, dataset, compression, "real",
                    f"{dataset}/{compression}/real/{vid}", split_of_id[vid],
                )
            )  # fmt: skip
    for method in methods:
        fake_dir = os.path.join(root, "manipulated_sequences", method, compression, "videos")
        _need_dir(fake_dir, f"FF++ {method} videos for {compression}")
        for f in _videos_in(fake_dir):
            stem = os.path.splitext(f)[0]
            split = pairs.get(frozenset(stem.split("_")[:2]))
            if split is None:
                continue
            path = os.path.join(fake_dir, f)
            items.append(
                VideoItem(
                    path, 1, dataset, compression, method,
                    f"{dataset}/{compression}/{method}/{stem}", split, _mask_for(path),
                )
            )  # fmt: skip
    return items


# ---------------------------------------------------------------- Celeb-DF v2

CELEBDF_FOLDERS = {
    "Celeb-real": (0, "real"),
    "YouTube-real": (0, "real"),
    "Celeb-synthesis": (1, "synthesis"),
}
CELEBDF_VAL_FRACTION = 0.1


def _celebdf_identity(folder: str, stem: str) -> str:
    # Celeb-real/id0_0000, Celeb-synthesis/id0_id16_0000 (target first),
    # YouTube-real/00000 (no celebrity id: its own "identity").
    return stem.split("_")[0] if folder != "YouTube-real" else f"yt{stem}"


def _in_val(identity: str) -> bool:
    # Stable hash (not Python's salted hash): same val split on every machine.
    h = int(hashlib.sha1(identity.encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < CELEBDF_VAL_FRACTION


def read_celebdf(root: str, dataset: str = "celebdf") -> list[VideoItem]:
    """Celeb-DF v2: test from List_of_testing_videos.txt ('<label> <folder>/<file>', 1 = REAL).

    Val is carved from the non-test videos by identity (id0..id61; YouTube-real
    videos count as their own identity), deterministically, never from test.
    Every video of a val identity goes to val, so no face is in both train and val.
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
    items = []
    for folder, (label, method) in CELEBDF_FOLDERS.items():
        d = os.path.join(root, folder)
        _need_dir(d, f"Celeb-DF folder {folder}")
        for f in _videos_in(d):
            rel = f"{folder}/{f}"
            stem = os.path.splitext(f)[0]
            if rel in test:
                if test[rel] != label:
                    raise DatasetError(
                        f"{test_list}: {rel} is listed with the wrong label for its folder"
                    )
                split = "test"
            else:
                split = "val" if _in_val(_celebdf_identity(folder, stem)) else "train"
            items.append(
                VideoItem(
                    os.path.join(d, f), label, dataset, "orig", "real" if label == 0 else method,
                    f"{dataset}/{folder}/{stem}", split,
                )
            )  # fmt: skip
    missing = set(test) - {f"{i.video_id.split('/', 1)[1]}.mp4" for i in items}
    if missing:
        raise DatasetError(
            f"{len(missing)} test videos listed but absent, e.g. {sorted(missing)[0]}"
        )
    return items


# ---------------------------------------------------------------- DFDC


def _dfdc_metadata_entries(meta: str) -> list[tuple[str, int, str | None]]:
    """metadata.json of the train parts: {file: {label: REAL|FAKE, original?, split?}}."""
    try:
        with open(meta) as f:
            entries = json.load(f)
        out = []
        for name in sorted(entries):
            e = entries[name]
            label = {"REAL": 0, "FAKE": 1}[str(e["label"]).upper()]
            split = e.get("split")
            out.append((name, label, {"validation": "val"}.get(split, split)))
        return out
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise DatasetError(
            f"{meta}: bad entry ({e}); expected {{file: {{label: REAL|FAKE}}}}"
        ) from e


# labels.csv writes 0/1 (some copies 0.0/1.0 after a pandas round trip).
_CSV_LABELS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "REAL": 0, "FAKE": 1}


def _dfdc_labels_csv_entries(path: str) -> list[tuple[str, int, str | None]]:
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
            out.append((row["filename"], label, None))
    return out


def read_dfdc(root: str, dataset: str = "dfdc") -> list[VideoItem]:
    """DFDC: every folder under root with a metadata.json or a labels.csv.

    metadata.json ({file: {label: REAL|FAKE, original, split?}}) labels the
    train parts; labels.csv (filename,label; 1 = fake, 0 = real) labels the
    full release's test/ and validation/ folders. A folder with both is read
    from metadata.json. Folder names decide the split: one containing 'test'
    -> test, 'val' -> val, else train (the public train parts are
    dfdc_train_part_NN; a held-out part can be renamed). A per-file 'split' in
    metadata.json wins if present ('train' | 'val' | 'test' | 'validation').
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
        low = rel_folder.lower()
        folder_split = "test" if "test" in low else "val" if "val" in low else "train"
        for name, label, split in read_entries(labels):
            split = split or folder_split
            if split not in ("train", "val", "test"):
                raise DatasetError(f"{labels}: {name}: split {split!r} is not train/val/test")
            path = os.path.join(folder, name)
            if not os.path.exists(path):
                continue  # listed but not downloaded: not a failure of ours
            stem = os.path.splitext(name)[0]
            items.append(
                VideoItem(
                    path, label, dataset, "orig", "real" if label == 0 else "fake",
                    f"{dataset}/{rel_folder}/{stem}", split,
                )
            )  # fmt: skip
    return items


def read_dataset(
    dataset: str,
    root: str,
    compression: str = "c23",
    methods: tuple[str, ...] | None = None,
    splits_dir: str | None = None,
) -> list[VideoItem]:
    """All videos of a dataset, sorted by video_id; raises DatasetError on a bad tree."""
    if dataset in ("ffpp", "synthetic"):
        items = read_ffpp(root, compression, methods, splits_dir, dataset=dataset)
    elif dataset == "celebdf":
        items = read_celebdf(root)
    elif dataset == "dfdc":
        items = read_dfdc(root)
    else:
        raise DatasetError(f"--dataset {dataset!r}: choose ffpp, celebdf, dfdc or synthetic")
    if methods and dataset in ("celebdf", "dfdc"):
        raise DatasetError(f"--methods applies to ffpp/synthetic only, not {dataset}")
    ids = [i.video_id for i in items]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"duplicate video ids in {root!r}; file names must be unique per folder")
    if not items:
        raise DatasetError(f"no videos found under {root!r} for {dataset}")
    return sorted(items, key=lambda i: i.video_id)
