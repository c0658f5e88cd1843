"""Evaluation helpers that do not need a trained model."""

import os

import numpy as np
import pytest

from data_prep import leftovers
from ldattn_jax import evaluate, predict


def test_fit_frames_slices_and_resizes_like_training():
    stack = np.random.default_rng(0).integers(0, 255, (4, 20, 20, 3), dtype=np.uint8)
    same = evaluate.fit_frames(stack, 1, 20)
    assert same.shape == (1, 20, 20, 3) and np.array_equal(same[0], stack[0])
    small = evaluate.fit_frames(stack, 4, 10)
    assert small.shape == (4, 10, 10, 3) and small.dtype == np.uint8
    # INTER_AREA on an exact 2x shrink is the 2x2 block mean.
    block = stack[1].astype(float).reshape(10, 2, 10, 2, 3).mean((1, 3))
    assert np.abs(small[1] - block).max() <= 1.0
    with pytest.raises(ValueError, match="expected"):
        evaluate.fit_frames(stack[:2], 4, 20)


def test_checkpoint_argument():
    assert evaluate._parse_checkpoint("best") == "best"
    assert evaluate._parse_checkpoint("1200") == 1200
    with pytest.raises(Exception, match="best, latest or a step"):
        evaluate._parse_checkpoint("last")


def test_missing_run_config_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="--config"):
        evaluate.load_run_config(str(tmp_path))


def test_a_broken_run_config_is_named(tmp_path):
    from ldattn_jax.config_utils import ConfigError

    path = tmp_path / "config.json"
    for text, says in (('{"model": {"na', "unreadable"), ("[1]", "no 'model' section")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=says) as e:
            evaluate.load_run_config(str(tmp_path))
        assert str(path) in str(e.value)


def test_a_checkpoint_of_another_network_is_refused():
    from ldattn_jax.checkpointing import CheckpointMismatchError, check_same_model

    saved = {"backbone/conv1/kernel": (3, 3, 3, 32), "spatial/template": (1, 16)}
    check_same_model(saved, dict(saved), "ckpt", "lda_st")  # the same: no error
    with pytest.raises(CheckpointMismatchError, match="1 parameters only in the checkpoint"):
        check_same_model(saved, {"backbone/conv1/kernel": (3, 3, 3, 32)}, "ckpt", "xception")
    with pytest.raises(CheckpointMismatchError, match="only in model.name=lda_st"):
        check_same_model({"backbone/conv1/kernel": (3, 3, 3, 32)}, saved, "ckpt", "lda_st")
    with pytest.raises(CheckpointMismatchError, match=r"\(1, 16\) vs \(1, 32\)"):
        check_same_model(saved, {**saved, "spatial/template": (1, 32)}, "ckpt", "lda_st")


def test_score_csvs_read_back_the_exact_scores(tmp_path):
    # Confident frames sit within 1e-7 of 1: a fixed-decimals CSV ties them and
    # an AUC recomputed from the file would not be metrics.json's.
    from sklearn.metrics import roc_auc_score

    labels = np.array([0, 1, 0, 1])
    scores = np.array([1 - 3e-7, 1 - 1e-7, 1 - 2e-9, 1 - 1e-9])
    path = tmp_path / "scores.csv"
    evaluate._write_csv(str(path), {"label": labels, "score": scores}, ["label", "score"])
    back = np.loadtxt(path, delimiter=",", skiprows=1)
    np.testing.assert_array_equal(back[:, 1], scores)
    assert roc_auc_score(back[:, 0], back[:, 1]) == roc_auc_score(labels, scores)


def test_summary_and_prediction_tables():
    from ldattn_jax import metrics
    from ldattn_jax.metrics import metrics_document

    n = 8
    cols = {
        "video_id": np.array([f"v{i // 2}" for i in range(n)]),
        "label": np.array([0, 0, 0, 0, 1, 1, 1, 1]),
        "score": np.linspace(0.1, 0.9, n),
        "method": np.array(["real"] * 4 + ["blur"] * 4),
        "compression": np.array(["raw"] * n),
    }
    doc, _ = metrics_document(
        cols,
        dataset="d",
        split="test",
        model="lda_st",
        checkpoint_step=1,
        checkpoint_which="best",
        config_sha256="",
        shards_sha256="",
    )
    lines = evaluate.summary_lines(doc)
    assert lines[1].split()[:2] == ["all", "1.0000"] and lines[2].startswith("real+blur")
    # Perfectly separated: every resample too, so the percentile interval would be
    # the point [1, 1]; it is the exact bound of a perfect ranking, said so.
    bound = "[0.1581, 1.0000] (no resample varied: exact bound, see ci95_note)"
    assert f"AUC 95% interval (bootstrap over videos): frame {bound}, video {bound}" in lines[3]
    # Scores 0.1..0.9 on labels 0 0 0 0 1 1 1 1: off by |sum(labels - scores)| per bin / n.
    assert lines[4].startswith("ACC 95% interval (same resamples): frame [")
    frame_ece = metrics.expected_calibration_error(cols["label"], cols["score"])
    assert lines[5].startswith(
        f"calibration (ECE 0: a score p is fake p of the time): frame ECE {frame_ece:.4f}, Brier "
    )
    assert lines[6].startswith("ACC at threshold 0.5 (default, not chosen on data;")
    assert lines[7] == (
        "video-level EER threshold of this split: 0.5 (to apply one, choose it on val: "
        "evaluate --split val)"
    )
    report = {
        "videos": [
            {
                "video": "a.mp4",
                "status": "ok",
                "frames_scored": 3,
                "fake_probability": 0.9,
                "verdict": "fake",
            },
            {"video": "b.mp4", "status": "error", "reason": "no_face", "message": "b.mp4: none"},
        ]
    }
    table = predict.format_table(report).splitlines()
    assert table[1].split() == ["a.mp4", "3", "0.9000", "fake"]
    assert "not scored (no_face)" in table[2]


def test_sigmoid_of_margin_keeps_confident_frames_apart():
    m = np.array([-800.0, -40.0, 0.0, 20.0, 30.0, 800.0])
    p = evaluate.sigmoid(m)
    assert np.all(np.isfinite(p)) and p[2] == 0.5
    np.testing.assert_allclose(p[1:-1], 1.0 / (1.0 + np.exp(-m[1:-1])), rtol=1e-12)
    assert p[0] == 0.0 and p[-1] == 1.0  # no overflow warning-turned-NaN at the extremes
    # fp32 softmax would tie 20 and 30 at exactly 1.0; fp64 keeps them ordered.
    assert p[3] < p[4]


def test_fit_frames_resizes_as_training_does_when_enlarging_too():
    # Shards built smaller than the model's input are enlarged (INTER_CUBIC) by
    # training's LoadRecord; evaluation must feed the model the same pixels.
    from ldattn_jax.input_pipeline import LoadRecord

    rng = np.random.default_rng(1)
    for size in (12, 31):  # enlarge, shrink
        stack = rng.integers(0, 256, (3, size, size, 3), dtype=np.uint8)
        train_view = LoadRecord([{"frames": stack, "label": 1}], 2, 20).map(0)["frames"]
        np.testing.assert_array_equal(evaluate.fit_frames(stack, 2, 20), train_view)
    # And the enlargement is a smooth one: a linear ramp stays (nearly) a ramp.
    ramp = np.tile(np.linspace(0, 250, 10).astype(np.uint8)[None, :, None], (10, 1, 3))
    big = evaluate.fit_frames(ramp[None], 1, 20)[0].astype(float)
    assert np.abs(np.diff(big[10, 2:-2, 0])).max() <= 20  # no nearest-neighbour steps


def test_another_compute_dtype_is_a_copy_of_the_run_config():
    import ml_collections

    config = ml_collections.ConfigDict({"model": {"dtype": "float32", "name": "lda_st"}})
    bf16 = evaluate.with_compute_dtype(config, "bfloat16")
    assert bf16.model.dtype == "bfloat16" and bf16.model.name == "lda_st"
    # The caller's config (what evaluate names its results by) is untouched.
    assert config.model.dtype == "float32"
    assert evaluate.with_compute_dtype(config, None) is config


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_cloud_workdir_is_refused_with_the_copy_to_make(command, capsys):
    main = {"evaluate": evaluate.main, "predict": predict.main}[command]
    args = ["--workdir", "gs://bucket/runs/ffpp/"] + (["v.mp4"] if command == "predict" else [])
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    # What to copy, where, and the --workdir to pass then; or a mount.
    url = "gs://bucket/runs/ffpp"
    assert f"gcloud storage cp -r {url}/config.json {url}/checkpoints runs/ffpp/" in err
    assert "--workdir runs/ffpp;" in err and "gcsfuse" in err and "Traceback" not in err


# --- the run's own data, and where results go (evaluate with stand-ins) ----------------------


class _Scoring(Exception):
    """Raised where evaluate would start scoring: all checks before it passed."""


@pytest.fixture
def stub_run(tmp_path, monkeypatch):
    """A workdir trained (on paper) from ``tmp_path`` on ``tmp_path/shards`` with the
    relative config.data.dir "shards"; evaluate's shard reader, restore and model are
    stand-ins, and reaching the model raises _Scoring."""
    import json

    from data_prep import shards
    from ldattn_jax import checkpointing

    data = tmp_path / "shards"
    data.mkdir()
    (data / "metadata.json").write_text('{"build": 1}')
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = {"model": {"name": "lda_st", "dtype": "float32"}, "data": {"dir": "shards"}}
    (workdir / "config.json").write_text(json.dumps(config))
    restored = []
    monkeypatch.setattr(shards, "open_split", lambda d, s, f: [0])
    monkeypatch.setattr(
        checkpointing,
        "restore_for_inference",
        lambda c, w, which: restored.append(which) or (None, 7),
    )

    def scoring(*a, **k):
        raise _Scoring

    monkeypatch.setattr(evaluate, "Predictor", scoring)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not where "shards" is relative to
    return {"workdir": workdir, "data": data, "restored": restored}


def _val_on_val(run, *flags):
    return evaluate.main(
        ["--workdir", str(run["workdir"]), "--split", "val", "--threshold", "val",
         "--no_progress", *flags]
    )  # fmt: skip


@pytest.mark.parametrize("recorded", [True, False], ids=["fingerprint", "old_run_real_path"])
def test_the_runs_own_build_is_told_by_what_it_is_not_how_the_path_is_written(
    stub_run, tmp_path, capsys, recorded
):
    from ldattn_jax import provenance

    if recorded:  # train records the build it read (a run from before it does not)
        line = {"start_step": 0, "data": provenance.data_identity(str(stub_run["data"]))}
        (stub_run["workdir"] / provenance.TRAINING_LOG).write_text(json_line(line))
    link = tmp_path / "link"
    link.symlink_to(stub_run["data"])
    # From another cwd than training's, by default, through a symlink, and by a path
    # with '..': the run's own val split, so a threshold chosen on it is refused.
    for flags in (
        [],
        ["--data", str(link)],
        ["--data", str(tmp_path / "elsewhere" / ".." / "shards")],
    ):
        assert _val_on_val(stub_run, *flags) == 2
        assert "--threshold val on the val split itself" in capsys.readouterr().err
    # Another build (here: the same videos built again) is not the run's own.
    other = tmp_path / "other"
    other.mkdir()
    (other / "metadata.json").write_text('{"build": 2}')
    assert _val_on_val(stub_run, "--data", str(other)) == 2
    err = capsys.readouterr().err
    assert "val split itself" not in err and "no val evaluation of checkpoint step 7" in err


def test_a_copy_of_the_build_training_recorded_is_the_runs_own(stub_run, tmp_path, capsys):
    import shutil

    from ldattn_jax import provenance

    line = {"start_step": 0, "data": provenance.data_identity(str(stub_run["data"]))}
    (stub_run["workdir"] / provenance.TRAINING_LOG).write_text(json_line(line))
    shutil.copytree(stub_run["data"], tmp_path / "copy")
    assert _val_on_val(stub_run, "--data", str(tmp_path / "copy")) == 2
    assert "val split itself" in capsys.readouterr().err


def test_a_workdir_that_cannot_take_the_results_fails_before_scoring(stub_run, capsys):
    (stub_run["workdir"] / "eval").write_text("")  # a file where the results' folder goes
    assert evaluate.main(["--workdir", str(stub_run["workdir"]), "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"evaluate: error: --workdir {stub_run['workdir'] / 'eval'}: cannot "
                          "write there (")  # fmt: skip
    assert len(err.splitlines()) == 1 and stub_run["restored"] == []
    (stub_run["workdir"] / "eval").unlink()
    with pytest.raises(_Scoring):  # a writable one gets as far as the model
        evaluate.main(["--workdir", str(stub_run["workdir"]), "--no_progress"])
    assert stub_run["restored"] == ["best"]


def json_line(row: dict) -> str:
    import json

    return json.dumps(row) + "\n"


def test_defect_capture_scores_each_fakes_own_mask_the_way_up_it_was_cut(stub_run, monkeypatch):
    # evaluate hands capture the batch's masks as the records hold them ([B, S, S], row
    # = y): a fake's manipulated region in the top-right corner of its crop and a map
    # whose only mass is in the top-right attention cell (row 0, column g - 1) must
    # score a hit on every fake with a mask. A transposed or flipped mask lands in
    # another corner and scores 0. Reals and a fake without a mask are not counted.
    import json

    from data_prep import shards
    from ldattn_jax import figures

    size, g = 16, 4
    config = {
        "model": {"name": "lda_st", "dtype": "float32", "stack": 1, "image_size": size},
        "data": {"dir": "shards", "read_threads": 1},
    }
    (stub_run["workdir"] / "config.json").write_text(json.dumps(config))
    state = stub_run["workdir"] / "checkpoints" / "7" / "state"  # the weights metrics.json names
    state.mkdir(parents=True)
    (state / "weights").write_bytes(b"w")
    corner = np.zeros((size, size), np.uint8)
    corner[: size // g, -(size // g) :] = 1  # exactly attention cell (0, g - 1)
    records = []
    for v in range(6):
        label = int(v >= 2)  # videos 0-1 real, 2-5 fake
        masked = v != 5  # the last fake has no mask: not scored
        for t in range(3):
            records.append({
                "label": label, "dataset": "synthetic", "compression": "c23",
                "method": ["real", "real", "A", "A", "B", "B"][v], "video_id": f"v{v}",
                "frame_index": t,
                "frames": np.full((2, size, size, 3), 50 + 150 * label, np.uint8),
                "mask": corner if label and masked else np.zeros_like(corner),
                "has_mask": bool(label and masked),
            })  # fmt: skip
    monkeypatch.setattr(shards, "open_split", lambda d, s, f: records)
    for name in ("roc_figure", "reliability_figure", "attention_overlay"):  # not drawn: fast
        monkeypatch.setattr(figures, name, lambda *a, **k: "")

    class TopRight:
        """The model: P(fake) from the frames; each module's maps one-hot at (0, g - 1)."""

        batch_size = 4

        def __init__(self, model, config, batch_size=None):
            pass

        def __call__(self, frames):
            b = len(frames)
            maps = np.zeros((b, 2, g, g), np.float32)
            maps[:, :, 0, g - 1] = 1.0
            return frames.mean(axis=(1, 2, 3, 4)) / 255.0, {"spatial": maps}

    monkeypatch.setattr(evaluate, "Predictor", TopRight)
    argv = ["--workdir", str(stub_run["workdir"]), "--data", str(stub_run["data"]),
            "--no_progress", "--failures", "0"]  # fmt: skip
    assert evaluate.main(argv) == 0
    (path,) = (stub_run["workdir"] / "eval").glob("*/metrics.json")
    dc = json.loads(path.read_text())["defect_capture"]
    assert dc["available"] and dc["grid"] == g and dc["skipped_empty_masks"] == 0
    got = dc["modules"]["spatial"]
    # 3 frames of each of the 3 fakes with a mask; the map's cell is the mask's, whole.
    assert got["all"]["n"] == 9
    assert {m: s["n"] for m, s in got["per_method"].items()} == {"A": 6, "B": 3}
    assert got["all"]["pointing_hit_rate"] == 1.0 and got["all"]["mass_share"] == 1.0
    # The chance levels: one cell of g * g covered.
    assert got["all"]["pointing_uniform"] == pytest.approx(1 / g**2)
    assert got["all"]["mass_share_uniform"] == pytest.approx(1 / g**2)


def test_the_threshold_of_acc_is_always_said_with_where_it_came_from():
    # At the default 0.5 too: an ACC with no threshold beside it reads as a chosen one.
    doc = {"threshold": 0.5, "threshold_source": "default", "split": "test"}
    assert evaluate.acc_threshold_line(doc) == (
        "ACC at threshold 0.5 (default, not chosen on data; pass --threshold val to use the "
        "video-level EER threshold chosen on val)"
    )
    on_val = evaluate.acc_threshold_line({**doc, "split": "val"})
    assert on_val.startswith("ACC at threshold 0.5 (default, not chosen on data; the EER")
    old = {"threshold": 0.5, "split": "test"}  # written before threshold_source existed
    assert evaluate.acc_threshold_line(old).startswith("ACC at threshold 0.5 (default")
    given = {"threshold": 0.5, "threshold_source": "given", "split": "test"}
    assert evaluate.acc_threshold_line(given) == "ACC at threshold 0.5 (--threshold)"
    val = {"threshold": 0.25, "threshold_source": "eval/synthetic_val_7/metrics.json"}
    assert evaluate.acc_threshold_line({**val, "split": "test"}) == (
        "ACC at threshold 0.25 (--threshold val: the video-level EER threshold of "
        "eval/synthetic_val_7/metrics.json)"
    )


# --- the result folder is replaced whole (a kill never leaves a mix) -----------------------


def _stand_in_evaluation(stub_run, monkeypatch, videos, fakeness=0.0):
    """Makes evaluate score ``videos`` [(video_id, label, method, wrong)] (3 frames each)
    with a model whose P(fake) is the frames' brightness (high for fakes, low for reals,
    the other way where ``wrong``), shifted by ``fakeness``; figures are
    small text files naming their title. Returns a function running it -> evaluate's answer."""
    import json

    from data_prep import shards
    from ldattn_jax import figures, json_out

    size = 8
    config = {
        "model": {"name": "lda_st", "dtype": "float32", "stack": 1, "image_size": size},
        "data": {"dir": "shards", "read_threads": 1},
    }
    (stub_run["workdir"] / "config.json").write_text(json.dumps(config))
    state = stub_run["workdir"] / "checkpoints" / "7" / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "weights").write_bytes(b"w")
    records = [
        {"label": label, "dataset": "synthetic", "compression": "c23", "method": method,
         "video_id": vid, "frame_index": t,
         "frames": np.full((2, size, size, 3), 230 if label != wrong else 25, np.uint8),
         "mask": np.zeros((size, size), np.uint8), "has_mask": False}
        for vid, label, method, wrong in videos
        for t in range(3)
    ]  # fmt: skip
    monkeypatch.setattr(shards, "open_split", lambda d, s, f: records)

    def figure(*args, title="", **kw):
        path = next(a for a in args if isinstance(a, str) and a.endswith(".png"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        json_out.atomic_write(path, title)
        return path

    for name in ("roc_figure", "reliability_figure", "attention_overlay"):
        monkeypatch.setattr(figures, name, figure)

    class Brightness:
        batch_size = 4

        def __init__(self, model, config, batch_size=None):
            pass

        def __call__(self, frames):
            p = np.clip(frames.mean(axis=(1, 2, 3, 4)) / 255.0 + fakeness, 0.01, 0.99)
            return p.astype(np.float64), {"spatial": np.ones((len(frames), 1, 2, 2), np.float32)}

    monkeypatch.setattr(evaluate, "Predictor", Brightness)
    workdir = str(stub_run["workdir"])

    def run(**kw):
        config = evaluate.load_run_config(workdir)
        return evaluate.evaluate(
            config, workdir, data_dir=str(stub_run["data"]), progress=False, **kw
        )

    return run


def _tree(path) -> dict:
    """{relative path: bytes} of every file under ``path``."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = f.read()
    return out


_VIDEOS = [("r0", 0, "real", 0), ("r1", 0, "real", 1), ("f0", 1, "A", 0), ("f1", 1, "A", 1)]


@pytest.mark.parametrize("how", ["exception", "kill"])
def test_a_killed_rerun_leaves_the_earlier_result_whole_and_the_next_run_succeeds(
    stub_run, monkeypatch, how
):
    import csv
    import glob
    import json

    first = _stand_in_evaluation(stub_run, monkeypatch, _VIDEOS)()
    out_dir = first["out_dir"]
    assert {os.path.basename(p) for p in glob.glob(os.path.join(out_dir, "*"))} >= {
        "metrics.json", "scores.csv", "video_scores.csv", "roc.png", "calibration.png",
        "attention", "failures",
    }  # fmt: skip
    (stub_run["workdir"] / "eval" / os.path.basename(out_dir) / "notes.txt").write_text("mine")
    before = _tree(out_dir)
    # Trained again: other scores. The rerun dies while writing video_scores.csv, after
    # half of it; a kill -9 also skips every clean-up.
    rerun = _stand_in_evaluation(stub_run, monkeypatch, _VIDEOS, fakeness=0.05)
    write_csv = evaluate._write_csv

    class Killed(BaseException):
        pass

    def dies_midway(path, cols, names):
        if os.path.basename(path) != "video_scores.csv":
            return write_csv(path, cols, names)
        with open(path, "w") as f:
            f.write(",".join(names) + "\nr0,0,")
        raise Killed

    monkeypatch.setattr(evaluate, "_write_csv", dies_midway)
    discard = getattr(evaluate, "_discard", None)
    if how == "kill":
        monkeypatch.setattr(evaluate, "_discard", lambda path: None, raising=False)
    with pytest.raises(Killed):
        rerun()
    # The earlier result, whole: not the rerun's metrics.json beside the earlier CSVs.
    assert _tree(out_dir) == before
    eval_dir = stub_run["workdir"] / "eval"
    found = glob.glob(str(eval_dir / "*" / "metrics.json"))  # as thresholds finds results
    assert found == [os.path.join(out_dir, "metrics.json")]
    # Hidden (no glob of eval/*/ sees it): the folder the killed run wrote into.
    leftovers = [p.name for p in eval_dir.iterdir() if p.name != os.path.basename(out_dir)]
    name = os.path.basename(out_dir)
    if how == "exception":
        assert leftovers == []
    else:
        assert len(leftovers) == 1 and leftovers[0].startswith(f".{name}.tmp-")
    # The next run replaces it whole, cleans up what the killed one left, keeps notes.
    monkeypatch.setattr(evaluate, "_write_csv", write_csv)
    monkeypatch.setattr(evaluate, "_discard", discard, raising=False)
    second = rerun()
    assert second["out_dir"] == out_dir and [p.name for p in eval_dir.iterdir()] == [
        os.path.basename(out_dir)
    ]
    with open(second["metrics_json"]) as f:
        doc = json.load(f)
    with open(second["video_scores"]) as f:
        scores = {r["video_id"]: float(r["score"]) for r in csv.DictReader(f)}
    assert scores["r0"] == pytest.approx(25 / 255 + 0.05) and doc["num_videos"] == 4
    assert (eval_dir / os.path.basename(out_dir) / "notes.txt").read_text() == "mine"
    for key in ("metrics_json", "scores", "video_scores", "roc", "calibration"):
        assert os.path.dirname(second[key]) == out_dir and os.path.isfile(second[key])
    assert second["attention"] and all(os.path.isfile(p) for p in second["attention"])


def test_two_evaluations_of_one_result_take_turns_to_swap_it_in(stub_run, monkeypatch):
    # The same command run twice at once: each may score in full, but cleaning up
    # leftovers, carrying over the folder's notes and the swap must not interleave
    # (one listed out_dir while the other had it renamed aside: FileNotFoundError
    # after scoring, or the notes lost). They run holding a lock on eval/.
    import fcntl

    run = _stand_in_evaluation(stub_run, monkeypatch, _VIDEOS)
    eval_dir = stub_run["workdir"] / "eval"
    held = []

    def locked_by_another() -> bool:
        fd = os.open(eval_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also releases the lock, were it taken
        return False

    def checked(name, f):
        def call(*a):
            held.append((name, locked_by_another()))
            return f(*a)

        return call

    for name in ("_clean_leftovers", "_keep_others", "_swap_in"):
        monkeypatch.setattr(evaluate, name, checked(name, getattr(evaluate, name)))
    out_dir = run()["out_dir"]
    (eval_dir / os.path.basename(out_dir) / "notes.txt").write_text("mine")
    run()
    assert held and all(h for _, h in held), held
    assert {n for n, _ in held} == {"_clean_leftovers", "_keep_others", "_swap_in"}
    assert not locked_by_another()  # released when done
    assert (eval_dir / os.path.basename(out_dir) / "notes.txt").read_text() == "mine"
    assert os.listdir(eval_dir) == [os.path.basename(out_dir)]  # no lock file beside it


def test_a_run_that_must_wait_for_the_lock_says_so_and_then_swaps(stub_run, monkeypatch, capsys):
    # Another evaluation holding the lock (here: this test) makes the run wait,
    # and say why on stderr, not hang silently; once released, it finishes.
    import fcntl
    import threading
    import time

    run = _stand_in_evaluation(stub_run, monkeypatch, _VIDEOS)
    out_dir = run()["out_dir"]
    eval_dir = stub_run["workdir"] / "eval"
    # A killed writer's half file inside the result: not carried over as a note.
    half = ".notes.txt.tmp-elsewhere-1-0123abcd"
    (eval_dir / os.path.basename(out_dir) / half).write_text("half")
    capsys.readouterr()
    fd = os.open(eval_dir, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    done = []
    thread = threading.Thread(target=lambda: done.append(run()), daemon=True)
    try:
        thread.start()
        said = ""
        for _ in range(1200):  # up to 2 min on a loaded machine; ends when it is said
            said += capsys.readouterr().err
            if "waiting for another evaluation" in said or not thread.is_alive():
                break
            time.sleep(0.1)
        assert f"evaluate: waiting for another evaluation writing into {eval_dir}" in said
        assert not done  # it waits
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    thread.join(timeout=300)
    assert done and done[0]["out_dir"] == out_dir
    assert half not in os.listdir(out_dir)


@pytest.mark.parametrize("exchange", [True, False])
def test_a_rerun_swaps_its_result_in_with_one_exchange_or_else_two_renames(
    stub_run, monkeypatch, exchange, exchange_works
):
    # Exchanged in one step (atomic_files.swap_paths), a reader of the result
    # never finds it missing; where the file system cannot, two renames.
    import csv

    from data_prep import atomic_files

    if exchange and not exchange_works:
        pytest.skip("no renameat2 exchange on this system or file system")
    out_dir = _stand_in_evaluation(stub_run, monkeypatch, _VIDEOS)()["out_dir"]
    eval_dir = stub_run["workdir"] / "eval"
    (eval_dir / os.path.basename(out_dir) / "notes.txt").write_text("mine")
    if not exchange:
        monkeypatch.setattr(atomic_files, "swap_paths", lambda a, b: False)
    renames, real_rename = [], os.rename

    def rename(src, dst):
        renames.append((str(src), str(dst)))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    again = _stand_in_evaluation(stub_run, monkeypatch, _VIDEOS, fakeness=0.05)()
    assert again["out_dir"] == out_dir
    moved = [r for r in renames if out_dir in r]
    assert (moved == []) if exchange else (len(moved) == 2), renames
    with open(again["video_scores"]) as f:
        scores = {r["video_id"]: float(r["score"]) for r in csv.DictReader(f)}
    assert scores["r0"] == pytest.approx(25 / 255 + 0.05)  # the rerun's, whole
    assert (eval_dir / os.path.basename(out_dir) / "notes.txt").read_text() == "mine"
    assert os.listdir(eval_dir) == [os.path.basename(out_dir)]  # nothing left aside


def test_a_result_folder_that_is_a_symlink_stays_one(stub_run, monkeypatch, tmp_path):
    # Results kept on another disk through a symlink: the swap replaced the link
    # with a folder and left the earlier result aside for good.
    run = _stand_in_evaluation(stub_run, monkeypatch, _VIDEOS)
    out_dir = run()["out_dir"]
    elsewhere = tmp_path / "other_disk" / "result"
    elsewhere.parent.mkdir()
    os.rename(out_dir, elsewhere)
    os.symlink(elsewhere, out_dir)
    before = _tree(elsewhere)
    again = _stand_in_evaluation(stub_run, monkeypatch, _VIDEOS, fakeness=0.05)()
    assert os.path.islink(out_dir) and os.path.realpath(out_dir) == str(elsewhere)
    assert _tree(elsewhere) != before and os.path.isfile(again["metrics_json"])
    eval_dir = os.path.dirname(out_dir)
    assert os.listdir(eval_dir) == [os.path.basename(out_dir)]
    assert os.listdir(elsewhere.parent) == ["result"]  # nothing left aside


def test_figures_of_ids_alike_but_for_punctuation_or_past_80_bytes_do_not_overwrite(
    stub_run, monkeypatch
):
    import csv

    long = "dfdc/dfdc_train_part_47/" + "x" * 80  # 104 bytes: past safe()'s 80
    videos = [
        ("r 1", 0, "real", 1), ("r_1", 0, "real", 1),  # safe(): both "r_1"
        (long + "a.mp4", 1, "m 1", 1), (long + "b.mp4", 1, "m_1", 1),  # methods alike too
    ]  # fmt: skip
    out = _stand_in_evaluation(stub_run, monkeypatch, videos)()
    attention = sorted(os.listdir(os.path.join(out["out_dir"], "attention")))
    assert len(attention) == len(set(out["attention"])) == 4
    assert sorted(map(os.path.basename, out["attention"])) == attention
    assert all(
        name.startswith(("real_real_r_1_", "fake_m_1_dfdc_dfdc_train")) for name in attention
    )
    # One failure case per video (all wrong): groups "fake_m 1" / "fake_m_1" alike in safe().
    fail_dir = os.path.join(out["out_dir"], "failures")
    pngs = sorted(n for n in os.listdir(fail_dir) if n.endswith(".png"))
    assert len(pngs) == len(out["failures"]) == 4
    with open(os.path.join(fail_dir, evaluate.CASES_CSV)) as f:
        cases = list(csv.DictReader(f))
    assert sorted(c["png"] for c in cases) == pngs
    by_id = {c["video_id"]: c["png"] for c in cases}
    assert set(by_id) == {v[0] for v in videos}
    # Readable, and the hash is of the whole name: the same case gets the same name again.
    from ldattn_jax import eval_names

    case = cases[0]
    name = f"{case['group']}_{case['rank']}_{case['video_id']}_f{case['frame_index']}"
    assert case["png"] == eval_names.figure_stem(name) + ".png"
    assert case["png"].startswith(eval_names.safe(name) + "_")


def test_what_killed_runs_left_beside_the_result_is_cleaned_up_or_put_back(tmp_path):
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has now
    out_dir = tmp_path / "synthetic_test_7"
    host = leftovers.HOST

    def leftover(kind, pid, who=host):
        path = tmp_path / f".synthetic_test_7.{kind}-{who}-{pid}"
        path.mkdir()
        (path / "metrics.json").write_text(kind)
        return path

    half = leftover("tmp", gone.pid)
    aside = leftover("old", gone.pid)  # killed between the swap's two renames
    running = leftover("tmp", os.getppid())  # another evaluation, running now
    other_host = leftover("tmp", gone.pid, who="elsewhere")  # a shared file system
    other_name = tmp_path / f".synthetic_test_7_t0.3.tmp-{host}-{gone.pid}"
    other_name.mkdir()
    evaluate._clean_leftovers(str(out_dir))
    assert not half.exists() and not aside.exists()
    assert (out_dir / "metrics.json").read_text() == "old"  # the whole earlier result, back
    assert running.exists() and other_host.exists() and other_name.exists()
    # Where a result is in place, one set aside is the older one: it goes.
    aside = leftover("old", gone.pid)
    evaluate._clean_leftovers(str(out_dir))
    assert not aside.exists() and (out_dir / "metrics.json").read_text() == "old"
    # A staging folder starts empty.
    staged = evaluate._staging_dir(str(out_dir))
    assert os.listdir(staged) == [] and os.path.basename(staged).startswith(".")
