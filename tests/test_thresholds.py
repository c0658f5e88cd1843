"""--threshold: a probability, or 'val' read from this checkpoint's val evaluation."""

import argparse
import json
import os
import shutil

import ml_collections
import pytest

from ldattn_jax import thresholds
from ldattn_jax.metrics import FINGERPRINT_VERSION, shards_fingerprint


def _val_doc(workdir, name, *, step=7, dtype="float32", eer=0.37, split="val", sha="s", **extra):
    """A val evaluation's metrics.json as far as the val lookups read it (``extra``:
    more top-level keys, e.g. calibration); its path relative to ``workdir``."""
    path = workdir / "eval" / name / "metrics.json"
    path.parent.mkdir(parents=True)
    doc = {
        "split": split,
        "checkpoint": {"step": step, "which": "best"},
        "compute_dtype": dtype,
        "shards_sha256": sha,
        "shards_fingerprint_version": FINGERPRINT_VERSION,
        "video": {"eer_threshold": eer},
        **extra,
    }
    path.write_text(json.dumps(doc))
    return os.path.relpath(path, workdir)


def test_the_argument_takes_a_probability_or_val():
    assert thresholds.parse_threshold("val") == thresholds.VAL
    assert thresholds.parse_threshold("0.25") == 0.25
    for bad in ("1.5", "-0.1", "x", "nan", "VAL"):
        with pytest.raises(argparse.ArgumentTypeError, match="probability in \\[0, 1\\], or 'val'"):
            thresholds.parse_threshold(bad)


def test_val_reads_the_same_step_dtype_and_build(tmp_path):
    wd = tmp_path / "run"
    # Only the first matches: another step, another dtype, another build (the
    # _data suffix of evaluate --data), the test split, a cut-short file.
    want = _val_doc(wd, "synthetic_val_7", eer=0.37)
    _val_doc(wd, "synthetic_val_6", step=6, eer=0.11)
    _val_doc(wd, "synthetic_val_7_bfloat16", dtype="bfloat16", eer=0.12)
    _val_doc(wd, "celebdf_val_7_data0123abcd", eer=0.13)
    _val_doc(wd, "synthetic_test_7", split="test", eer=0.14)
    (wd / "eval" / "broken").mkdir()
    (wd / "eval" / "broken" / "metrics.json").write_text('{"split": "val", "checkpo')
    assert thresholds.val_eer_threshold(str(wd), 7, "float32") == (0.37, want)
    # val evaluated again at another threshold holds the same EER threshold.
    _val_doc(wd, "synthetic_val_7_t0.2", eer=0.37)
    assert thresholds.val_eer_threshold(str(wd), 7, "float32") == (0.37, want)
    assert thresholds.val_eer_threshold(str(wd), 7, "bfloat16")[0] == 0.12


def test_val_says_which_command_makes_what_is_missing(tmp_path):
    wd = tmp_path / "run"
    _val_doc(wd, "synthetic_val_6", step=6)
    with pytest.raises(FileNotFoundError) as e:
        thresholds.val_eer_threshold(str(wd), 7, "bfloat16")
    msg = str(e.value)
    assert "no val evaluation of checkpoint step 7 in bfloat16" in msg
    assert f"evaluate --workdir {wd} --split val --checkpoint 7 --dtype bfloat16" in msg


def test_val_refuses_a_threshold_that_is_no_probability(tmp_path):
    for i, bad in enumerate((5.0, -0.2, "abc", [0.3])):
        wd = tmp_path / f"run{i}"
        _val_doc(wd, "synthetic_val_7", eer=bad)
        with pytest.raises(thresholds.ThresholdError) as e:
            thresholds.val_eer_threshold(str(wd), 7, "float32")
        assert f"video.eer_threshold = {bad!r}, not a probability in [0, 1]" in str(e.value)
        assert "synthetic_val_7/metrics.json" in str(e.value)


def test_an_unreadable_val_result_is_named_not_ignored(tmp_path):
    wd = tmp_path / "run"
    (wd / "eval" / "synthetic_val_7").mkdir(parents=True)
    (wd / "eval" / "synthetic_val_7" / "metrics.json").write_text('{"split": "val", "chec')
    with pytest.raises(FileNotFoundError) as e:
        thresholds.val_eer_threshold(str(wd), 7, "float32")
    assert "unreadable, so not used: eval/synthetic_val_7/metrics.json (JSONDecodeError" in str(
        e.value
    )


def test_the_argument_defaults_to_none_so_a_given_half_is_told_apart():
    p = argparse.ArgumentParser()
    thresholds.add_threshold_argument(p)
    assert p.parse_args([]).threshold is None
    assert p.parse_args(["--threshold", "0.5"]).threshold == 0.5


def test_val_refuses_a_stale_build_disagreeing_results_and_a_one_class_val(tmp_path):
    data = tmp_path / "shards"
    data.mkdir()
    (data / "metadata.json").write_text('{"build": 1}')
    wd = tmp_path / "run"
    rel = _val_doc(wd, "synthetic_val_7", sha=shards_fingerprint(data))
    assert thresholds.val_eer_threshold(str(wd), 7, "float32", str(data))[1] == rel
    (data / "metadata.json").write_text('{"build": 2}')  # rebuilt since
    with pytest.raises(FileNotFoundError, match="another build of .*rebuilt since"):
        thresholds.val_eer_threshold(str(wd), 7, "float32", str(data))
    # Without the shards at hand (predict on an analyst's machine) it is trusted.
    assert thresholds.val_eer_threshold(str(wd), 7, "float32", str(tmp_path / "gone"))[1] == rel

    _val_doc(wd, "synthetic_val_7_t0.3", eer=0.5)
    with pytest.raises(ValueError, match="disagree"):
        thresholds.val_eer_threshold(str(wd), 7, "float32")
    other = tmp_path / "other"
    _val_doc(other, "synthetic_val_7", eer=None)
    with pytest.raises(ValueError, match="no video-level EER threshold"):
        thresholds.val_eer_threshold(str(other), 7, "float32")


def test_val_of_other_weights_at_the_same_step_is_refused(tmp_path):
    from ldattn_jax.provenance import tree_sha256

    wd = tmp_path / "run"
    state = wd / "checkpoints" / "7" / "state"
    state.mkdir(parents=True)
    (state / "weights").write_bytes(b"\x01" * 32)

    def doc(name, state_sha256, **kw):
        rel = _val_doc(wd, name, **kw)
        path = wd / rel
        d = json.loads(path.read_text())
        d["checkpoint"]["state_sha256"] = state_sha256
        path.write_text(json.dumps(d))
        return rel

    fit = {"method": "platt_even_odds", "a": 1.0, "b": 0.0}
    rel = doc("synthetic_val_7", tree_sha256(state), calibration={"fit": fit})
    assert thresholds.val_calibration(str(wd), 7, "float32") == (fit, rel)
    assert thresholds.val_eer_threshold(str(wd), 7, "float32") == (0.37, rel)
    (state / "weights").write_bytes(b"\x02" * 32)  # the workdir trained again: step 7 anew
    with pytest.raises(
        FileNotFoundError, match="other weights at checkpoint step 7 .*trained again"
    ) as e:
        thresholds.val_eer_threshold(str(wd), 7, "float32")
    assert "--split val --checkpoint 7" in str(e.value)  # and the command that makes it
    with pytest.raises(FileNotFoundError, match="trained again"):
        thresholds.val_calibration(str(wd), 7, "float32")
    # Of an older evaluate, with no state_sha256 (or a gs:// run's null): not told, trusted.
    shutil.rmtree(wd / "eval")
    rel = doc("synthetic_val_7", None)
    assert thresholds.val_eer_threshold(str(wd), 7, "float32") == (0.37, rel)


def test_resolve_names_the_source_and_refuses_val_on_val(tmp_path):
    wd = tmp_path / "run"
    rel = _val_doc(wd, "synthetic_val_7")
    config = ml_collections.ConfigDict({"model": {"dtype": "float32"}})
    assert thresholds.resolve(None, config, str(wd), 7) == (0.5, "default")
    # A number on the command line was chosen, 0.5 too: "given".
    assert thresholds.resolve(0.5, config, str(wd), 7) == (0.5, "given")
    assert thresholds.resolve(0.4, config, str(wd), 7) == (0.4, "given")
    assert thresholds.resolve("val", config, str(wd), 7, splits=("test",)) == (0.37, rel)
    with pytest.raises(ValueError, match="val split itself"):
        thresholds.resolve("val", config, str(wd), 7, splits=("val",))
    with pytest.raises(ValueError, match=r"on train\+val, which pools the val split"):
        thresholds.resolve("val", config, str(wd), 7, splits=("train", "val"))
    assert "EER threshold of eval/synthetic_val_7/metrics.json" in thresholds.describe(0.37, rel)
    # A run that chose its checkpoints on another split reads that split's result.
    held = _val_doc(wd, "synthetic_heldout_7", split="heldout", eer=0.61)
    config.data = {"val_split": "heldout"}
    assert thresholds.resolve("val", config, str(wd), 7, splits=("test", "val")) == (0.61, held)
    with pytest.raises(ValueError, match="heldout split itself"):
        thresholds.resolve("val", config, str(wd), 7, splits=("heldout",))


def test_the_stale_build_check_finds_a_relative_data_dir_from_another_cwd(tmp_path, monkeypatch):
    from ldattn_jax import provenance

    data = tmp_path / "shards"
    data.mkdir()
    (data / "metadata.json").write_text('{"build": 1}')
    wd = tmp_path / "run"
    _val_doc(wd, "synthetic_val_7", sha=shards_fingerprint(data))
    config = ml_collections.ConfigDict({"model": {"dtype": "float32"}, "data": {"dir": "shards"}})
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert thresholds.resolve("val", config, str(wd), 7, splits=("test",))[0] == 0.37
    (data / "metadata.json").write_text('{"build": 2}')  # rebuilt since val was evaluated
    # "shards" is relative to where training ran: found beside the workdir...
    with pytest.raises(FileNotFoundError, match="another build of .*rebuilt since"):
        thresholds.resolve("val", config, str(wd), 7, splits=("test",))
    # ...or where training recorded it, wherever the workdir went since.
    moved = tmp_path / "moved" / "run"
    shutil.copytree(wd, moved)
    line = {"start_step": 0, "data": {"dir": str(data), "shards_sha256": "older"}}
    (moved / provenance.TRAINING_LOG).write_text(json.dumps(line) + "\n")
    assert thresholds.run_data_dir(config, str(moved)) == str(data)
    with pytest.raises(FileNotFoundError, match="rebuilt since"):
        thresholds.resolve("val", config, str(moved), 7, splits=("test",))


def test_val_results_of_one_checkpoint_agree_within_batch_size_rounding(tmp_path):
    # XLA's kernels depend on the batch shape: val evaluated at --batch_size 16 and
    # at 5 gave EER thresholds 0.26812618405320376 and 0.2681261992328737. Neither
    # is stale; the first by name is used.
    wd = tmp_path / "run"
    fit = {"method": "platt_even_odds", "a": 0.91, "b": -0.24}
    moved = fit | {"a": 0.91 * (1 + 3e-7), "b": -0.24 - 2e-8}
    rel = _val_doc(wd, "synthetic_val_7", eer=0.26812618405320376, calibration={"fit": fit})
    _val_doc(wd, "synthetic_val_7_t0.3", eer=0.2681261992328737, calibration={"fit": moved})
    assert thresholds.val_eer_threshold(str(wd), 7, "float32") == (0.26812618405320376, rel)
    assert thresholds.val_calibration(str(wd), 7, "float32") == (fit, rel)
    # A real disagreement is still refused.
    _val_doc(wd, "synthetic_val_7_t0.4", eer=0.2682, calibration={"fit": fit | {"a": 0.92}})
    with pytest.raises(ValueError, match="disagree on the video-level EER threshold"):
        thresholds.val_eer_threshold(str(wd), 7, "float32")
    with pytest.raises(ValueError, match="disagree on the calibration"):
        thresholds.val_calibration(str(wd), 7, "float32")


def _versioned_build(root):
    """A data_prep.build --out with a face cache beside its shards."""
    builder = root / "lda_faces" / "synthetic_n3_s62" / "1.0.0"
    builder.mkdir(parents=True)
    (builder / "dataset_info.json").write_text('{"name": "lda_faces"}')
    (builder / "lda_faces-val.array_record-00000-of-00001").write_bytes(b"x" * 10)
    cache = root / "cache" / "f8_n3_s62_faces2"  # a stale face cache
    cache.mkdir(parents=True)
    (cache / "v0.npz").write_bytes(b"c" * 100)
    return builder, cache


def test_deleting_a_stale_face_cache_is_no_rebuild(tmp_path):
    from ldattn_jax import metrics

    data = tmp_path / "shards"
    builder, cache = _versioned_build(data)
    wd = tmp_path / "run"
    # A val result of this version, one of before versions were recorded (its
    # fingerprint hashed the cache too), and the cache deleted as build.py advises.
    new = _val_doc(wd, "synthetic_val_7", sha=shards_fingerprint(data))
    shutil.rmtree(cache)
    assert thresholds.val_eer_threshold(str(wd), 7, "float32", str(data))[1] == new
    shutil.rmtree(wd / "eval")
    cache.mkdir()
    (cache / "v0.npz").write_bytes(b"c" * 100)
    old = _val_doc(wd, "synthetic_val_7", sha=metrics.legacy_shards_fingerprint(data))
    doc = json.loads((wd / old).read_text())
    del doc["shards_fingerprint_version"]
    (wd / old).write_text(json.dumps(doc))
    assert thresholds.val_eer_threshold(str(wd), 7, "float32", str(data))[1] == old
    shutil.rmtree(cache)  # version 1 moves; it cannot tell, so it does not refuse
    assert thresholds.val_eer_threshold(str(wd), 7, "float32", str(data))[1] == old
    # The shards themselves rebuilt: refused, in this version.
    shutil.rmtree(wd / "eval")
    _val_doc(wd, "synthetic_val_7", sha=shards_fingerprint(data))
    (builder / "lda_faces-val.array_record-00000-of-00001").write_bytes(b"x" * 11)
    with pytest.raises(FileNotFoundError, match="another build of .*rebuilt since"):
        thresholds.val_eer_threshold(str(wd), 7, "float32", str(data))


def test_a_training_line_of_the_older_fingerprint_still_names_the_runs_build(tmp_path):
    from ldattn_jax import metrics, provenance

    data = tmp_path / "shards"
    _versioned_build(data)
    link = tmp_path / "link"
    link.symlink_to(data)
    wd = tmp_path / "run"
    wd.mkdir()
    config = ml_collections.ConfigDict({"model": {"dtype": "float32"}, "data": {"dir": "x"}})
    line = {"start_step": 0, "data": {"dir": "/gone", "shards_sha256": "0" * 64}}
    (wd / provenance.TRAINING_LOG).write_text(json.dumps(line) + "\n")
    assert not thresholds.is_run_data(str(link), config, str(wd))
    line["data"]["shards_sha256"] = metrics.legacy_shards_fingerprint(link)  # version 1
    (wd / provenance.TRAINING_LOG).write_text(json.dumps(line) + "\n")
    assert thresholds.is_run_data(str(link), config, str(wd))
    line["data"] |= {"shards_sha256": shards_fingerprint(data), "fingerprint_version": 2}
    (wd / provenance.TRAINING_LOG).write_text(json.dumps(line) + "\n")
    assert thresholds.is_run_data(str(link), config, str(wd))
