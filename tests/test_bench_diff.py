"""bench_diff: two benchmark runs paired by setting, each measurement judged."""

import json
from pathlib import Path

import pytest

from ldattn_jax import bench_diff, bench_goals
from ldattn_jax.config_utils import load_config

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CPU = {"platform": "cpu", "device_kind": "cpu", "device_count": 1, "process_count": 1,
       "host_cpu_cores": 2, "host_cpu_model": "Xeon", "jax": "0.10.2", "flax": "0.12.8",
       "python": "3.11.7", "stencils": True}  # fmt: skip


def _train(variant="lda_st", batch=8, dtype="float32", **measured):
    row = {"variant": variant, "batch": batch, "dtype": dtype, "geometry": "62/56",
           "images_per_s": 100.0, "step_s": 0.08, "compile_s": 10.0, "step_memory_bytes": 2**30,
           "peak_device_memory_bytes": None}  # fmt: skip
    return dict(row, **measured)


def _write(tmp_path, name, machine=CPU, **sections) -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"machine": machine, "geometry": "demo", **sections}))
    return str(path)


def _run(base: list[str], new: list[str], tolerance=0.15) -> dict:
    return bench_diff.diff(bench_goals.load(base), bench_goals.load(new), tolerance)


def _verdicts(result) -> dict:
    return {(r["setting"], r["metric"]): r["verdict"] for r in result["rows"]}


def test_each_measurement_judged_in_its_own_direction(tmp_path):
    base = _write(tmp_path, "a.json", train=[_train()])
    new = _write(tmp_path, "b.json", train=[_train(images_per_s=130.0, compile_s=12.0)])
    v = _verdicts(_run([base], [new]))
    setting = "lda_st batch=8 float32 62/56 stencils=True"
    assert v[(setting, "images_per_s")] == "better"  # higher is better: 1.3x
    assert v[(setting, "compile_s")] == "WORSE"  # lower is better: 1.2x > 1.15
    assert v[(setting, "step_memory_bytes")] == "same"
    # Not measured in either (a CPU has no allocator peak): no row at all.
    assert (setting, "peak_device_memory_bytes") not in v
    # The same change inside a wider tolerance is "same".
    v = _verdicts(_run([base], [new], tolerance=0.35))
    assert v[(setting, "images_per_s")] == v[(setting, "compile_s")] == "same"


def test_a_slowdown_just_past_the_tolerance_is_worse_and_just_inside_is_same(tmp_path):
    base = _write(tmp_path, "a.json", train=[_train(images_per_s=100.0)])
    worse = _write(tmp_path, "b.json", train=[_train(images_per_s=100.0 / 1.16)])
    same = _write(tmp_path, "c.json", train=[_train(images_per_s=100.0 / 1.14)])
    key = ("lda_st batch=8 float32 62/56 stencils=True", "images_per_s")
    assert _verdicts(_run([base], [worse]))[key] == "WORSE"
    assert _verdicts(_run([base], [same]))[key] == "same"


def test_rows_pair_by_setting_and_the_unpaired_are_listed(tmp_path):
    base = _write(tmp_path, "a.json", train=[_train(batch=8), _train(batch=32)])
    new = _write(tmp_path, "b.json", train=[_train(batch=32), _train(dtype="bfloat16")])
    result = _run([base], [new])
    assert {r["setting"] for r in result["rows"]} == {"lda_st batch=32 float32 62/56 stencils=True"}
    assert result["only_base"] == ["train: lda_st batch=8 float32 62/56 stencils=True"]
    assert result["only_new"] == ["train: lda_st batch=8 bfloat16 62/56 stencils=True"]


def test_a_later_file_replaces_an_earlier_ones_row(tmp_path):
    first = _write(tmp_path, "a.json", train=[_train(images_per_s=50.0)])
    rerun = _write(tmp_path, "b.json", train=[_train(images_per_s=100.0)])
    new = _write(tmp_path, "c.json", train=[_train(images_per_s=100.0)])
    key = ("lda_st batch=8 float32 62/56 stencils=True", "images_per_s")
    assert _verdicts(_run([first, rerun], [new]))[key] == "same"
    assert _verdicts(_run([rerun, first], [new]))[key] == "better"


def test_a_failed_measurement_is_one_row_worse_or_better(tmp_path):
    ok = _write(tmp_path, "a.json", train=[_train(batch=128)])
    oom = _write(tmp_path, "b.json", train=[{**_train(batch=128), "error": "RESOURCE_EXHAUSTED"}])
    result = _run([ok], [oom])
    (row,) = result["rows"]
    assert row["verdict"] == "WORSE" and "RESOURCE_EXHAUSTED" in row["error"]
    assert "new run failed" in row["error"]
    (row,) = _run([oom], [ok])["rows"]
    assert row["verdict"] == "better" and "base run failed" in row["error"]
    (row,) = _run([oom], [oom])["rows"]
    assert row["verdict"] == "failed in both"


def test_other_machines_get_ratios_but_no_verdicts(tmp_path):
    gpu = dict(CPU, platform="gpu", device_kind="NVIDIA H100 80GB HBM3", host_cpu_cores=16)
    base = _write(tmp_path, "a.json", train=[_train()])
    new = _write(tmp_path, "b.json", machine=gpu, train=[_train(images_per_s=900.0)])
    result = _run([base], [new])
    assert not result["same_machine"]
    assert {r["verdict"] for r in result["rows"]} == {"no verdict"}
    assert result["rows"][0]["ratio"] == pytest.approx(9.0)
    assert "machines differ" in bench_diff.render(result)
    assert bench_diff.main(["--base", base, "--new", new]) == 0  # nothing judged, nothing failed


def test_versions_that_changed_are_named(tmp_path):
    base = _write(tmp_path, "a.json", train=[_train()])
    new = _write(tmp_path, "b.json", machine=dict(CPU, jax="0.11.0"), train=[_train()])
    result = _run([base], [new])
    assert result["same_machine"] and result["versions"] == {"jax": ["0.10.2", "0.11.0"]}
    assert "jax: 0.10.2 -> 0.11.0" in bench_diff.render(result)


def test_files_of_two_machines_on_one_side_are_refused(tmp_path, capsys):
    a = _write(tmp_path, "a.json", train=[_train()])
    b = _write(tmp_path, "b.json", machine=dict(CPU, host_cpu_cores=8), train=[_train()])
    assert bench_diff.main(["--base", a, b, "--new", a]) == 2
    err = capsys.readouterr().err
    assert "base files ran on different machines (host_cpu_cores: a.json 2, b.json 8)" in err
    # A field one file did not record is no conflict: the side has the recorded one.
    c = _write(tmp_path, "c.json", machine=dict(CPU, host_cpu_id="GenuineIntel family 6 model 207"))
    result = _run([a, c], [c])
    assert result["same_machine"] and not result["unrecorded"]


def test_a_files_note_is_printed(tmp_path):
    base = _write(tmp_path, "a.json", train=[_train()], note="lda_st rows ran beside pytest")
    new = _write(tmp_path, "b.json", train=[_train()])
    assert "note in a.json: lda_st rows ran beside pytest" in bench_diff.render(_run([base], [new]))


def test_smoke_runs_get_no_verdicts(tmp_path):
    base = _write(tmp_path, "a.json", train=[_train()])
    new = tmp_path / "b.json"
    new.write_text(json.dumps({"machine": CPU, "smoke": True, "train": [_train(images_per_s=1)]}))
    result = _run([base], [str(new)])
    assert {r["verdict"] for r in result["rows"]} == {"no verdict"}
    assert "--smoke" in bench_diff.render(result)


def test_old_rows_without_geometry_or_dtype_pair_with_new_ones(tmp_path):
    # Session-11 predict rows carry neither (float32, the file's geometry);
    # eval rows never carry a geometry; loop rows name it 'demo'.
    old_predict = {"video": "clip", "variant": "lda_st", "frames_per_video": 32, "workers": 2,
                   "total_s": 4.0, "decode_s": 1.0, "faces_s": 1.0, "model_s": 0.1}  # fmt: skip
    new_predict = dict(old_predict, dtype="float32", geometry="62/56", total_s=2.0)
    loop = {"variant": "xception", "batch": 8, "dtype": "float32", "geometry": "demo",
            "worker_count": 0, "read_threads": 4, "images_per_s": 30.0}  # fmt: skip
    base = _write(tmp_path, "a.json", predict=[old_predict], loop=[loop])
    new_loop = dict(loop, geometry="62/56", images_per_s=30.0)
    new = _write(tmp_path, "b.json", predict=[new_predict], loop=[new_loop])
    result = _run([base], [new])
    assert not result["only_base"] and not result["only_new"]
    v = {(r["section"], r["metric"]): r["verdict"] for r in result["rows"]}
    assert v[("predict", "total_s")] == "better" and v[("loop", "images_per_s")] == "same"


def test_geometry_labels_are_the_configs():
    for name, config in (("demo", "configs/demo.py"), ("paper", "configs/ffpp.py")):
        m = load_config(str(REPO / config)).model
        assert bench_diff.GEOMETRY_LABELS[name] == f"{m.image_size}/{m.attention_size}"


def test_cli_exit_status_and_json(tmp_path, capsys):
    base = _write(tmp_path, "a.json", train=[_train()])
    slower = _write(tmp_path, "b.json", train=[_train(images_per_s=50.0)])
    out = tmp_path / "diff.json"
    assert bench_diff.main(["--base", base, "--new", slower, "--json", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "WORSE: train lda_st batch=8 float32 62/56 stencils=True images_per_s" in printed
    assert json.loads(out.read_text())["rows"][0]["ratio"] == pytest.approx(0.5)
    assert bench_diff.main(["--base", base, "--new", base]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert bench_diff.main(["--base", base, "--new", str(bad)]) == 2
    assert "bad.json: not a readable benchmark JSON" in capsys.readouterr().err
    assert bench_diff.main(["--base", base, "--new", base, "--tolerance", "-1"]) == 2


def test_the_session_11_bf16_matmul_fix_shows_as_better():
    # Real records: training re-run after bf16 dots moved onto the CPU's bf16
    # units (benchmarks/README.md, session 11): xception bf16 b8 36.3 -> 51.3 img/s.
    result = _run(
        [str(RESULTS / "cpu-2core-xeon_2026-11-30_session11.json")],
        [str(RESULTS / "cpu-2core-xeon_2026-11-30_session11_train_bf16dots.json")],
    )
    v = _verdicts(result)
    assert v[("xception batch=8 bfloat16 62/56 stencils=True", "images_per_s")] == "better"
    assert result["same_machine"]
    # The re-run held training only: the rest is listed, not compared.
    assert {s.split(":")[0] for s in result["only_base"]} == {"eval", "loader", "predict"}


def test_a_cpu_id_differing_or_recorded_by_one_run_only(tmp_path):
    emerald = dict(CPU, host_cpu_id="GenuineIntel family 6 model 207 stepping 2")
    sapphire = dict(CPU, host_cpu_id="GenuineIntel family 6 model 143 stepping 8")
    old = _write(tmp_path, "a.json", train=[_train()])  # before host_cpu_id was recorded
    a = _write(tmp_path, "b.json", machine=emerald, train=[_train()])
    b = _write(tmp_path, "c.json", machine=sapphire, train=[_train()])
    # Same model name, other generation: ratios, no verdicts.
    assert not _run([a], [b])["same_machine"]
    result = _run([old], [a])
    assert result["same_machine"] and result["unrecorded"] == ["host_cpu_id"]
    assert "recorded by one run only: host_cpu_id" in bench_diff.render(result)
    assert "model 207" in bench_diff.render(result)


def test_cpu_id_reads_the_first_processor(tmp_path):
    from ldattn_jax.bench_utils import cpu_id

    info = tmp_path / "cpuinfo"
    block = "processor\t: {}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: {}\n"
    info.write_text(block.format(0, 207) + "model name\t: Xeon\nstepping\t: 2\n\n"
                    + block.format(1, 143) + "stepping\t: 8\n")  # fmt: skip
    assert cpu_id(str(info)) == "GenuineIntel family 6 model 207 stepping 2"
    info.write_text("processor\t: 0\nCPU implementer\t: 0x41\n")  # an Arm host: not on record
    assert cpu_id(str(info)) is None
    assert cpu_id(str(tmp_path / "missing")) is None


def test_the_default_tolerance_follows_the_platform(tmp_path):
    gpu = dict(CPU, platform="gpu", device_kind="NVIDIA H200")
    for machine, default in ((CPU, 0.25), (gpu, 0.10)):
        base = _write(tmp_path, "a.json", machine=machine, train=[_train()])
        new = _write(tmp_path, "b.json", machine=machine, train=[_train(images_per_s=80.0)])
        result = bench_diff.diff(bench_goals.load([base]), bench_goals.load([new]))
        assert result["tolerance"] == default
        key = ("lda_st batch=8 float32 62/56 stencils=True", "images_per_s")
        # 0.8x: inside a CPU's 25%, outside an accelerator's 10%.
        assert _verdicts(result)[key] == ("same" if machine is CPU else "WORSE")


def test_input_that_is_no_result_is_refused_naming_file_and_row(tmp_path, capsys):
    good = _write(tmp_path, "good.json", train=[_train()])
    cases = {
        "binary.json": b"\xff\xfe{",
        "machine_int.json": json.dumps({"machine": 5}).encode(),
        "train_dict.json": json.dumps({"machine": CPU, "train": {"a": 1}}).encode(),
        "no_variant.json": json.dumps({"machine": CPU, "train": [{"batch": 8}]}).encode(),
    }
    says = {
        "binary.json": "binary.json: not a readable benchmark JSON",
        "machine_int.json": "machine_int.json: 'machine' is not a machine record",
        "train_dict.json": "train_dict.json: 'train' is not a list of rows",
        "no_variant.json": "no_variant.json: train[0] lacks ['variant'",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert bench_diff.main(["--base", good, "--new", str(tmp_path / name)]) == 2
        assert says[name] in capsys.readouterr().err
    # A failed row needs none of them: it carries its error instead.
    failed = _write(tmp_path, "failed.json", train=[{"variant": "x", "batch": 8, "error": "OOM"}])
    assert bench_goals.load([failed])[0]["train"][0]["error"] == "OOM"


def test_a_nan_tolerance_is_refused(tmp_path, capsys):
    # NaN compares False both ways: every change would read "same".
    base = _write(tmp_path, "a.json", train=[_train()])
    for bad in ("nan", "inf", "-0.1"):
        assert bench_diff.main(["--base", base, "--new", base, "--tolerance", bad]) == 2
        assert "a finite fraction >= 0" in capsys.readouterr().err


def test_a_json_out_that_cannot_be_written_is_one_line(tmp_path, capsys):
    base = _write(tmp_path, "a.json", train=[_train()])
    for out in (tmp_path / "no" / "such" / "x.json", tmp_path):
        assert bench_diff.main(["--base", base, "--new", base, "--json", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"bench_diff: error: --json {out}: cannot write")
        assert bench_goals.main([base, "--json", str(out)]) == 2
        assert capsys.readouterr().err.startswith(f"bench_goals: error: --json {out}")


def test_another_conv_form_or_timm_mode_is_another_setting(tmp_path):
    # Before, eval rows kept no conv form and side-by-side rows no torch.compile
    # mode: LDATTN_STENCILS=on against off, or timm's reduce-overhead against its
    # default mode, got better/WORSE verdicts as if the code had changed.
    ev = {"variant": "lda_st", "batch": 8, "dtype": "float32", "geometry": "62/56",
          "images_per_s": 50.0, "first_call_s": 3.0}  # fmt: skip

    def side(mode, ratio):
        return {"batch": 32, "size": 398, "dtype": "bfloat16", "ratio": ratio,
                "ours": {"images_per_s": 1000.0}, "timm": {"compile_mode": mode}}  # fmt: skip

    base = _write(tmp_path, "a.json", eval=[dict(ev, stencils=True)],
                  side_by_side=[side("default", 1.3)])  # fmt: skip
    new = _write(tmp_path, "b.json", eval=[dict(ev, stencils=False, images_per_s=90.0)],
                 side_by_side=[side("reduce-overhead", 1.0)])  # fmt: skip
    result = _run([base], [new])
    assert not result["rows"]
    assert sorted(s.split(":")[0] for s in result["only_new"]) == ["eval", "side_by_side"]
    # The same form and mode pair up (an old eval row takes the machine's form).
    same = _write(tmp_path, "c.json", eval=[dict(ev, images_per_s=90.0)],
                  side_by_side=[side("default", 1.0)])  # fmt: skip
    v = {(r["section"], r["metric"]): r["verdict"] for r in _run([base], [same])["rows"]}
    assert v == {("eval", "images_per_s"): "better", ("eval", "first_call_s"): "same",
                 ("side_by_side", "ratio"): "WORSE"}  # fmt: skip
    # A predict row pinned to 1 core is not the same setting as an older 1-thread
    # row, which decoded on every core of the host (2 here).
    old = {"video": "clip", "variant": "lda_st", "frames_per_video": 32, "workers": 1,
           "dtype": "float32", "geometry": "62/56", "total_s": 4.0, "decode_s": 1.0,
           "faces_s": 1.0, "model_s": 0.1}  # fmt: skip
    a = _write(tmp_path, "p1.json", predict=[old])
    b = _write(tmp_path, "p2.json", predict=[dict(old, cpu_cores=1, total_s=6.0)])
    c = _write(tmp_path, "p3.json", predict=[dict(old, cpu_cores=2, total_s=6.0)])
    assert not _run([a], [b])["rows"]
    assert {r["verdict"] for r in _run([a], [c])["rows"] if r["metric"] == "total_s"} == {"WORSE"}
