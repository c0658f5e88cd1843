"""TFDS builder that turns the per-video cache into ArrayRecord shards.

`python -m data_prep.build` extracts faces into OUT/cache (parallel, resumable)
and writes OUT/manifest.json; this builder only reads that cache, so writing
shards is a cheap, single-process, deterministic pass:
  * example keys are '<video_id>#<frame_index>', and TFDS orders records by a
    hash of the key: the same cache gives byte-identical shards, and records of
    one video are spread over shards (good for many sequential readers);
  * no timestamps inside records.

Read the result without TensorFlow with `data_prep.shards.open_split`, or with
`tfds.builder_from_directory(dir).as_data_source(split)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import zipfile

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import file_adapters
from tensorflow_datasets.core.utils import shard_utils
from tensorflow_datasets.proto import tf_example_pb2

from data_prep import encoding as enc

NAME = "lda_faces"
VERSION = "1.0.0"


class CacheError(RuntimeError):
    """A cached video's stacks cannot be read while the shards are written."""


@dataclasses.dataclass(eq=False)
class LdaFacesConfig(tfds.core.BuilderConfig):
    """stack n (frames per record = n+1), crop size S, frames encoding, dataset name."""

    stack: int = 3
    size: int = 398
    encoding: str = enc.DEFAULT_ENCODING
    dataset: str = "ffpp"


def config_name(dataset: str, stack: int, size: int) -> str:
    return f"{dataset}_n{stack}_s{size}"


def features(stack: int, size: int, encoding: str) -> tfds.features.FeaturesDict:
    """Record features (docs/interfaces.md); Tensor features so numpy alone decodes them."""
    t = tfds.features.Tensor
    return tfds.features.FeaturesDict(
        {
            "frames": t(
                shape=(stack + 1, size, size, 3),
                dtype=np.uint8,
                encoding=enc.tensor_encoding(encoding),
                doc="key frame and its next n frames, one box",
            ),
            "label": tfds.features.ClassLabel(names=["real", "fake"]),
            "dataset": tfds.features.Text(),
            "compression": tfds.features.Text(),
            "method": tfds.features.Text(
                doc="a fake's manipulation; a real's: 'real', or the manipulation whose "
                "own originals it is (DeepFakeDetection)"
            ),
            "video_id": tfds.features.Text(doc="unique over dataset, compression, method"),
            "frame_index": tfds.features.Scalar(dtype=np.int32, doc="key frame index"),
            "box": t(shape=(4,), dtype=np.int32, doc="x0, y0, x1, y1 in the source frame"),
            "landmarks": t(shape=(68, 2), dtype=np.float32, doc="dlib 68 (x, y), source frame"),
            # Mostly zeros: zlib shrinks it ~100x for little CPU.
            "mask": t(
                shape=(size, size),
                dtype=np.uint8,
                encoding=tfds.features.Encoding.ZLIB,
                doc="manipulated region of the key frame crop, {0, 1}",
            ),
            "has_mask": tfds.features.Scalar(dtype=np.bool_),
        }
    )


class _ClampedShardConfig(shard_utils.ShardConfig):
    # TFDS applies one shard count to every split and fails when a split has
    # fewer records (a small val split); clamp per split instead.
    def get_number_shards(self, total_size, num_examples, uses_precise_sharding=True):
        n = super().get_number_shards(total_size, num_examples, uses_precise_sharding)
        return max(1, min(n, num_examples))


@dataclasses.dataclass
class _DownloadConfig(tfds.download.DownloadConfig):
    def get_shard_config(self):
        return _ClampedShardConfig(num_shards=self.num_shards)


@contextlib.contextmanager
def _array_record_options(options: str):
    """TFDS hard-codes 'group_size:1' (zstd:3) and map-order-dependent bytes; fix both.

    Readers need no change: ArrayRecord stores the compression in the file.
    """
    base = file_adapters.ArrayRecordFileAdapter

    class _Adapter(base):
        @classmethod
        def write_examples(cls, path, iterator):
            from array_record.python import array_record_module

            writer = array_record_module.ArrayRecordWriter(os.fspath(path), options)
            for _, serialized in iterator:
                # tf.train.Example keeps features in a proto map, whose default
                # serialization order varies between processes; sorted keys make
                # the bytes, and so the shards, reproducible.
                example = tf_example_pb2.Example.FromString(serialized)
                writer.write(example.SerializeToString(deterministic=True))
            writer.close()

    key = file_adapters.FileFormat.ARRAY_RECORD
    old = file_adapters.ADAPTER_FOR_FORMAT[key]
    file_adapters.ADAPTER_FOR_FORMAT[key] = _Adapter
    try:
        yield
    finally:
        file_adapters.ADAPTER_FOR_FORMAT[key] = old


@contextlib.contextmanager
def _tfds_scratch_tempdir():
    """Sends the temp dirs TFDS makes while a builder starts into one we remove.

    For a dataset not yet written, `DatasetBuilder.__init__` makes a temp dir to
    fetch pre-computed metadata from GCS into (GCS is off, so it stays empty) and
    never removes it: one stray /tmp/tmp*tfds per build, thousands over a project's
    life. `tempfile.tempdir` is process-wide; builders start in the main thread of
    a build, with no other thread making temp files.
    """
    saved = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="lda_faces_builder_") as scratch:
        tempfile.tempdir = scratch
        try:
            yield
        finally:
            tempfile.tempdir = saved


class LdaFaces(tfds.core.GeneratorBasedBuilder):
    """Face crop stacks for long-distance-attention deepfake detection."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "Face stacks: dlib 1.3x square box, key frame + next n frames."}
    BUILDER_CONFIG_CLASS = LdaFacesConfig
    # TFDS's own lookup of this file needs the optional `importlib_resources`
    # package (absent from our pins); the answer is simply this module.
    code_path = epath.Path(__file__)

    def __init__(self, *, manifest: str | None = None, **kwargs):
        # The manifest (OUT/manifest.json) lists each split's cached videos; it
        # is only needed to build, not to read.
        self._manifest_path = manifest
        kwargs.setdefault("file_format", "array_record")
        with _tfds_scratch_tempdir():
            super().__init__(**kwargs)

    def _manifest(self) -> dict:
        if self._manifest_path is None:
            raise ValueError(
                "LdaFaces needs manifest=OUT/manifest.json to build (see data_prep.build)"
            )
        with open(self._manifest_path) as f:
            return json.load(f)

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        metadata = tfds.core.MetadataDict(
            stack=c.stack, size=c.size, encoding=c.encoding, dataset=c.dataset
        )
        if self._manifest_path is not None:
            metadata["counts"] = self._manifest()["counts"]
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=features(c.stack, c.size, c.encoding),
            metadata=metadata,
            homepage="https://doi.org/10.1109/TNNLS.2022.3233063",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing is downloaded
        splits = self._manifest()["splits"]
        # TFDS refuses empty splits; a split without records simply does not exist.
        return {
            name: self._generate_examples(videos)
            for name, videos in sorted(splits.items())
            if any(v["records"] for v in videos)
        }

    def _generate_examples(self, videos):
        for video in sorted(videos, key=lambda v: v["video_id"]):
            if not video["records"]:
                continue
            try:
                with np.load(video["cache"]) as z:
                    data = {k: z[k] for k in z.files}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
                marker = os.path.splitext(video["cache"])[0] + ".json"
                raise CacheError(
                    f"{video['video_id']}: its cached stacks {video['cache']} cannot be read "
                    f"({type(e).__name__}: {e}); delete {marker} and rerun the same command: "
                    "that video is extracted again, the others come from the cache"
                ) from e
            # "stacks": the cached stacks to write, where some are left out
            # (data_prep.build.kept_stacks); absent: all.
            for i in video.get("stacks", range(len(data["frame_index"]))):
                yield (
                    f"{video['video_id']}#{int(data['frame_index'][i]):06d}",
                    {
                        "frames": data["frames"][i],
                        "label": int(video["label"]),
                        "dataset": video["dataset"],
                        "compression": video["compression"],
                        "method": video["method"],
                        "video_id": video["video_id"],
                        "frame_index": np.int32(data["frame_index"][i]),
                        "box": data["box"][i].astype(np.int32),
                        "landmarks": data["landmarks"][i].astype(np.float32),
                        "mask": data["mask"][i],
                        "has_mask": bool(data["has_mask"][i]),
                    },
                )

    def build(self, num_shards: int | None) -> None:
        """Writes the shards (replacing an older build of the same config)."""
        with _array_record_options(enc.array_record_options(self.builder_config.encoding)):
            self.download_and_prepare(
                download_dir=os.path.join(self._data_dir_root, "cache", "tfds_downloads"),
                download_config=_DownloadConfig(num_shards=num_shards),
            )
