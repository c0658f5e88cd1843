"""Zero-copy decoding of the record fields training reads.

TFDS's numpy parser (`FeaturesDict.deserialize_example_np`) gives
`tf_example_pb2.Example.FromString` the whole ~2 MB record: upb copies the
bytes into its arena, then into a new Python bytes object for the frames
value, before `np.frombuffer` views it. Those two copies of every stack were
~0.45 ms of the ~3.3 ms of CPU the training loader spent per four-frame
398-px stack (benchmarks/README.md, session 8). Here the tf.Example wire
format is walked directly and the frames come back as a read-only numpy view
of the record's own bytes: no copy at all.

Only what training and evaluation read is handled: `Tensor` features stored
as BYTES (raw `tobytes()`) or ZLIB, static shape; integer and bool scalars
(`ClassLabel`, `Scalar`); `Text`. `RecordView.for_features` returns None for
anything else (float or integer arrays, dynamic shapes), and the caller keeps
TFDS's parser. The layout read here is the
protobuf encoding of tensorflow/core/example/{example,feature}.proto:

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }   (entries: key = 1, value = 2)
    Feature  { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
                       Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }   Int64List { repeated int64 value = 1; }
"""

from __future__ import annotations

import math
import zlib

import numpy as np

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_BYTES_LIST, _INT64_LIST = 1, 3


class RecordFormatError(ValueError):
    """A record is not the tf.Example the build's features.json describes."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise RecordFormatError("truncated varint")


def _fields(buf: memoryview, start: int, end: int):
    """Yield (field number, wire type, value) of one message; LEN values as (start, end)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
        elif wire == _LEN:
            size, pos = _varint(buf, pos, end)
            value = (pos, pos + size)
            pos += size
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            value = (pos, pos + size)
            pos += size
        else:
            raise RecordFormatError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise RecordFormatError("a field runs past the end of its message")
        yield number, wire, value


def _features(buf: memoryview, wanted: dict[bytes, str]) -> dict[str, tuple[int, int]]:
    """{feature key: (start, end) of its Feature message} for the keys in `wanted`.

    Stops once every wanted key is found (any order is read right); the
    build's records list keys sorted, so ('frames', 'label') skips the
    landmarks, mask and text after 'label'.
    """
    found = {}
    for number, wire, span in _fields(buf, 0, len(buf)):
        if number != 1 or wire != _LEN:
            continue
        for entry_number, entry_wire, entry in _fields(buf, *span):
            if entry_number != 1 or entry_wire != _LEN:
                continue
            key = value = None
            for n, w, v in _fields(buf, *entry):
                if n == 1 and w == _LEN:
                    key = wanted.get(bytes(buf[v[0] : v[1]]))
                elif n == 2 and w == _LEN:
                    value = v
            if key is not None and value is not None:
                found[key] = value
                if len(found) == len(wanted):
                    return found
    return found


def _one_value(buf: memoryview, feature: tuple[int, int], kind: int, key: str):
    """The single value of a Feature's bytes_list (a (start, end) span) or int64_list (an int)."""
    values = []
    for number, wire, lst in _fields(buf, *feature):
        if number != kind or wire != _LEN:
            raise RecordFormatError(f"feature {key!r} is not a {_KIND_NAMES[kind]}")
        for n, w, v in _fields(buf, *lst):
            if n != 1:
                continue
            if kind == _INT64_LIST and w == _LEN:  # packed (proto3's default)
                pos, end = v
                while pos < end:
                    x, pos = _varint(buf, pos, end)
                    values.append(x)
            elif w == (_VARINT if kind == _INT64_LIST else _LEN):
                values.append(v)
            else:
                raise RecordFormatError(f"feature {key!r}: value of wire type {w}")
    if len(values) != 1:
        raise RecordFormatError(f"feature {key!r} holds {len(values)} values, expected 1")
    value = values[0]
    if kind == _INT64_LIST:
        return value - (1 << 64) if value >= 1 << 63 else value  # int64 two's complement
    return value


_KIND_NAMES = {_BYTES_LIST: "bytes_list", _INT64_LIST: "int64_list"}
_INT_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32")


def _spec(feature: dict):
    """(kind, dtype, shape) of a features.json entry, or None (not handled here).

    kinds: 'tensor' (raw bytes), 'zlib' (zlib of raw bytes), 'scalar' (one
    int64_list value), 'text' (one bytes_list value, returned as bytes).
    """
    if "classLabel" in feature:
        return ("scalar", np.dtype(np.int64), ())
    if "text" in feature:
        return ("text", None, None)
    tensor = feature.get("tensor")
    if tensor is None:
        return None
    dims = tensor.get("shape", {}).get("dimensions", [])
    if any(int(d) < 0 for d in dims):
        return None  # dynamic shape: TFDS stores the shape beside the value
    dtype, shape = np.dtype(tensor["dtype"]), tuple(int(d) for d in dims)
    encoding = tensor.get("encoding", "none")
    if encoding == "bytes":
        return ("tensor", dtype, shape)
    if encoding == "zlib":
        return ("zlib", dtype, shape)
    if encoding == "none" and not shape and dtype.name in _INT_DTYPES:
        return ("scalar", dtype, shape)
    return None  # floats and int arrays: packed lists TFDS reads well enough


class RecordView:
    """Decodes `keys` of a serialized tf.Example into {key: array view | int}."""

    def __init__(self, specs: dict):
        self.specs = specs
        self._keys = {key.encode(): key for key in specs}

    @classmethod
    def for_features(cls, features_json: dict, keys) -> RecordView | None:
        """A decoder for `keys` of a build's features.json, or None if one is not handled."""
        known = features_json["featuresDict"]["features"]
        specs = {}
        for key in keys:
            spec = _spec(known.get(key, {}))
            if spec is None:
                return None
            specs[key] = spec
        return cls(specs)

    def __call__(self, raw) -> dict:
        buf = memoryview(raw)
        found = _features(buf, self._keys)
        missing = sorted(set(self.specs) - set(found))
        if missing:
            raise RecordFormatError(f"record has no feature(s) {missing}")
        out = {}
        for key, (kind, dtype, shape) in self.specs.items():
            if kind == "scalar":
                out[key] = dtype.type(_one_value(buf, found[key], _INT64_LIST, key)).item()
                continue
            start, end = _one_value(buf, found[key], _BYTES_LIST, key)
            if kind == "text":
                out[key] = bytes(buf[start:end])  # as TFDS gives Text: utf-8 bytes
                continue
            # A read-only view of the record's bytes, as TFDS's np.frombuffer gives;
            # zlib tensors are inflated first (a copy, as in TFDS).
            data = buf[start:end] if kind == "tensor" else zlib.decompress(buf[start:end])
            expected = dtype.itemsize * math.prod(shape)
            if len(data) != expected:
                raise RecordFormatError(
                    f"feature {key!r} holds {len(data)} bytes; {dtype}{list(shape)} needs "
                    f"{expected}"
                )
            out[key] = np.frombuffer(data, dtype).reshape(shape)
        return out
