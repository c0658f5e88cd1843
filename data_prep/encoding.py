"""Lossless storage of face stacks, and the measurement that chose it.

Forgery traces live in high frequencies, so nothing here is lossy. Every choice
keeps frames as a TFDS `Tensor` feature (so `tfds.data_sources.load` decodes
them with numpy alone); they differ in who compresses the raw uint8 bytes:

  raw     Tensor BYTES, ArrayRecord uncompressed  (default: see README numbers)
  snappy  Tensor BYTES, ArrayRecord snappy
  zstd    Tensor BYTES, ArrayRecord zstd:3        (what TFDS writes by default)
  zlib    Tensor ZLIB,  ArrayRecord uncompressed  (TFDS's own compressed tensor)

PNG (cv2.imencode, one image per frame) is measured by `benchmark` but not
offered for storage: it decodes ~10x slower than the 500 stacks/s/core goal.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
import zlib

import cv2
import numpy as np

ENCODINGS = {
    # name: (tfds tensor encoding, ArrayRecord writer compression option)
    "raw": ("bytes", "uncompressed"),
    "snappy": ("bytes", "snappy"),
    "zstd": ("bytes", "zstd:3"),
    "zlib": ("zlib", "uncompressed"),
}
DEFAULT_ENCODING = "raw"


def check_encoding(name: str) -> str:
    if name not in ENCODINGS:
        raise ValueError(f"--encoding {name!r} is unknown; choose one of {sorted(ENCODINGS)}")
    return name


def tensor_encoding(name: str):
    import tensorflow_datasets as tfds

    return tfds.features.Encoding(ENCODINGS[check_encoding(name)][0])


def array_record_options(name: str) -> str:
    # group_size:1 = one record per chunk, i.e. true random access (what TFDS uses).
    return f"group_size:1,{ENCODINGS[check_encoding(name)][1]}"


def sample_stack(size: int = 398, frames: int = 4, noise: float = 2.0, seed: int = 0) -> np.ndarray:
    """A realistic stack: the astronaut's face, slightly moving, with sensor noise."""
    import skimage.data

    rng = np.random.default_rng(seed)
    face = skimage.data.astronaut()[40:240, 120:320]
    out = []
    for i in range(frames):
        m = np.float32([[1, 0, 0.7 * i], [0, 1, 0.3 * i]])
        f = cv2.warpAffine(face, m, face.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
        f = cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        out.append(np.clip(f + rng.normal(0, noise, f.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


def _time_per_call(fn, min_time: float) -> float:
    fn()  # warm-up
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / n


def benchmark(
    size: int = 398, frames: int = 4, records: int = 16, min_time: float = 1.0, noise: float = 2.0
) -> dict:
    """Bytes per stack and decoded stacks/s (this process, one core) per storage choice.

    Storage encodings are timed end to end: an ArrayRecord file written with the
    production options, read by random access with the reader the loader uses
    for it ('direct': data_prep.array_record_file for uncompressed files, else
    'array_record'), payload decoded to uint8
    [frames, size, size, 3] (the TFDS proto wrapper is excluded; it is the same for
    all). PNG levels 1..3 are timed as cv2.imdecode of each frame.
    Returns {'machine': str, 'shape': [...], 'results': {name: {'bytes', 'stacks_per_s',
    'reader'}}}.
    """
    from array_record.python import array_record_module

    from data_prep.array_record_file import RecordFile, UnsupportedLayout
    from data_prep.shards import _tune_malloc

    _tune_malloc()  # as open_split does: the reader side we measure
    stack = sample_stack(size, frames, noise)
    shape = stack.shape
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (tensor_enc, _) in ENCODINGS.items():
            payload = stack.tobytes()
            if tensor_enc == "zlib":
                payload = zlib.compress(payload)
            # Bytes per record = growth from `records` to 2x`records` records, which
            # cancels the file's fixed header/footer and padding.
            sizes = []
            for copies in (records, 2 * records):
                path = os.path.join(tmp, f"{name}-{copies}")
                writer = array_record_module.ArrayRecordWriter(path, array_record_options(name))
                for _ in range(copies):
                    writer.write(payload)
                writer.close()
                sizes.append(os.path.getsize(path))
            try:
                reader, kind = RecordFile(path), "direct"
                fetch = reader.read
            except UnsupportedLayout:
                reader = array_record_module.ArrayRecordReader(path)
                kind = "array_record"

                def fetch(i, reader=reader):
                    return reader.read([i])[0]

            counter = iter(range(10**12))

            def read(fetch=fetch, counter=counter, tensor_enc=tensor_enc):
                data = fetch(next(counter) % records)
                if tensor_enc == "zlib":
                    data = zlib.decompress(data)
                return np.frombuffer(data, np.uint8).reshape(shape)

            assert np.array_equal(read(), stack)
            dt = _time_per_call(read, min_time)
            reader.close()
            results[name] = {
                "bytes": (sizes[1] - sizes[0]) / records,
                "stacks_per_s": 1 / dt,
                "reader": kind,
            }
    for level in (1, 2, 3):
        pngs = [cv2.imencode(".png", f, [cv2.IMWRITE_PNG_COMPRESSION, level])[1] for f in stack]

        def decode(pngs=pngs):
            return np.stack([cv2.imdecode(p, cv2.IMREAD_UNCHANGED) for p in pngs])

        assert np.array_equal(decode(), stack)
        results[f"png{level}"] = {
            "bytes": float(sum(p.size for p in pngs)),
            "stacks_per_s": 1 / _time_per_call(decode, min_time),
        }
    return {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
        "shape": list(shape),
        "noise": noise,
        "results": results,
    }


def main() -> None:
    import json

    from data_prep import cli

    p = cli.ArgumentParser(description="Measure face-stack storage encodings (one core).")
    p.add_argument("--size", type=int, default=398)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--min-time", type=float, default=1.0)
    p.add_argument("--noise", type=float, default=2.0, help="sensor noise sigma of the sample")
    a = p.parse_args()
    cv2.setNumThreads(1)
    out = benchmark(a.size, a.frames, min_time=a.min_time, noise=a.noise)
    print(json.dumps(out, indent=1))
    for name, r in out["results"].items():
        print(
            f"{name:8s} {r['bytes'] / 1e6:7.3f} MB/stack {r['stacks_per_s']:8.0f} stacks/s "
            f"{r.get('reader', '')}"
        )


if __name__ == "__main__":
    main()
