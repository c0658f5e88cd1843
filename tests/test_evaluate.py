"""Evaluation helpers that do not need a trained model."""

import numpy as np
import pytest

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
    # Perfectly separated: every resample too, so the interval is [1, 1].
    assert "AUC 95% interval (bootstrap over videos): frame [1.0000, 1.0000], video" in lines[3]
    # Scores 0.1..0.9 on labels 0 0 0 0 1 1 1 1: off by |sum(labels - scores)| per bin / n.
    assert lines[4].startswith("ACC 95% interval (same resamples): frame [")
    frame_ece = metrics.expected_calibration_error(cols["label"], cols["score"])
    assert lines[5].startswith(
        f"calibration (ECE 0: a score p is fake p of the time): frame ECE {frame_ece:.4f}, Brier "
    )
    assert lines[6] == (
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
