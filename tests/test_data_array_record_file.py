"""data_prep.array_record_file against array_record's own reader, on files it writes."""

import os
import random
import threading
from pathlib import Path

import numpy as np
import pytest
from array_record.python import array_record_module

from data_prep import array_record_file
from data_prep.array_record_file import (
    RecordFile,
    RecordFiles,
    ShardFormatError,
    UnsupportedLayout,
    _simple_prefix,
)

BLOCK, USABLE = 1 << 16, (1 << 16) - 24
RAW = "group_size:1,uncompressed"  # what the build writes for 'raw' and 'zlib'


def _write(path, records, options=RAW):
    writer = array_record_module.ArrayRecordWriter(str(path), options)
    for r in records:
        writer.write(r)
    writer.close()
    return str(path)


def _chunk_end(begin, size):
    """Where riegeli puts the chunk after a one-record chunk of `size` bytes at `begin`
    (the formulas of its format spec, 'Implementation notes')."""
    length = 40 + len(_simple_prefix(size)) + size
    end = begin + length + (length + (begin + USABLE - 1) % BLOCK) // USABLE * 24
    first = begin + 1
    left = BLOCK - 1 - (first + BLOCK - 1) % BLOCK
    return max(end, first + max(left - (USABLE - 1), 0))


def _awkward_records():
    """Records whose chunks begin on a block boundary, with the chunk header cut by
    a block header, one byte before a boundary, just after one, and so on."""
    sizes, begin = [], 64  # the first chunk follows the 64-byte file signature
    for target in [0, BLOCK - 20, BLOCK - 1, 0, 30, BLOCK - 39, 100]:
        size = next(s for s in range(1000, 200_000) if _chunk_end(begin, s) % BLOCK == target)
        sizes.append(size)
        begin = _chunk_end(begin, size)
    rng = np.random.default_rng(0)
    sizes += [0, 1, 5, 127, 128, 16_383, 16_384, 3 * BLOCK]  # varint edges, empty
    return [rng.integers(0, 256, s, dtype=np.uint8).tobytes() for s in sizes]


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    records = _awkward_records()
    return _write(tmp_path_factory.mktemp("ar") / "awkward.array_record", records), records


def test_every_record_equals_array_records_own_read(awkward):
    path, records = awkward
    f = RecordFile(path)
    offsets = [offset % BLOCK for offset, _, _ in f._chunks]
    # The layouts the file was made to hold are really there.
    assert offsets[1:8] == [0, BLOCK - 20, BLOCK - 1, 0, 30, BLOCK - 39, 100]
    theirs = array_record_module.ArrayRecordReader(path, "readahead_buffer_size:0")
    assert len(f) == theirs.num_records() == len(records)
    for i in random.Random(1).sample(range(len(records)), len(records)):
        got = f.read(i)
        assert got.dtype == np.uint8 and not got.flags.writeable
        assert got.tobytes() == records[i] == theirs.read([i])[0], i
    assert f.read(0) is not f.read(0) and not np.shares_memory(f.read(0), f.read(0))


def test_reads_split_into_iov_max_calls(awkward, monkeypatch):
    path, records = awkward
    monkeypatch.setattr(array_record_file, "_IOV_MAX", 3)
    f = RecordFile(path)
    assert [f.read(i).tobytes() for i in range(len(records))] == records


def test_many_files_one_index_and_threads(tmp_path):
    rng = np.random.default_rng(2)
    lengths = [3, 1, 5]
    sizes = rng.integers(1, 150_000, 9)
    records = [rng.integers(0, 256, int(n), np.uint8).tobytes() for n in sizes]
    paths, start = [], 0
    for k, n in enumerate(lengths):
        paths.append(_write(tmp_path / f"s-{k}", records[start : start + n]))
        start += n
    files = RecordFiles(paths, lengths)
    assert len(files) == 9
    assert [r.tobytes() for r in files.__getitems__(range(9))] == records
    errors, order = [], list(range(9)) * 20

    def reader(seed):
        for i in random.Random(seed).sample(order, len(order)):
            if files[i].tobytes() != records[i]:
                errors.append(i)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with pytest.raises(ShardFormatError, match=r"s-1: 1 records, but the build's .* lists 2"):
        RecordFiles(paths, [3, 2, 5])[3]


@pytest.mark.parametrize(
    "options,why",
    [
        ("group_size:4,uncompressed", "2 records per chunk"),
        ("group_size:1,zstd:3", "compressed"),
        ("group_size:1,snappy", "compressed"),
    ],
)
def test_other_layouts_are_left_to_array_record(tmp_path, options, why):
    path = _write(tmp_path / "x", [b"a" * 70_000, b"b" * 10], options)
    with pytest.raises(UnsupportedLayout, match=why):
        RecordFile(path)
    with pytest.raises(UnsupportedLayout):
        RecordFiles([path], [2])


def test_damage_is_named(awkward, tmp_path):
    path, records = awkward
    data = bytearray(Path(path).read_bytes())
    offset = RecordFile(path)._chunks[2][0]

    def damaged(name, content):
        p = tmp_path / name
        p.write_bytes(bytes(content))
        return str(p)

    # A chunk header that no longer matches the footer: that record fails, by name.
    bad = bytearray(data)
    bad[offset + 8] ^= 0x40  # data_size
    f = RecordFile(damaged("header", bad))
    with pytest.raises(
        ShardFormatError, match=r"header: record 2: the chunk at byte \d+ .*rebuild"
    ):
        f.read(2)
    assert f.read(3).tobytes() == records[3]
    # Cut short, not an ArrayRecord file, too short: named when opened.
    for name, content, why in [
        ("cut", data[: len(data) - 5 * BLOCK], "ArrayRecord postscript|no postscript"),
        ("noise", np.random.default_rng(0).integers(0, 256, 3 * BLOCK, np.uint8), "postscript"),
        ("tiny", data[:100], "too short"),
    ]:
        with pytest.raises(ShardFormatError, match=rf"{name}: .*{why}.*data_prep.verify"):
            RecordFile(damaged(name, content))


def test_a_flipped_frame_bit_is_what_verify_is_for(awkward, tmp_path):
    # Documented limit: hashes are not checked on the fast path, so a flipped
    # bit inside a record reads back flipped; array_record's reader refuses it.
    path, records = awkward
    data = bytearray(Path(path).read_bytes())
    offset = RecordFile(path)._chunks[5][0]
    data[offset + 500] ^= 1
    p = tmp_path / "flipped"
    p.write_bytes(bytes(data))
    assert RecordFile(str(p)).read(5).tobytes() != records[5]
    with pytest.raises(RuntimeError, match="hash mismatch"):
        array_record_module.ArrayRecordReader(str(p), "readahead_buffer_size:0").read([5])
    assert os.path.getsize(p) == os.path.getsize(path)


def _flipped(tmp_path, path, name, pos, bit=1):
    data = bytearray(Path(path).read_bytes())
    data[pos] ^= bit
    p = tmp_path / name
    p.write_bytes(bytes(data))
    return str(p)


def test_each_chunk_header_field_that_disagrees_with_the_footer_is_an_error(tmp_path):
    # Small records: every chunk lies inside the first 64 KiB block, so file position
    # = chunk offset + byte within the chunk. A chunk is 40 header bytes (header_hash,
    # data_size, data_hash, chunk_type | num_records << 8, decoded_data_size: 5 x u64
    # LE), then the data: compression type, varint sizes_size, the size, the record.
    records = [b"x" * 300, b"y" * 200]
    path = _write(tmp_path / "ok", records)
    offset = RecordFile(path)._chunks[1][0]
    assert offset + 300 < BLOCK and RecordFile(path).read(1).tobytes() == records[1]
    fields = {
        "data_size": 8,
        "chunk_type": 24,  # 'r' -> 's'
        "num_records": 25,  # 1 -> 3: two records in the chunk
        "decoded_data_size": 32,
        "compression_type": 40,  # 0 -> 1: 'compressed'
        "record_size": 42,  # the varint size in the chunk's sizes
    }
    for name, at in fields.items():
        f = RecordFile(
            _flipped(tmp_path, path, name, offset + at, 2 if name == "num_records" else 1)
        )
        with pytest.raises(ShardFormatError, match=rf"{name}: record 1: the chunk at byte"):
            f.read(1)
        assert f.read(0).tobytes() == records[0], name  # the other record is intact


def test_a_damaged_postscript_or_footer_is_named_when_opened(tmp_path):
    records = [b"x" * 300, b"y" * 200, b"z" * 100]
    path = _write(tmp_path / "ok", records)
    data = Path(path).read_bytes()
    postscript = len(data) - BLOCK  # a block boundary: a block header, then the chunk
    magic = array_record_file._varint_bytes(array_record_file._MAGIC)
    at = data.index(magic, postscript)
    footer = array_record_file._message(RecordFile(path)._small_chunk(postscript, "postscript")[0])[
        1
    ]
    assert footer + 100 < postscript and footer % BLOCK != 0
    # ArrayRecordMetadata {version = 1, num_chunks = 3, num_records = 3} in the footer
    counts = data.index(bytes([0x10, 3, 0x18, 3]), footer)
    for name, pos, bit, why in [
        ("magic", at + 3, 1, "no ArrayRecord postscript"),
        ("footer_records", footer + 25, 1, "the footer chunk at byte .* does not add up"),
        ("num_chunks", counts + 1, 4, "the footer lists 3 of 7 chunks"),
    ]:
        with pytest.raises(ShardFormatError, match=rf"{name}: .*{why}"):
            RecordFile(_flipped(tmp_path, path, name, pos, bit))
