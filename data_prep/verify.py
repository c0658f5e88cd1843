"""Check a build's shards byte by byte: riegeli's hashes, and the direct reader.

    python -m data_prep.verify DATA_DIR [--splits train,val,test] [--threads N]

Training and evaluation read uncompressed shards through
data_prep.array_record_file, which does not check riegeli's hashes (a
flipped bit inside a frame would be read as it is). Run this once on a build
that was copied or stored somewhere you do not trust: every record is read
through array_record's own reader, which checks them, and compared with what
the direct reader returns. Exit status 1 names each damaged file and record.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from data_prep.array_record_file import RecordFile, ShardFormatError, UnsupportedLayout
from data_prep.shards import SPLITS, find_builder_dir


def verify_file(path: str, expected: int) -> tuple[int, int, list[str]]:
    """(records, bytes, problems) of one ArrayRecord file."""
    from array_record.python import array_record_module

    problems, nbytes = [], 0
    reader = array_record_module.ArrayRecordReader(path, "readahead_buffer_size:0")
    try:
        count = reader.num_records()
        if count != expected:
            problems.append(f"{path}: {count} records, dataset_info.json lists {expected}")
        try:
            direct = RecordFile(path)
        except UnsupportedLayout:
            direct = None  # compressed: array_record's reader is the only one used
        except ShardFormatError as e:
            direct = None
            problems.append(str(e))
        for i in range(count):
            try:
                record = reader.read([i])[0]
            except RuntimeError as e:  # riegeli: hash mismatch, truncation
                problems.append(f"{path}: record {i}: {e}")
                continue
            nbytes += len(record)
            if direct is not None:
                try:
                    same = memoryview(direct.read(i)) == record
                except ShardFormatError as e:
                    problems.append(str(e))
                    continue
                if not same:
                    problems.append(
                        f"{path}: record {i}: data_prep.array_record_file reads other bytes "
                        "than array_record's reader (a bug: please report it)"
                    )
        if direct is not None:
            direct.close()
    finally:
        reader.close()
    return count, nbytes, problems


def verify(data_dir: str, splits=SPLITS, threads: int | None = None) -> dict:
    """{'files', 'records', 'bytes', 'seconds', 'problems'} over the splits present."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(find_builder_dir(data_dir))
    jobs = []
    for split in splits:
        if split in builder.info.splits:
            info = builder.info.splits[split]
            jobs += [
                (os.fspath(p), n) for p, n in zip(info.filepaths, info.shard_lengths, strict=True)
            ]
    start = time.perf_counter()
    # array_record's reader releases the GIL while it reads and hashes.
    with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
        results = list(pool.map(lambda job: verify_file(*job), jobs))
    return {
        "files": len(jobs),
        "records": sum(r[0] for r in results),
        "bytes": sum(r[1] for r in results),
        "seconds": time.perf_counter() - start,
        "problems": [p for r in results for p in r[2]],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", help="the --out of `python -m data_prep.build`")
    p.add_argument("--splits", default=",".join(SPLITS))
    p.add_argument("--threads", type=int, default=None, help="files checked at once (cores)")
    args = p.parse_args(argv)
    out = verify(args.data_dir, tuple(args.splits.split(",")), args.threads)
    for problem in out["problems"]:
        print(problem, file=sys.stderr)
    print(
        f"{out['files']} files, {out['records']} records, {out['bytes'] / 1e9:.2f} GB checked "
        f"in {out['seconds']:.1f} s: "
        + (f"{len(out['problems'])} problem(s)" if out["problems"] else "all intact")
    )
    return 1 if out["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
