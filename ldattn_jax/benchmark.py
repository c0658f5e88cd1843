"""Speed and memory, measured: training, inference, loading and prediction.

Run:
  python -m ldattn_jax.benchmark {train,eval,loader,predict,loop,all} [--json OUT]
      [--geometry paper|demo] [--variants xception,lda_st] [--batch-sizes 32,128]
      [--dtypes float32,bfloat16] [--repeats 5] [--max-workers N]
      [--threads 1,8,16] [--read-threads 4,16] [--loader-batch 32] [--video PATH]
      [--trace DIR]

Prints the machine (device kind and count, CPU cores, jax/flax versions) and,
per measurement, the median of ``--repeats`` timed runs after warm-up:
  train   step time, images/s, compile time, peak device memory, achieved
          FLOP/s from XLA's cost analysis and the fraction of the device peak;
  eval    images/s in inference mode (same grid; host -> device copy included);
  loader  decoded four-frame stacks/s from real shards (built here from the
          synthetic set) per encoding: one core through the data source, and
          through grain with 0..N worker processes;
  predict seconds per 10-second 1080p video end to end, split into decode,
          face detection + cropping, and the model;
  loop    (not in 'all') a real ``train_and_evaluate`` run per variant x
          batch on synthetic shards: images/s with grain feeding the step and
          the share of the time spent waiting for input.

The train/eval steps are the ones ``ldattn_jax.train`` runs (same step
function, optimizer, shardings), on random uint8 frames. An "image" is one
sample classified: lda_st's four-frame stack counts once (the backbone sees
its first frame; the attention reads all four), as timm's images do.
``--geometry paper`` is 398/224 (the GPU goals); ``--geometry demo`` is the
CPU-sized geometry of configs/demo.py so 2-core regressions show. Never run by the test suite
except at toy sizes: benchmarks print numbers, tests assert behaviour.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_prep import cli
from ldattn_jax import bench_utils, schedules, sharding
from ldattn_jax.config_utils import load_config
from ldattn_jax.evaluate import non_negative_int, positive_int
from ldattn_jax.models.lda import COMPUTE_DTYPES

REPO = Path(__file__).resolve().parent.parent
GEOMETRY_CONFIGS = {"paper": REPO / "configs" / "ffpp.py", "demo": REPO / "configs" / "demo.py"}
VARIANTS = ("xception", "lda_spatial", "lda_temporal", "lda_st")


def bench_config(
    variant: str, *, geometry: str = "paper", batch: int = 32, dtype="float32", **model
):
    """The config a measurement runs: ``geometry``'s config with variant/batch/dtype set."""
    config = load_config(str(GEOMETRY_CONFIGS[geometry]))
    config.model.name = variant
    config.model.dtype = dtype
    config.batch_size = batch
    for k, v in model.items():
        config.model[k] = v
    return config


def _geometry_label(config) -> str:
    """'398/224': backbone / attention input size, as result rows name a geometry."""
    return f"{config.model.image_size}/{config.model.attention_size}"


def _random_batch(config, num_frames: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    s = config.model.image_size
    return {
        "frames": rng.integers(0, 256, (config.batch_size, num_frames, s, s, 3), np.uint8),
        "label": rng.integers(0, 2, (config.batch_size,), np.int32),
    }


def _compiled_stats(lowered, compiled, step_s: float, dtype: str, n_devices: int) -> dict:
    """FLOPs, FLOP/s, fraction of peak and memory of one compiled step on ``n_devices``.

    flops_per_step: the whole step (forward + backward + optimizer update of
    the global batch, every device together), 2 FLOPs per multiply-add as XLA
    counts (bench_utils.step_flops). fraction_of_peak: achieved FLOP/s over
    the dense peak of ``n_devices`` devices at ``dtype`` (float32 on a GPU:
    the TF32 peak, see bench_utils.peak_basis).

    Runs after the timing, so none of it may cost the measured row: a helper
    that raises (an analysis the backend lacks, say) leaves its fields None
    and says why in ``stats_error``.
    """
    errors = []

    def guarded(what, fn, default=None):
        try:
            return fn()
        except Exception as e:
            errors.append(f"{what}: {e!r}"[:300])
            return default

    no_flops = {"flops_per_step": None, "flops_source": None, "compiled_flops_per_device": None}
    flops = guarded(
        "step_flops", lambda: bench_utils.step_flops(lowered, compiled, n_devices), no_flops
    )
    total = flops["flops_per_step"]
    achieved = total / step_s if total else None
    kind = jax.devices()[0].device_kind
    precision = jax.config.jax_default_matmul_precision
    peak = guarded("peak_flops", lambda: bench_utils.peak_flops(kind, dtype, precision))
    stats = {
        **flops,
        "achieved_flops_per_s": achieved,
        "peak_flops_per_device": peak,
        "peak_basis": bench_utils.peak_basis(kind, dtype, precision) if peak else None,
        "fraction_of_peak": achieved / (peak * n_devices) if achieved and peak else None,
        # This step's own need on each device (XLA's memory analysis), whatever
        # ran before it in the process; the allocator's peak below is device 0's
        # high-water mark over the whole process so far.
        "step_memory_bytes": guarded(
            "compiled_memory_bytes", lambda: bench_utils.compiled_memory_bytes(compiled)
        ),
        "peak_device_memory_bytes": guarded(
            "peak_device_memory_bytes", bench_utils.peak_device_memory_bytes
        ),
    }
    if errors:
        stats["stats_error"] = "; ".join(errors)
    return stats


def _jitted_train_step(config):
    """(mesh, jitted step, host state, state shardings, replicated) as ``train`` builds them."""
    from ldattn_jax.models.lda import build_model
    from ldattn_jax.train import make_train_step

    mesh = sharding.make_mesh(config)
    steps_per_epoch = 1000
    tx = schedules.make_optimizer(config, steps_per_epoch)
    model_ = build_model(config.model, rngs=nnx.Rngs(0))
    model_.train()
    graphdef, state = nnx.split((model_, nnx.Optimizer(model_, tx, wrt=nnx.Param)))
    state_sh = sharding.param_shardings(mesh, state, config.fsdp_min_size)
    repl = sharding.replicated(mesh)
    step = jax.jit(
        make_train_step(graphdef, schedules.make_schedule(config, steps_per_epoch)),
        in_shardings=(state_sh, sharding.batch_sharding(mesh), repl),
        out_shardings=(state_sh, repl),
        donate_argnums=(0,),
    )
    return mesh, step, state, state_sh, repl


def train_step_bytes(variant: str, *, batch: int, dtype: str, geometry: str = "paper") -> int:
    """Device bytes one train step needs at ``batch``, from XLA's memory analysis.

    Compiles only (the batch is abstract, nothing is allocated for it), so a
    batch far too large for the device is probed safely.
    """
    from ldattn_jax.models.lda import required_frames

    config = bench_config(variant, geometry=geometry, batch=batch, dtype=dtype)
    mesh, step, state, state_sh, repl = _jitted_train_step(config)
    s = config.model.image_size
    frames = (batch, required_frames(config.model), s, s, 3)
    batch_spec = {
        "frames": jax.ShapeDtypeStruct(frames, jnp.uint8, sharding=sharding.batch_sharding(mesh)),
        "label": jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=sharding.batch_sharding(mesh)),
    }
    state_spec = jax.tree.map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), state, state_sh
    )
    weights = jax.ShapeDtypeStruct((2,), jnp.float32, sharding=repl)
    return bench_utils.compiled_memory_bytes(step.lower(state_spec, batch_spec, weights).compile())


def largest_batch(
    variant: str, *, dtype: str, geometry: str = "paper", limit_bytes: int | None = None,
    start: int = 32, headroom: float = 0.9, max_batch: int = 8192,
) -> int | None:  # fmt: skip
    """Largest power-of-two batch (>= ``start``) whose train step fits the device.

    ``limit_bytes`` defaults to device 0's memory (``bytes_limit``); None where
    the backend reports none (CPU: host memory is not the question). A batch
    fits if XLA's analysis needs at most ``headroom`` of the limit.
    """
    limit = limit_bytes or bench_utils.device_memory_limit_bytes()
    if not limit:
        return None
    best, b = None, start
    while (
        b <= max_batch
        and train_step_bytes(variant, batch=b, dtype=dtype, geometry=geometry) <= headroom * limit
    ):
        best, b = b, 2 * b
    return best


def train_step_measurement(
    variant: str,
    *,
    batch: int,
    dtype: str = "float32",
    geometry: str = "paper",
    repeats: int = 5,
    warmup: int = 2,
    inner: int | None = None,
    trace_dir: str = "",
    **model,
) -> dict:
    """Times ``ldattn_jax.train``'s jitted train step for one setting.

    ``inner`` steps are chained per timed sample (default 5 on an accelerator,
    where one step is milliseconds and a sync per step would time the launch
    gap too; 1 on CPU). ``trace_dir``: also write a ``jax.profiler`` trace of
    three steps there (open with TensorBoard's profile plugin or Perfetto).
    """
    from ldattn_jax.models.lda import required_frames
    from ldattn_jax.models.xception import use_stencils

    config = bench_config(variant, geometry=geometry, batch=batch, dtype=dtype, **model)
    mesh, step, state, state_sh, repl = _jitted_train_step(config)
    state = jax.device_put(state, state_sh)
    batch_arr = sharding.shard_batch(mesh, _random_batch(config, required_frames(config.model)))
    class_w = jax.device_put(jnp.ones(2, jnp.float32), repl)
    t0 = time.perf_counter()
    lowered = step.lower(state, batch_arr, class_w)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0  # trace + lower + compile
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(holder["state"], batch_arr, class_w)
        return metrics["loss"]

    if inner is None:
        inner = 1 if jax.devices()[0].platform == "cpu" else 5
    t = bench_utils.time_fn(run, warmup=warmup, repeats=repeats, inner=inner)
    if trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(3):
                jax.block_until_ready(run())
    return {
        "variant": variant,
        "batch": batch,
        "dtype": dtype,
        "geometry": _geometry_label(config),
        "step_s": t["median_s"],
        "step_s_min": t["min_s"],
        "step_s_max": t["max_s"],
        "steps_per_sample": inner,
        # Samples per second: a sample is one image classified, with the
        # frames_per_sample - 1 following frames the temporal attention reads
        # (the backbone sees frame t only), so a four-frame lda_st stack counts
        # as ONE image, as timm's legacy_xception image does.
        "images_per_s": batch / t["median_s"],
        "frames_per_sample": required_frames(config.model),
        "devices": mesh.size,
        "compile_s": compile_s,
        "stencils": use_stencils(),  # read at trace time: LDATTN_STENCILS may change per row
        **_compiled_stats(lowered, compiled, t["median_s"], dtype, mesh.size),
    }


def eval_measurement(
    variant: str, *, batch: int, dtype: str = "float32", geometry: str = "paper", repeats: int = 5
) -> dict:
    """Inference images/s through the evaluator's jitted forward (``evaluate.Predictor``).

    ``first_call_s`` includes the compile unless a Predictor of this
    architecture, batch and mesh already ran in this process (they share it).
    """
    from ldattn_jax.evaluate import Predictor
    from ldattn_jax.models.lda import build_model, required_frames
    from ldattn_jax.models.xception import use_stencils

    config = bench_config(variant, geometry=geometry, batch=batch, dtype=dtype)
    predictor = Predictor(build_model(config.model, rngs=nnx.Rngs(0)), config, batch_size=batch)
    frames = _random_batch(config, required_frames(config.model))["frames"]
    t0 = time.perf_counter()
    predictor(frames)
    compile_s = time.perf_counter() - t0
    t = bench_utils.time_fn(lambda: predictor(frames)[0], warmup=1, repeats=repeats)
    return {
        "variant": variant,
        "batch": batch,
        "dtype": dtype,
        "geometry": _geometry_label(config),
        "stencils": use_stencils(),  # the conv form, as train rows record it
        "step_s": t["median_s"],
        "images_per_s": batch / t["median_s"],
        "first_call_s": compile_s,
    }


# --------------------------------------------------------------------------- loader


def _build_shards(root: str, out: str, size: int, encoding: str, videos: int) -> None:
    from data_prep import build, synthesize

    if not os.path.isdir(os.path.join(root, "splits")):
        synthesize.synthesize(root, videos, seed=0, frames=16, workers=os.cpu_count() or 1)
    if not os.path.exists(os.path.join(out, "summary.json")):
        rc = build.main(
            [
                "--dataset", "synthetic", "--root", root, "--out", out, "--size", str(size),
                "--frames-per-video", "6", "--stack", "3", "--encoding", encoding,
                "--workers", str(os.cpu_count() or 1), "--no-progress",
            ]
        )  # fmt: skip
        if rc != 0:
            raise RuntimeError(f"data_prep.build failed ({rc}) for {out}")


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live children (grain workers)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        # A worker that ended between the two calls counts nothing.
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(child.cpu_times()[:2])
    return total


# Loader benchmark epoch: FF++ train is 3600 videos x 32 frames (the build's
# default) = 115k stacks.
EPOCH_RECORDS = 100_000


def loader_measurement(
    *, work: str, size: int = 398, encodings=("raw", "zstd"), max_workers: int | None = None,
    videos: int = 6, seconds: float = 3.0, workers: list[int] | None = None,
    read_threads: list[int] | None = None, batch: int = 32,
) -> list[dict]:  # fmt: skip
    """Decoded stacks/s per encoding: the data source on one core, and grain with
    each of ``workers`` worker processes (default 0..``max_workers``; 0 = read
    threads in the consuming process) x each of ``read_threads`` (default: the
    config's) read threads per process, in host batches of ``batch`` stacks
    (32: the configs' global batch; sessions 1-8 timed 8)."""
    from data_prep.shards import benchmark_read, open_split
    from ldattn_jax import input_pipeline

    if workers is None:
        workers = range((max_workers or os.cpu_count() or 1) + 1)
    root = os.path.join(work, "synthetic")
    rows = []
    for enc in encodings:
        out = os.path.join(work, f"shards_{enc}_{size}")
        _build_shards(root, out, size, enc, videos)
        fields = input_pipeline.RECORD_FIELDS  # what training decodes
        one = benchmark_read(out, "train", seconds=seconds, features=fields)
        src = open_split(out, "train", fields)
        # An epoch the size of a real one: grain's index shuffle costs 510 us
        # per index over 60 records, 185 over 180, 32 over 1e5 (measured), so
        # the bare synthetic epoch would time the shuffle, not the loader.
        indices = np.resize(np.arange(len(src)), max(len(src), EPOCH_RECORDS))
        # That epoch cycles a small build, which sits in the page cache after the
        # first pass: the rates are warm-cache ones. A real epoch (FF++ at 398 px,
        # ~218 GB) outgrows RAM and reads from disk; stacks per CPU-second, the
        # goal's measure, barely notices (waiting on a disk is not CPU time), but
        # stacks/s can fall to what the disk gives.
        split_bytes = _split_bytes(out, "train")
        for count, threads in itertools.product(workers, read_threads or [None]):
            config = bench_config("lda_st", geometry="paper", batch=batch, image_size=size)
            config.data.worker_count = count
            if threads is not None:
                config.data.read_threads = threads
                config.data.prefetch = max(config.data.prefetch, threads)
            it = input_pipeline.make_train_iterator(src, config, num_frames=4, indices=indices)
            # Outside the timing: start the workers, and fill every batch buffer
            # in flight once (its memory is then recycled: input_pipeline.StackBatch).
            for _ in range(config.data.prefetch + config.data.read_threads + 2):
                next(it)
            n, t0, cpu0 = 0, time.perf_counter(), _cpu_seconds()
            while time.perf_counter() - t0 < seconds:
                n += next(it)["frames"].shape[0]
            wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
            rate = n / wall
            rows.append(
                {
                    "encoding": enc,
                    "batch": batch,
                    "workers": count,
                    "read_threads": config.data.read_threads,
                    "stacks_per_s": rate,
                    # Rate per worker process (0 workers counted as 1): the
                    # figure sessions 1-4 reported. It ignores grain's read
                    # threads and the consuming loop, so it is not CPU cost.
                    "stacks_per_s_per_core": rate / max(count, 1),
                    # What feeding costs in CPU: stacks per CPU-second used by
                    # this process and its grain workers (user + system), the
                    # consuming loop included. The goal's "per core" figure.
                    "stacks_per_cpu_s": n / max(cpu, 1e-9),
                    "cores_busy": cpu / wall,
                    "source_one_core_stacks_per_s": one["records_per_s"],
                    "source_features": one["features"],
                    # Per record on one core: the read by 'direct'
                    # (data_prep.array_record_file) or 'array_record' (its own
                    # reader), then the decode by 'zero_copy' (data_prep.record_view)
                    # or 'tfds' (its parser).
                    "source_read_ms": one["read_ms"],
                    "source_decode_ms": one["decode_ms"],
                    "reader": one["reader"],
                    "decoder": one["decoder"],
                    "epoch_records": len(indices),
                    "frames_shape": one["frames_shape"],
                    "split_bytes": split_bytes,
                    "page_cache": "warm",  # the split is read over and over (above)
                }
            )
            del it
    return rows


def _split_bytes(data_dir: str, split: str) -> int:
    """Bytes of a build's shards of ``split`` (what one pass over it reads)."""
    import glob

    from data_prep.shards import find_builder_dir

    pattern = os.path.join(find_builder_dir(data_dir), f"*-{split}.array_record-*")
    return sum(os.path.getsize(p) for p in glob.glob(pattern))


def train_loop_measurement(
    *, work: str, variant: str = "lda_st", batch: int = 32, dtype: str = "bfloat16",
    geometry: str = "paper", steps: int = 40, videos: int = 6,
) -> dict:  # fmt: skip
    """A real ``train_and_evaluate`` run on raw shards built here: images/s with
    grain feeding the step, and the share of the time the loop waited for input.

    The train step measurement above feeds one cached random batch; this one
    includes the loader (the geometry config's workers and threads), the host ->
    device copy and the logging. The compiling step and the first logged
    interval (warm-up) are left out.
    """
    from ldattn_jax.train import train_and_evaluate

    config = bench_config(variant, geometry=geometry, batch=batch, dtype=dtype)
    size = config.model.image_size
    data = os.path.join(work, f"shards_raw_{size}")
    _build_shards(os.path.join(work, "synthetic"), data, size, "raw", videos)
    log_every = max(1, steps // 4)
    config.data.dir = data
    config.data.val_split = ""  # no validation inside the timing
    config.total_steps, config.log_every = steps, log_every
    config.checkpoint_every, config.async_checkpointing = steps, False
    workdir = tempfile.mkdtemp(prefix="loop_", dir=work)
    train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    timed = [r for r in logged if r.get("images_per_s") and r["step"] > log_every]
    if not timed:
        raise RuntimeError(f"{steps} steps logged no interval after the warm-up; raise steps")
    return {
        "variant": variant, "batch": batch, "dtype": dtype, "geometry": geometry,
        "steps": steps, "timed_steps": steps - log_every,
        "worker_count": int(config.data.worker_count),
        "read_threads": int(config.data.read_threads),
        "images_per_s": float(np.median([r["images_per_s"] for r in timed])),
        "input_wait_fraction": float(np.mean([r["input_wait_fraction"] for r in timed])),
    }  # fmt: skip


# --------------------------------------------------------------------------- predict


# FF++'s 'c23' is x264 at constant rate factor 23; Celeb-DF and DFDC are H.264 too.
H264_CRF = 23


def h264_available() -> bool:
    """Whether PyAV (the `bench` extra) is here to write H.264: OpenCV's wheel cannot."""
    try:
        import av
    except ImportError:
        return False
    return "libx264" in av.codecs_available


def write_test_video(
    path: str, *, seconds: float = 10.0, fps: int = 30, hw=(1080, 1920), codec: str = "mp4v"
) -> str:
    """A clip of a real face photo moving slowly over a noisy background.

    codec 'h264': x264 at CRF H264_CRF through PyAV, as the datasets are encoded
    (FFmpeg's decode threads speed H.264 up; measured, they did not speed mp4v),
    with x264's frame threads and so one slice per frame, as FFmpeg's command
    line encodes (FF++ c23). PyAV's default, slice threads, cut each frame into
    one slice per core of the encoding machine, which a decoder's slice threads
    split between cores: a decode parallelism the datasets do not offer;
    'mp4v': MPEG-4 Part 2 through OpenCV, which needs nothing beyond the pins.
    """
    import cv2
    import skimage.data

    if codec not in ("h264", "mp4v"):
        raise ValueError(f"codec={codec!r}: choose 'h264' or 'mp4v'")
    if codec == "h264" and not h264_available():
        raise RuntimeError(
            "codec='h264' needs PyAV with libx264: pip install -e '.[bench]' (or use 'mp4v')"
        )
    face = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    face = cv2.resize(face, (600, 600), interpolation=cv2.INTER_AREA)
    h, w = hw
    rng = np.random.default_rng(0)
    bg = rng.integers(40, 90, (h, w, 3), np.uint8)

    def frames():
        for i in range(int(seconds * fps)):
            frame = bg.copy()
            x = int(w / 2 - 300 + 80 * np.sin(i / 40))
            y = int(h / 2 - 300 + 30 * np.cos(i / 50))
            frame[y : y + 600, x : x + 600] = face
            yield frame

    if codec == "mp4v":
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        for frame in frames():
            writer.write(frame)
        writer.release()
        return path
    import av

    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": str(H264_CRF)})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.thread_type = "FRAME"  # one slice per frame, like `ffmpeg -c:v libx264`
        for frame in frames():
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")))
        out.mux(stream.encode())  # flush the encoder's delayed frames
    return path


def describe_video(path: str) -> str:
    """'NAME: 10 s, 1920x1080, 30 fps, mp4v' from the container's own header."""
    import cv2

    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise FileNotFoundError(f"{path}: OpenCV cannot open this video; pass a readable file")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        frames = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        tag = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace")
    finally:
        cap.release()
    length = f"{frames / fps:.3g} s" if fps > 0 else f"{frames:.0f} frames"
    return f"{os.path.basename(path)}: {length}, {w}x{h}, {fps:.3g} fps, {tag.strip()}"


def predict_measurement(
    *, work: str, variant: str = "lda_st", dtype: str = "float32", geometry: str = "paper",
    frames_per_video: int = 32, repeats: int = 3, workers: list[int] | None = None,
    seconds: float = 10.0, video: str | None = None, codec: str | None = None,
) -> list[dict]:  # fmt: skip
    """Seconds per 1080p video (10 s by default), per number of extraction threads.

    Each row's decode and extraction run on as many cores as it has threads
    (``cpu_cores``, by CPU affinity where the OS has it): FFmpeg's decode
    threads and XLA's host threads otherwise spread over every core, and the
    8-thread row of a 16-core GPU host would be timed on 16. The model runs
    once, on every core.

    The clip is written here (write_test_video) as H.264 at CRF 23 like FF++
    c23 when PyAV is installed (the `bench` extra), else as mp4v; ``codec``
    forces one. ``video`` times a real file instead. Each row describes the
    video it timed (codec tag included).

    decode_s: OpenCV decode alone (sequential, as every run needs); extract_s:
    decode + dlib detection/landmarks + crops (with workers > 1 the detection
    overlaps the decode, so faces_s = extract_s - decode_s is what is left after
    it); model_s: the model on all stacks; total_s = extract_s + model_s, one
    video's latency (predict also extracts the next video while the model runs).
    """
    from data_prep.faces import extract_stacks
    from data_prep.video import decode_stacks
    from ldattn_jax.evaluate import Predictor
    from ldattn_jax.models.lda import build_model
    from ldattn_jax.models.xception import use_stencils
    from ldattn_jax.predict import score_stacks

    cores = os.cpu_count() or 1
    workers = workers or sorted({1, cores})
    config = bench_config(variant, geometry=geometry, batch=frames_per_video, dtype=dtype)
    size, stack = config.model.image_size, config.model.stack
    if video is None:
        codec = codec or ("h264" if h264_available() else "mp4v")
        if codec == "mp4v":
            print("predict: PyAV is not installed, so the clip is mp4v, not the datasets' H.264")
        video = os.path.join(work, f"clip_1080p_{seconds:g}s_{codec}.mp4")
        if not os.path.exists(video):
            write_test_video(video, seconds=seconds, codec=codec)
    described = describe_video(video)
    predictor = Predictor(build_model(config.model, rngs=nnx.Rngs(0)), config)
    stacks = extract_stacks(video, frames_per_video, stack, size)  # loads dlib, warms caches
    score_stacks(predictor, stacks)  # compile outside the timing

    def timed(fn):
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            samples.append(time.perf_counter() - t0)
        return float(np.median(samples)), out

    model_s, _ = timed(lambda: jax.block_until_ready(score_stacks(predictor, stacks)))
    rows = []
    for w in workers:
        with on_cores(w) as cpu_cores:
            # BGR and streamed, as extract_stacks decodes (it converts only the crops
            # to RGB, and frees each frame once it is cut): the decode's own cost.
            decode_s, _ = timed(
                lambda: decode_stacks(video, frames_per_video, stack, _DropFrames(), rgb=False)
            )
            extract_s, got = timed(
                lambda w=w: extract_stacks(video, frames_per_video, stack, size, workers=w)
            )
        rows.append(
            {
                "video": described,
                "variant": variant,
                "geometry": _geometry_label(config),
                "dtype": dtype,
                "frames_per_video": frames_per_video,
                "stacks_scored": len(got),
                "workers": w,
                "cpu_cores": cpu_cores,
                "stencils": use_stencils(),
                "decode_s": decode_s,
                "extract_s": extract_s,
                "faces_s": extract_s - decode_s,
                "model_s": model_s,
                "total_s": extract_s + model_s,
            }
        )
    return rows


@contextlib.contextmanager
def on_cores(count: int):
    """This process on ``count`` of the CPUs it may use (fewer where it has
    fewer), for the block; yields how many it ran on. Without CPU affinity
    (macOS) it runs on all and says so.

    Linux sets affinity per thread, and a thread inherits its creator's: every
    thread the process has (OpenCV's and XLA's pools, started earlier) is
    pinned, as ``taskset -a`` does, and put back after; threads started inside
    (FFmpeg's decoders, extraction workers) inherit the pin, and one that
    outlives the block (a pool first used inside it) keeps it.
    """
    if not hasattr(os, "sched_setaffinity"):
        yield os.cpu_count() or 1
        return
    allowed = sorted(os.sched_getaffinity(0))
    before = {}
    for tid in _thread_ids():
        try:
            before[tid] = os.sched_getaffinity(tid)
            os.sched_setaffinity(tid, allowed[:count])
        except OSError:  # the thread ended meanwhile
            before.pop(tid, None)
    try:
        yield min(count, len(allowed))
    finally:
        for tid, mask in before.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, mask)


def _thread_ids() -> list[int]:
    """This process's thread ids (Linux: /proc/self/task), else just this thread."""
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


class _DropFrames:
    """A data_prep.video.FrameSink that lets every frame go."""

    def begin(self, keys):
        pass

    def frame(self, index, frame):
        pass


# --------------------------------------------------------------------------- CLI


def _grid(args, fn, rows: list, save, find_max=None) -> list:
    """Runs ``fn`` over variants x dtypes x batch sizes; batch 'max' asks ``find_max``."""
    for variant in args.variants:
        for dtype in args.dtypes:
            for batch in args.batch_sizes:
                try:
                    largest = batch == "max"
                    if largest:
                        if find_max is None:
                            continue  # only training asks for its largest batch
                        found = find_max(
                            variant, dtype=dtype, geometry=args.geometry,
                            start=getattr(args, "max_start", 32),
                        )  # fmt: skip
                        if found is None:
                            raise RuntimeError(
                                "batch 'max' needs a device memory limit; this backend "
                                "reports none (CPU)"
                            )
                    r = fn(variant, batch=found if largest else batch, dtype=dtype,
                           geometry=args.geometry)  # fmt: skip
                    r["largest_that_fits"] = largest
                except Exception as e:  # e.g. out of memory at a large batch: record, go on
                    r = {"variant": variant, "batch": batch, "dtype": dtype, "error": repr(e)[:300]}
                rows.append(r)
                print(_row_text(r), flush=True)
                save()  # a run killed at a time limit keeps every finished row
    return rows


def _row_text(r: dict) -> str:
    if "error" in r:
        return f"  {r['variant']:13s} b{str(r['batch']):<4s} {r['dtype']:9s} FAILED {r['error']}"
    extra = ""
    if r.get("compile_s") is not None:
        extra += f"  compile {r['compile_s']:6.1f}s"
    if r.get("achieved_flops_per_s"):
        extra += f"  {r['achieved_flops_per_s'] / 1e9:8.1f} GFLOP/s"
    if r.get("fraction_of_peak"):
        extra += f"  {100 * r['fraction_of_peak']:5.1f}% of {r.get('peak_basis') or 'the'} peak"
    if r.get("step_memory_bytes"):
        extra += f"  step needs {r['step_memory_bytes'] / 2**30:5.1f} GiB"
    if r.get("stencils"):
        extra += "  (stencils)"
    if r.get("stats_error"):
        extra += f"  (stats missing: {r['stats_error'][:120]})"
    return (
        f"  {r['variant']:13s} b{str(r['batch']):<4s} {r['dtype']:9s} "
        f"{1000 * r['step_s']:9.1f} ms/step  {r['images_per_s']:9.1f} img/s{extra}"
    )


# argparse types of the comma-separated flags: a bad item is argparse's one
# line naming the flag ("argument --batch-sizes: ..."), exit 2, before any
# measurement, not a traceback after the first ones.
def _items(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _names(choices: tuple[str, ...], what: str):
    def parse(text: str) -> list[str]:
        items = _items(text)
        unknown = [t for t in items if t not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {list(choices)}")
        if not items:
            raise argparse.ArgumentTypeError(
                f"{text!r} names no {what}; choose from {','.join(choices)}"
            )
        return items

    return parse


def _whole(item: str, text: str, example: str) -> int:
    try:
        return positive_int(item)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{item!r} in {text!r}: give whole numbers >= 1, comma-separated, e.g. {example}"
        ) from None


def _batch_sizes(text: str) -> list[int | str]:
    """'8,32,max' -> [8, 32, 'max']."""
    sizes = [t if t == "max" else _whole(t, text, "8,32 (or max)") for t in _items(text)]
    if not sizes:
        raise argparse.ArgumentTypeError(f"{text!r} names no batch size; e.g. 8,32")
    return sizes


def _counts(text: str) -> list[int] | None:
    """'1,8,16' -> [1, 8, 16]; '' -> None (the default)."""
    return [_whole(t, text, "1,8,16") for t in _items(text)] or None


def _measure(args, work: str, results: dict, save) -> None:
    """Runs the measurements `args.what` names into `results`, saving after each."""
    what = ["train", "eval", "loader", "predict"] if args.what == "all" else [args.what]
    if "train" in what:
        print(f"train ({args.geometry} geometry):")
        train_fn = lambda v, **kw: train_step_measurement(
            v, repeats=args.repeats, trace_dir=args.trace, **kw
        )
        _grid(args, train_fn, results.setdefault("train", []), save, find_max=largest_batch)
    if "loop" in what:  # not part of 'all': one real training run per variant x batch
        print(f"loop (train_and_evaluate on synthetic shards, {args.geometry} geometry):")
        for variant in args.variants:
            for batch in [b for b in args.batch_sizes if b != "max"]:
                row = train_loop_measurement(
                    work=work, variant=variant, batch=batch, dtype=args.dtypes[0],
                    geometry=args.geometry, steps=args.loop_steps,
                )  # fmt: skip
                results.setdefault("loop", []).append(row)
                print(
                    f"  {variant} b{batch} {row['dtype']}: {row['images_per_s']:.1f} img/s, "
                    f"input wait {100 * row['input_wait_fraction']:.0f}% "
                    f"({row['worker_count']} grain workers x {row['read_threads']} threads)"
                )
                save()
    if "eval" in what:
        print(f"eval ({args.geometry} geometry):")
        eval_fn = lambda v, **kw: eval_measurement(v, repeats=args.repeats, **kw)
        _grid(args, eval_fn, results.setdefault("eval", []), save)
    if "loader" in what:
        print(f"loader (four-frame 398x398 stacks, host batch {args.loader_batch}):")
        results["loader"] = loader_measurement(
            work=work,
            max_workers=args.max_workers,
            read_threads=args.read_threads,
            batch=args.loader_batch,
        )
        if results["loader"]:
            mb = results["loader"][0]["split_bytes"] / 1e6
            print(
                f"  (warm page cache: a {mb:.0f} MB split read over and over; an epoch larger "
                "than RAM reads from disk, which can lower stacks/s, not stacks per CPU-second)"
            )
        for r in results["loader"]:
            print(
                f"  {r['encoding']:5s} workers {r['workers']} x {r['read_threads']} threads: "
                f"{r['stacks_per_s']:8.1f} stacks/s "
                f"({r['stacks_per_cpu_s']:7.1f} per CPU-second, {r['cores_busy']:.2f} cores busy; "
                f"source alone {r['source_one_core_stacks_per_s']:7.1f}/s on one core: read "
                f"{r['source_read_ms']:.2f} ms + {r['decoder']} decode "
                f"{r['source_decode_ms']:.2f} ms per record)"
            )
        save()
    if "predict" in what:
        threads = args.threads
        rows = [
            row
            for dtype in args.dtypes  # predict --dtype: the model part differs
            for row in predict_measurement(
                work=work,
                geometry=args.geometry,
                repeats=args.repeats,
                workers=threads,
                video=args.video or None,
                codec=args.clip_codec,
                dtype=dtype,
            )
        ]
        results["predict"] = rows
        print(f"predict ({rows[0]['video']}):")
        for r in rows:
            print(
                f"  {r['dtype']}, {r['workers']} thread(s) on {r['cpu_cores']} core(s): "
                f"{r['total_s']:.2f} s/video = extract "
                f"{r['extract_s']:.2f} (decode alone {r['decode_s']:.2f}) + model "
                f"{r['model_s']:.2f} ({r['stacks_scored']} stacks)"
            )
        save()


def main(argv=None) -> int:
    p = cli.ArgumentParser(prog="python -m ldattn_jax.benchmark", description=__doc__)
    p.add_argument("what", choices=["train", "eval", "loader", "predict", "loop", "all"])
    p.add_argument("--json", default="", help="also write the results as JSON here")
    p.add_argument(
        "--geometry",
        choices=sorted(GEOMETRY_CONFIGS),
        default=None,
        help="paper = 398/224 (GPU/TPU default); demo = CPU-sized (CPU default)",
    )
    p.add_argument("--variants", type=_names(VARIANTS, "variant"), default=",".join(VARIANTS))
    p.add_argument(
        "--batch-sizes",
        type=_batch_sizes,
        default=None,
        help="default 32,128 on GPU/TPU, 8,32 on CPU; 'max' (train) = the largest "
        "power of two >= 32 whose step fits device memory by XLA's memory analysis",
    )
    p.add_argument(
        "--max-start", type=positive_int, default=32,
        help="batch 'max': first power of two probed",
    )  # fmt: skip
    p.add_argument("--dtypes", type=_names(COMPUTE_DTYPES, "dtype"), default="float32,bfloat16")
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--max-workers", type=non_negative_int, default=None)
    p.add_argument(
        "--loop-steps", type=positive_int, default=40, help="loop: steps per training run"
    )
    p.add_argument(
        "--read-threads", type=_counts, default="",
        help="loader: read threads per process, e.g. 4,8,16",
    )  # fmt: skip
    p.add_argument(
        "--loader-batch", type=positive_int, default=32, help="loader: stacks per host batch"
    )
    p.add_argument(
        "--threads", type=_counts, default="",
        help="predict: extraction thread counts (default 1 and all cores)",
    )  # fmt: skip
    p.add_argument("--trace", default="", help="train: also write a jax.profiler trace here")
    p.add_argument(
        "--video", default="", help="predict: time this video instead of the synthetic clip"
    )
    p.add_argument(
        "--clip-codec", choices=["h264", "mp4v"], default=None,
        help="predict: the synthetic clip's codec (default h264 if PyAV is installed, else mp4v)",
    )  # fmt: skip
    p.add_argument(
        "--work",
        default="",
        help="scratch dir for shards/videos, kept afterwards (default: a temp dir, removed "
        "at the end: the loader and loop measurements write GBs)",
    )
    args = p.parse_args(argv)
    # Before measuring: a --json that cannot be written would otherwise be found
    # at the first save, after the first (minutes-long) measurement.
    problem = args.json and bench_utils.json_problem(args.json)
    if problem:
        p.error(problem)
    if args.video and not os.path.isfile(args.video):
        p.error(f"--video {args.video}: no such file; pass a video file, or drop --video to "
                "time the synthetic clip")  # fmt: skip
    on_cpu = jax.devices()[0].platform == "cpu"
    args.geometry = args.geometry or ("demo" if on_cpu else "paper")
    args.batch_sizes = args.batch_sizes or ([8, 32] if on_cpu else [32, 128])
    results = {"machine": bench_utils.machine_info(), "geometry": args.geometry}
    print("machine:", json.dumps(results["machine"]))
    unsaved = []  # why the last save failed; empty once one succeeds

    def save():
        if not args.json:
            return
        try:
            bench_utils.write_json(args.json, results)
        except OSError as e:  # e.g. the disk filled up: keep measuring, save elsewhere at the end
            if not unsaved:
                print(f"{p.prog}: warning: --json {args.json}: cannot write "
                      f"({e.strerror or e}); measuring on, the results are saved elsewhere "
                      "at the end", file=sys.stderr, flush=True)  # fmt: skip
            unsaved[:] = [e.strerror or str(e)]
        else:
            unsaved.clear()

    with bench_utils.scratch_dir(args.work, prefix="ldattn_bench_") as work:
        _measure(args, work, results, save)
    if unsaved:
        where = _save_elsewhere(results)
        print(f"{p.prog}: error: --json {args.json}: cannot write ({unsaved[0]}); "
              + (f"the results are in {where} instead" if where else "the results follow as JSON"),
              file=sys.stderr)  # fmt: skip
        if not where:
            print(json.dumps(results, indent=2))
        return 2
    if args.json:
        print("wrote", args.json)
    return 0


def _save_elsewhere(results: dict) -> str | None:
    """Writes ``results`` to a new file in the temp dir; its path, or None where
    that fails too. The measurements took minutes: they are not thrown away
    because --json could not take them."""
    try:
        fd, path = tempfile.mkstemp(prefix="ldattn_bench_", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, indent=2)
    except OSError:
        return None
    return path


if __name__ == "__main__":
    sys.exit(main())
