"""orbax checkpoints: retention (last K + best val AUC), state + grain iterator round trip,
resuming with another data.worker_count, and what a failed resume leaves in the workdir."""

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from test_train_helpers import DEMO_CONFIG

from data_prep.record_view import RecordFormatError
from ldattn_jax import checkpointing, input_pipeline, provenance, train
from ldattn_jax.config_utils import ConfigError, load_config


def _state(seed):
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(seed))
    return nnx.split(model)


def _iterator():
    return iter(grain.MapDataset.range(100).shuffle(seed=0).batch(4).to_iter_dataset())


def _shardings(abstract):
    device = jax.local_devices()[0]
    return jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(device), abstract)


def test_keeps_last_k_plus_best_and_round_trips_state_and_iterator(tmp_path):
    graphdef, state = _state(0)
    it = _iterator()
    manager = checkpointing.make_manager(tmp_path, keep=2, async_save=True)
    aucs = {2: 0.9, 4: 0.6}
    saved = {}
    for step in range(1, 6):
        next(it)
        metrics = {"val_auc": aucs[step]} if step in aucs else None
        saved[step] = (jax.tree.map(np.asarray, state), it.get_state())
        checkpointing.save_train_state(manager, step, state, it, metrics)
        state = jax.tree.map(lambda x: x + 1.0, state)
    manager.wait_until_finished()
    # LatestN(2) keeps 4 and 5; BestN(1) keeps 2 (AUC 0.9), chosen on validation.
    assert manager.all_steps() == [2, 4, 5]
    assert manager.best_step() == 2

    _, abstract = _state(1)
    fresh = _iterator()
    restored, fresh = checkpointing.restore_train_state(
        manager, 2, abstract, _shardings(abstract), fresh
    )
    manager.close()
    for a, b in zip(jax.tree.leaves(saved[2][0]), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)
    assert fresh.get_state() == saved[2][1]
    model = nnx.merge(graphdef, restored)
    assert model(np.ones((1, 3), np.float32)).shape == (1, 2)

    # A new manager (a restarted run) sees the same steps and the same best.
    again = checkpointing.make_manager(tmp_path, keep=2, read_only=True, async_save=False)
    assert again.latest_step() == 5 and again.best_step() == 2
    again.close()


def test_restore_for_inference_explains_a_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="--workdir of a training run"):
        checkpointing.restore_for_inference(None, str(tmp_path / "none"))


# ---- resuming: a tiny model on in-memory records, so a run takes seconds.


class _Records:
    """Picklable (grain workers) records with a .labels index, as data_prep's shards."""

    def __init__(self, n=48, seed=0):
        rng = np.random.default_rng(seed)
        self.labels = rng.integers(0, 2, n)
        noise = rng.integers(0, 100, (n, 1, 4, 4, 3))
        self.frames = (noise + 100 * self.labels[:, None, None, None, None]).astype(np.uint8)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"frames": self.frames[int(i)], "label": int(self.labels[int(i)])}


class _Tiny(nnx.Module):
    def __init__(self, rngs):
        self.bn = nnx.BatchNorm(3, rngs=rngs)
        self.lin = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, frames):
        x = frames.astype(jnp.float32).mean(axis=(1, 2, 3)) / 255.0
        return self.lin(self.bn(x)), {}


@pytest.fixture
def tiny_run(monkeypatch):
    import ldattn_jax.models.lda as lda

    monkeypatch.setattr(lda, "build_model", lambda cfg, rngs: _Tiny(rngs))
    monkeypatch.setattr(train, "_open_data", lambda config: (_Records(), None, None))

    def config(*extra):
        return load_config(
            DEMO_CONFIG,
            [
                *("--config.model.name=xception", "--config.model.image_size=4"),
                *("--config.batch_size=8", "--config.optimizer=sgd", "--config.lr=0.1"),
                *("--config.data.balance=none", "--config.data.read_threads=1"),
                *("--config.data.prefetch=1", "--config.log_every=1"),
                *("--config.async_checkpointing=false", "--config.eval_every=0"),
                *extra,
            ],
        )

    return config


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


def test_resuming_with_another_worker_count_continues_the_same_stream(tiny_run, tmp_path):
    # docs/training.md says to raise data.worker_count when the loader stalls;
    # grain's state shape depends on it (KeyError: 'exhausted' on resume).
    ref = train.train_and_evaluate(tiny_run("--config.total_steps=5"), str(tmp_path / "ref"))
    run = str(tmp_path / "run")
    train.train_and_evaluate(tiny_run("--config.total_steps=2"), run)
    train.train_and_evaluate(
        tiny_run("--config.total_steps=4", "--config.data.worker_count=2"), run
    )
    last = train.train_and_evaluate(tiny_run("--config.total_steps=5"), run)  # and back
    assert _losses(run) == _losses(str(tmp_path / "ref"))  # same batches, step by step
    # Which code trained the weights: one line per session that trained steps (a finished
    # run asked again adds none), and a checkpoint's are those that began before it.
    train.train_and_evaluate(tiny_run("--config.total_steps=5"), run)
    sessions = provenance.training_sessions(run, 5)
    assert [s["start_step"] for s in sessions] == [0, 2, 4]
    assert [s["start_step"] for s in provenance.training_sessions(run, 3)] == [0, 2]
    assert sessions[0]["packages"]["jax"] == jax.__version__ and sessions[0]["command"]
    assert provenance.training_sessions(str(tmp_path / "none"), 5) is None  # kept no log
    for a, b in zip(jax.tree.leaves(ref.state), jax.tree.leaves(last.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resuming_on_another_build_is_refused(tiny_run, tmp_path, monkeypatch):
    # data.dir may move (a copy is the same stream), but a build with another
    # number of records is another stream: the saved position would skip and
    # repeat records, and the lr schedule (epochs of the old length) would jump.
    run = tmp_path / "run"
    train.train_and_evaluate(tiny_run("--config.total_steps=2"), str(run))
    recorded = json.loads((run / "data_stream.json").read_text())
    assert recorded["stream_version"] == input_pipeline.STREAM_VERSION
    assert (recorded["train_records"], recorded["samples_per_epoch"]) == (48, 48)
    monkeypatch.setattr(train, "_open_data", lambda config: (_Records(40), None, None))
    with pytest.raises(ConfigError, match=r"of 48 records.*holds 40 .*new --workdir"):
        train.train_and_evaluate(tiny_run("--config.total_steps=4"), str(run))
    monkeypatch.setattr(train, "_open_data", lambda config: (_Records(), None, None))
    moved = tiny_run("--config.total_steps=4", f"--config.data.dir={tmp_path / 'copy'}")
    assert train.train_and_evaluate(moved, str(run)).step == 4


def test_a_run_begun_before_stream_versions_resumes_its_own_stream(tiny_run, tmp_path):
    # Seed 1's stream changed with version 2; a run begun under version 1 (its
    # config.json has no data.stream_version) must go on with version 1's batches,
    # and config.json then pins it.
    seeded = ("--config.seed=1", "--config.data.flip=false")
    ref = str(tmp_path / "ref")
    v1 = "--config.data.stream_version=1"
    train.train_and_evaluate(tiny_run("--config.total_steps=4", *seeded, v1), ref)
    old = tmp_path / "old"
    train.train_and_evaluate(tiny_run("--config.total_steps=2", *seeded, v1), str(old))
    written = json.loads((old / "config.json").read_text())
    del written["data"]["stream_version"]  # as the code before it wrote config.json
    (old / "config.json").write_text(json.dumps(written))
    (old / "data_stream.json").unlink()
    train.train_and_evaluate(tiny_run("--config.total_steps=4", *seeded), str(old))
    assert _losses(str(old)) == _losses(ref)
    assert json.loads((old / "config.json").read_text())["data"]["stream_version"] == 1
    assert json.loads((old / "data_stream.json").read_text())["stream_version"] == 1
    # Pinned: another version on resume is another stream, refused like another seed.
    with pytest.raises(ConfigError, match=r"data.stream_version: 1 -> 2"):
        train.train_and_evaluate(
            tiny_run("--config.total_steps=6", *seeded, "--config.data.stream_version=2"),
            str(old),
        )
    new = str(tmp_path / "new")
    train.train_and_evaluate(tiny_run("--config.total_steps=4", *seeded), new)
    assert _losses(new) != _losses(ref)  # version 2: another order for seed 1
    # Deleting data_stream.json (its own advice when damaged) keeps a run's version.
    (tmp_path / "new" / "data_stream.json").unlink()
    train.train_and_evaluate(tiny_run("--config.total_steps=5", *seeded), new)
    assert json.loads((tmp_path / "new" / "data_stream.json").read_text())["stream_version"] == 2


def test_a_run_hard_killed_after_a_checkpoint_resumes_with_one_record_per_step(
    tiny_run, tmp_path, monkeypatch
):
    import shutil

    # Validation AUCs of steps 1, 2, 3, then 3 again after the resume (the real
    # validation needs shards): the best is step 1's.
    aucs = iter([0.9, 0.6, 0.7, 0.7])
    monkeypatch.setattr(train, "_open_data", lambda config: (_Records(), _Records(8), None))
    monkeypatch.setattr(
        train, "_validate", lambda *a: {"val_auc": next(aucs), "val_acc": 0.5, "val_n": 8}
    )
    run = str(tmp_path / "run")
    config = tiny_run("--config.total_steps=3", "--config.eval_every=1")
    train.train_and_evaluate(config, run)
    # A kill just before the step-3 checkpoint: its rows are logged, its checkpoint is not.
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "3")
    resumed = train.train_and_evaluate(config, run)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert [r["step"] for r in rows if "val_auc" in r] == [1, 2, 3]
    # The run's best AUC, not only the resumed part's (step 3's 0.7).
    assert resumed.best_val_auc == 0.9


def test_a_failed_resume_leaves_config_json_as_it_was(tiny_run, tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    train.train_and_evaluate(tiny_run("--config.total_steps=1"), run)
    before = (tmp_path / "run" / "config.json").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("restore failed")

    monkeypatch.setattr(checkpointing, "restore_train_state", broken)
    with pytest.raises(RuntimeError, match="restore failed"):
        train.train_and_evaluate(
            tiny_run("--config.total_steps=3", "--config.data.worker_count=1"), run
        )
    # config.json still describes the checkpoints in the workdir.
    assert (tmp_path / "run" / "config.json").read_text() == before


def test_a_state_that_cannot_be_carried_over_names_the_key_and_both_values(tmp_path):
    c = ml_collections.ConfigDict(
        {"seed": 0, "batch_size": 4, "model": {"image_size": 4}, "data": {"flip": False}}
    )
    c.data.update(read_threads=1, prefetch=1, worker_count=0)
    records = _Records(16)
    it = input_pipeline.make_train_iterator(records, c, num_frames=1, indices=np.arange(16))
    next(it)
    manager = checkpointing.make_manager(tmp_path, async_save=False)
    checkpointing.save_train_state(manager, 1, _state(0)[1], it)
    manager.close()
    # A worker stream marked exhausted (the training stream never ends): no position.
    path = tmp_path / "checkpoints" / "1" / "data_iter" / "process_0-of-1.json"
    c.data.worker_count = 2
    fresh = input_pipeline.make_train_iterator(records, c, num_frames=1, indices=np.arange(16))
    bad = dict(fresh.get_state(), exhausted=[1, 0])
    path.write_text(json.dumps(bad))
    c.data.worker_count = 0
    target = input_pipeline.make_train_iterator(records, c, num_frames=1, indices=np.arange(16))
    manager = checkpointing.make_manager(tmp_path, async_save=False)
    _, abstract = _state(1)
    with pytest.raises(ConfigError, match=r"data.worker_count=2.*data.worker_count=0.*"
                       r"--config.data.worker_count=2"):  # fmt: skip
        checkpointing.restore_train_state(manager, 1, abstract, _shardings(abstract), target)
    manager.close()
    fresh.close()


@pytest.mark.parametrize(
    "key, value", [("log_every", 0), ("checkpoint_every", 0), ("eval_every", -2)]
)
def test_bad_step_counts_stop_before_anything_is_written(tiny_run, tmp_path, key, value):
    with pytest.raises(ConfigError, match=rf"config\.{key}={value} is out of range"):
        train.train_and_evaluate(tiny_run(f"--config.{key}={value}"), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def _pipeline_config(batch=4):
    c = ml_collections.ConfigDict(
        {"seed": 0, "batch_size": batch, "model": {"image_size": 4}, "data": {"flip": True}}
    )
    c.data.update(read_threads=1, prefetch=1, worker_count=0)
    return c


def test_a_checkpoint_of_two_processes_resumes_one_at_the_same_global_batch(tmp_path):
    # A pod or cluster job resubmitted on another number of hosts: process p's
    # batch n is its slice of global batch n for any count, so the position
    # carries over (it was refused, costing the resubmission its data position).
    records, idx, c = _Records(16), np.arange(16), _pipeline_config()
    ref = input_pipeline.make_train_iterator(records, c, num_frames=1, indices=idx)
    ref_batches = [next(ref) for _ in range(5)]
    d = tmp_path / "checkpoints" / "1" / "data_iter"
    d.mkdir(parents=True)
    for p in range(2):  # what two processes saved after 3 steps
        it = input_pipeline.make_train_iterator(
            records, c, num_frames=1, indices=idx, process_index=p, process_count=2
        )
        for _ in range(3):
            next(it)
        (d / f"process_{p}-of-2.json").write_text(json.dumps(it.get_state()))
    target = input_pipeline.make_train_iterator(records, c, num_frames=1, indices=idx)
    checkpointing.DataIterHandler().restore(d, item=target)
    for want in ref_batches[3:]:
        np.testing.assert_array_equal(next(target)["frames"], want["frames"])
    # Processes at different batches, or a missing process file: refused, named.
    (d / "process_1-of-2.json").write_text(json.dumps({"next_index": 4}))
    fresh = input_pipeline.make_train_iterator(records, c, num_frames=1, indices=idx)
    with pytest.raises(checkpointing.ProcessCountMismatch, match=r"different batches"):
        checkpointing.DataIterHandler().restore(d, item=fresh)
    (d / "process_1-of-2.json").unlink()
    with pytest.raises(
        checkpointing.ProcessCountMismatch, match=r"process_0-of-2.json.*incomplete"
    ):
        checkpointing.DataIterHandler().restore(d, item=fresh)


def test_config_data_balance_sets_the_epoch_and_the_loss(tiny_run, tmp_path, monkeypatch):
    # 32 fakes, 16 reals. 'sample' repeats the reals up to 32: an epoch is 64
    # samples = 8 steps of 8 (the lr halves per such epoch), not 48 // 8 = 6.
    # 'loss_weight' keeps the 48 records but weighs the loss by class: the same
    # first batch from the same initial weights then gives another loss than 'none'.
    records = _Records()
    records.labels[:] = np.arange(48) % 3 != 0
    monkeypatch.setattr(train, "_open_data", lambda config: (records, None, None))
    result, first_loss = {}, {}
    for balance in ("sample", "none", "loss_weight"):
        run = str(tmp_path / balance)
        config = tiny_run(f"--config.data.balance={balance}", "--config.total_steps=1")
        result[balance] = train.train_and_evaluate(config, run)
        first_loss[balance] = _losses(run)[1]
    assert result["sample"].steps_per_epoch == 2 * 32 // 8
    assert result["none"].steps_per_epoch == result["loss_weight"].steps_per_epoch == 48 // 8
    assert first_loss["loss_weight"] != pytest.approx(first_loss["none"], rel=1e-4)


def test_checkpoint_choice_best_latest_or_a_step(tmp_path):
    # evaluate/predict --checkpoint: 'best' is the highest validation AUC, 'latest'
    # the last step saved, a number that step; here the three differ.
    manager = checkpointing.make_manager(tmp_path, keep=3, async_save=False)
    it = _iterator()
    for step, auc in ((1, 0.6), (2, 0.9), (3, 0.7), (4, None)):
        next(it)
        metrics = None if auc is None else {"val_auc": auc}
        checkpointing.save_train_state(manager, step, _state(step)[1], it, metrics)
    assert checkpointing._resolve_step(manager, "best", tmp_path) == 2
    assert checkpointing._resolve_step(manager, "latest", tmp_path) == 4
    assert checkpointing._resolve_step(manager, 3, tmp_path) == 3
    with pytest.raises(FileNotFoundError, match=r"step 1 is not in .* \(has \[2, 3, 4\]\)"):
        checkpointing._resolve_step(manager, 1, tmp_path)  # step 1 was not kept
    manager.close()


def test_sighup_saves_at_the_step_and_the_resumed_run_matches_an_uninterrupted_one(
    tiny_run, tmp_path, monkeypatch
):
    # A run started through `gcloud ... ssh --command` (launch/tpu_pod.sh) gets
    # SIGHUP when that session drops; by default that kills it, losing every step
    # since the last periodic checkpoint (none here before step 6).
    ref = train.train_and_evaluate(tiny_run("--config.total_steps=6"), str(tmp_path / "ref"))
    shard_batch = train.sharding.shard_batch
    calls = []

    def hangup_during_step_3(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGHUP)
        return shard_batch(*a, **k)

    monkeypatch.setattr(train.sharding, "shard_batch", hangup_during_step_3)
    run = str(tmp_path / "run")
    config = tiny_run("--config.total_steps=6", "--config.checkpoint_every=100")
    # The caller's handler only notes the signal: a run that does not catch SIGHUP
    # itself then trains on and fails below, instead of killing pytest.
    unhandled = []

    def caller(*a):
        unhandled.append(a)

    before = signal.signal(signal.SIGHUP, caller)
    try:
        stopped = train.train_and_evaluate(config, run)
        after = signal.getsignal(signal.SIGHUP)
    finally:
        signal.signal(signal.SIGHUP, before)
    assert not unhandled and stopped.preempted and stopped.step == 3
    assert after is caller  # the caller's handler is back
    manager = checkpointing.make_manager(run, read_only=True, async_save=False)
    assert manager.all_steps() == [3]
    manager.close()
    monkeypatch.setattr(train.sharding, "shard_batch", shard_batch)
    resumed = train.train_and_evaluate(config, run)
    assert resumed.step == 6 and not resumed.preempted
    assert _losses(run) == _losses(str(tmp_path / "ref"))
    for a, b in zip(jax.tree.leaves(ref.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_speed_and_eta_leave_out_validation_and_saving(tiny_run, tmp_path, monkeypatch):
    # Validation and saving that take 1000 s each on train's clock, against tiny
    # steps of milliseconds. The pause is virtual (train's clock jumps) so the test
    # cannot flake on a loaded machine: a counted pause would show >= 500 s per
    # step, while real steps, background checkpoint writes included, stay far
    # below 50 s. Logs at 2, 4, 6, 8; validation (and a save) at 3, 6 and 8; a save
    # at 5. The windows (2, 4] and (4, 6] hold a pause; (6, 8] follows the one
    # logged at 6.
    pause = 1000.0
    skew = [0.0]
    clock = types.SimpleNamespace(time=lambda: time.time() + skew[0])
    save = checkpointing.save_train_state

    def slow_validate(*a):
        skew[0] += pause
        return {"val_auc": 0.5, "val_acc": 0.5, "val_n": 8}

    def slow_save(*a, **k):
        skew[0] += pause
        return save(*a, **k)

    monkeypatch.setattr(train, "time", clock)
    monkeypatch.setattr(train, "_open_data", lambda config: (_Records(), _Records(8), None))
    monkeypatch.setattr(train, "_validate", slow_validate)
    monkeypatch.setattr(checkpointing, "save_train_state", slow_save)
    run = str(tmp_path / "run")
    config = tiny_run(
        *("--config.total_steps=8", "--config.log_every=2", "--config.eval_every=3"),
        "--config.checkpoint_every=5",
    )
    train.train_and_evaluate(config, run)
    assert skew[0] == 7 * pause  # validations at 3, 6, 8 and saves at 3, 5, 6, 8 ran
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    sec = {r["step"]: r["seconds_per_step"] for r in rows if "seconds_per_step" in r}
    assert sec.keys() == {2, 4, 6, 8} and max(sec.values()) < pause / 20, sec
    waits = [r["input_wait_fraction"] for r in rows if "input_wait_fraction" in r]
    assert all(0.0 <= w <= 1.0 for w in waits)
    # The validation's own duration is logged with its result.
    val = {r["step"]: r["val_seconds"] for r in rows if "val_auc" in r}
    assert val.keys() == {3, 6, 8} and all(pause <= s < pause * 1.05 for s in val.values()), val


# ---- what a run leaves when its input, its workdir or its checkpoints go wrong


class _Damaged(_Records):
    """Records of which one fails as data_prep reads a damaged shard."""

    def __init__(self, bad):
        super().__init__()
        self.bad = bad

    def __getitem__(self, i):
        if int(i) == self.bad:
            raise RecordFormatError(f"shard-00003-of-00064: record {i}: damaged chunk")
        return super().__getitem__(i)


@pytest.fixture
def cli_logging():
    """train.main points the root logger at this test's stdout; put it back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_damaged_record_saves_the_last_good_step_and_the_resume_matches(
    tiny_run, tmp_path, monkeypatch, capsys, cli_logging
):
    ref = train.train_and_evaluate(tiny_run("--config.total_steps=6"), str(tmp_path / "ref"))
    # The stream's order for seed 0: the third record of the fourth batch is damaged,
    # so reading the batch of step 4 fails, long before the first periodic checkpoint.
    order = grain.MapDataset.source(np.arange(48)).shuffle(seed=0)
    bad = int(order[3 * 8 + 2])
    config = tiny_run("--config.total_steps=6", "--config.checkpoint_every=100")
    monkeypatch.setattr(train, "load_config", lambda path, overrides: config)
    run = str(tmp_path / "run")
    # Found before training (e.g. reading an older build's labels): one line too.
    labels = train._train_labels
    monkeypatch.setattr(train, "_train_labels", lambda *a: _Damaged(0)[0])
    assert train.main(["--config", DEMO_CONFIG, "--workdir", run]) == 1
    out = capsys.readouterr().out
    assert "record 0: damaged chunk; check the build with `python -m data_prep" in out, out
    assert "Traceback" not in out
    monkeypatch.setattr(train, "_train_labels", labels)
    monkeypatch.setattr(train, "_open_data", lambda config: (_Damaged(bad), None, None))
    code = train.main(["--config", DEMO_CONFIG, "--workdir", run])
    out = capsys.readouterr().out
    assert code == 1 and "Traceback" not in out
    assert re.search(
        rf"after step 3: shard-00003-of-00064: record {bad}: damaged chunk\. Saved step 3 .*"
        r"python -m data_prep\.verify",
        out,
    ), out
    manager = checkpointing.make_manager(run, read_only=True, async_save=False)
    assert manager.all_steps() == [3]
    manager.close()
    # Rebuilt shards: the resume takes batch 4 next, neither skipping nor repeating one.
    monkeypatch.setattr(train, "_open_data", lambda config: (_Records(), None, None))
    resumed = train.train_and_evaluate(config, run)
    assert resumed.step == 6 and _losses(run) == _losses(str(tmp_path / "ref"))
    for a, b in zip(jax.tree.leaves(ref.state), jax.tree.leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_damaged_validation_record_saves_the_step_it_validated(tiny_run, tmp_path, monkeypatch):
    def damaged(*a):
        raise RecordFormatError("record 5 of split 'val': damaged")

    monkeypatch.setattr(train, "_open_data", lambda config: (_Records(), _Records(8), None))
    monkeypatch.setattr(train, "_validate", damaged)
    run = str(tmp_path / "run")
    config = tiny_run("--config.total_steps=4", "--config.eval_every=2")
    with pytest.raises(train.InputFailed, match=r"validation failed after step 2: .*Saved step 2"):
        train.train_and_evaluate(config, run)
    manager = checkpointing.make_manager(run, read_only=True, async_save=False)
    assert manager.all_steps() == [2] and manager.best_step() is None  # no AUC: not "best"
    manager.close()


def test_non_finite_validation_scores_stop_as_a_divergence_and_save_nothing(
    tiny_run, tmp_path, monkeypatch
):
    # Before: metrics refused the NaN scores with a ValueError, train took it for
    # a failed read (saved the broken state as a checkpoint) and main printed a
    # traceback.
    monkeypatch.setattr(train, "_open_data", lambda config: (_Records(), _Records(8), None))
    make_eval_step = train.make_eval_step
    monkeypatch.setattr(
        train,
        "make_eval_step",
        lambda g: lambda st, frames: make_eval_step(g)(st, frames) * jnp.nan,
    )
    run = str(tmp_path / "run")
    config = tiny_run("--config.total_steps=4", "--config.eval_every=2")
    with pytest.raises(
        train.TrainingDiverged,
        match=r"validation gave non-finite scores for 8 of 8 frames at step 2: training "
        r"diverged; no checkpoint was saved yet, so a rerun starts from step 0",
    ):
        train.train_and_evaluate(config, run)
    assert not checkpointing.has_checkpoints(run)


def test_a_divergence_before_the_first_checkpoint_says_there_is_none(
    tiny_run, tmp_path, monkeypatch
):
    monkeypatch.setattr(
        input_pipeline, "class_weights", lambda counts: np.full(2, np.nan, np.float32)
    )
    config = tiny_run("--config.total_steps=4", "--config.data.balance=loss_weight")
    with pytest.raises(train.TrainingDiverged, match=r"at step 1: .*no checkpoint was saved yet"):
        train.train_and_evaluate(config, str(tmp_path / "run"))


def test_a_resume_may_switch_clipping_and_weight_decay_but_not_the_optimizer(tiny_run, tmp_path):
    # Before: optax.chain gave clipping and weight decay state slots of their own,
    # so switching one on (what a diverged run is told to do) moved the momentum
    # and the restore called every checkpoint damaged, one after another.
    run = str(tmp_path / "run")
    train.train_and_evaluate(tiny_run("--config.total_steps=2"), run)
    switched = ("--config.grad_clip_norm=1.0", "--config.weight_decay=0.0001")
    result = train.train_and_evaluate(tiny_run("--config.total_steps=4", *switched), run)
    assert result.step == 4 and sorted(_losses(run)) == [1, 2, 3, 4]
    # ...and off again.
    assert train.train_and_evaluate(tiny_run("--config.total_steps=5"), run).step == 5
    with pytest.raises(ConfigError, match=r"optimizer 'sgd', this run has 'adam'.*"
                       r"--config\.optimizer=sgd"):  # fmt: skip
        train.train_and_evaluate(tiny_run("--config.total_steps=6", "--config.optimizer=adam"), run)


def test_a_checkpoint_of_another_state_layout_is_not_called_damaged(tmp_path):
    # As the optimizer state of clipping + SGD was laid out before make_optimizer
    # kept one layout: a sound checkpoint the restore cannot map. Called damaged,
    # its advice (delete the step) would have deleted every checkpoint in turn.
    import optax

    def state(tx):
        model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
        return nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))[1]

    manager = checkpointing.make_manager(tmp_path, async_save=False)
    old = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1, momentum=0.9))
    checkpointing.save_train_state(manager, 3, state(old), _iterator())
    abstract = state(optax.chain(optax.sgd(0.1, momentum=0.9)))
    with pytest.raises(ConfigError) as e:
        checkpointing.restore_train_state(manager, 3, abstract, _shardings(abstract), _iterator())
    manager.close()
    text = str(e.value)
    assert "checkpoint step 3" in text and "another state layout" in text, text
    assert "1/opt_state/1/0/trace/kernel" in text and "1/opt_state/0/0/trace/kernel" in text
    assert "not damaged" in text and "delete" not in text


def test_a_first_run_that_died_before_its_first_checkpoint_reruns_with_other_settings(
    tiny_run, tmp_path, monkeypatch
):
    # Out of memory at step 1 leaves config.json and no checkpoint; the rerun with a
    # smaller batch was refused as a resume ("the saved data position ... counts
    # batches of 8") although there was nothing to resume.
    run = tmp_path / "run"
    shard_batch = train.sharding.shard_batch

    def out_of_memory(*a, **k):
        raise MemoryError("RESOURCE_EXHAUSTED: out of memory")

    monkeypatch.setattr(train.sharding, "shard_batch", out_of_memory)
    with pytest.raises(MemoryError):
        train.train_and_evaluate(tiny_run("--config.total_steps=2"), str(run))
    assert (run / "config.json").exists() and not checkpointing.has_checkpoints(run)
    monkeypatch.setattr(train.sharding, "shard_batch", shard_batch)
    rerun = tiny_run("--config.total_steps=2", "--config.batch_size=16", "--config.seed=3")
    assert train.train_and_evaluate(rerun, str(run)).step == 2
    assert json.loads((run / "config.json").read_text())["batch_size"] == 16
    # With a checkpoint now, the same change is a resume and refused.
    with pytest.raises(ConfigError, match="batch_size 16"):
        train.train_and_evaluate(tiny_run("--config.total_steps=3", "--config.seed=3"), str(run))


def test_a_second_training_in_the_same_workdir_is_refused(tiny_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    lock = run / ".train.lock.process_0"
    # Another process holds the lock, as a run in progress does.
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(ConfigError, match=rf"{run} is in use by another training \(pid "
                           rf"{holder.pid} on host elsewhere; "):  # fmt: skip
            train.train_and_evaluate(tiny_run("--config.total_steps=1"), str(run))
        assert os.listdir(run) == [lock.name]  # nothing written
    finally:
        holder.kill()  # a killed run leaves no stale lock: the OS drops it
        holder.wait()
    # While this run trains, it holds the lock itself, under its own pid and host.
    save, seen = checkpointing.save_train_state, []

    def save_and_try_another(*a, **k):
        mine = f"pid {os.getpid()} on host {socket.gethostname()}"
        with pytest.raises(ConfigError, match=mine), train._workdir_lock(str(run)):
            pass
        seen.append(1)
        return save(*a, **k)

    monkeypatch.setattr(checkpointing, "save_train_state", save_and_try_another)
    assert train.train_and_evaluate(tiny_run("--config.total_steps=1"), str(run)).step == 1
    assert seen
    # A workdir that is a file is named as such.
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"--workdir .*file is a file; pass a folder"):
        train.train_and_evaluate(tiny_run("--config.total_steps=1"), str(tmp_path / "file"))


_HOLD_LOCK = """
import fcntl, os, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f, fcntl.LOCK_EX)
f.write(f"pid {os.getpid()} on host elsewhere\\n")
f.flush()
print("locked", flush=True)
time.sleep(600)
"""


# orbax's event loop, closed after the failed restore, still gets a callback.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_damaged_checkpoint_names_its_step_and_what_to_do(
    tiny_run, tmp_path, monkeypatch, capsys, cli_logging
):
    import shutil

    run = tmp_path / "run"
    config = tiny_run("--config.total_steps=2", "--config.checkpoint_every=1")
    train.train_and_evaluate(config, str(run))
    # The data files (a model this small has its arrays inline in the index nodes).
    for f in (run / "checkpoints" / "2" / "state").glob("**/d/*"):
        os.truncate(f, 10)
    longer = tiny_run("--config.total_steps=3", "--config.checkpoint_every=1")
    monkeypatch.setattr(train, "load_config", lambda path, overrides: longer)
    code = train.main(["--config", DEMO_CONFIG, "--workdir", str(run)])
    out = capsys.readouterr().out
    assert code == 1 and "Traceback" not in out
    assert re.search(
        rf"checkpoint step 2 \({run}/checkpoints/2\) cannot be read: \w+: .{{10}}.*"
        r"Other checkpoints: \[1\]\. If its files are damaged \(a save or copy cut short\): "
        r"delete that folder and rerun to resume from step 1\.\n",
        out,
    ), out
    with pytest.raises(checkpointing.CheckpointDamaged, match=r"step 2 .*--checkpoint N"):
        checkpointing.restore_for_inference(config, str(run), "latest")
    # So is a garbled input position; deleting the damaged step resumes from the one before.
    shutil.rmtree(run / "checkpoints" / "2")
    position = run / "checkpoints" / "1" / "data_iter" / "process_0-of-1.json"
    text = position.read_text()
    position.write_text(text[:5])
    with pytest.raises(checkpointing.CheckpointDamaged, match=r"step 1 .*JSONDecodeError.*none"):
        train.train_and_evaluate(longer, str(run))
    position.write_text(text)
    assert train.train_and_evaluate(longer, str(run)).step == 3


class _Replicated(nnx.Module):
    # Shapes no other test saves (an earlier compile in this process would hide
    # one), each with a dimension 8 replicas can split, as replica-parallel needs.
    def __init__(self, rngs):
        self.a = nnx.Linear(8 * 37, 29, rngs=rngs)
        self.b = nnx.Linear(29, 8 * 43, rngs=rngs)


def _replicated_state(seed):
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    graphdef, state = nnx.split(_Replicated(nnx.Rngs(seed)))
    return graphdef, jax.device_put(state, repl), repl


def test_a_replicated_state_saves_without_compiling_and_either_way_restores(tmp_path, caplog):
    # orbax's replica-parallel saving compiled a slice program per parameter shape
    # and device at each process's first save: 17.8 s of an 18 s first save of demo-size
    # LDA-ST on 8 devices (0.4 s without). One replica now writes each array.
    assert len(jax.devices()) == 8
    _, state, repl = _replicated_state(0)
    manager = checkpointing.make_manager(tmp_path / "one", async_save=False)
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        checkpointing.save_train_state(manager, 1, state, _iterator())
    compiled = [r.getMessage() for r in caplog.records if "compilation of" in r.getMessage()]
    assert compiled == [], compiled
    manager.close()

    # A checkpoint written replica-parallel (before this change) restores the same.
    default = ocp.type_handlers.get_type_handler(jax.Array)
    parallel = ocp.type_handlers.ArrayHandler(
        use_replica_parallel=True, array_metadata_store=default._array_metadata_store
    )
    ocp.type_handlers.register_type_handler(jax.Array, parallel, override=True)
    try:
        old = checkpointing.make_manager(tmp_path / "old", async_save=False)
        checkpointing.save_train_state(old, 1, state, _iterator())
        old.close()
    finally:
        ocp.type_handlers.register_type_handler(jax.Array, default, override=True)
    for folder in ("one", "old"):
        manager = checkpointing.make_manager(tmp_path / folder, read_only=True, async_save=False)
        _, abstract, _ = _replicated_state(1)
        shardings = jax.tree.map(lambda _: repl, abstract)
        restored, _ = checkpointing.restore_train_state(
            manager, 1, abstract, shardings, _iterator()
        )
        manager.close()
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_importing_checkpointing_warns_of_nothing():
    # Its handler override is meant: orbax's "overriding jax.Array" warning
    # would otherwise open every train, evaluate and predict run.
    code = (
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "import jax, orbax.checkpoint as ocp\n"
        "from ldattn_jax import checkpointing\n"
        "print(ocp.type_handlers.get_type_handler(jax.Array)._use_replica_parallel)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert "overriding" not in done.stderr, done.stderr
