"""data_prep.record_view: the tf.Example wire walk against protobuf's own encoder."""

import numpy as np
import pytest
from tensorflow_datasets.proto import tf_example_pb2

from data_prep.record_view import RecordFormatError, RecordView

FRAMES = {"tensor": {"dtype": "uint8", "encoding": "bytes", "shape": {"dimensions": ["2", "3"]}}}
LABEL = {"classLabel": {"numClasses": "2"}}


def _features_json(**features):
    return {"featuresDict": {"features": features}}


def _example(**features) -> bytes:
    ex = tf_example_pb2.Example()
    for key, value in features.items():
        feature = ex.features.feature[key]
        if isinstance(value, bytes):
            feature.bytes_list.value.append(value)
        elif isinstance(value, float):
            feature.float_list.value.append(value)
        else:
            feature.int64_list.value.extend(value if isinstance(value, list) else [value])
    return ex.SerializeToString()


def _view(**features):
    return RecordView.for_features(_features_json(**features), list(features))


def test_decodes_what_protobuf_encoded_without_copying_the_bytes():
    frames = np.arange(6, dtype=np.uint8).reshape(2, 3)
    ids = {"tensor": {"dtype": "int32", "encoding": "none", "shape": {}}}
    view = _view(frames=FRAMES, label=LABEL, frame_index=ids)
    # Other features around the wanted ones, in any order, are skipped.
    raw = _example(video_id=b"a/b", frame_index=-7, frames=frames.tobytes(), label=1, box=[1, 2])
    got = view(raw)
    np.testing.assert_array_equal(got["frames"], frames)
    assert got["label"] == 1 and got["frame_index"] == -7  # int64 two's complement
    assert not got["frames"].flags.writeable
    base = got["frames"]
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(base, memoryview) and base.obj is raw  # a view of the record


def test_unpacked_int64_lists_decode_too():
    # proto3 packs repeated int64; an unpacked encoder writes one varint field each.
    packed = _example(label=5)
    unpacked = bytes.fromhex("0a0f0a0d0a056c6162656c12041a020805")
    parse = tf_example_pb2.Example.FromString
    assert unpacked != packed and parse(unpacked) == parse(packed)
    assert _view(label=LABEL)(unpacked)["label"] == 5
    assert _view(label=LABEL)(packed)["label"] == 5


def test_text_zlib_tensors_and_bool_scalars_decode_as_tfds_gives_them():
    import zlib

    mask = np.eye(3, dtype=np.uint8)
    dims = {"dimensions": ["3", "3"]}
    zlib_spec = {"tensor": {"dtype": "uint8", "encoding": "zlib", "shape": dims}}
    flag = {"tensor": {"dtype": "bool", "encoding": "none", "shape": {}}}
    view = _view(mask=zlib_spec, video_id={"text": {}}, has_mask=flag)
    got = view(_example(mask=zlib.compress(mask.tobytes()), video_id="ffpp/ä".encode(), has_mask=1))
    np.testing.assert_array_equal(got["mask"], mask)
    assert got["video_id"] == "ffpp/ä".encode() and got["has_mask"] is True


@pytest.mark.parametrize(
    "spec",
    [
        {"tensor": {"dtype": "float32", "encoding": "none", "shape": {"dimensions": ["68", "2"]}}},
        {"tensor": {"dtype": "int32", "encoding": "none", "shape": {"dimensions": ["4"]}}},
        {"tensor": {"dtype": "float32", "encoding": "none", "shape": {}}},
        {"tensor": {"dtype": "uint8", "encoding": "bytes", "shape": {"dimensions": ["-1"]}}},
        {},
    ],
    ids=["float-array", "int-array", "float-scalar", "dynamic-shape", "unknown-key"],
)
def test_features_it_does_not_handle_are_left_to_tfds(spec):
    assert RecordView.for_features(_features_json(frames=spec), ["frames"]) is None


def test_bad_records_raise_a_record_format_error_that_says_what_is_wrong():
    view = _view(frames=FRAMES, label=LABEL)
    good = _example(frames=bytes(6), label=0)
    with pytest.raises(RecordFormatError, match=r"holds 5 bytes; uint8\[2, 3\] needs 6"):
        view(_example(frames=bytes(5), label=0))
    with pytest.raises(RecordFormatError, match=r"no feature\(s\) \['label'\]"):
        view(_example(frames=bytes(6)))
    with pytest.raises(RecordFormatError, match="'label' is not a int64_list"):
        view(_example(frames=bytes(6), label=0.5))
    with pytest.raises(RecordFormatError, match="'label' holds 2 values"):
        view(_example(frames=bytes(6), label=[0, 1]))
    with pytest.raises(RecordFormatError, match="past the end|truncated"):
        view(good[:-3])
    assert view(good)["label"] == 0


def test_multi_byte_tensors_decode_as_tfds_encoded_them():
    # The build's tensors are all uint8, where byte order and item size cannot go
    # wrong; any other dtype must read back what TFDS wrote, as TFDS reads it.
    import json

    import tensorflow_datasets as tfds
    from google.protobuf import json_format

    t, enc = tfds.features.Tensor, tfds.features.Encoding
    features = tfds.features.FeaturesDict(
        {
            "a": t(shape=(2, 3), dtype=np.float32, encoding=enc.BYTES),
            "b": t(shape=(5,), dtype=np.int16, encoding=enc.ZLIB),
            "c": t(shape=(), dtype=np.int32),
        }
    )
    features_json = json.loads(json_format.MessageToJson(features.to_proto()))
    want = {
        "a": np.array([[1.5, -2, 3e9], [0, 1e-3, 7]], np.float32),
        "b": np.array([1, -2, 300, -32768, 32767], np.int16),
        "c": -5,
    }
    raw = features.serialize_example(want)
    got = RecordView.for_features(features_json, ["a", "b", "c"])(raw)
    tfds_got = features.deserialize_example_np(raw)
    for key in ("a", "b"):
        assert (got[key].dtype, got[key].shape) == (want[key].dtype, want[key].shape), key
        np.testing.assert_array_equal(got[key], want[key])
        np.testing.assert_array_equal(got[key], tfds_got[key])
    assert got["c"] == tfds_got["c"] == -5


def test_a_value_count_or_size_other_than_the_spec_is_an_error():
    view = _view(frames=FRAMES, label=LABEL)
    with pytest.raises(RecordFormatError, match=r"holds 7 bytes; uint8\[2, 3\] needs 6"):
        view(_example(frames=bytes(7), label=0))  # too many bytes, not just too few
    empty = tf_example_pb2.Example()
    empty.features.feature["frames"].bytes_list.value.append(bytes(6))
    empty.features.feature["label"].int64_list.SetInParent()  # a list with no value
    with pytest.raises(RecordFormatError, match="'label' holds 0 values, expected 1"):
        view(empty.SerializeToString())
    empty.features.feature["label"].int64_list.value.append(1)
    empty.features.feature["frames"].bytes_list.Clear()
    empty.features.feature["frames"].bytes_list.SetInParent()
    with pytest.raises(RecordFormatError, match="'frames' holds 0 values, expected 1"):
        view(empty.SerializeToString())
