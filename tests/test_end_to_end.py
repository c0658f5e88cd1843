"""synthesize → build → train → evaluate → predict on a tiny set, through the real CLIs.

Checks files and keys, not accuracy (a few steps of a tiny model). The
8 simulated CPU devices of conftest make evaluate/predict pad and shard like
a multi-device run.
"""

import csv
import glob
import json
import os

import pytest
from test_metrics import assert_schema_v1

from data_prep import build, synthesize
from ldattn_jax import evaluate, predict
from ldattn_jax.config_utils import load_config
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
    pngs = glob.glob(os.path.join(out_dir, "attention", "*.png"))
    assert any("real_" in os.path.basename(p) for p in pngs)
    assert any("fake_" in os.path.basename(p) for p in pngs)
    assert "metrics.json" in capsys.readouterr().out


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
        assert v["verdict"] in ("real", "fake") and 0.0 <= v["fake_probability"] <= 1.0
        assert all(os.path.isfile(p) for p in v["heatmaps"])
    bad = by_video[str(bogus)]
    assert bad["status"] == "error" and bad["reason"] and "not_a_video" in bad["message"]
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
