"""train_and_evaluate end to end on 8 simulated CPU devices with the real tiny LDA-ST.

One 4-step reference run is shared: the outputs the user sees, the 1-vs-8
device equivalence, kill-and-resume bit-identity and the NaN guard all compare
against it.
"""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest
from test_train_helpers import (
    ROOT,
    build_tiny_shards,
    flat_params,
    jit_cache_env,
    tiny_args,
    tiny_config,
    use_jit_cache,
)

from ldattn_jax import checkpointing, input_pipeline, train
from ldattn_jax.config_utils import ConfigError

pytestmark = pytest.mark.slow

STEPS = 4
REF = ["--config.total_steps=4", "--config.checkpoint_every=2", "--config.log_every=1"]
REF += ["--config.eval_every=4", "--config.keep_checkpoints=3"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    return build_tiny_shards(str(tmp_path_factory.mktemp("shards")), str(root))


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    use_jit_cache()
    assert jax.device_count() == 8
    workdir = str(tmp_path_factory.mktemp("ref"))
    config = tiny_config(shards, *REF)
    result = train.train_and_evaluate(config, workdir)
    return config, workdir, result


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _losses(workdir):
    return {m["step"]: m["loss"] for m in _metrics(workdir) if "loss" in m}


def test_reference_run_reports_and_checkpoints(reference):
    config, workdir, result = reference
    assert result.step == STEPS and not result.preempted
    # 40 train records / batch 8 → 5 steps per epoch; lr halves every epoch.
    assert result.steps_per_epoch == 5
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f) == json.loads(config.to_json())
    rows = _metrics(workdir)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    for r in train_rows:
        for key in ("loss", "acc", "lr", "grad_norm", "param_norm", "epoch"):
            assert np.isfinite(r[key]), (key, r)
        assert r["lr"] == pytest.approx(0.01)
        # Speed excludes the compiling first step.
        assert (r["step"] == 1) != (r.get("images_per_s", 0) > 0), r
        assert (r["step"] == 1) != (0.0 <= r.get("input_wait_fraction", -1) <= 1.0), r
    val = [r for r in rows if "val_auc" in r]
    assert [r["step"] for r in val] == [STEPS] and 0.0 <= val[0]["val_auc"] <= 1.0
    assert val[0]["val_n"] == 40  # every validation record, padding excluded
    assert any(f.startswith("events.out") for f in os.listdir(os.path.join(workdir, "tensorboard")))
    manager = checkpointing.make_manager(workdir, read_only=True, async_save=False)
    assert manager.all_steps() == [2, 4] and manager.best_step() == 4
    manager.close()


def test_validation_scores_the_val_split_as_inference_does(reference, tmp_path):
    """The best checkpoint is chosen on val_split, by the model as evaluate and
    predict run it (restored weights, eval-mode BatchNorm): the run's val_auc is
    evaluate's frame AUC on val, and not the one on test."""
    from ldattn_jax.evaluate import evaluate

    config, workdir, _ = reference
    (val,) = [r for r in _metrics(workdir) if "val_auc" in r]
    run = tmp_path / "run"  # a copy: evaluate writes eval/ into the workdir
    shutil.copytree(workdir, run)

    def frame_auc(split):
        out = evaluate(config, str(run), checkpoint=STEPS, split=split, figures_per_class=0,
                       failures_per_class=0, progress=False)  # fmt: skip
        return out["metrics"]["frame"]["auc"]

    assert frame_auc("val") == pytest.approx(val["val_auc"], abs=1e-5)
    assert frame_auc("test") != pytest.approx(val["val_auc"], abs=1e-3)


def test_validation_reads_at_most_eval_max_batches(shards, tmp_path):
    # The reference run validates on all 40 val records (val_n 40); a cap of one
    # batch of 8 must reach the loader from the config, not be dropped on the way.
    config = tiny_config(
        shards, *REF, "--config.total_steps=1", "--config.eval_every=1",
        "--config.eval_max_batches=1",
    )  # fmt: skip
    train.train_and_evaluate(config, str(tmp_path))
    (val,) = [r for r in _metrics(str(tmp_path)) if "val_auc" in r]
    assert val["val_n"] == config.batch_size == 8


def test_eight_devices_match_one_device(reference, shards, tmp_path):
    """Global-batch BatchNorm + sharded batch: same losses and params as one device (fp32)."""
    _, ref_dir, _ = reference
    config = tiny_config(
        shards,
        *REF,
        "--config.total_steps=2",
        "--config.eval_every=0",
        "--config.mesh=[('data', 1)]",
    )
    one = train.train_and_evaluate(config, str(tmp_path))
    ref_losses, one_losses = _losses(ref_dir), _losses(str(tmp_path))
    # fp32 tolerance: the 8-way sharded reductions add in another order (~1e-7
    # relative). The first loss (same init, same batch) agrees to that; the
    # gradients through ~30 BatchNorm layers at batch 8 amplify it, so the
    # next loss differs up to ~1e-4 relative.
    np.testing.assert_allclose(one_losses[1], ref_losses[1], rtol=1e-5)
    np.testing.assert_allclose(one_losses[2], ref_losses[2], rtol=1e-3)
    ref_model, step = checkpointing.restore_for_inference(config, ref_dir, 2)
    assert step == 2
    from flax import nnx

    from ldattn_jax.models.lda import build_model

    ref_p = flat_params(nnx.state(ref_model, nnx.Param))
    one_p = flat_params(nnx.state(one.state[0], nnx.Param))
    init = flat_params(nnx.state(build_model(config.model, rngs=nnx.Rngs(config.seed)), nnx.Param))
    assert ref_p.keys() == one_p.keys() == init.keys()
    # What two steps changed must agree, tensor by tensor, to 2% of the change:
    # measured 0.25-0.75% (a single element of a near-cancelling gradient, e.g. a
    # BatchNorm bias, can differ by a few %, so an elementwise bound on the
    # parameters either fails on the data or is too loose for the large kernels).
    # A real sharding bug moves every tensor by far more: per-device BatchNorm
    # statistics at one sample per device, a gradient summed instead of averaged
    # over the 8 devices (8x), a dropped shard.
    for k in ref_p:
        change = np.linalg.norm(ref_p[k] - init[k])
        assert np.linalg.norm(one_p[k] - ref_p[k]) <= 0.02 * change + 1e-8, k


def test_sigterm_then_resume_is_bit_identical(reference, shards, tmp_path):
    _, _, ref = reference
    workdir = str(tmp_path / "run")
    env = dict(os.environ, **jit_cache_env(), PYTHONUNBUFFERED="1")
    # The real CLI in its own process, sent a real SIGTERM by itself as it reads
    # step 2's batch: after step 1, at a point no machine load can move (a timed
    # signal from here could land after the last step and test nothing).
    driver = (
        "import os, signal, sys\n"
        "from ldattn_jax import train\n"
        "shard_batch, calls = train.sharding.shard_batch, []\n"
        "def term_at_step_2(*a, **k):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return shard_batch(*a, **k)\n"
        "train.sharding.shard_batch = term_at_step_2\n"
        "sys.exit(train.main(sys.argv[1:]))\n"
    )
    cmd = [sys.executable, "-c", driver, "--config", "configs/demo.py"]
    cmd += ["--workdir", workdir, *tiny_args(shards, *REF)]
    p = subprocess.run(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=600,
    )  # fmt: skip
    out = p.stdout
    assert p.returncode == 0, out[-3000:]  # it saved and exited cleanly
    assert "stopped at step 2" in out, out[-3000:]
    manager = checkpointing.make_manager(workdir, read_only=True, async_save=False)
    killed_at = manager.latest_step()
    manager.close()
    assert killed_at == 2 < STEPS

    config = tiny_config(shards, *REF)
    resumed = train.train_and_evaluate(config, workdir)
    assert resumed.step == STEPS
    a = flat_params(nnx_state_all(ref.state))
    b = flat_params(nnx_state_all(resumed.state))
    assert a.keys() == b.keys()
    for k in a:  # params, BatchNorm statistics, momentum, step: all bitwise equal
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ref_losses = _losses(str(reference[1]))
    assert _losses(workdir)[STEPS] == ref_losses[STEPS]


def test_a_run_with_worker_processes_exits_without_a_shared_memory_warning(shards, tmp_path):
    # grain's workers hand batches over in shared memory; the last ones used to
    # be unlinked only by the resource tracker at exit, with a "leaked
    # shared_memory objects" warning on every such run (input_pipeline.
    # release_worker_batches). Only a process of its own shows what exit prints.
    env = dict(os.environ, **jit_cache_env(), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "ldattn_jax.train", "--config", "configs/demo.py"]
    cmd += ["--workdir", str(tmp_path / "run")]
    cmd += tiny_args(shards, "--config.total_steps=2", "--config.data.worker_count=2")
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "done at step 2/2" in out, out[-3000:]
    assert "leaked shared_memory" not in out, out[-3000:]


def nnx_state_all(state):
    from flax import nnx

    return nnx.to_pure_dict(state)


def test_nan_loss_stops_naming_the_step_and_keeps_last_checkpoint(reference, tmp_path, monkeypatch):
    _, ref_dir, _ = reference
    workdir = str(tmp_path / "nan")
    shutil.copytree(ref_dir, workdir)
    # Poisoned class weights make the loss NaN from the next step on; the compiled
    # step is the reference's (weights are an argument).
    monkeypatch.setattr(
        input_pipeline, "class_weights", lambda counts: np.full(2, np.nan, np.float32)
    )
    config = tiny_config(reference[0].data.dir, *REF, "--config.total_steps=8")
    with pytest.raises(
        train.TrainingDiverged, match=r"at step 5\b.*last good checkpoint is step 4"
    ):
        train.train_and_evaluate(config, workdir)
    manager = checkpointing.make_manager(workdir, read_only=True, async_save=False)
    assert manager.latest_step() == 4
    manager.close()


def test_an_infinite_gradient_norm_stops_even_while_the_loss_is_finite(
    reference, tmp_path, monkeypatch
):
    import jax.numpy as jnp
    import optax

    _, ref_dir, _ = reference
    workdir = str(tmp_path / "inf")
    shutil.copytree(ref_dir, workdir)
    # The step's logged norms come from optax.tree.norm (traced afresh for this run).
    monkeypatch.setattr(optax.tree, "norm", lambda tree, *a, **k: jnp.float32(jnp.inf))
    config = tiny_config(reference[0].data.dir, *REF, "--config.total_steps=8")
    with pytest.raises(train.TrainingDiverged, match=r"loss=[0-9.]+ grad_norm=inf at step 5\b"):
        train.train_and_evaluate(config, workdir)


def test_a_slow_loader_shows_as_input_wait(reference, tmp_path, monkeypatch):
    _, ref_dir, _ = reference
    workdir = str(tmp_path / "stall")
    shutil.copytree(ref_dir, workdir)
    shard_batch = train.sharding.shard_batch

    # A loader that needs 1000 s per batch on train's clock (a virtual wait, so a
    # loaded machine's slow steps cannot dilute it): the share is then ~1.
    skew = [0.0]

    def slow(*a, **k):
        skew[0] += 1000.0
        return shard_batch(*a, **k)

    monkeypatch.setattr(train, "time", types.SimpleNamespace(time=lambda: time.time() + skew[0]))
    monkeypatch.setattr(train.sharding, "shard_batch", slow)
    # No checkpoint at step 6: a save inside the interval would dilute the share.
    config = tiny_config(
        reference[0].data.dir, *REF, "--config.total_steps=7", "--config.checkpoint_every=100"
    )
    train.train_and_evaluate(config, workdir)  # resumes at 4; step 5 compiles
    waits = {r["step"]: r["input_wait_fraction"] for r in _metrics(workdir)
             if "input_wait_fraction" in r}  # fmt: skip
    assert [s for s in waits if s > 5] == [6, 7] and min(waits[6], waits[7]) > 0.9, waits
    ref_waits = [r["input_wait_fraction"] for r in _metrics(ref_dir) if "input_wait_fraction" in r]
    assert ref_waits and max(ref_waits) < 0.25  # the reference's loader kept up


@pytest.mark.parametrize(
    "override, error, match",
    [
        ("--config.data.dir=/nonexistent/shards", FileNotFoundError, "config.data.dir"),
        ("--config.batch_size=12", ConfigError, "not divisible by the 8 devices"),
        ("--config.model.stack=4", ConfigError, "rebuild with --stack 4"),
        ("--config.data.balance=oversample", ConfigError, "config.data.balance"),
        # A config mistake, so train's CLI prints it instead of a traceback.
        ("--config.mesh=[('model', -1)]", ConfigError, "axis names must be distinct"),
        ("--config.optimizer=rmsprop", ConfigError, "config.optimizer='rmsprop'"),
        # A misspelt split is named with the build's splits (a val typo used to turn
        # validation and the best checkpoint off with a warning).
        (
            "--config.data.val_split=vall",
            ConfigError,
            r"val_split='vall': split 'vall' is not in .*\['test', 'train', 'val'\].*val_split=''",
        ),
        ("--config.data.train_split=trian", ConfigError, r"train_split='trian': split 'trian'"),
    ],
)
def test_bad_setups_fail_before_compiling(shards, tmp_path, override, error, match):
    config = tiny_config(shards, override)
    with pytest.raises(error, match=match):
        train.train_and_evaluate(config, str(tmp_path))
    assert not os.path.exists(tmp_path / "checkpoints")


@pytest.mark.parametrize(
    "model, warned",
    [
        ("lda_spatial", r"'lda_spatial' uses 1 of the 4 frames .* reads 4x .* --stack 0"),
        ("xception", r"'xception' uses 1 of the 4 frames .* reads 4x"),
        ("lda_st", None),
    ],
)
def test_a_model_reading_fewer_frames_than_the_shards_hold_is_told(
    shards, tmp_path, caplog, model, warned
):
    # Records are read whole: a spatial model on stack-3 shards reads 4x what it
    # uses. An unknown balance stops the run right after the check, before compiling.
    config = tiny_config(shards, f"--config.model.name={model}", "--config.data.balance=x")
    with (
        caplog.at_level(logging.WARNING, "ldattn_jax.train"),
        pytest.raises(ConfigError, match="config.data.balance"),
    ):
        train.train_and_evaluate(config, str(tmp_path))
    told = [r.getMessage() for r in caplog.records if "records are read whole" in r.getMessage()]
    if warned is None:
        assert not told
    else:
        assert len(told) == 1 and re.search(warned, told[0]), told
