"""Check a build's shards byte by byte: riegeli's hashes, and the direct reader.

    python -m data_prep.verify DATA_DIR [--splits train,val,test] [--threads N]

Training and evaluation read uncompressed shards through
data_prep.array_record_file, which does not check riegeli's hashes (a
flipped bit inside a frame would be read as it is). Run this once on a build
that was copied or stored somewhere you do not trust: every record is read
through array_record's own reader, which checks them, and compared with what
the direct reader returns. Exit status 1 names each damaged or missing file and
record (every file is checked), 2 a split the build does not have.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from data_prep import cli
from data_prep.array_record_file import RecordFile, ShardFormatError, UnsupportedLayout
from data_prep.shards import SPLITS, find_builder_dir

# What to do about a damaged or missing shard.
FIX = (
    "rebuild the shards (rerun `python -m data_prep.build` with the same arguments: it "
    "rewrites every shard from OUT/cache) or copy them again from an intact build"
)
_UNREADABLE = "not a readable ArrayRecord file (truncated or damaged)"


def verify_file(path: str, expected: int) -> tuple[int, int, list[str]]:
    """(records, bytes, problems) of one ArrayRecord file; never raises, so one
    broken file is reported without hiding the others."""
    from array_record.python import array_record_module

    if not os.path.isfile(path):
        return 0, 0, [f"{path}: missing (dataset_info.json lists {expected} records in it); {FIX}"]
    problems: list[str] = []
    count = nbytes = 0
    reader, ok = None, False
    try:
        reader = array_record_module.ArrayRecordReader(path, "readahead_buffer_size:0")
        # A file riegeli cannot open (truncated footer...) gives a reader that is
        # not ok(); its reason comes from close(), below.
        ok = reader.ok()
        if ok:
            count, nbytes = _verify_records(reader, path, expected, problems)
    except Exception as e:  # noqa: BLE001 -- reported, and the other files still checked
        problems.append(f"{path}: {type(e).__name__}: {e}; {FIX}")
    finally:
        if reader is not None:
            try:
                reader.close()
            except RuntimeError as e:  # riegeli: "Corrupted Riegeli/records file ..." or ""
                if not ok:
                    problems.append(
                        f"{path}: {_UNREADABLE} ({e or 'riegeli gives no detail'}); {FIX}"
                    )
                else:
                    problems.append(f"{path}: {e}; {FIX}")
    if not ok and not problems:
        problems.append(f"{path}: {_UNREADABLE}; {FIX}")
    return count, nbytes, problems


def _verify_records(reader, path: str, expected: int, problems: list[str]) -> tuple[int, int]:
    nbytes = 0
    count = reader.num_records()
    if count != expected:
        problems.append(f"{path}: {count} records, dataset_info.json lists {expected}; {FIX}")
    try:
        direct = RecordFile(path)
    except UnsupportedLayout:
        direct = None  # compressed: array_record's reader is the only one used
    except ShardFormatError as e:
        direct = None
        problems.append(str(e))
    try:
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
    finally:
        if direct is not None:
            direct.close()
    return count, nbytes


def verify(data_dir: str, splits=None, threads: int | None = None) -> dict:
    """{'files', 'records', 'bytes', 'seconds', 'problems'} over `splits` (default:
    every split the build has). A split the build lacks raises ValueError naming those
    it has."""
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(find_builder_dir(data_dir))
    present = sorted(builder.info.splits.keys())
    if splits is None:
        splits = present
    if not splits:
        raise ValueError(f"no split to check in {data_dir} (it has {present})")
    missing = [s for s in splits if s not in builder.info.splits]
    if missing:
        raise ValueError(
            f"split(s) {missing} not in {data_dir} (it has {present}; a split whose videos "
            "all failed is not written): choose from those"
        )
    jobs = []
    for split in splits:
        info = builder.info.splits[split]
        jobs += [(os.fspath(p), n) for p, n in zip(info.filepaths, info.shard_lengths, strict=True)]
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
    p = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", help="the --out of `python -m data_prep.build`")
    p.add_argument(
        "--splits", default=None, help=f"comma-separated (default: all the build has, of {SPLITS})"
    )
    p.add_argument("--threads", type=int, default=None, help="files checked at once (cores)")
    args = p.parse_args(argv)
    splits = None if args.splits is None else tuple(s for s in args.splits.split(",") if s)
    try:
        out = verify(args.data_dir, splits, args.threads)
    except (ValueError, FileNotFoundError) as e:  # no build there, or no such split
        print(f"error: {e}", file=sys.stderr)
        return 2
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
