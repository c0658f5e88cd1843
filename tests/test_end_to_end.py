"""synthesize → build → train → evaluate → predict on a tiny set, through the real CLIs.

Checks files and keys, not accuracy (a few steps of a tiny model). The
8 simulated CPU devices of conftest make evaluate/predict pad and shard like
a multi-device run.
"""

import csv
import glob
import json
import os
import shutil

import orbax.checkpoint as ocp
import pytest
from test_failure_cases import expected_failures
from test_metrics import assert_schema_v1

from data_prep import build, synthesize
from ldattn_jax import evaluate, predict
from ldattn_jax.config_utils import load_config
from ldattn_jax.eval_names import figure_stem
from ldattn_jax.provenance import file_sha256, tree_sha256
from ldattn_jax.train import train_and_evaluate

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "demo.py")
TINY = [
    # 62 -> conv2 28, block1 14; attention 56 / patch 8 -> 7x7 maps.
    "--config.model.image_size=62",
    "--config.model.attention_size=56",
    "--config.model.patch_size=8",
    "--config.model.embed_dim=16",
    "--config.model.num_templates=2",
    "--config.model.num_maps=2",
    "--config.model.middle_blocks=1",
    "--config.batch_size=8",
    "--config.total_steps=2",
    "--config.checkpoint_every=2",
    "--config.async_checkpointing=false",
    "--config.data.read_threads=2",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    videos, shards, workdir = root / "videos", root / "shards", root / "run"
    assert synthesize.main(["--out", str(videos), "--videos", "6", "--frames", "8"]) == 0
    assert (
        build.main(
            [
                "--dataset=synthetic",
                f"--root={videos}",
                f"--out={shards}",
                "--frames-per-video=2",
                "--size=62",
                "--workers=1",
                "--no-progress",
            ]
        )
        == 0
    )
    config = load_config(CONFIG, [*TINY, f"--config.data.dir={shards}"])
    train_and_evaluate(config, str(workdir))
    return {"videos": videos, "shards": shards, "workdir": workdir}


@pytest.mark.slow
def test_evaluate_writes_metrics_scores_and_figures(run, capsys):
    wd = str(run["workdir"])
    assert evaluate.main(["--workdir", wd, "--no_progress"]) == 0
    (out_dir,) = glob.glob(os.path.join(wd, "eval", "synthetic_test_*"))
    with open(os.path.join(out_dir, "metrics.json")) as f:
        doc = json.load(f)
    assert_schema_v1(doc)
    assert doc["model"] == "lda_st" and doc["split"] == "test" and doc["checkpoint"]["step"] == 2
    # The weights that scored: orbax's files of step 2's state, wherever they are copied.
    state = os.path.join(wd, "checkpoints", "2", "state")
    assert doc["checkpoint"]["state_sha256"] == tree_sha256(state)
    assert doc["provenance"]["command"] == [
        "python", "-m", "ldattn_jax.evaluate", "--workdir", wd, "--no_progress"
    ]  # fmt: skip
    assert doc["provenance"]["packages"]["orbax-checkpoint"] == ocp.__version__
    # And the code that trained those weights: the fixture's one session, from step 0.
    (session,) = doc["provenance"]["training"]
    assert session["start_step"] == 0 and session["ldattn_jax"] == doc["provenance"]["ldattn_jax"]
    # And the build it trained on, by real path and fingerprint: what evaluate tells
    # the run's own data by (this metrics.json's shards_sha256: the same build).
    assert session["data"] == {
        "dir": os.path.realpath(run["shards"]),
        "shards_sha256": doc["shards_sha256"],
        "fingerprint_version": doc["shards_fingerprint_version"],
        "crop_size": 62,  # the build's --size (the fixture's shards), as predict cuts
    }
    # Which network: the run's config.model, as report matches it against the paper's.
    settings = doc["model_settings"]
    assert (settings["name"], settings["image_size"], settings["num_maps"]) == ("lda_st", 62, 2)
    assert len(doc["shards_sha256"]) == len(doc["config_sha256"]) == 64
    methods = {"AbnormalStructure", "MismatchedColor", "TemporalJitter", "Upsampling"}
    assert set(doc["per_method"]) == methods
    # 1 test pair = 2 real + 8 fake videos, 2 key frames each.
    assert doc["video"]["counts"] == {"real": 2, "fake": 8}
    assert doc["num_frames"] == doc["frame"]["n"] <= 20
    dc = doc["defect_capture"]
    assert dc["available"] and dc["grid"] == 7 and set(dc["modules"]) == {"spatial", "temporal"}
    # TemporalJitter changes no single frame in kind, but its blend still has a mask.
    assert set(dc["modules"]["spatial"]["per_method"]) <= methods
    with open(os.path.join(out_dir, "scores.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == doc["num_frames"]
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)
    with open(os.path.join(out_dir, "video_scores.csv")) as f:
        vrows = list(csv.DictReader(f))
    assert len(vrows) == doc["num_videos"] == 10
    assert len({r["video_id"] for r in vrows}) == 10
    assert os.path.getsize(os.path.join(out_dir, "roc.png")) > 0
    assert os.path.getsize(os.path.join(out_dir, "calibration.png")) > 0
    pngs = glob.glob(os.path.join(out_dir, "attention", "*.png"))
    assert any("real_" in os.path.basename(p) for p in pngs)
    assert any("fake_" in os.path.basename(p) for p in pngs)
    # Failure cases: of the reals and of each method's fakes, the 4 videos most
    # wrong at 0.5, by their worst frame.
    want = expected_failures(
        [r["video_id"] for r in rows],
        [int(r["label"]) for r in rows],
        [float(r["score"]) for r in rows],
        4,
        0.5,
        [r["method"] for r in rows],
    )
    frame_of = {(r["video_id"], float(r["score"])): r["frame_index"] for r in rows}
    names = sorted(
        figure_stem(f"{group}_{rank}_{vid}_f{frame_of[vid, p]}") + ".png"
        for group, kept in want.items()
        for rank, (vid, p) in enumerate(kept)
    )
    assert names, "a 2-step model gets some videos wrong"
    pngs = glob.glob(os.path.join(out_dir, "failures", "*.png"))
    assert sorted(map(os.path.basename, pngs)) == names
    # cases.csv: one row per PNG, with its video's own score and call (a frame can be
    # wrong while its video, the mean of its frames, is called right).
    with open(os.path.join(out_dir, "failures", "cases.csv")) as f:
        cases = list(csv.DictReader(f))
    assert sorted(c["png"] for c in cases) == names
    video = {r["video_id"]: (int(r["label"]), float(r["score"])) for r in vrows}
    for c in cases:
        label, score = video[c["video_id"]]
        assert float(c["video_score"]) == score
        assert c["video_wrong"] == str(int((score > 0.5) != (label == 1)))
        assert (float(c["frame_score"]) > 0.5) != (label == 1)  # the frame itself is wrong
    wrong = sum(int(c["video_wrong"]) for c in cases)
    out = capsys.readouterr().out
    assert "metrics.json" in out and f"failures ({len(names)} PNGs" in out
    assert f"{wrong} of these videos are called wrong as a whole" in out


@pytest.mark.slow
def test_evaluate_in_worker_processes_scores_the_same_records_in_order(run, monkeypatch):
    import grain

    wd = str(run["workdir"])
    started = []
    prefetch = grain.IterDataset.mp_prefetch

    def spy(self, options, *a, **k):
        started.append(options.num_workers)
        return prefetch(self, options, *a, **k)

    monkeypatch.setattr(grain.IterDataset, "mp_prefetch", spy)

    def scores(*overrides):
        assert evaluate.main(["--workdir", wd, "--split", "val", "--no_progress", *overrides]) == 0
        (out_dir,) = glob.glob(os.path.join(wd, "eval", "synthetic_val_*"))
        with open(os.path.join(out_dir, "scores.csv")) as f:
            return f.read()

    threads = scores()
    assert started == []  # the demo config reads with threads only
    # 2 workers, batch 4: each worker reads alternate batches, the last one partial.
    workers = scores("--config.data.worker_count=2", "--batch_size=4")
    assert started == [2]
    assert workers == threads and workers.count("\n") == 1 + 20


@pytest.mark.slow
def test_evaluate_errors_are_one_line_that_names_the_cause(run, tmp_path, capsys):
    wd = str(run["workdir"])
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--workdir", str(tmp_path / "nowhere")])
    assert e.value.code == 2 and "config.json not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--workdir", wd, "--config.nope=1"])
    assert e.value.code == 2 and "'nope'" in capsys.readouterr().err
    for args, says in ((["--split", "nosuch"], "nosuch"), (["--checkpoint", "7"], "7")):
        assert evaluate.main(["--workdir", wd, "--no_progress", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("evaluate: error: ") and says in err and "Traceback" not in err
    for bad in ("0", "-3"):
        with pytest.raises(SystemExit) as e:
            evaluate.main(["--workdir", wd, "--batch_size", bad])
        assert e.value.code == 2 and "whole number >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # a typo is no config override
        evaluate.main(["--workdir", wd, "--thresold", "0.3"])
    assert "unrecognized argument --thresold; did you mean --threshold?" in capsys.readouterr().err
    shard = next(p for p in run["shards"].iterdir() if p.is_file())
    assert evaluate.main(["--workdir", wd, "--no_progress", "--data", str(shard)]) == 2
    assert "is a file: pass --data the directory" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_refuses_another_model_than_the_checkpoints(run, capsys):
    # An xception is a subset of the lda_st run's parameters: restored as it
    # was, it scored as a model never trained and overwrote the run's results.
    wd = str(run["workdir"])
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--workdir", wd, "--config.model.name=xception"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "model.name: 'lda_st' -> 'xception'" in err
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--workdir", wd, "--config", CONFIG, "--config.data.dir=/elsewhere"])
    assert e.value.code == 2 and "data.dir" in capsys.readouterr().err
    # Without the run's config.json to compare with, the checkpoint itself refuses.
    from ldattn_jax.checkpointing import CheckpointMismatchError, restore_for_inference

    config = evaluate.load_run_config(wd)
    config.model.name = "xception"
    with pytest.raises(CheckpointMismatchError, match="parameters only in the checkpoint"):
        restore_for_inference(config, wd)
    # What the run did not fix may change: a batch size.
    assert evaluate.load_run_config(wd, overrides=["--config.batch_size=4"]).batch_size == 4


@pytest.mark.slow
def test_a_threshold_chosen_on_val_is_applied_to_test(run, capsys):
    wd = str(run["workdir"])
    assert evaluate.main(["--workdir", wd, "--split", "val", "--no_progress"]) == 0
    (val_dir,) = glob.glob(os.path.join(wd, "eval", "synthetic_val_*"))
    with open(os.path.join(val_dir, "metrics.json")) as f:
        t = json.load(f)["video"]["eer_threshold"]
    assert 0.0 <= t <= 1.0
    assert f"--threshold {t!r}" in capsys.readouterr().out  # exact: it is to be copied
    # --threshold val reads it from there; val on val itself is refused.
    assert (
        evaluate.main(["--workdir", wd, "--no_progress", "--split", "val", "--threshold", "val"])
        == 2
    )
    assert "val split itself" in capsys.readouterr().err
    assert evaluate.main(["--workdir", wd, "--no_progress", "--threshold", "val"]) == 0
    (out_dir,) = glob.glob(os.path.join(wd, "eval", f"synthetic_test_*_t{t!r}"))
    try:
        with open(os.path.join(out_dir, "metrics.json")) as f:
            assert (
                json.load(f)["threshold_source"] == os.path.relpath(val_dir, wd) + "/metrics.json"
            )
        assert "(--threshold val: the video-level EER threshold of eval/" in capsys.readouterr().out
        assert evaluate.main(["--workdir", wd, "--no_progress", "--threshold", f"{t!r}"]) == 0
        with open(os.path.join(out_dir, "metrics.json")) as f:
            doc = json.load(f)
        assert doc["threshold_source"] == "given"
        assert doc["trained_on"] == {"dataset": "synthetic", "compression": None}
        with open(os.path.join(out_dir, "video_scores.csv")) as f:
            videos = list(csv.DictReader(f))
        # ACC and the confusion matrix at that threshold, AUC unchanged by it.
        called = [(float(v["score"]) > t) == (v["label"] == "1") for v in videos]
        assert doc["threshold"] == t and doc["video"]["acc"] == pytest.approx(sum(called) / 10)
        fp = sum(float(v["score"]) > t for v in videos if v["label"] == "0")
        assert doc["video"]["confusion_matrix"][0][1] == fp
        assert f"ACC at threshold {t!r}" in capsys.readouterr().out
    finally:
        shutil.rmtree(out_dir)  # other tests find the test split's one directory
    for bad in ("1.5", "x"):
        with pytest.raises(SystemExit):
            evaluate.main(["--workdir", wd, "--threshold", bad])
        assert "give a probability in [0, 1]" in capsys.readouterr().err


def test_val_fits_a_calibration_that_another_split_measures(run, tmp_path, capsys):
    from ldattn_jax import calibration

    wd = str(run["workdir"])
    assert evaluate.main(["--workdir", wd, "--split", "val", "--no_progress"]) == 0
    (val_dir,) = glob.glob(os.path.join(wd, "eval", "synthetic_val_*"))
    with open(os.path.join(val_dir, "metrics.json")) as f:
        val = json.load(f)
    with open(os.path.join(val_dir, "video_scores.csv")) as f:
        videos = list(csv.DictReader(f))
    labels = [int(v["label"]) for v in videos]
    # The map in metrics.json is the fit of the video scores beside it.
    again = calibration.fit(labels, [float(v["score"]) for v in videos])
    fit = val["calibration"]["fit"]
    assert (fit["method"], fit["counts"]) == (again["method"], again["counts"])
    assert (fit["a"], fit["b"]) == pytest.approx((again["a"], again["b"]), rel=1e-6, abs=1e-9)
    assert val["calibration"]["applied"] is None
    assert "calibration at even odds fitted on these videos" in capsys.readouterr().out
    # Measured on another split (train: both classes, no new test directory).
    assert (
        evaluate.main(
            ["--workdir", wd, "--split", "train", "--calibration", "val", "--no_progress"]
        )
        == 0
    )
    (train_dir,) = glob.glob(os.path.join(wd, "eval", "synthetic_train_*"))
    with open(os.path.join(train_dir, "metrics.json")) as f:
        applied = json.load(f)["calibration"]["applied"]
    assert applied["source"] == os.path.relpath(val_dir, wd) + "/metrics.json"
    assert (applied["a"], applied["b"]) == (fit["a"], fit["b"])
    assert 0.0 <= applied["ece_even_odds_after"] <= 1.0
    assert f"calibration of {applied['source']} on this split's videos: ECE at even odds" in (
        capsys.readouterr().out
    )
    shutil.rmtree(train_dir)
    # Not on val itself: fitted on the same videos.
    assert evaluate.main(["--workdir", wd, "--split", "val", "--calibration", "val"]) == 2
    assert "--calibration val on the val split itself" in capsys.readouterr().err
    # Another build's val split is not the run's: both lookups apply there (a
    # held-out build is evaluated with --split all, which pools its val).
    other = _another_build(run["shards"], tmp_path / "held_out")
    flags = ["--calibration", "val", "--threshold", "val", "--no_progress"]
    assert evaluate.main(["--workdir", wd, "--data", str(other), "--split", "all", *flags]) == 0
    (other_dir,) = glob.glob(os.path.join(wd, "eval", "synthetic_test+train+val_*_data*_t*"))
    with open(os.path.join(other_dir, "metrics.json")) as f:
        doc = json.load(f)
    assert doc["calibration"]["applied"]["source"] == applied["source"]
    assert doc["threshold_source"] == applied["source"]
    shutil.rmtree(other_dir)


def _another_build(shards, where):
    """A copy of the run's shards with its metadata changed: another build of the
    same videos. (A byte-for-byte copy is the run's own build: its fingerprint is
    the one training recorded, so its val split is the run's val.)"""
    shutil.copytree(shards, where)
    (meta,) = glob.glob(str(where / "**" / "metadata.json"), recursive=True)
    with open(meta) as f:
        info = json.load(f)
    with open(meta, "w") as f:
        json.dump({**info, "note": "built again"}, f)
    return where


def test_evaluate_pools_splits(run):
    # A held-out build is all test data: --split all reads every split once.
    wd = str(run["workdir"])
    assert evaluate.main(["--workdir", wd, "--split", "all", "--no_progress"]) == 0
    (out_dir,) = glob.glob(os.path.join(wd, "eval", "synthetic_test+train+val_*"))
    with open(os.path.join(out_dir, "metrics.json")) as f:
        doc = json.load(f)
    assert doc["split"] == "test+train+val"
    # 6 real videos (3 pairs) + 4 methods x 6 fakes, every one once, 2 key frames each.
    assert doc["video"]["counts"] == {"real": 6, "fake": 24} and doc["num_frames"] == 60
    with pytest.raises(ValueError, match="no repeats"):
        evaluate.resolve_splits(str(run["shards"]), "test+test")


@pytest.mark.slow
def test_predict_scores_good_videos_and_names_bad_ones(run, tmp_path, capsys):
    wd = str(run["workdir"])
    real = sorted(
        glob.glob(str(run["videos"] / "original_sequences" / "**" / "*.*"), recursive=True)
    )
    fake = sorted(
        glob.glob(str(run["videos"] / "manipulated_sequences" / "**" / "*.*"), recursive=True)
    )
    real = [p for p in real if not p.endswith(".npz")][0]
    fake = [p for p in fake if not p.endswith(".npz")][0]
    bogus = tmp_path / "not_a_video.mp4"
    bogus.write_text("hello")
    out = tmp_path / "pred"
    args = ["--workdir", wd, "--out", str(out), "--frames_per_video", "2", "--heatmaps"]
    assert predict.main([*args, real, str(bogus), fake]) == 0
    with open(out / "predictions.json") as f:
        rep = json.load(f)
    by_video = {v["video"]: v for v in rep["videos"]}
    assert [v["video"] for v in rep["videos"]] == [real, str(bogus), fake]
    for path in (real, fake):
        v = by_video[path]
        assert v["status"] == "ok" and v["frames_scored"] == len(v["frames"]) >= 1
        assert v["sha256"] == file_sha256(path) and v["size_bytes"] == os.path.getsize(path)
        assert v["verdict"] in ("real", "fake") and 0.0 <= v["fake_probability"] <= 1.0
        assert all(os.path.isfile(p) for p in v["heatmaps"])
    bad = by_video[str(bogus)]
    assert bad["status"] == "error" and bad["reason"] and "not_a_video" in bad["message"]
    # The real checkpoint's state files, as evaluate names them.
    assert rep["checkpoint"]["state_sha256"] == tree_sha256(
        os.path.join(wd, "checkpoints", "2", "state")
    )
    table = capsys.readouterr().out
    assert "not scored" in table and os.path.basename(real) in table
    # Nothing scorable → non-zero exit.
    assert predict.main(["--workdir", wd, "--out", str(out), str(bogus)]) == 1


@pytest.mark.slow
def test_predict_threads_change_nothing_and_odd_failures_stay_per_video(run, tmp_path, monkeypatch):
    from data_prep import faces

    wd = str(run["workdir"])
    videos = sorted(
        p
        for p in glob.glob(str(run["videos"] / "**" / "*.*"), recursive=True)
        if not p.endswith((".npz", ".json", ".done"))
    )[:3]
    serial = predict.main(["--workdir", wd, "--out", str(tmp_path / "w1"), "--workers", "1",
                           "--frames_per_video", "2", *videos])  # fmt: skip
    threaded = predict.main(["--workdir", wd, "--out", str(tmp_path / "w3"), "--workers", "3",
                             "--frames_per_video", "2", *videos])  # fmt: skip
    assert serial == threaded == 0
    reports = [json.loads((tmp_path / w / "predictions.json").read_text()) for w in ("w1", "w3")]
    assert reports[0]["videos"] == reports[1]["videos"]

    # An unexpected error inside one video's extraction is reported for that video only.
    real_extract = faces.extract_stacks

    def broken_on_second(path, **kw):
        if path == videos[1]:
            raise RuntimeError("decoder exploded")
        return real_extract(path, **kw)

    monkeypatch.setattr(faces, "extract_stacks", broken_on_second)
    out = tmp_path / "odd"
    assert predict.main(["--workdir", wd, "--out", str(out), "--frames_per_video", "2",
                         *videos]) == 0  # fmt: skip
    rep = json.loads((out / "predictions.json").read_text())
    assert [v["status"] for v in rep["videos"]] == ["ok", "error", "ok"]
    assert rep["videos"][1]["reason"] == "failed"
    assert "RuntimeError: decoder exploded" in rep["videos"][1]["message"]


@pytest.mark.slow
def test_other_dtypes_and_other_builds_are_evaluated_beside_the_runs_own(run, tmp_path, capsys):

    from ldattn_jax.metrics import shards_fingerprint

    wd = str(run["workdir"])

    def evaluated(*flags):
        assert evaluate.main(["--workdir", wd, "--split", "train", "--no_progress", *flags]) == 0
        out_dir = capsys.readouterr().out.split("metrics: ")[1].split("\n")[0]
        with open(out_dir) as f:
            doc = json.load(f)
        with open(os.path.join(os.path.dirname(out_dir), "scores.csv")) as f:
            rows = csv.DictReader(f)
            scores = {(r["video_id"], r["frame_index"]): float(r["score"]) for r in rows}
        return os.path.dirname(out_dir), doc, scores

    f32_dir, f32, f32_scores = evaluated()
    bf16_dir, bf16, bf16_scores = evaluated("--dtype", "bfloat16")
    # The trained dtype's results stay where they were; the other dtype's sit beside them.
    assert os.path.basename(bf16_dir) == os.path.basename(f32_dir) + "_bfloat16"
    assert (f32["compute_dtype"], bf16["compute_dtype"]) == ("float32", "bfloat16")
    assert f32["config_sha256"] != bf16["config_sha256"]
    # bf16 really ran (scores moved) and moved them only by rounding (this
    # 2-step model's BatchNorm statistics are raw, so rounding moves it more
    # than a trained one: 0.013 at most on the demo's test split).
    diffs = [abs(bf16_scores[k] - f32_scores[k]) for k in f32_scores]
    assert bf16_scores.keys() == f32_scores.keys() and 0 < max(diffs) < 0.15
    # Asking for the trained dtype is the default run, not a second directory.
    config = evaluate.load_run_config(wd)
    assert evaluate.with_compute_dtype(config, "float32") is config

    # Another build may carry the run's dataset name: its results get their own
    # directory, and an earlier evaluation's figures there go. Here a copy with its
    # metadata changed (a byte-for-byte copy is the run's own build: its fingerprint
    # is the one training recorded).
    other = _another_build(run["shards"], tmp_path / "other_build")
    other_dir = f"{f32_dir}_data{shards_fingerprint(other)[:8]}"
    os.makedirs(os.path.join(other_dir, "attention"))
    stale = os.path.join(other_dir, "attention", "fake_from_an_earlier_evaluation.png")
    with open(stale, "wb") as f:
        f.write(b"old")
    got_dir, got, got_scores = evaluated("--data", str(other))
    assert got_dir == other_dir and got["shards_sha256"] != f32["shards_sha256"]
    assert got_scores == f32_scores and not os.path.exists(stale)
    with open(os.path.join(f32_dir, "metrics.json")) as f:
        assert json.load(f) == f32  # the run's own result is untouched

    video = sorted(glob.glob(str(run["videos"] / "original_sequences" / "**" / "*.mp4"),
                             recursive=True))[0]  # fmt: skip
    args = ["--workdir", wd, "--frames_per_video", "2", video]
    assert predict.main([*args, "--out", str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    assert predict.main([*args, "--out", str(tmp_path / "f32")]) == 0
    reports = [json.loads((tmp_path / d / "predictions.json").read_text()) for d in ("bf16", "f32")]
    assert [r["compute_dtype"] for r in reports] == ["bfloat16", "float32"]
    probs = [r["videos"][0]["fake_probability"] for r in reports]
    assert probs[0] != probs[1] and abs(probs[0] - probs[1]) < 0.15

    with pytest.raises(SystemExit):
        predict.main([*args, "--dtype", "float16"])
    assert "invalid choice: 'float16'" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_keeps_apart_same_named_videos_and_refuses_nan_scores(run, tmp_path, monkeypatch):

    import numpy as np

    wd = str(run["workdir"])
    video = sorted(glob.glob(str(run["videos"] / "original_sequences" / "**" / "*.mp4"),
                             recursive=True))[0]  # fmt: skip
    # FF++ names the fakes of every method alike (Deepfakes/.../000_003.mp4,
    # Face2Face/.../000_003.mp4): each must keep its own heatmaps.
    twins = []
    for method in ("Deepfakes", "Face2Face"):
        (tmp_path / method).mkdir()
        twins.append(str(tmp_path / method / "000_003.mp4"))
        shutil.copy(video, twins[-1])
    score_stacks = predict.score_stacks

    def nan_for_face2face(predictor, stacks):
        probs, maps = score_stacks(predictor, stacks)
        return (probs * np.nan if stacks is seen["Face2Face"] else probs), maps

    seen = {}
    from data_prep import faces

    real_extract = faces.extract_stacks

    def remember(path, **kw):
        stacks = real_extract(path, **kw)
        seen[os.path.basename(os.path.dirname(path))] = stacks
        return stacks

    monkeypatch.setattr(faces, "extract_stacks", remember)
    out = tmp_path / "pred"
    args = ["--workdir", wd, "--out", str(out), "--frames_per_video", "2", "--heatmaps"]
    assert predict.main([*args, *twins]) == 0
    first = json.loads((out / "predictions.json").read_text())["videos"]
    pngs = [p for v in first for p in v["heatmaps"]]
    assert len(set(pngs)) == len(pngs) == len(glob.glob(str(out / "heatmaps" / "*.png")))

    monkeypatch.setattr(predict, "score_stacks", nan_for_face2face)
    assert predict.main([*args, "--rescore", *twins]) == 0  # not the journal's scores
    ok, broken = json.loads((out / "predictions.json").read_text())["videos"]
    assert ok["status"] == "ok" and ok["fake_probability"] == first[0]["fake_probability"]
    # NaN > threshold is False: without the check this read as a verdict of "real".
    assert broken["status"] == "error" and broken["reason"] == "nonfinite_score"
    assert "verdict" not in broken and "2 of 2 frames" in broken["message"]
