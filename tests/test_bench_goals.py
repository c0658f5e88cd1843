"""bench_goals judges issue 6's goals from benchmark JSON of all three layouts."""

import json
from pathlib import Path

import pytest

from ldattn_jax import bench_goals

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
GPU = {"platform": "gpu", "device_kind": "NVIDIA H200", "device_count": 1, "stencils": False}


def _train(variant, batch, img_s, *, stencils=False, dtype="bfloat16", geometry="398/224"):
    return {"variant": variant, "batch": batch, "dtype": dtype, "geometry": geometry,
            "step_s": batch / img_s, "images_per_s": img_s, "stencils": stencils}  # fmt: skip


def _loader(encoding, workers, rate, per_core, per_cpu_s=None, read_threads=None):
    row = {"encoding": encoding, "workers": workers, "stacks_per_s": rate,
           "stacks_per_s_per_core": per_core}  # fmt: skip
    if read_threads is not None:  # since session 6
        row["read_threads"] = read_threads
    if per_cpu_s is not None:  # since session 5: stacks per CPU-second used
        row["stacks_per_cpu_s"] = per_cpu_s
    return row


def _write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def _by_goal(rows):
    return {r["goal"]: r for r in rows}


def test_gpu_run_is_judged_goal_by_goal(tmp_path):
    plan = {
        "machine": GPU,
        "train": [
            _train("lda_st", 128, 1100.0), _train("xception", 128, 1200.0),
            _train("lda_st", 32, 650.0), _train("xception", 32, 900.0),
            # A faster row in the non-default form (stencils on a GPU) does not count.
            _train("lda_st", 32, 5000.0, stencils=True),
            _train("lda_st", 128, 9000.0, dtype="float32"),
        ],
        "side_by_side": [
            {"batch": 128, "size": 398, "dtype": "bfloat16", "ratio": 1.3,
             "ours": {"images_per_s": 1300.0}, "timm": {"images_per_s": 1000.0}},
        ],
        "loader": [
            # Judged by stacks per CPU-second: 0 workers looks best per worker
            # process (600) but used 2 cores (300 per CPU-second).
            _loader("raw", 0, 600.0, 600.0, 300.0), _loader("raw", 2, 1040.0, 520.0, 510.0, 4),
            _loader("zstd", 1, 900.0, 900.0, 880.0),
            # An old-layout row (rate per worker process only) is not comparable.
            _loader("raw", 4, 3600.0, 900.0),
        ],
        "predict": [
            {"workers": 8, "total_s": 0.9, "decode_s": 0.5, "model_s": 0.05,
             "video": "clip_1080p_10s_h264.mp4: 10 s, 1920x1080, 30 fps, h264"},
            {"workers": 16, "total_s": 0.7, "decode_s": 0.5, "model_s": 0.05},
        ],
    }  # fmt: skip
    # torch_vs_jax.py's own layout, from a second file of the same run.
    side = {"machine": GPU, "torch": "2.11", "size": 398, "dtype": "bfloat16",
            "rows": [{"batch": 32, "ratio": 1.1, "ours": {"images_per_s": 880.0},
                      "timm": {"images_per_s": 800.0}}]}  # fmt: skip
    rows = bench_goals.evaluate(
        bench_goals.load([_write(tmp_path, "plan.json", plan), _write(tmp_path, "tvj.json", side)])
    )
    g = _by_goal(rows)
    assert g["lda_st train, batch 128"]["verdict"] == "met"
    assert g["lda_st train, batch 128"]["measured"] == "1100 img/s"
    assert g["lda_st train, batch 32"]["verdict"] == "MISSED"  # 650 < 700; the stencil row ignored
    assert g["ours / timm legacy_xception, batch 128"]["verdict"] == "met"
    assert g["ours / timm legacy_xception, batch 32"]["verdict"] == "MISSED"
    assert g["ours / timm legacy_xception, batch 32"]["file"] == "tvj.json"
    # step ratio = xception img/s / lda_st img/s at equal batch
    assert g["lda_st step / xception step, batch 128"]["measured"] == f"{1200 / 1100:.2f}x"
    assert g["lda_st step / xception step, batch 128"]["verdict"] == "met"
    assert g["lda_st step / xception step, batch 32"]["verdict"] == "MISSED"  # 900/650 = 1.38
    loader = g["loader (raw shards)"]
    assert loader["verdict"] == "met"
    assert loader["measured"].startswith("510 /s per CPU-second (2 grain workers x 4 read threads)")
    assert f"{1100 / 510:.1f} cores feed lda_st b128" in loader["measured"]  # zstd row not used
    predict = g["predict, 10-s 1080p video (8 threads)"]
    assert predict["verdict"] == "met" and predict["measured"].startswith(
        "0.90 s (8 threads, h264;"
    )
    assert {r["device"] for r in rows} == {"NVIDIA H200 x1"}
    table = bench_goals.markdown(rows)
    assert table.count("\n") == len(rows) + 1 and "| MISSED |" in table


def test_missing_rows_are_not_measured_and_cpu_rows_are_recorded(tmp_path):
    cpu = {"platform": "cpu", "device_kind": "cpu", "device_count": 1, "stencils": True,
           "host_cpu_cores": 2, "host_cpu_model": "AMD EPYC 7B13"}  # fmt: skip
    predict = {"workers": 2, "total_s": 1.9, "decode_s": 0.9, "model_s": 0.1}
    doc = {"machine": cpu, "train": [_train("lda_st", 32, 20.0, stencils=True)],
           "predict": [predict]}  # fmt: skip
    g = _by_goal(bench_goals.evaluate(bench_goals.load([_write(tmp_path, "cpu.json", doc)])))
    assert g["lda_st train, batch 32"]["verdict"] == "recorded (CPU)"
    assert g["lda_st train, batch 32"]["device"] == "CPU (AMD EPYC 7B13, 2 cores)"
    assert g["lda_st train, batch 128"]["verdict"] == "not measured"
    assert g["loader (raw shards)"]["verdict"] == "not measured"
    assert g["predict, 10-s 1080p video (8 threads)"]["measured"].startswith("1.90 s (2 threads")


def test_on_a_gpu_fewer_threads_than_the_goal_is_incomplete(tmp_path):
    doc = {"machine": GPU, "predict": [{"workers": 1, "total_s": 0.5, "decode_s": 0.3,
                                        "model_s": 0.05}]}  # fmt: skip
    (row,) = [
        r
        for r in bench_goals.evaluate(bench_goals.load([_write(tmp_path, "p.json", doc)]))
        if r["goal"].startswith("predict")
    ]
    assert row["verdict"] == "incomplete" and "(1 threads" in row["measured"]


def test_committed_results_of_every_session_still_load():
    files = sorted(str(p) for p in RESULTS.glob("*.json"))
    assert files
    g = _by_goal(bench_goals.evaluate(bench_goals.load(files)))
    # The CPU sessions measured the loader and predict; both are shown as records.
    assert g["loader (raw shards)"]["verdict"] == "recorded (CPU)"
    # Since session 5 rows carry stacks per CPU-second; older ones only a rate
    # per worker process, which does not beat them.
    assert "per CPU-second" in g["loader (raw shards)"]["measured"]
    old = [f for f in files if "stacks_per_cpu_s" not in Path(f).read_text()]
    g = _by_goal(bench_goals.evaluate(bench_goals.load(old)))
    assert "per worker process" in g["loader (raw shards)"]["measured"]
    assert g["predict, 10-s 1080p video (8 threads)"]["verdict"] == "recorded (CPU)"


def test_a_file_that_is_not_a_result_is_named(tmp_path, capsys):
    bad = _write(tmp_path, "notes.json", {"hello": 1})
    with pytest.raises(SystemExit):
        bench_goals.main([bad])
    assert "notes.json: no 'machine' key" in capsys.readouterr().err
    broken = tmp_path / "cut.json"
    broken.write_text('{"machine": ')
    with pytest.raises(SystemExit):
        bench_goals.main([str(broken)])
    assert "cut.json: not a readable benchmark JSON" in capsys.readouterr().err
