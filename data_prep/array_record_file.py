"""One-copy random reads of records from uncompressed ArrayRecord files.

Why not array_record's own reader: returning one 1.9 MB raw stack took it
1.2-1.4 ms on the 2-vCPU Xeon, over half the CPU the training loader spent
per stack (benchmarks/README.md, sessions 8 and 10). Riegeli reads the chunk
into its buffer, hashes it, MaskedReader copies it, the chunk decoder copies
the record into a std::string and pybind copies that into Python bytes. Here
one `os.preadv` (which releases the GIL) puts the record's bytes straight
into a numpy array, skipping the block headers in the same call: 0.22 ms.

The layout read is the Riegeli/records format
(google/riegeli doc/riegeli_records_file_format.md) and ArrayRecord's footer
(google/array_record cpp/layout.proto):

    file: record chunks, a footer chunk, a postscript chunk (the last 64 KiB)
    at every 64 KiB boundary a 24-byte block header interrupts the chunk there
    chunk: 40-byte header (header_hash, data_size, data_hash,
           chunk_type | num_records << 8, decoded_data_size), then data
    simple chunk ('r') data: compression_type, varint sizes_size,
           the record sizes (varints), the records
    postscript: RiegeliPostscript {footer_offset = 1, magic = 2}, three copies
    footer: RiegeliFooterMetadata {array_record_metadata = 1 {version = 1,
           num_chunks = 2, num_records = 3}}, then one ArrayRecordFooter
           {chunk_offset = 1, decoded_data_size = 2, num_records = 3} per chunk

Only files of one record per chunk (`group_size:1`) without compression are
read here: the build's 'raw' and 'zlib' encodings. `RecordFile` raises
`UnsupportedLayout` for any other, and callers keep array_record's reader.

Not done: the hashes are not checked (HighwayHash is in none of our
dependencies). Every read checks the chunk's header against the footer (its
type, one record, both sizes, the size prefix), so a misplaced, truncated or
overwritten chunk header is an error; a flipped bit inside the frames is not
seen. `python -m data_prep.verify DIR` reads every record through
array_record's checksummed reader and compares it with this one.
"""

from __future__ import annotations

import bisect
import os
import struct
import threading
import weakref

import numpy as np

from data_prep.record_view import RecordFormatError, _fields, _varint

_BLOCK, _BLOCK_HEADER, _CHUNK_HEADER = 1 << 16, 24, 40
_SIMPLE_CHUNK = 0x72  # 'r'
_MAGIC = 0x71930E704FDAE05E  # ArrayRecord's postscript magic
_VERSION = 1
_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 1024
_SKIPPED = bytearray(_BLOCK_HEADER)  # block headers land here, never read


class UnsupportedLayout(ValueError):
    """A valid ArrayRecord file this reader does not handle (compressed, grouped)."""


class ShardFormatError(RecordFormatError):
    """A file is not the ArrayRecord its own footer describes (damaged or truncated)."""


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _simple_prefix(size: int) -> bytes:
    """The data of a one-record uncompressed simple chunk, up to the record itself."""
    sizes = _varint_bytes(size)
    return b"\x00" + _varint_bytes(len(sizes)) + sizes


def _skip_block_headers(pos: int, targets) -> tuple[list, int]:
    """preadv buffers that lay `targets` out as the chunk bytes from file position
    `pos`, and the file position where they end."""
    buffers = []
    for target in targets:
        done, n = 0, len(target)
        while done < n:
            if pos % _BLOCK == 0:
                buffers.append(_SKIPPED)
                pos += _BLOCK_HEADER
            take = min(n - done, _BLOCK - pos % _BLOCK)
            buffers.append(target[done : done + take])
            done += take
            pos += take
    return buffers, pos


def _message(buf, span=None) -> dict:
    """{field number: value} of a small protobuf message (last value wins)."""
    start, end = span if span is not None else (0, len(buf))
    return {number: value for number, _, value in _fields(buf, start, end)}


class RecordFile:
    """Random access to the records of one ArrayRecord file; `read(i)` -> uint8 array."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._closer = weakref.finalize(self, os.close, self._fd)
        try:
            self._chunks = self._read_footer()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._closer()

    def __len__(self) -> int:
        return len(self._chunks)

    def _error(self, what: str) -> ShardFormatError:
        return ShardFormatError(
            f"{self.path}: {what}; the shard is damaged or truncated: rebuild it "
            "(`python -m data_prep.verify DIR` checks a build)"
        )

    def _preadv(self, pos: int, targets) -> None:
        buffers, end = _skip_block_headers(pos, targets)
        want = end - pos
        if len(buffers) <= _IOV_MAX:  # records under ~64 MB: one call
            got = os.preadv(self._fd, buffers, pos)
        else:  # the kernel takes at most IOV_MAX buffers per call
            got = 0
            for i in range(0, len(buffers), _IOV_MAX):
                part = buffers[i : i + _IOV_MAX]
                n = os.preadv(self._fd, part, pos + got)
                got += n
                if n < sum(len(b) for b in part):
                    break  # end of file
        if got != want:
            raise self._error(f"{want} bytes at byte {pos} run past the end of the file")

    def _small_chunk(self, pos: int, what: str) -> list[memoryview]:
        """The records of the uncompressed simple chunk at `pos` (postscript, footer)."""
        header = bytearray(_CHUNK_HEADER)
        self._preadv(pos, [memoryview(header)])
        _, data_size, _, type_records, decoded_size = struct.unpack("<5Q", header)
        chunk_type, num_records = type_records & 0xFF, type_records >> 8
        if chunk_type != _SIMPLE_CHUNK or data_size > os.fstat(self._fd).st_size:
            raise self._error(f"no {what} chunk at byte {pos}")
        data = bytearray(_CHUNK_HEADER + data_size)
        self._preadv(pos, [memoryview(data)])
        data = memoryview(data)[_CHUNK_HEADER:]
        if data_size == 0 or data[0] != 0:
            raise UnsupportedLayout(f"{self.path}: the {what} is compressed")
        sizes_size, at = _varint(data, 1, len(data))
        sizes_end, records = at + sizes_size, []
        values = sizes_end
        while at < sizes_end:
            size, at = _varint(data, at, sizes_end)
            records.append(data[values : values + size])
            values += size
        if len(records) != num_records or values - sizes_end != decoded_size:
            raise self._error(f"the {what} chunk at byte {pos} does not add up")
        return records

    def _read_footer(self) -> list[tuple[int, int, bytes]]:
        """(chunk offset, record size, expected data prefix) of every record."""
        size = os.fstat(self._fd).st_size
        if size < _BLOCK:
            raise self._error(f"{size} bytes is too short for an ArrayRecord file")
        postscript = _message(self._small_chunk(size - _BLOCK, "postscript")[0])
        if postscript.get(2) != _MAGIC or 1 not in postscript:
            raise self._error("the last 64 KiB hold no ArrayRecord postscript")
        footer = self._small_chunk(postscript[1], "footer")
        metadata = _message(footer[0])
        if 1 not in metadata:
            raise UnsupportedLayout(f"{self.path}: the footer is not an ArrayRecord index")
        info = _message(footer[0], metadata[1])
        if info.get(1) != _VERSION:
            raise UnsupportedLayout(f"{self.path}: ArrayRecord version {info.get(1)}")
        chunks = []
        for entry in footer[1:]:
            chunk = _message(entry)
            if chunk.get(3, 0) != 1:
                raise UnsupportedLayout(
                    f"{self.path}: {chunk.get(3, 0)} records per chunk (this reader needs "
                    "group_size:1)"
                )
            chunks.append((chunk[1], chunk.get(2, 0), _simple_prefix(chunk.get(2, 0))))
        if len(chunks) != info.get(2, 0) or len(chunks) != info.get(3, 0):
            raise self._error(f"the footer lists {len(chunks)} of {info.get(2)} chunks")
        if chunks:
            self._check_compression(chunks[0])
        return chunks

    def _check_compression(self, chunk) -> None:
        offset, _, prefix = chunk
        head = bytearray(_CHUNK_HEADER + 1)
        self._preadv(offset, [memoryview(head)])
        if head[-1] != prefix[0]:
            raise UnsupportedLayout(f"{self.path}: the records are compressed ({head[-1]:#x})")

    def read(self, index: int) -> np.ndarray:
        """Record `index` as a read-only uint8 array of its bytes."""
        offset, size, prefix = self._chunks[index]
        head = bytearray(_CHUNK_HEADER + len(prefix))
        record = np.empty(size, np.uint8)
        self._preadv(offset, [memoryview(head), memoryview(record)])
        _, data_size, _, type_records, decoded_size = struct.unpack_from("<5Q", head)
        if (
            type_records != _SIMPLE_CHUNK | 1 << 8
            or decoded_size != size
            or data_size != len(prefix) + size
            or head[_CHUNK_HEADER:] != prefix
        ):
            raise self._error(
                f"record {index}: the chunk at byte {offset} is not the {size}-byte "
                "record the footer lists"
            )
        record.flags.writeable = False
        return record


class RecordFiles:
    """One global index over a split's files, in TFDS's shard order (thread-safe)."""

    def __init__(self, paths, lengths):
        self.paths = [os.fspath(p) for p in paths]
        self.lengths = [int(n) for n in lengths]
        self._starts = np.cumsum([0, *self.lengths]).tolist()
        self._files: list[RecordFile | None] = [None] * len(self.paths)
        self._lock = threading.Lock()
        if self.paths:
            self._file(0)  # raises UnsupportedLayout here, where callers can fall back

    def __len__(self) -> int:
        return self._starts[-1]

    def _file(self, k: int) -> RecordFile:
        f = self._files[k]
        if f is None:
            with self._lock:  # files open lazily, as array_record's data source does
                f = self._files[k]
                if f is None:
                    f = RecordFile(self.paths[k])
                    if len(f) != self.lengths[k]:
                        f.close()
                        raise f._error(
                            f"{len(f)} records, but the build's dataset_info.json "
                            f"lists {self.lengths[k]}"
                        )
                    self._files[k] = f
        return f

    def __getitem__(self, index: int) -> np.ndarray:
        k = bisect.bisect_right(self._starts, index) - 1
        return self._file(k).read(index - self._starts[k])

    def __getitems__(self, indices) -> list[np.ndarray]:
        return [self[i] for i in indices]

    def close(self) -> None:
        for f in self._files:
            if f is not None:
                f.close()
