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
