"""`make demo`'s stages: reused when done with the same settings, refused when not."""

import json
import os

import pytest

from ldattn_jax import demo


@pytest.fixture
def stages(monkeypatch):
    """demo._run without the real work: each call leaves what its stage leaves."""
    ran = []

    def fake_run(cmd):
        module, args = cmd[2], dict(zip(cmd[3::2], cmd[4::2], strict=True))
        ran.append(module)
        if module == "data_prep.build":  # its TFDS dir and OUT/summary.json, as build writes
            out = args["--out"]
            tfds_dir = os.path.join(out, "lda_faces", "synthetic_n3_s62", "1.0.0")
            os.makedirs(tfds_dir)
            open(os.path.join(tfds_dir, "dataset_info.json"), "w").close()
            recorded = {
                "root": args["--root"],
                "size": int(args["--size"]),
                "stack": int(args["--stack"]),
                "frames_per_video": int(args["--frames-per-video"]),
            }
            with open(os.path.join(out, "summary.json"), "w") as f:
                json.dump({"args": recorded}, f)

    monkeypatch.setattr(demo, "_run", fake_run)
    return ran


def test_videos_of_another_size_or_seed_are_not_reused(tmp_path, stages):
    videos = str(tmp_path / "videos")
    os.makedirs(videos)
    assert demo.synthesize(videos, 40, 0) and stages == ["data_prep.synthesize"]
    assert not demo.synthesize(videos, 40, 0) and len(stages) == 1  # done: reused
    with pytest.raises(demo.StaleStage, match=r"videos=40 seed=0; this run asks for videos=80 "
                       r"seed=1.*another --out"):  # fmt: skip
        demo.synthesize(videos, 80, 1)


def test_shards_of_other_settings_are_not_reused(tmp_path, stages):
    videos, shards = str(tmp_path / "videos"), str(tmp_path / "shards")
    assert demo.build(videos, shards, 62, 3, 8) and stages == ["data_prep.build"]
    assert not demo.build(videos, shards, 62, 3, 8) and len(stages) == 1
    for other in [(videos, shards, 118, 3, 8), (videos, shards, 62, 3, 4),
                  (str(tmp_path / "heldout"), shards, 62, 3, 8)]:  # fmt: skip
        with pytest.raises(demo.StaleStage, match="this run asks for root="):
            demo.build(*other)
    # A build that does not record its arguments is built again (from its cache).
    os.remove(os.path.join(shards, "summary.json"))
    with pytest.raises(FileExistsError):  # the fake build found its dir: it ran again
        demo.build(videos, shards, 62, 3, 8)
    assert stages == ["data_prep.build", "data_prep.build"]


def test_demo_refuses_a_stale_stage_with_exit_2(tmp_path, stages, capsys):
    out = str(tmp_path / "out")
    os.makedirs(os.path.join(out, "videos"))
    with open(os.path.join(out, "videos", ".done"), "w") as f:
        f.write("videos=40 seed=0\n")
    assert demo.main(["--out", out, "--videos", "80"]) == 2
    err = capsys.readouterr().err
    assert "videos=40 seed=0; this run asks for videos=80 seed=0" in err and stages == []


def test_a_trained_variant_of_other_settings_is_not_reused(tmp_path, monkeypatch):
    from ldattn_jax import train
    from ldattn_jax.config_utils import write_config

    shards = str(tmp_path / "shards")
    workdir = tmp_path / "train_lda_st"
    workdir.mkdir()
    write_config(demo.demo_config("lda_st", shards), workdir / "config.json")
    ran = []
    monkeypatch.setattr(train, "train_and_evaluate", lambda *a: ran.append(a))
    # Training would extend the finished run to 10 epochs and report the mix.
    with pytest.raises(demo.StaleStage, match=r"num_epochs: 8 -> 10.*another --out"):
        demo.run_variant("lda_st", str(tmp_path), shards, ["--config.num_epochs=10"])
    assert ran == []


def test_shards_of_another_stack_or_key_frames_are_not_reused(tmp_path, stages):
    # Each setting on its own: shards of 3-frame stacks cannot serve a 5-frame model.
    videos, shards = str(tmp_path / "videos"), str(tmp_path / "shards")
    assert demo.build(videos, shards, 62, 3, 8)
    for other, said in (((62, 5, 8), "stack=5"), ((62, 3, 16), "frames_per_video=16"),
                        ((118, 3, 8), "size=118")):  # fmt: skip
        with pytest.raises(demo.StaleStage, match=said):
            demo.build(videos, shards, *other)
    assert stages == ["data_prep.build"]


@pytest.mark.parametrize("val", ["two_classes", "one_class", "missing"])
def test_test_is_measured_at_vals_threshold_and_calibration_chosen_first_on_val(
    tmp_path, monkeypatch, capsys, val
):
    from ldattn_jax import evaluate, train

    monkeypatch.setattr(train, "train_and_evaluate", lambda *a: None)
    calls = []

    def fake_evaluate(config, workdir, **kw):
        calls.append(kw)
        if kw["split"] == "val" and val == "missing":
            raise KeyError("no 'val' split in the build")
        eer = None if kw["split"] == "val" and val == "one_class" else 0.45
        return {"metrics": {"video": {"eer_threshold": eer, "counts": {"real": 0, "fake": 5}}}}

    monkeypatch.setattr(evaluate, "evaluate", fake_evaluate)
    demo.run_variant("lda_st", str(tmp_path), str(tmp_path / "shards"))
    assert [c["split"] for c in calls] == ["val", "test"]
    assert calls[0]["checkpoint"] == calls[1]["checkpoint"] == "best"
    assert calls[0]["figures_per_class"] == calls[0]["failures_per_class"] == 0
    test = calls[1]
    if val == "two_classes":
        assert test["threshold"] == test["calibration"] == "val"
    else:  # said, and test at the default threshold rather than no result
        assert "threshold" not in test and "calibration" not in test
        assert "no val threshold" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--varients", "xception"], "unrecognized argument --varients"),  # a typo
        (["--variants", ","], "--variants ',': choose from"),
        (["--variants", "lda_sst"], "--variants 'lda_sst': choose from"),
        (["--config.lrr=1"], "lrr"),
    ],
)
def test_command_line_mistakes_stop_before_any_stage(tmp_path, stages, capsys, argv, said):
    with pytest.raises(SystemExit) as e:
        demo.main(["--out", str(tmp_path / "out"), *argv])
    assert e.value.code == 2 and said in capsys.readouterr().err
    assert stages == [] and not (tmp_path / "out").exists()


def test_the_done_marker_and_summary_are_written_whole_or_not_at_all(tmp_path, stages, monkeypatch):
    from ldattn_jax import json_out

    videos = str(tmp_path / "videos")
    os.makedirs(videos)

    def no_disk(fd):  # the marker's data never reached the disk
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", no_disk)
        with pytest.raises(OSError, match="No space"):
            demo.synthesize(videos, 40, 0)
    # No marker (not an empty one that would read as another setting): the next run
    # makes the videos again, and then marks them.
    assert os.listdir(videos) == []
    assert demo.synthesize(videos, 40, 0)
    with open(os.path.join(videos, ".done")) as f:
        assert f.read() == "videos=40 seed=0\n"
    # summary.json through the same writer, as valid JSON.
    written = []
    atomic_write = json_out.atomic_write
    monkeypatch.setattr(
        json_out,
        "atomic_write",
        lambda path, data: written.append(path) or atomic_write(path, data),
    )
    result = {"metrics": {"video": {"auc": 1.0}}, "metrics_json": "m", "roc": "r", "out_dir": "o"}
    monkeypatch.setattr(demo, "run_variant", lambda *a: dict(result, seconds={"train": 1.0}))
    monkeypatch.setattr(demo, "table", lambda results: "")
    out = tmp_path / "out"
    (out / "videos").mkdir(parents=True)  # as data_prep.synthesize leaves it
    assert demo.main(["--out", str(out)]) == 0
    assert str(out / "summary.json") in written
    summary = json.loads((out / "summary.json").read_text())
    assert summary["variants"]["lda_st"]["video"] == {"auc": 1.0}
