"""The benchmark CLI produces complete, self-consistent records (numbers are not asserted:
speed is measured by benchmarks, not tests)."""

import functools
import json
import os
import re
from pathlib import Path

import pytest

from ldattn_jax import bench_utils, benchmark, input_pipeline


def test_train_and_eval_records_are_complete_and_consistent(tmp_path):
    out = tmp_path / "bench.json"
    rc = benchmark.main(
        ["train", "--variants", "lda_st", "--batch-sizes", "8", "--dtypes", "float32",
         "--repeats", "1", "--geometry", "demo", "--json", str(out)]
    )  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["machine"]["device_count"] >= 1 and res["machine"]["jax"]
    assert res["machine"]["host_cpu_model"]  # CPU rows compare only within one CPU model
    assert res["machine"]["stencils"] is True  # CPU: "auto" writes the window ops as stencils
    (row,) = res["train"]
    assert "error" not in row, row
    assert row["variant"] == "lda_st" and row["batch"] == 8 and row["geometry"] == "62/56"
    assert row["images_per_s"] == pytest.approx(8 / row["step_s"])
    assert row["step_s_min"] <= row["step_s"] <= row["step_s_max"]
    # XLA's cost analysis of a train step of a real model: far more than zero flops.
    assert row["flops_per_step"] > 1e8 and row["flops_source"] == "hlo"
    assert row["achieved_flops_per_s"] == pytest.approx(row["flops_per_step"] / row["step_s"])
    # The whole step on every device: the 8 simulated devices each run 1/8 of
    # it, so the compiled (partitioned) per-device count is about 1/8.
    assert row["devices"] == 8
    assert row["compiled_flops_per_device"] * 8 == pytest.approx(row["flops_per_step"], rel=0.2)
    # One four-frame stack is one image (one sample classified).
    assert row["frames_per_sample"] == 4
    assert row["fraction_of_peak"] is None and row["peak_basis"] is None  # CPU: no peak

    ev = benchmark.eval_measurement("xception", batch=8, geometry="demo", repeats=1)
    assert ev["images_per_s"] == pytest.approx(8 / ev["step_s"])


def test_failures_are_recorded_not_raised_and_each_row_is_saved(capsys):
    class Args:
        variants, dtypes, batch_sizes, geometry = ["xception"], ["float32", "float16"], [2], "demo"

    saved = []

    def boom(variant, **kw):
        if kw["dtype"] == "float16":
            raise ValueError(f"dtype={kw['dtype']!r} unsupported")
        return {"variant": variant, "batch": 2, "dtype": kw["dtype"], "step_s": 1.0,
                "images_per_s": 2.0}  # fmt: skip

    rows = []
    benchmark._grid(Args, boom, rows, lambda: saved.append(len(rows)))
    ok, bad = rows
    assert "error" not in ok and bad["variant"] == "xception" and "float16" in bad["error"]
    assert "FAILED" in capsys.readouterr().out
    # Saved after every row, so a run killed by a time limit keeps what it measured.
    assert saved == [1, 2]


def test_json_is_written_as_rows_finish(tmp_path, monkeypatch):
    out = tmp_path / "bench.json"
    seen = []

    def fake_measure(variant, **kw):
        if out.exists():  # the previous row is already on disk when the next one starts
            seen.append(len(json.loads(out.read_text())["train"]))
        return {"variant": variant, "batch": kw["batch"], "dtype": kw["dtype"], "step_s": 1.0,
                "images_per_s": 1.0}  # fmt: skip

    monkeypatch.setattr(benchmark, "train_step_measurement", fake_measure)
    rc = benchmark.main(
        ["train", "--variants", "xception,lda_st", "--batch-sizes", "2", "--dtypes", "float32",
         "--geometry", "demo", "--json", str(out)]
    )  # fmt: skip
    assert rc == 0 and seen == [1]
    assert [r["variant"] for r in json.loads(out.read_text())["train"]] == ["xception", "lda_st"]


def test_a_default_scratch_dir_is_removed_and_a_given_one_kept(tmp_path, monkeypatch):
    # The loader and loop measurements write GBs of shards into the scratch dir:
    # a run without --work must not leave them in /tmp.
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    used = []

    def fake_loop(work, variant, batch, dtype, **_):
        Path(work, "shards").write_bytes(b"x" * 1000)
        used.append(work)
        return {"variant": variant, "batch": batch, "dtype": dtype, "images_per_s": 1.0,
                "input_wait_fraction": 0.0, "worker_count": 0, "read_threads": 1}  # fmt: skip

    monkeypatch.setattr(benchmark, "train_loop_measurement", fake_loop)
    argv = ["loop", "--geometry", "demo", "--variants", "xception", "--batch-sizes", "8",
            "--dtypes", "float32"]  # fmt: skip
    assert benchmark.main(argv) == 0
    assert Path(used[0]).name.startswith("ldattn_bench_") and not Path(used[0]).exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    kept = tmp_path / "kept"
    assert benchmark.main([*argv, "--work", str(kept)]) == 0
    assert used[1] == str(kept) and (kept / "shards").stat().st_size == 1000


def test_time_fn_and_peak_lookup():
    calls = []
    t = bench_utils.time_fn(lambda: calls.append(1) or 0, warmup=2, repeats=3, inner=2)
    assert len(calls) == 2 + 3 * 2 and t["repeats"] == 3
    assert t["min_s"] <= t["median_s"] <= t["max_s"]
    assert bench_utils.peak_flops("cpu", "float32") is None


@pytest.mark.parametrize(
    "kind,dtype,precision,peak,basis",
    [
        # Dense (no sparsity) figures of NVIDIA's data sheets, per device kind
        # as jax names them; the PCIe part is not the SXM part.
        ("NVIDIA H100 80GB HBM3", "bfloat16", None, 989.4e12, "bfloat16"),
        ("NVIDIA H100 PCIe", "bfloat16", None, 756e12, "bfloat16"),
        ("NVIDIA H200", "bfloat16", None, 989.4e12, "bfloat16"),
        ("NVIDIA A100-SXM4-80GB", "bfloat16", None, 312e12, "bfloat16"),
        # float32 runs on TF32 tensor cores at JAX's default precision: held
        # to that peak (the CUDA-core 67 TFLOP/s gave fractions above 100%).
        ("NVIDIA H200", "float32", None, 494.7e12, "tf32"),
        ("NVIDIA A100-PCIE-40GB", "float32", None, 156e12, "tf32"),
        ("NVIDIA H100 80GB HBM3", "float32", "highest", 66.9e12, "float32"),
        # Not verified: no figure rather than the SXM part's.
        ("NVIDIA H200 NVL", "bfloat16", None, None, "bfloat16"),
        ("NVIDIA H100 NVL", "float32", None, None, "tf32"),
        ("TPU v5 lite", "float32", None, None, "float32"),
        ("TPU v4", "bfloat16", None, 275e12, "bfloat16"),
    ],
)
def test_peak_flops_by_device_kind(kind, dtype, precision, peak, basis):
    assert bench_utils.peak_flops(kind, dtype, precision) == peak
    assert bench_utils.peak_basis(kind, dtype, precision) == basis


def _sharded_matmul(m, k, n):
    """(lowered x @ y with x's rows split over every device, device count)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()), ("b",))
    a = jax.device_put(jnp.ones((m, k)), NamedSharding(mesh, PartitionSpec("b")))
    b = jax.device_put(jnp.ones((k, n)), NamedSharding(mesh, PartitionSpec()))
    return jax.jit(lambda x, y: x @ y).lower(a, b), mesh.size


def test_step_flops_count_every_device_and_multiply_adds_twice():
    m, k, n = 64, 32, 16
    lowered, devices = _sharded_matmul(m, k, n)
    got = bench_utils.step_flops(lowered, lowered.compile(), devices)
    # 2 FLOPs per multiply-add, for the whole batch across the devices.
    assert got["flops_per_step"] == 2 * m * k * n and got["flops_source"] == "hlo"
    # The compiled program is one device's share.
    assert got["compiled_flops_per_device"] == 2 * m * k * n / devices

    class NoAnalysis:
        def cost_analysis(self):
            return None

    got = bench_utils.step_flops(NoAnalysis(), lowered.compile(), devices)
    assert got["flops_per_step"] == 2 * m * k * n and got["flops_source"] == "compiled x devices"


def test_step_flops_count_the_lowered_program_through_the_cpu_client_where_it_has_none():
    # The CUDA plugin (a PJRT C-API backend) answers None to the lowered
    # program's cost analysis (jax-ml/jax#22713); the same module analysed by
    # the CPU client still counts the whole step, not the compiled count,
    # which has missed cuBLAS/cuDNN calls on GPU.
    m, k, n = 64, 32, 16
    lowered, devices = _sharded_matmul(m, k, n)

    class LikeTheCudaPlugin:
        _lowering = lowered._lowering

        def cost_analysis(self):
            return None

    class NoCompiledCount:
        def cost_analysis(self):
            return None

    got = bench_utils.step_flops(LikeTheCudaPlugin(), NoCompiledCount(), devices)
    assert got == {"flops_per_step": 2 * m * k * n, "flops_source": "hlo (cpu client)",
                   "compiled_flops_per_device": None}  # fmt: skip
    # A jax without the private API: the compiled count, as before.
    assert bench_utils.cpu_client_hlo_flops(object()) is None


def test_a_failing_stats_helper_keeps_the_measured_row(monkeypatch):
    # The stats are computed after the timing; an analysis the backend lacks
    # (memory_analysis raising NotImplementedError, say) must not turn the
    # measured step into an error row.
    def boom(*a, **k):
        raise NotImplementedError("no memory analysis on this backend")

    monkeypatch.setattr(bench_utils, "compiled_memory_bytes", boom)
    monkeypatch.setattr(bench_utils, "peak_device_memory_bytes", boom)
    monkeypatch.setattr(bench_utils, "step_flops", boom)
    row = benchmark._compiled_stats(None, None, 0.5, "bfloat16", 1)
    assert row["flops_per_step"] is None and row["flops_source"] is None
    assert row["achieved_flops_per_s"] is None and row["fraction_of_peak"] is None
    assert row["step_memory_bytes"] is None and row["peak_device_memory_bytes"] is None
    assert row["stats_error"].count("no memory analysis") == 3
    assert row["stats_error"].startswith("step_flops: NotImplementedError")
    assert "stats missing" in benchmark._row_text(
        dict(row, variant="xception", batch=2, dtype="bfloat16", step_s=0.5, images_per_s=4.0)
    )


def test_unknown_variant_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["train", "--variants", "resnet50"])
    assert "unknown ['resnet50']" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag, value, said",
    [
        ("--batch-sizes", "8,abc", "'abc' in '8,abc': give whole numbers >= 1"),
        ("--batch-sizes", "0", "'0' in '0': give whole numbers >= 1"),
        ("--batch-sizes", ",", "',' names no batch size"),
        ("--variants", ",", "',' names no variant; choose from xception,"),
        ("--dtypes", "float32,float16", "unknown ['float16']; choose from ['float32', 'bfloat16']"),
        ("--dtypes", "", "'' names no dtype"),
        ("--threads", "1,x", "'x' in '1,x'"),
        ("--read-threads", "4,-2", "'-2' in '4,-2'"),
        ("--repeats", "0", "'0': give a whole number >= 1"),
        ("--max-workers", "-1", "'-1': give a whole number >= 0"),
    ],
)
def test_a_bad_flag_value_is_one_line_before_any_measurement(monkeypatch, capsys, flag, value,
                                                              said):  # fmt: skip
    measured = []
    monkeypatch.setattr(benchmark, "train_step_measurement", lambda *a, **k: measured.append(a))
    with pytest.raises(SystemExit) as exit_:
        benchmark.main(["train", "--geometry", "demo", f"{flag}={value}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"error: argument {flag}: {said}" in err, err
    assert measured == [] and "Traceback" not in err


def test_an_unwritable_json_path_is_refused_before_measuring(tmp_path, monkeypatch, capsys):
    measured = []
    monkeypatch.setattr(benchmark, "train_step_measurement", lambda *a, **k: measured.append(a))
    (tmp_path / "file").write_text("")
    for path, said in (
        (tmp_path, f"--json {tmp_path} is a directory: name a file, e.g. {tmp_path}/bench.json"),
        (tmp_path / "file" / "b.json", f"{tmp_path / 'file'} is a file, not a folder"),
    ):
        with pytest.raises(SystemExit) as exit_:
            benchmark.main(["train", "--geometry", "demo", "--json", str(path)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and said in err, err
    assert measured == []
    assert not Path(f"{tmp_path}.tmp").exists()  # write_json's half-file, once left behind
    # A folder that is not there yet is made, as write_json makes it.
    assert bench_utils.json_problem(str(tmp_path / "new" / "b.json")) is None
    assert (tmp_path / "new").is_dir()


def test_a_save_that_fails_mid_run_keeps_the_rows_elsewhere(tmp_path, monkeypatch, capsys):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    def fake_measure(variant, **kw):
        return {"variant": variant, "batch": kw["batch"], "dtype": kw["dtype"], "step_s": 1.0,
                "images_per_s": 1.0}  # fmt: skip

    monkeypatch.setattr(bench_utils, "write_json", full_disk)
    monkeypatch.setattr(benchmark, "train_step_measurement", fake_measure)
    out = tmp_path / "bench.json"
    rc = benchmark.main(
        ["train", "--variants", "xception,lda_st", "--batch-sizes", "2", "--dtypes", "float32",
         "--geometry", "demo", "--json", str(out)]
    )  # fmt: skip
    err = capsys.readouterr().err
    (kept,) = (tmp_path / "tmp").iterdir()
    assert rc == 2 and err.count("warning: --json") == 1  # said once, not per row
    assert f"error: --json {out}: cannot write (No space left on device); the results are in " \
           f"{kept} instead" in err  # fmt: skip
    assert [r["variant"] for r in json.loads(kept.read_text())["train"]] == ["xception", "lda_st"]


def test_write_json_leaves_no_half_file_when_it_fails(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):
        bench_utils.write_json(str(tmp_path / "taken"), {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_predict_records_per_thread_count(tmp_path):
    rows = benchmark.predict_measurement(
        work=str(tmp_path), geometry="demo", frames_per_video=2, repeats=1,
        workers=[1, 2], seconds=1.0,
    )  # fmt: skip
    assert [r["workers"] for r in rows] == [1, 2]
    # Each row on as many cores as threads (FFmpeg's decode threads used every core).
    cores = len(os.sched_getaffinity(0))
    assert [r["cpu_cores"] for r in rows] == [1, min(2, cores)]
    for r in rows:
        # The datasets' codec: PyAV is installed with the test extra.
        assert r["video"] == "clip_1080p_1s_h264.mp4: 1 s, 1920x1080, 30 fps, h264"
        assert r["stacks_scored"] == 2  # the clip's face is found in both key frames
        # The model it ran, so bench_goals judges only the paper's (398/224).
        assert (r["geometry"], r["dtype"]) == ("62/56", "float32")
        assert r["total_s"] == pytest.approx(r["extract_s"] + r["model_s"])
        assert r["faces_s"] == pytest.approx(r["extract_s"] - r["decode_s"])
        assert min(r["decode_s"], r["model_s"], r["extract_s"]) > 0


def test_on_cores_pins_the_process_and_puts_it_back():
    import threading

    # A thread started before (as OpenCV's and XLA's pools are) is pinned too:
    # Linux sets affinity per thread, so pinning the caller alone left it free.
    asked, answered, done = threading.Event(), [], threading.Event()

    def pool_thread():
        while not done.is_set():
            if asked.wait(0.01):
                answered.append(os.sched_getaffinity(0))
                asked.clear()

    worker = threading.Thread(target=pool_thread)
    worker.start()

    def workers_mask():
        asked.set()
        while asked.is_set():
            done.wait(0.01)
        return answered[-1]

    allowed = os.sched_getaffinity(0)
    try:
        with benchmark.on_cores(1) as used:
            assert used == 1 and len(os.sched_getaffinity(0)) == 1
            assert os.sched_getaffinity(0) <= allowed
            assert workers_mask() == os.sched_getaffinity(0)
        assert os.sched_getaffinity(0) == allowed and workers_mask() == allowed
    finally:
        done.set()
        worker.join()
    with benchmark.on_cores(len(allowed) + 5) as used:  # more than there are: all of them
        assert used == len(allowed) and os.sched_getaffinity(0) == allowed
    assert os.sched_getaffinity(0) == allowed


@pytest.mark.parametrize("codec,tag", [("h264", "h264"), ("mp4v", "FMP4")])
def test_test_video_codecs_decode_frame_exact_with_the_face(tmp_path, codec, tag):
    import cv2

    from data_prep.faces import detect_face

    path = benchmark.write_test_video(
        str(tmp_path / f"c.{codec}.mp4"), seconds=1.0, hw=(720, 1280), codec=codec
    )
    # FFmpeg names OpenCV's mp4v tag FMP4 when reading.
    assert benchmark.describe_video(path) == f"c.{codec}.mp4: 1 s, 1280x720, 30 fps, {tag}"
    cap = cv2.VideoCapture(path)
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    assert len(frames) == 30  # x264's delayed frames are flushed, none dropped
    if codec == "h264":
        # x264 writes its settings into the stream. One slice per frame, as
        # `ffmpeg -c:v libx264` encodes FF++: PyAV's default (slice threads)
        # gave one slice per core of the writing machine, which decodes in
        # parallel slices that the datasets' videos do not have.
        sei = re.search(rb"x264 - core .*? options: ([^\x00]*)", Path(path).read_bytes())
        options = dict(o.split("=", 1) for o in sei.group(1).decode().split() if "=" in o)
        assert options["sliced_threads"] == "0" and "slices" not in options, options
    found = detect_face(frames[-1], bgr=True)
    assert found is not None  # the astronaut, ~ (600 px photo) centred and moving
    with pytest.raises(ValueError, match="'h265'"):
        benchmark.write_test_video(str(tmp_path / "x.mp4"), codec="h265")


def test_predict_falls_back_to_mp4v_without_pyav(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(benchmark, "h264_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[bench\]'"):
        benchmark.write_test_video(str(tmp_path / "x.mp4"), codec="h264")
    rows = benchmark.predict_measurement(
        work=str(tmp_path), geometry="demo", frames_per_video=1, repeats=1, workers=[1],
        seconds=0.5,
    )  # fmt: skip
    assert rows[0]["video"] == "clip_1080p_0.5s_mp4v.mp4: 0.5 s, 1920x1080, 30 fps, FMP4"
    assert "PyAV is not installed, so the clip is mp4v" in capsys.readouterr().out


def test_predict_times_a_given_video_and_names_it(tmp_path, capsys):
    import cv2

    video = str(tmp_path / "suspect.mkv")  # another container and codec than the clip
    benchmark.write_test_video(str(tmp_path / "clip.mp4"), seconds=0.5, hw=(720, 1280))
    cap, out = cv2.VideoCapture(str(tmp_path / "clip.mp4")), None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out = out or cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"VP80"), 25, (1280, 720))
        out.write(frame)
    out.release()
    assert benchmark.describe_video(video) == "suspect.mkv: 0.6 s, 1280x720, 25 fps, VP80"
    rc = benchmark.main(["predict", "--geometry", "demo", "--repeats", "1", "--threads", "1",
                         "--video", video, "--work", str(tmp_path), "--dtypes", "bfloat16",
                         "--json", str(tmp_path / "p.json")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "predict (suspect.mkv: 0.6 s, 1280x720, 25 fps, VP80):" in out
    # The model runs in the dtype asked for, as predict --dtype would.
    (row,) = json.loads((tmp_path / "p.json").read_text())["predict"]
    assert row["dtype"] == "bfloat16" and "bfloat16, 1 thread(s) on 1 core(s):" in out
    with pytest.raises(FileNotFoundError, match="missing.mp4: OpenCV cannot open"):
        benchmark.describe_video(str(tmp_path / "missing.mp4"))


def test_largest_batch_follows_xla_memory_analysis(monkeypatch):
    # XLA's analysis of a real compile grows with the batch; the search keeps
    # the largest power of two under the limit, and None without a limit.
    # (Batches are multiples of the 8 simulated devices the suite runs on.)
    # Each size is compiled once (~40 s each on a loaded CI core): the search
    # below reads the same analysis of 16 and 32 that the limit is set from,
    # and asks for nothing else.
    asked = []

    def cached(variant, *, batch, **kw):
        asked.append(batch)
        return probe(variant, batch=batch, **kw)

    probe = functools.cache(benchmark.train_step_bytes)
    monkeypatch.setattr(benchmark, "train_step_bytes", cached)
    b16 = benchmark.train_step_bytes("xception", batch=16, dtype="float32", geometry="demo")
    b32 = benchmark.train_step_bytes("xception", batch=32, dtype="float32", geometry="demo")
    assert b32 > b16 > 1e6
    limit = int((b16 + b32) / 2 / 0.9)  # 16 fits, 32 does not
    got = benchmark.largest_batch(
        "xception", dtype="float32", geometry="demo", limit_bytes=limit, start=16
    )
    assert got == 16 and asked == [16, 32, 16, 32]  # stopped at the first too large
    # Nothing fits: None, after one probe.
    assert benchmark.largest_batch(
        "xception", dtype="float32", geometry="demo", limit_bytes=b16 // 2, start=16
    ) is None  # fmt: skip
    monkeypatch.setattr(bench_utils, "device_memory_limit_bytes", lambda: None)
    assert benchmark.largest_batch("xception", dtype="float32", geometry="demo") is None


def test_batch_max_on_cpu_is_a_recorded_explanation(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = benchmark.main(
        ["train", "--variants", "xception", "--batch-sizes", "max", "--dtypes", "float32",
         "--geometry", "demo", "--json", str(out)]
    )  # fmt: skip
    assert rc == 0
    (row,) = json.loads(out.read_text())["train"]
    assert row["batch"] == "max" and "reports none (CPU)" in row["error"]


def test_cpu_seconds_count_the_grain_worker_processes():
    """A child that burns CPU while this process waits shows up in _cpu_seconds."""
    import select
    import subprocess
    import sys

    before = benchmark._cpu_seconds()
    # The child says when it has spun its CPU-second. Waiting on wall time
    # instead failed on CI: with the other xdist worker busy on 2 cores, 2 s
    # of wall time gave the child only 0.77 CPU-seconds.
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nt = time.process_time()\n"
         "while time.process_time() - t < 1.0: pass\nprint('spun', flush=True)\n"
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ready, _, _ = select.select([child.stdout], [], [], 120.0)
        assert ready and child.stdout.readline().strip() == "spun"
        used = benchmark._cpu_seconds() - before  # child still alive, asleep
    finally:
        child.kill()
        child.wait()
    # This process only waited: >= 1 CPU-second here is the child's.
    assert used >= 0.95, used


def test_loader_rows_report_cpu_cost(tmp_path):
    rows = benchmark.loader_measurement(
        work=str(tmp_path), size=32, encodings=("raw",), workers=[0, 1], read_threads=[1, 2],
        seconds=0.5, batch=4,
    )  # fmt: skip
    assert [(r["encoding"], r["workers"], r["read_threads"]) for r in rows] == [
        ("raw", 0, 1), ("raw", 0, 2), ("raw", 1, 1), ("raw", 1, 2)
    ]  # fmt: skip
    for r in rows:
        assert r["frames_shape"] == [4, 32, 32, 3] and r["batch"] == 4
        assert r["cores_busy"] > 0 and r["stacks_per_s"] > 0
        # stacks/CPU-second x CPU-seconds/second = stacks/second
        assert r["stacks_per_cpu_s"] * r["cores_busy"] == pytest.approx(r["stacks_per_s"])
        # Timed as training reads: only the step's fields, over a real-sized epoch.
        assert r["source_features"] == sorted(input_pipeline.RECORD_FIELDS)
        assert r["decoder"] == "zero_copy"  # raw shards: frames viewed, not copied
        # The source's two stages fit inside its time per record.
        stages = r["source_read_ms"] + r["source_decode_ms"]
        assert 0 < stages < 1e3 / r["source_one_core_stacks_per_s"]
        assert r["source_read_ms"] > 0 and r["source_decode_ms"] > 0
        assert r["epoch_records"] == benchmark.EPOCH_RECORDS
        # A small split cycled through: warm-cache rates, and the row says so and how big.
        shards = list((tmp_path / "shards_raw_32").rglob("*-train.array_record-*"))
        assert shards and r["split_bytes"] == sum(p.stat().st_size for p in shards)
        assert r["page_cache"] == "warm"


def test_loop_runs_real_training_with_the_loader(tmp_path, capsys):
    out = tmp_path / "loop.json"
    argv = ["loop", "--geometry", "demo", "--variants", "xception", "--batch-sizes", "8",
            "--dtypes", "float32", "--loop-steps", "8", "--work", str(tmp_path),
            "--json", str(out)]  # fmt: skip
    assert benchmark.main(argv) == 0
    (row,) = json.loads(out.read_text())["loop"]
    assert (row["variant"], row["batch"], row["steps"], row["timed_steps"]) == ("xception", 8, 8, 6)
    assert row["images_per_s"] > 0 and 0.0 <= row["input_wait_fraction"] <= 1.0
    assert row["worker_count"] == 0  # the demo config's
    assert "xception b8 float32:" in capsys.readouterr().out


def test_torch_vs_jax_skips_cleanly_and_compares_one_device_only(capsys):
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "torch_vs_jax.py"
    spec = importlib.util.spec_from_file_location("torch_vs_jax", path)
    tvj = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tvj)
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("timm") is None:
        assert tvj.main([]) == 0  # no torch + timm here: a line saying why, exit 0
        assert capsys.readouterr().out.startswith("skipped: ")
    # timm trains on one GPU; our step would run on the suite's 8 devices.
    assert "JAX sees 8 devices" in tvj.one_device_problem()


def _load_script(name: str):
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_torch_vs_jax_can_give_torch_compile_another_mode(capsys):
    # XLA:GPU runs command buffers (CUDA graphs) by default and torch.compile's
    # default mode does not: the comparison can be rerun with another mode.
    tvj = _load_script("torch_vs_jax")
    assert {"default", "max-autotune-no-cudagraphs", "reduce-overhead"} <= set(tvj.COMPILE_MODES)
    with pytest.raises(ValueError, match="torch.compile mode 'fast'"):
        tvj.timm_train_step(2, 62, 1, 0, "cpu", "bfloat16", mode="fast")  # before torch
    # Parsed (then skipped here, without torch + timm or a GPU).
    assert tvj.main(["--torch-compile-mode", "max-autotune-no-cudagraphs"]) == 0
    with pytest.raises(SystemExit):
        tvj.main(["--torch-compile-mode", "fast"])


def test_xception_ops_queues_several_calls_per_sample_on_an_accelerator(monkeypatch):
    # One small op alone on a GPU takes about as long as its dispatch: a sync
    # after every call would time the launch, not the kernel.
    import jax

    ops = _load_script("xception_ops")
    seen = []
    monkeypatch.setattr(
        ops.bench_utils, "time_fn", lambda fn, **kw: seen.append(kw["inner"]) or {"median_s": 1.0}
    )
    square = lambda x: x * x
    ops._time_grad(square, jax.numpy.ones(3), repeats=1)
    gpu = type("Device", (), {"platform": "gpu"})()
    monkeypatch.setattr(ops.jax, "devices", lambda *a: [gpu])
    ops._time_grad(square, jax.numpy.ones(3), repeats=1)
    assert seen == [1, 10]
