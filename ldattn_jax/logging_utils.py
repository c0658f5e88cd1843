"""What the user sees: a progress line, metrics.jsonl and TensorBoard events.

Only process 0 writes (every process computes the same global metrics).
"""

from __future__ import annotations

import json
import math
import time
import uuid

from etils import epath

__all__ = ["MetricWriter", "progress_line"]


class MetricWriter:
    """Appends {'step', 'time', **metrics} to WORKDIR/metrics.jsonl and TensorBoard.

    Appending (not truncating) keeps the history of a resumed run in one file.
    ``resume_step``: the step the run restarts from. A run killed after its last
    checkpoint had logged steps the resumed run computes again, so rows after
    that step (and a line the kill cut short) are dropped first, and TensorBoard
    purges its events after it: every step is in the record once.
    """

    def __init__(self, workdir, enabled: bool = True, resume_step: int | None = None):
        self.enabled = enabled
        self._tb = None
        self._file = None
        if not enabled:
            return
        workdir = epath.Path(workdir)
        path = workdir / "metrics.jsonl"
        if resume_step is not None and path.exists():
            _drop_rows_after(path, resume_step)
        self._file = path.open("a")
        try:
            from tensorboardX import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            # The suffix: event files are named by the second they start in, and
            # a run resumed within that second would overwrite the first's.
            self._tb = SummaryWriter(
                str(workdir / "tensorboard"),
                purge_step=purge,
                filename_suffix=f".{uuid.uuid4().hex[:8]}",
            )
        except Exception as e:  # TensorBoard is a convenience; metrics.jsonl is the record.
            print(f"TensorBoard events disabled: {e}")

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        clean = {k: _jsonable(v) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": int(step), "time": time.time(), **clean}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in clean.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _drop_rows_after(path: epath.Path, step: int) -> None:
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a killed run, cut short
        if isinstance(row, dict) and int(row.get("step", 0)) <= step:
            kept.append(line + "\n")
    tmp = path.parent / (path.name + ".tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)  # atomic: a kill now leaves the old file or the new one


def _jsonable(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def progress_line(step: int, total_steps: int, steps_per_epoch: int, m: dict) -> str:
    """'step 120/6000 (2%) epoch 0.48 | loss 0.6931 acc 0.500 lr 3.0e-04 | 85.3 img/s ETA 1h02m
    | input wait 3%' (the share of the time the loop waited for the next batch)."""
    speed = ""
    if m.get("images_per_s"):
        speed = f" | {m['images_per_s']:.1f} img/s"
    if m.get("seconds_per_step"):
        speed += f" ETA {_duration((total_steps - step) * m['seconds_per_step'])}"
    if m.get("input_wait_fraction") is not None:
        speed += f" | input wait {100 * m['input_wait_fraction']:.0f}%"
    return (
        f"step {step}/{total_steps} ({100 * step / total_steps:.0f}%) "
        f"epoch {step / steps_per_epoch:.2f} | loss {m['loss']:.4f} acc {m['acc']:.3f} "
        f"lr {m['lr']:.2e}{speed}"
    )
