"""grain input pipeline on an in-memory source with the documented record fields."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ldattn_jax import input_pipeline as ip
from ldattn_jax.config_utils import ConfigError, training_defaults

S, T = 12, 4  # crop side, frames per stack
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ListSource:
    """A picklable random-access source of records shaped like data_prep.shards'."""

    def __init__(self, n=40, real_every=5):
        self.n, self.real_every = n, real_every

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        i = int(i)
        # Each frame encodes (record, frame) so tests can see what was read and flipped.
        frames = np.zeros((T, S, S, 3), np.uint8)
        for t in range(T):
            frames[t, :, :, 0] = i
            frames[t, :, :, 1] = t
            frames[t, :, :, 2] = np.arange(S, dtype=np.uint8)[None, :]  # x coordinate
        return {
            "frames": frames,
            "label": int(i % self.real_every != 0),
            "video_id": f"v{i // 4}",
            "method": "real" if i % self.real_every == 0 else "Deepfakes",
        }


def _config(batch=8, seed=0, **data):
    c = training_defaults()
    c.seed, c.batch_size = seed, batch
    c.model = {"image_size": S}
    c.data.read_threads = 2
    for k, v in data.items():
        c.data[k] = v
    return c


def _take(it, n):
    return [next(it) for _ in range(n)]


def _ids(batch):
    return batch["frames"][:, 0, 0, 0, 0].astype(int).tolist()


def test_same_seed_same_batches_and_different_seed_differs():
    src = ListSource()
    idx = np.arange(len(src))
    a = _take(ip.make_train_iterator(src, _config(seed=1), num_frames=T, indices=idx), 6)
    b = _take(ip.make_train_iterator(src, _config(seed=1), num_frames=T, indices=idx), 6)
    c = _take(ip.make_train_iterator(src, _config(seed=2), num_frames=T, indices=idx), 6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["frames"], y["frames"])
        np.testing.assert_array_equal(x["label"], y["label"])
    assert [_ids(x) for x in a] != [_ids(x) for x in c]


def test_each_epoch_is_a_reshuffled_permutation():
    src = ListSource()
    it = ip.make_train_iterator(src, _config(), num_frames=T, indices=np.arange(40))
    batches = _take(it, 10)  # 2 epochs of 5 batches
    e1 = sum((_ids(b) for b in batches[:5]), [])
    e2 = sum((_ids(b) for b in batches[5:]), [])
    assert sorted(e1) == sorted(e2) == list(range(40))
    assert e1 != e2
    for b in batches:
        assert b["frames"].shape == (8, T, S, S, 3) and b["frames"].dtype == np.uint8
        assert b["label"].dtype == np.int32
        np.testing.assert_array_equal(b["label"], [int(i % 5 != 0) for i in _ids(b)])


def test_neighbouring_seeds_do_not_share_epoch_orders():
    # grain shuffles epoch e with seed + e: under stream version 1, seed 1's
    # epochs were seed 0's shifted by one, so an ablation "over seeds" varied the
    # data order far less than it claimed. Version 2 spreads the seeds; seed 0
    # keeps its stream (the demo's numbers stand).
    src, idx = ListSource(), np.arange(40)

    def epochs(seed, version, n=3):
        cfg = _config(seed=seed, flip=False, stream_version=version)
        it = ip.make_train_iterator(src, cfg, num_frames=T, indices=idx)
        ids = [i for b in _take(it, 5 * n) for i in _ids(b)]  # 5 batches of 8 per epoch
        return [ids[40 * e : 40 * (e + 1)] for e in range(n)]

    old0, old1 = epochs(0, 1), epochs(1, 1)
    assert old1[:2] == old0[1:]  # the defect, as it was
    new0, new1 = epochs(0, 2), epochs(1, 2)
    assert new0 == old0
    assert all(sorted(e) == list(range(40)) for e in new1)
    assert not any(a == b for a in new1 for b in new0)
    assert ip.shuffle_seed(0) == 0 and len({ip.shuffle_seed(s) for s in range(1000)}) == 1000
    with pytest.raises(ConfigError, match="config.data.stream_version=3"):
        ip.shuffle_seed(1, 3)


def test_flip_is_one_decision_per_stack():
    src = ListSource()
    it = ip.make_train_iterator(src, _config(), num_frames=T, indices=np.arange(40))
    x = np.arange(S)
    flipped = []
    for b in _take(it, 5):
        xs = b["frames"][..., 2]  # [B, T, S, S] x coordinate as read
        for stack in xs:
            per_frame = [bool(np.array_equal(f[0], x[::-1])) for f in stack]  # each frame flipped?
            assert all(np.array_equal(f[0], x[::-1]) or np.array_equal(f[0], x) for f in stack)
            assert len(set(per_frame)) == 1, "frames of one stack flipped differently"
            flipped.append(per_frame[0])
        np.testing.assert_array_equal(
            b["frames"][..., 1][:, :, 0, 0], np.tile(np.arange(T), (8, 1))
        )
    assert 5 < sum(flipped) < 35  # about half of 40 stacks
    no_flip = ip.make_train_iterator(src, _config(flip=False), num_frames=T, indices=np.arange(40))
    assert all(np.array_equal(b["frames"][0, 0, 0, :, 2], x) for b in _take(no_flip, 5))


def test_processes_read_disjoint_slices_of_the_same_global_batches():
    src = ListSource()
    idx = np.arange(40)
    single = _take(ip.make_train_iterator(src, _config(), num_frames=T, indices=idx), 5)
    parts = [
        _take(
            ip.make_train_iterator(
                src, _config(), num_frames=T, indices=idx, process_index=p, process_count=2
            ),
            5,
        )
        for p in range(2)
    ]
    for step in range(5):
        ids0, ids1 = _ids(parts[0][step]), _ids(parts[1][step])
        assert len(ids0) == len(ids1) == 4 and not set(ids0) & set(ids1)
        # A global step consumes the same 8 stream elements as on one process,
        # flipped alike: the flip is drawn per element of the global stream (drawn
        # after the slice, element i of both processes shared one draw).
        assert sorted(ids0 + ids1) == sorted(_ids(single[step]))
        assert {**_flips(parts[0][step]), **_flips(parts[1][step])} == _flips(single[step])


def _flips(batch):
    """{record id: whether its stack was flipped} (frames hold their x coordinate)."""
    rows = batch["frames"][:, 0, 0, :, 2]
    return {i: bool(row[0] == S - 1) for i, row in zip(_ids(batch), rows, strict=True)}


def test_iterator_state_resumes_exactly():
    src = ListSource()
    idx = np.arange(40)
    it = ip.make_train_iterator(src, _config(), num_frames=T, indices=idx)
    _take(it, 7)
    state = it.get_state()
    rest = _take(it, 4)
    it2 = ip.make_train_iterator(src, _config(), num_frames=T, indices=idx)
    it2.set_state(state)
    for a, b in zip(rest, _take(it2, 4), strict=True):
        np.testing.assert_array_equal(a["frames"], b["frames"])


def test_worker_processes_give_the_same_batches():
    src = ListSource()
    idx = np.arange(40)
    ref = _take(ip.make_train_iterator(src, _config(), num_frames=T, indices=idx), 4)
    it = ip.make_train_iterator(src, _config(worker_count=2), num_frames=T, indices=idx)
    try:
        got = _take(it, 4)
        state = it.get_state()
    finally:
        it.close()
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_array_equal(a["frames"], b["frames"])
    assert state  # checkpointable with workers too


def test_worker_and_read_settings_reach_grain():
    # The settings docs/training.md tells users to tune when the loader stalls
    # must reach grain, not only the default they happen to equal.
    class Recorder:
        def mp_prefetch(self, options, worker_init_fn=None):
            self.options, self.init = options, worker_init_fn
            return "in workers"

    plain = Recorder()
    assert ip.in_worker_processes(plain, _config(worker_count=0)) is plain
    rec = Recorder()
    wrapped = ip.in_worker_processes(rec, _config(worker_count=3, worker_buffer_size=5))
    assert wrapped == "in workers"
    assert (rec.options.num_workers, rec.options.per_worker_buffer_size) == (3, 5)
    # See the stop-signal tests below; the trainer's pid is bound where it is known.
    assert rec.init.func is ip.ignore_stop_signals and rec.init.keywords == {"trainer": os.getpid()}
    opts = ip._read_options(_config(read_threads=6, prefetch=2))
    # grain wants the buffer at least the threads, or the extra threads idle.
    assert (opts.num_threads, opts.prefetch_buffer_size) == (6, 6)
    opts = ip._read_options(_config(read_threads=2, prefetch=9))
    assert (opts.num_threads, opts.prefetch_buffer_size) == (2, 9)


def _in_own_session(tmp_path, body: str) -> subprocess.CompletedProcess:
    """Runs ``body`` (indented code with ``it``: a training iterator over 2 grain
    workers) as a script in a session of its own, so signals it sends to its
    process group reach no one else."""
    script = tmp_path / "workers.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import multiprocessing, os, signal, sys, time
            sys.path[:0] = [{ROOT!r}, {os.path.dirname(__file__)!r}]
            import numpy as np
            from test_input_pipeline import T, ListSource, _config
            from ldattn_jax import input_pipeline as ip

            if __name__ == "__main__":
                cfg = _config(worker_count=2, worker_buffer_size=1)
                it = ip.make_train_iterator(ListSource(), cfg, num_frames=T, indices=np.arange(40))
            """
        )
        + textwrap.indent(textwrap.dedent(body), "    ")
    )
    return subprocess.run(
        [sys.executable, str(script)],
        start_new_session=True,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_stop_signals_to_the_process_group_leave_the_workers_reading(tmp_path):
    # Ctrl-C, SLURM's scancel and a TPU VM's shutdown signal every process, grain's
    # workers included; the trainer saves at its next log/save step, so the
    # workers must keep serving batches until then (they died on the spot, and
    # the run lost every step since its last checkpoint).
    p = _in_own_session(
        tmp_path,
        """
        got = []
        for _ in range(3):
            next(it)
        for sig in ip.STOP_SIGNALS:  # noted, as train._Preemption does
            signal.signal(sig, lambda s, f: got.append(signal.Signals(s).name))
        for sig in ip.STOP_SIGNALS:
            os.killpg(os.getpgrp(), sig)
            time.sleep(0.3)
        time.sleep(1.0)
        for _ in range(12):  # far past what the workers had buffered
            next(it)
        it.close()
        print("read on after", sorted(got))
        """,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "read on after ['SIGHUP', 'SIGINT', 'SIGTERM']" in p.stdout, p.stdout + p.stderr[-3000:]


def test_workers_end_with_a_trainer_killed_outright(tmp_path):
    # Deaf to the stop signals, grain's workers would outlive a trainer killed
    # with SIGKILL (the OOM killer), holding memory and shared-memory batches.
    import time

    p = _in_own_session(
        tmp_path,
        """
        next(it)
        print(*[p.pid for p in multiprocessing.active_children()], flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    pids = [int(x) for x in p.stdout.split()]
    assert p.returncode == -9 and len(pids) >= 2, p.stdout + p.stderr[-2000:]

    def running(pid):  # a zombie (reparented, not yet reaped) has ended
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.time() + 20
    while any(map(running, pids)) and time.time() < deadline:
        time.sleep(0.2)
    left = [pid for pid in pids if running(pid)]
    for pid in left:  # leave nothing behind, whatever the outcome
        os.kill(pid, 9)
    assert not left, f"workers {left} outlived their trainer"
    # A worker still starting when the trainer died (reparented before its init
    # runs) ends at its init: it is told the trainer's pid, not its parent's now.
    code = "from ldattn_jax import input_pipeline as ip; ip.ignore_stop_signals(trainer=1); "
    code += "print('still running')"
    q = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert q.returncode == 0 and "still running" not in q.stdout, q.stderr[-2000:]


def test_a_changed_worker_count_resumes_at_the_same_batch():
    # grain's state differs in shape with the worker count ({'next_index'} vs one
    # per worker stream), so set_state of another count's state fails (KeyError:
    # 'exhausted'); carried over as a position, the stream continues exactly.
    src = ListSource()
    idx = np.arange(40)
    ref = _take(ip.make_train_iterator(src, _config(), num_frames=T, indices=idx), 10)
    state, taken = None, 0
    for workers, n in [(0, 5), (2, 2), (3, 2), (0, 1)]:  # plain -> 2 -> 3 workers -> plain
        it = ip.make_train_iterator(src, _config(worker_count=workers), num_frames=T, indices=idx)
        try:
            if state is not None:
                like = it.get_state()
                assert ip.iterator_worker_count(like) == workers
                it.set_state(ip.iterator_state_at(ip.iterator_position(state), like))
            for a in _take(it, n):
                np.testing.assert_array_equal(a["frames"], ref[taken]["frames"])
                taken += 1
            state = it.get_state()
            assert ip.iterator_position(state) == taken
        finally:
            it.close()


def test_balance_by_sampling_and_by_loss_weights():
    labels = ip.record_labels(ListSource())  # no .labels attribute: read every record
    counts = ip.class_counts(labels)
    assert (counts.real, counts.fake) == (8, 32)
    idx = ip.epoch_indices(labels, "sample")
    assert len(idx) == 64 and (labels[idx] == 0).sum() == (labels[idx] == 1).sum() == 32
    assert set(idx[labels[idx] == 0]) == set(np.flatnonzero(labels == 0))  # every real, 4x
    w = ip.class_weights(counts)
    np.testing.assert_allclose(w, [40 / 16, 40 / 64])
    assert w[0] * counts.real == pytest.approx(w[1] * counts.fake)  # both classes weigh the same
    np.testing.assert_array_equal(ip.epoch_indices(labels, "none"), np.arange(40))
    with pytest.raises(ValueError, match="balance"):
        ip.epoch_indices(labels, "oversample")
    with pytest.raises(ValueError, match="0 \\(real\\) or 1 \\(fake\\)"):
        ip.class_counts(np.array([0, 1, 2]))


def test_frames_are_cut_to_what_the_model_needs_and_resized():
    src = ListSource()
    c = _config()
    c.model = {"image_size": 8}
    b = next(ip.make_train_iterator(src, c, num_frames=1, indices=np.arange(40)))
    assert b["frames"].shape == (8, 1, 8, 8, 3)
    bad = ip.make_train_iterator(src, _config(), num_frames=T + 1, indices=np.arange(40))
    with pytest.raises(ValueError, match="'frames' has shape"):
        next(bad)


def test_eval_batches_cover_every_record_once_with_padding():
    src = ListSource(n=21)
    c = _config(batch=8)
    seen, valid = [], []
    for p in range(2):
        it, n = ip.make_eval_batches(src, c, num_frames=1, process_index=p, process_count=2)
        assert n == 3
        batches = list(it)
        assert len(batches) == 3 and all(b["frames"].shape[0] == 4 for b in batches)
        seen.append([_ids(b) for b in batches])
        valid.append([b["valid"].tolist() for b in batches])
    real = [
        i
        for step in range(3)
        for p in range(2)
        for i, v in zip(seen[p][step], valid[p][step], strict=True)
        if v
    ]
    assert real == list(range(21))  # global order, padding excluded
    it, n = ip.make_eval_batches(src, c, num_frames=1, max_batches=1)
    assert n == 1 and len(list(it)) == 1


def test_stack_batch_flips_only_the_stacks_that_drew_a_flip_from_read_only_views():
    # Shard records are read-only views of the record bytes (data_prep.record_view).
    stacks = [ListSource()[i]["frames"] for i in range(3)]
    for s in stacks:
        s.flags.writeable = False
    elements = [
        {"frames": stacks[0], "label": np.int32(1), "flip": True},  # as LoadRecord gives
        {"frames": stacks[1], "label": np.int32(0), "flip": False},
        {"frames": stacks[2], "label": np.int32(1)},  # flip disabled in the config: no key
    ]
    batch = ip.StackBatch()(elements)
    assert sorted(batch) == ["frames", "label"] and batch["frames"].flags.writeable
    np.testing.assert_array_equal(batch["frames"][0], stacks[0][:, :, ::-1])
    np.testing.assert_array_equal(batch["frames"][1:], np.stack(stacks[1:]))
    np.testing.assert_array_equal(batch["label"], [1, 0, 1])
    assert batch["label"].dtype == np.int32


def test_a_stack_cut_short_keeps_its_first_frames_in_order():
    # The model reads frame t and the next ones (r^t = I^{t+1} - I^t): a stack
    # longer than the model needs is cut at its end, never at its start.
    src = ListSource()
    b = next(ip.make_train_iterator(src, _config(flip=False), num_frames=2, indices=np.arange(40)))
    assert b["frames"].shape == (8, 2, S, S, 3)
    np.testing.assert_array_equal(b["frames"][:, :, 0, 0, 1], np.tile([0, 1], (8, 1)))


def test_about_half_of_the_stacks_are_flipped():
    # p = 0.5 per stack: 200 stacks give 100 +- 7 (binomial sd); 70..130 is > 4 sd.
    it = ip.make_train_iterator(ListSource(), _config(), num_frames=1, indices=np.arange(40))
    flipped = sum(int((b["frames"][:, 0, 0, 0, 2] == S - 1).sum()) for b in _take(it, 25))
    assert 70 <= flipped <= 130, flipped


def test_sample_balance_repeats_whichever_class_is_the_minority():
    # Fakes the minority this time (FF++ has 4 fakes per real; other sets the reverse).
    labels = np.array([0, 1, 0, 0, 1, 0, 0, 0])
    idx = ip.epoch_indices(labels, "sample")
    assert len(idx) == 12 and (labels[idx] == 0).sum() == (labels[idx] == 1).sum() == 6
    assert sorted(idx[labels[idx] == 1].tolist()) == [1, 1, 1, 4, 4, 4]  # each fake 3x
    assert sorted(idx[labels[idx] == 0].tolist()) == [0, 2, 3, 5, 6, 7]  # each real once
