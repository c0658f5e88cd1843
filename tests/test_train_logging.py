"""What the user sees: the progress line, metrics.jsonl and TensorBoard events."""

import json
import math
import os

from ldattn_jax.logging_utils import MetricWriter, progress_line


def test_progress_line_has_step_epoch_loss_acc_lr_speed_and_eta():
    m = dict(loss=0.6931, acc=0.5, lr=3e-4, images_per_s=85.3, seconds_per_step=0.375)
    line = progress_line(120, 6000, 250, m)
    assert line == (
        "step 120/6000 (2%) epoch 0.48 | loss 0.6931 acc 0.500 lr 3.00e-04 | 85.3 img/s ETA 36m45s"
    )
    # The compiling first step has no speed yet: no made-up img/s or ETA.
    assert "img/s" not in progress_line(1, 6000, 250, dict(loss=0.7, acc=0.5, lr=3e-4))
    assert "ETA 1h02m" in progress_line(0, 3720, 10, dict(m, seconds_per_step=1.0))
    # A starved accelerator shows: the share of the time spent waiting for input.
    stalled = progress_line(120, 6000, 250, dict(m, input_wait_fraction=0.634))
    assert stalled.endswith("85.3 img/s ETA 36m45s | input wait 63%")


def test_metric_writer_appends_jsonl_and_tensorboard(tmp_path):
    w = MetricWriter(tmp_path)
    w.write(1, {"loss": 0.5, "acc": 1.0})
    w.close()
    w = MetricWriter(tmp_path)  # a resumed run appends
    w.write(2, {"loss": float("nan"), "val_auc": None})
    w.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["loss"] == 0.5
    assert rows[1]["loss"] == "nan" and rows[1]["val_auc"] is None  # still valid JSON
    assert all(math.isfinite(r["time"]) for r in rows)
    assert any(f.startswith("events.out") for f in os.listdir(tmp_path / "tensorboard"))
    MetricWriter(tmp_path / "other", enabled=False).write(1, {"loss": 1.0})  # process != 0
    assert not (tmp_path / "other").exists()


def _event_steps(logdir):
    """(scalar steps, purge steps) of every TensorBoard event file under logdir."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars, purges = [], []
    for name in sorted(os.listdir(logdir)):
        data = (logdir / name).read_bytes()
        at = 0
        while at < len(data):  # TFRecord: length, its crc, the event, the event's crc
            (n,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + n])
            at += 12 + n + 4
            if event.HasField("summary"):
                scalars.append(event.step)
            elif event.HasField("session_log") and event.session_log.status == 1:  # START
                purges.append(event.step)
    return scalars, purges


def test_a_resumed_run_logs_each_step_once(tmp_path):
    # A run hard-killed after its step-3 checkpoint had logged steps 4-5 (and
    # half a line); the resumed run computes 4 and 5 again.
    w = MetricWriter(tmp_path, resume_step=0)
    for step in range(1, 6):
        w.write(step, {"loss": 1.0 / step})
    w.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "loss"')
    w = MetricWriter(tmp_path, resume_step=3)
    for step in (4, 5):
        w.write(step, {"loss": 2.0 / step})
    w.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in rows] == [1.0, 0.5, 1 / 3, 0.5, 0.4]  # 4, 5: the resumed values
    # TensorBoard keeps both files' events but is told to hide the first run's
    # steps after 3 (a SessionLog START at step 4, as tensorboardX writes it).
    scalars, purges = _event_steps(tmp_path / "tensorboard")
    assert sorted(scalars) == [1, 2, 3, 4, 4, 5, 5] and 4 in purges


def test_a_run_killed_before_its_first_checkpoint_restarts_the_record(tmp_path):
    # No checkpoint: the rerun starts at step 0 and computes every step again, so
    # every row the killed run logged goes (resume_step=0 is a resume, not None).
    w = MetricWriter(tmp_path, resume_step=0)
    for step in (1, 2):
        w.write(step, {"loss": 1.0})
    w.close()
    w = MetricWriter(tmp_path, resume_step=0)
    w.write(1, {"loss": 0.5})
    w.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 0.5)]
